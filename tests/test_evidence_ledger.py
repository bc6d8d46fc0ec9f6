"""EvidenceLedger on a live Anvil: trade documents anchored with both parties' EIP-712 signatures, and batch roots.

Signers are fresh keys the operator adds to the organisations for the test; each organisation's unlocked dev key
submits. The EIP-712 domain is always read from the deployed contract (ERC-5267).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.types import RPCEndpoint, TxReceipt

from partledger.artifacts import load_artifact
from partledger.eip712 import Attestation, Eip712Domain, attestation_typed_data, read_domain
from partledger.ids import ascii32, part_id
from partledger.merkle import build_tree
from partledger.model import DocType
from tests.chainkit import GTIN_A, Ledger, Org, dev_account, reverts
from tests.relaykit import on_both_paths  # noqa: F401 - every test runs direct and relayed through the forwarder

pytestmark = pytest.mark.chain

ZERO = bytes(32)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ECRECOVER = "0x0000000000000000000000000000000000000001"


@dataclass(frozen=True)
class Party:
    """An organisation in a test: a fresh site key that signs, and the org's unlocked dev key that submits."""

    org: Org
    signer: LocalAccount

    @property
    def id(self) -> int:
        return self.org.id

    @property
    def submitter(self) -> str:
        return self.org.key


def add_signer(ledger: Ledger, org: Org) -> LocalAccount:
    key: LocalAccount = Account.create()
    ledger.act(
        ledger.operator, ledger.registry.functions.addSiteKey(org.id, key.address, ascii32(f"{org.name}-signer"))
    )
    return key


def party(ledger: Ledger, name: str) -> Party:
    return Party(ledger.orgs[name], add_signer(ledger, ledger.orgs[name]))


@pytest.fixture
def issuer(ledger: Ledger) -> Party:
    return party(ledger, "maker")


@pytest.fixture
def counterparty(ledger: Ledger) -> Party:
    return party(ledger, "distributor")


def latest_timestamp(ledger: Ledger) -> int:
    return ledger.w3.eth.get_block("latest")["timestamp"]


def attestation(ledger: Ledger, issuer: Party, counterparty: Party, **changes: Any) -> Attestation:
    """A purchase order between the two parties, fresh hash and nonce, valid for an hour of block time."""
    fields: dict[str, Any] = {
        "docHash": secrets.token_bytes(32),
        "docType": int(DocType.PURCHASE_ORDER),
        "issuer": issuer.id,
        "counterparty": counterparty.id,
        "previous": ZERO,
        "partsRoot": ZERO,
        "nonce": secrets.token_bytes(32),
        "deadline": latest_timestamp(ledger) + 3600,
    }
    fields.update(changes)
    return Attestation(**fields)


def sign(ledger: Ledger, key: LocalAccount, attested: Attestation, *, domain: Eip712Domain | None = None) -> bytes:
    typed = attestation_typed_data(domain or read_domain(ledger.evidence), attested)
    return bytes(key.sign_typed_data(full_message=typed).signature)


def recover(ledger: Ledger, attested: Attestation, signature: bytes) -> str:
    """The address the contract recovers from `signature` for `attested` under its own domain."""
    signable = encode_typed_data(full_message=attestation_typed_data(read_domain(ledger.evidence), attested))
    return str(Account.recover_message(signable, signature=signature))


def anchor(
    ledger: Ledger, submitter: str, attested: Attestation, issuer_signature: bytes, counterparty_signature: bytes
) -> TxReceipt:
    call = ledger.evidence.functions.anchorDocument(attested.as_tuple(), issuer_signature, counterparty_signature)
    return ledger.act(submitter, call)


def anchor_signed(
    ledger: Ledger, attested: Attestation, issuer: Party, counterparty: Party, *, submitter: str | None = None
) -> TxReceipt:
    """Anchors `attested` signed by both parties' signers, submitted by the issuer unless told otherwise."""
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    return anchor(ledger, submitter or issuer.submitter, attested, *signatures)


def document(ledger: Ledger, doc_hash: bytes) -> tuple[int, int, int, int]:
    return tuple(ledger.evidence.functions.document(doc_hash).call())


def nonce_used(ledger: Ledger, org_id: int, nonce: bytes) -> bool:
    return bool(ledger.evidence.functions.nonceUsed(org_id, nonce).call())


def deploy_other_evidence_ledger(ledger: Ledger) -> Contract:
    """A second EvidenceLedger on the same registry: same name, version and chain, another verifying contract."""
    artifact = load_artifact("EvidenceLedger")
    factory = ledger.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(ledger.registry.address, ledger.manifest.forwarder).transact({"from": ledger.operator, "gasPrice": 0})
    address = ledger.w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
    return cast(Contract, ledger.w3.eth.contract(address=address, abi=artifact.abi))


def high_s(signature: bytes) -> bytes:
    """The same signature's malleable twin: s -> n - s with the other recovery id."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


# --- typed data ----------------------------------------------------------------------------------------------------


def test_domain_is_read_from_the_deployed_contract(ledger: Ledger) -> None:
    domain = read_domain(ledger.evidence)
    assert domain.verifyingContract == ledger.evidence.address
    assert domain.chainId == ledger.w3.eth.chain_id


def test_signed_digest_is_the_contracts_attestation_digest(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signed = issuer.signer.sign_typed_data(full_message=attestation_typed_data(read_domain(ledger.evidence), attested))
    assert bytes(signed.message_hash) == ledger.evidence.functions.attestationDigest(attested.as_tuple()).call()


# --- anchoring a document ------------------------------------------------------------------------------------------


def test_anchor_records_document_signed_by_both_parties(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty, docType=int(DocType.INVOICE))
    issuer_signature, counterparty_signature = (
        sign(ledger, issuer.signer, attested),
        sign(ledger, counterparty.signer, attested),
    )

    receipt = anchor(ledger, issuer.submitter, attested, issuer_signature, counterparty_signature)

    [event] = ledger.events(receipt, ledger.evidence, "DocumentAnchored")
    args = event["args"]
    assert args["docHash"] == attested.docHash
    assert (args["issuer"], args["counterparty"]) == (issuer.id, counterparty.id)
    assert tuple(args["attestation"].values()) == attested.as_tuple()
    assert (args["issuerSigner"], args["counterpartySigner"]) == (issuer.signer.address, counterparty.signer.address)
    assert (args["issuerSignature"], args["counterpartySignature"]) == (issuer_signature, counterparty_signature)
    assert document(ledger, attested.docHash) == (
        receipt["blockNumber"],
        issuer.id,
        counterparty.id,
        int(DocType.INVOICE),
    )
    assert nonce_used(ledger, issuer.id, attested.nonce) and nonce_used(ledger, counterparty.id, attested.nonce)


def test_anchor_succeeds_when_counterparty_submits(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    receipt = anchor_signed(ledger, attested, issuer, counterparty, submitter=counterparty.submitter)
    assert ledger.events(receipt, ledger.evidence, "DocumentAnchored")[0]["args"]["docHash"] == attested.docHash
    assert document(ledger, attested.docHash)[0] == receipt["blockNumber"]


def test_anchor_accepts_signatures_of_the_submitting_site_keys(ledger: Ledger) -> None:
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    accounts = ledger.w3.eth.accounts
    issuer = Party(maker, dev_account(accounts.index(maker.key)))
    counterparty = Party(distributor, dev_account(accounts.index(distributor.key)))
    assert (issuer.signer.address, counterparty.signer.address) == (maker.key, distributor.key)
    attested = attestation(ledger, issuer, counterparty)
    receipt = anchor_signed(ledger, attested, issuer, counterparty)
    args = ledger.events(receipt, ledger.evidence, "DocumentAnchored")[0]["args"]
    assert (args["issuerSigner"], args["counterpartySigner"]) == (maker.key, distributor.key)


def test_anchor_links_document_to_the_previous_one(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    order = attestation(ledger, issuer, counterparty)
    anchor_signed(ledger, order, issuer, counterparty)
    invoice = attestation(ledger, issuer, counterparty, docType=int(DocType.INVOICE), previous=order.docHash)
    receipt = anchor_signed(ledger, invoice, issuer, counterparty)
    assert (
        ledger.events(receipt, ledger.evidence, "DocumentAnchored")[0]["args"]["attestation"]["previous"]
        == order.docHash
    )


def test_anchor_fails_when_previous_document_unknown(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    unknown = secrets.token_bytes(32)
    attested = attestation(ledger, issuer, counterparty, previous=unknown)
    with reverts("EvidenceLedgerUnknownPreviousDocument", unknown):
        anchor_signed(ledger, attested, issuer, counterparty)


def test_anchor_carries_the_parts_root(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    parts = [part_id(GTIN_A, f"SN{index:04d}") for index in range(25)]
    parts_root = build_tree([(pid,) for pid in parts], types=["bytes32"]).root
    attested = attestation(ledger, issuer, counterparty, docType=int(DocType.DELIVERY_NOTE), partsRoot=parts_root)
    receipt = anchor_signed(ledger, attested, issuer, counterparty)
    assert (
        ledger.events(receipt, ledger.evidence, "DocumentAnchored")[0]["args"]["attestation"]["partsRoot"] == parts_root
    )


# --- replay and nonces ---------------------------------------------------------------------------------------------


def test_anchor_fails_when_the_same_attestation_is_anchored_again(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    anchor(ledger, issuer.submitter, attested, *signatures)
    with reverts("EvidenceLedgerDocumentAlreadyAnchored", attested.docHash):
        anchor(ledger, counterparty.submitter, attested, *signatures)


def test_anchor_fails_when_nonce_reused_for_another_document(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    first = attestation(ledger, issuer, counterparty)
    anchor_signed(ledger, first, issuer, counterparty)
    second = attestation(ledger, issuer, counterparty, nonce=first.nonce)
    with reverts("EvidenceLedgerNonceUsed", issuer.id, first.nonce):
        anchor_signed(ledger, second, issuer, counterparty)


def test_anchor_fails_when_nonce_used_by_the_counterparty_with_another_issuer(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    first = attestation(ledger, issuer, counterparty)
    anchor_signed(ledger, first, issuer, counterparty)
    other_issuer = party(ledger, "maker2")
    second = attestation(ledger, other_issuer, counterparty, nonce=first.nonce)
    with reverts("EvidenceLedgerNonceUsed", counterparty.id, first.nonce):
        anchor_signed(ledger, second, other_issuer, counterparty)


def test_nonce_used_by_some_organisations_stays_free_for_the_others(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    first = attestation(ledger, issuer, counterparty)
    anchor_signed(ledger, first, issuer, counterparty)
    workshop, workshop2 = party(ledger, "workshop"), party(ledger, "workshop2")
    anchor_signed(ledger, attestation(ledger, workshop, workshop2, nonce=first.nonce), workshop, workshop2)
    assert nonce_used(ledger, workshop.id, first.nonce)


@pytest.mark.parametrize("canceller", ["issuer", "counterparty"])
def test_anchor_fails_when_a_party_cancelled_the_nonce(
    ledger: Ledger, issuer: Party, counterparty: Party, canceller: str
) -> None:
    cancelling = issuer if canceller == "issuer" else counterparty
    attested = attestation(ledger, issuer, counterparty)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)

    receipt = ledger.act(cancelling.submitter, ledger.evidence.functions.cancelNonce(attested.nonce))

    [event] = ledger.events(receipt, ledger.evidence, "NonceCancelled")
    assert dict(event["args"]) == {"orgId": cancelling.id, "nonce": attested.nonce, "siteKey": cancelling.submitter}
    assert nonce_used(ledger, cancelling.id, attested.nonce)
    with reverts("EvidenceLedgerNonceUsed", cancelling.id, attested.nonce):
        anchor(ledger, issuer.submitter, attested, *signatures)


def test_cancel_nonce_fails_when_nonce_already_used(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    anchor_signed(ledger, attested, issuer, counterparty)
    with reverts("EvidenceLedgerNonceUsed", counterparty.id, attested.nonce):
        ledger.act(counterparty.submitter, ledger.evidence.functions.cancelNonce(attested.nonce))


def test_cancel_nonce_fails_when_key_unknown(ledger: Ledger) -> None:
    stranger = ledger.spare_keys[0]
    with reverts("ConsortiumRegistryUnknownKey", stranger):
        ledger.act(stranger, ledger.evidence.functions.cancelNonce(secrets.token_bytes(32)))


# --- whose signatures, under which domain --------------------------------------------------------------------------


def test_anchor_fails_when_signed_for_another_chain_id(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    domain = read_domain(ledger.evidence)
    foreign = sign(ledger, issuer.signer, attested, domain=replace(domain, chainId=domain.chainId + 1))
    recovered = recover(ledger, attested, foreign)
    assert recovered != issuer.signer.address
    with reverts("EvidenceLedgerSignerNotParty", recovered, issuer.id):
        anchor(ledger, issuer.submitter, attested, foreign, sign(ledger, counterparty.signer, attested))


def test_anchor_fails_when_signed_for_another_verifying_contract(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    other = deploy_other_evidence_ledger(ledger)
    other_domain = read_domain(other)
    assert other_domain == replace(read_domain(ledger.evidence), verifyingContract=other.address)
    attested = attestation(ledger, issuer, counterparty)
    signatures = (
        sign(ledger, issuer.signer, attested, domain=other_domain),
        sign(ledger, counterparty.signer, attested, domain=other_domain),
    )
    with reverts("EvidenceLedgerSignerNotParty", recover(ledger, attested, signatures[0]), issuer.id):
        anchor(ledger, issuer.submitter, attested, *signatures)
    # The same signatures are good where they were meant to go.
    ledger.act(issuer.submitter, other.functions.anchorDocument(attested.as_tuple(), *signatures))


def test_anchor_fails_when_deadline_passed(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty, deadline=latest_timestamp(ledger) + 60)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    call = ledger.evidence.functions.anchorDocument(attested.as_tuple(), *signatures)
    call.call({"from": issuer.submitter})  # anchorable before the deadline
    ledger.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [61])
    ledger.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    assert latest_timestamp(ledger) > attested.deadline
    with reverts("EvidenceLedgerExpiredSignature", attested.deadline):
        anchor(ledger, issuer.submitter, attested, *signatures)


def test_anchor_fails_when_signature_has_high_s(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signature = sign(ledger, issuer.signer, attested)
    twin = high_s(signature)
    # ecrecover itself accepts the twin as the same signer: only OpenZeppelin's ECDSA check refuses it.
    digest = ledger.evidence.functions.attestationDigest(attested.as_tuple()).call()
    raw = ledger.w3.eth.call({"to": ECRECOVER, "data": digest + encode(["uint8"], [twin[64]]) + twin[:64]})
    assert raw[12:] == bytes.fromhex(issuer.signer.address[2:])
    with reverts("ECDSAInvalidSignatureS", twin[32:64]):
        anchor(ledger, issuer.submitter, attested, twin, sign(ledger, counterparty.signer, attested))


@pytest.mark.parametrize("length", [0, 64, 66])
def test_anchor_fails_when_signature_length_is_not_65(
    ledger: Ledger, issuer: Party, counterparty: Party, length: int
) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signature = sign(ledger, issuer.signer, attested)
    malformed = (signature + b"\x00")[:length]
    with reverts("ECDSAInvalidSignatureLength", length):
        anchor(ledger, issuer.submitter, attested, signature, malformed)


def test_anchor_fails_when_signer_belongs_to_another_organisation(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    outsider = party(ledger, "workshop")
    attested = attestation(ledger, issuer, counterparty)
    with reverts("EvidenceLedgerSignerNotParty", outsider.signer.address, counterparty.id):
        anchor(
            ledger,
            issuer.submitter,
            attested,
            sign(ledger, issuer.signer, attested),
            sign(ledger, outsider.signer, attested),
        )


def test_anchor_fails_when_signatures_are_swapped(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    with reverts("EvidenceLedgerSignerNotParty", counterparty.signer.address, issuer.id):
        anchor(ledger, issuer.submitter, attested, signatures[1], signatures[0])


def test_anchor_fails_when_signer_key_never_added(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    stranger: LocalAccount = Account.create()
    attested = attestation(ledger, issuer, counterparty)
    with reverts("EvidenceLedgerSignerNotParty", stranger.address, issuer.id):
        anchor(
            ledger,
            issuer.submitter,
            attested,
            sign(ledger, stranger, attested),
            sign(ledger, counterparty.signer, attested),
        )


def test_anchor_fails_when_signer_key_revoked(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    revocation = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(counterparty.signer.address))
    with reverts("ConsortiumRegistryKeyRevoked", counterparty.signer.address, revocation["blockNumber"]):
        anchor(ledger, issuer.submitter, attested, *signatures)


def test_anchor_fails_when_counterparty_organisation_suspended(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    attested = attestation(ledger, issuer, counterparty)
    signatures = sign(ledger, issuer.signer, attested), sign(ledger, counterparty.signer, attested)
    ledger.act(ledger.operator, ledger.registry.functions.suspendOrganisation(counterparty.id))
    with reverts("ConsortiumRegistryOrganisationSuspended", counterparty.id):
        anchor(ledger, issuer.submitter, attested, *signatures)


def test_anchor_fails_when_signature_of_another_document_is_reused(
    ledger: Ledger, issuer: Party, counterparty: Party
) -> None:
    document_x = attestation(ledger, issuer, counterparty)
    document_y = attestation(ledger, issuer, counterparty)
    issuer_signature_of_x = sign(ledger, issuer.signer, document_x)
    recovered = recover(ledger, document_y, issuer_signature_of_x)
    with reverts("EvidenceLedgerSignerNotParty", recovered, issuer.id):
        anchor(
            ledger, issuer.submitter, document_y, issuer_signature_of_x, sign(ledger, counterparty.signer, document_y)
        )


# --- who submits, and what ----------------------------------------------------------------------------------------


def test_anchor_fails_when_submitter_is_not_a_party(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    outsider = ledger.orgs["workshop"]
    attested = attestation(ledger, issuer, counterparty)
    with reverts("EvidenceLedgerSubmitterNotParty", outsider.key, outsider.id):
        anchor_signed(ledger, attested, issuer, counterparty, submitter=outsider.key)


def test_anchor_fails_when_submitter_key_unknown(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    stranger = ledger.spare_keys[0]
    attested = attestation(ledger, issuer, counterparty)
    with reverts("ConsortiumRegistryUnknownKey", stranger):
        anchor_signed(ledger, attested, issuer, counterparty, submitter=stranger)


def test_anchor_fails_when_issuer_and_counterparty_are_the_same(ledger: Ledger, issuer: Party) -> None:
    sibling = Party(issuer.org, add_signer(ledger, issuer.org))
    attested = attestation(ledger, issuer, sibling)
    with reverts("EvidenceLedgerSameParty", issuer.id):
        anchor_signed(ledger, attested, issuer, sibling)


def test_anchor_fails_when_document_hash_empty(ledger: Ledger, issuer: Party, counterparty: Party) -> None:
    attested = attestation(ledger, issuer, counterparty, docHash=ZERO)
    with reverts("EvidenceLedgerEmptyDocumentHash") as caught:
        anchor_signed(ledger, attested, issuer, counterparty)
    assert caught["error"].args_ == ()


# --- batch roots ---------------------------------------------------------------------------------------------------


def batch_root(count: int) -> bytes:
    return build_tree([(secrets.token_bytes(32),) for _ in range(count)], types=["bytes32"]).root


def batch(ledger: Ledger, root: bytes) -> tuple[int, int, int]:
    return tuple(ledger.evidence.functions.batch(root).call())


def test_anchor_batch_records_the_root(ledger: Ledger) -> None:
    maker = ledger.orgs["maker"]
    root = batch_root(40)
    receipt = ledger.act(maker.keys[1], ledger.evidence.functions.anchorBatch(root, 40, ascii32("qc")))
    [event] = ledger.events(receipt, ledger.evidence, "BatchAnchored")
    assert dict(event["args"]) == {
        "root": root,
        "orgId": maker.id,
        "siteKey": maker.keys[1],
        "kind": ascii32("qc"),
        "recordCount": 40,
    }
    assert batch(ledger, root) == (receipt["blockNumber"], maker.id, 40)


def test_batch_of_an_unanchored_root_is_empty(ledger: Ledger) -> None:
    assert batch(ledger, batch_root(3)) == (0, 0, 0)


def test_anchor_batch_fails_when_root_already_anchored(ledger: Ledger) -> None:
    root = batch_root(5)
    ledger.act(ledger.orgs["maker"].key, ledger.evidence.functions.anchorBatch(root, 5, ascii32("scan")))
    with reverts("EvidenceLedgerBatchAlreadyAnchored", root):
        ledger.act(ledger.orgs["warehouse"].key, ledger.evidence.functions.anchorBatch(root, 5, ascii32("scan")))


@pytest.mark.parametrize(("root", "count"), [(ZERO, 5), (b"\x01" * 32, 0)], ids=["zero_root", "zero_count"])
def test_anchor_batch_fails_when_batch_empty(ledger: Ledger, root: bytes, count: int) -> None:
    with reverts("EvidenceLedgerEmptyBatch") as caught:
        ledger.act(ledger.orgs["maker"].key, ledger.evidence.functions.anchorBatch(root, count, ascii32("scan")))
    assert caught["error"].args_ == ()


def test_anchor_batch_fails_when_key_unknown(ledger: Ledger) -> None:
    stranger = ledger.spare_keys[0]
    with reverts("ConsortiumRegistryUnknownKey", stranger):
        ledger.act(stranger, ledger.evidence.functions.anchorBatch(batch_root(2), 2, ascii32("scan")))


def test_anchor_batch_fails_when_key_revoked(ledger: Ledger) -> None:
    key = ledger.orgs["maker"].keys[1]
    revocation = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(key))
    with reverts("ConsortiumRegistryKeyRevoked", key, revocation["blockNumber"]):
        ledger.act(key, ledger.evidence.functions.anchorBatch(batch_root(2), 2, ascii32("scan")))


def test_anchor_batch_fails_when_organisation_suspended(ledger: Ledger) -> None:
    maker = ledger.orgs["maker"]
    ledger.act(ledger.operator, ledger.registry.functions.suspendOrganisation(maker.id))
    with reverts("ConsortiumRegistryOrganisationSuspended", maker.id):
        ledger.act(maker.key, ledger.evidence.functions.anchorBatch(batch_root(2), 2, ascii32("scan")))
