"""The forwarder on a live Anvil: what a relayer can and cannot do with requests signed by site keys.

Every authorisation rule of PartLedger and EvidenceLedger is run on both paths by tests/test_part_ledger.py,
tests/test_containment_contract.py and tests/test_evidence_ledger.py (tests.relaykit.on_both_paths), and the
invariant machine of tests/test_invariants.py sends each of its calls directly or relayed at random. Here: the
forwarder's own refusals, each with its exact error — a request tampered with (part id, target, data, signer, gas,
deadline), one signed by another site, a replay, an expired one, a target that does not trust the forwarder — and a
relayer that tries to act without a signature; then a batch of many sites' requests, each acting as its signer.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from partledger.eip712 import ForwardRequest, forward_request_typed_data, recover_forward_request_signer
from partledger.model import PartStatus
from tests.chainkit import reverts
from tests.relaykit import Relay, Signed, dev_keys

pytestmark = pytest.mark.chain

NO_DOC = bytes(32)
S = PartStatus
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture
def relay(ledger) -> Relay:
    return Relay(ledger)


def recovered(relay: Relay, request: ForwardRequest, signature: bytes) -> str:
    """Who the forwarder finds the signer of `request` to be: it hashes the request with its current nonce of the
    request's sender, whatever nonce was signed."""
    current = replace(request, nonce=relay.nonce(request.sender))
    return Account.recover_message(encode_typed_data(full_message=forward_request_typed_data(relay.domain, current)), signature=signature)


def on_chain(ledger, pid: bytes) -> tuple[S, int, int]:
    status, custodian, recipient, *_ = ledger.status(pid)
    return S(status), custodian, recipient


def test_the_ledgers_trust_the_forwarder_fixed_at_deployment_and_no_one_else(ledger, relay):
    forwarder = ledger.manifest.forwarder
    for contract in (ledger.parts, ledger.evidence):
        assert contract.functions.trustedForwarder().call() == forwarder
        assert contract.functions.isTrustedForwarder(forwarder).call()
        assert not contract.functions.isTrustedForwarder(relay.relayer.address).call()
        assert not contract.functions.isTrustedForwarder(ledger.operator).call()
    domain = relay.domain
    assert (domain.name, domain.version, domain.chainId, domain.verifyingContract) == ("PartLedger Forwarder", "1", ledger.manifest.chain_id, forwarder)


def test_a_relayed_call_acts_as_its_signer_and_its_event_names_the_site_key(ledger, relay):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    [pid] = ledger.register(maker, ["RLY-EVENT"], key=maker.keys[1])
    receipt = relay.act(maker.keys[1], ledger.parts.functions.shipParts([pid], warehouse.id, NO_DOC))
    assert (receipt["from"], receipt["to"]) == (relay.relayer.address, ledger.manifest.forwarder)
    (shipped,) = ledger.events(receipt, ledger.parts, "PartsShipped")
    assert (shipped["args"]["from"], shipped["args"]["siteKey"]) == (maker.id, maker.keys[1])
    assert on_chain(ledger, pid) == (S.IN_TRANSIT, maker.id, warehouse.id)


TAMPERING = ["part id", "target", "data", "signer", "gas", "deadline"]


@pytest.mark.parametrize("tampered_field", TAMPERING)
def test_a_request_tampered_with_by_the_relayer_is_refused_with_the_forwarders_error(ledger, relay, tampered_field):
    maker, warehouse, distributor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["distributor"]
    ids = ledger.register(maker, ["RLY-T1", "RLY-T2"])
    p = ledger.parts.functions
    signed = relay.sign(maker.key, p.shipParts([ids[0]], warehouse.id, NO_DOC))
    request = signed.request
    changed = {
        "part id": replace(request, data=bytes.fromhex(p.shipParts([ids[1]], warehouse.id, NO_DOC)._encode_transaction_data()[2:])),
        "target": replace(request, to=ledger.evidence.address),
        "data": replace(request, data=bytes.fromhex(p.shipParts([ids[0]], distributor.id, NO_DOC)._encode_transaction_data()[2:])),
        "signer": replace(request, sender=maker.keys[1]),  # another key of the same organisation
        "gas": replace(request, gas=request.gas + 1),
        "deadline": replace(request, deadline=request.deadline + 1),
    }[tampered_field]
    tampered = Signed(changed, signed.signature)
    claimed_by = recovered(relay, changed, signed.signature)
    assert claimed_by != changed.sender
    nonces = {key: relay.nonce(key) for key in maker.keys}
    with reverts("ERC2771ForwarderInvalidSigner", claimed_by, changed.sender):
        relay.execute(tampered)
    # In an atomic batch it takes the honest requests down with it; in a relayer's (non-atomic) batch it is skipped.
    honest = relay.sign(warehouse.key, p.quarantineParts([keccak(text="none")], NO_DOC))
    with reverts("ERC2771ForwarderInvalidSigner", claimed_by, changed.sender):
        relay.execute_batch([honest, tampered], atomic=True)
    receipt = relay.execute_batch([tampered], atomic=False)
    assert relay.outcomes(receipt) == [] and not receipt["logs"]
    assert [on_chain(ledger, pid) for pid in ids] == [(S.IN_STOCK, maker.id, 0)] * 2
    assert {key: relay.nonce(key) for key in maker.keys} == nonces
    relay.execute(signed)  # the request as signed still goes through
    assert on_chain(ledger, ids[0]) == (S.IN_TRANSIT, maker.id, warehouse.id)


def test_a_request_signed_by_another_site_or_by_the_relayer_is_refused(ledger, relay):
    maker, workshop, warehouse = ledger.orgs["maker"], ledger.orgs["workshop"], ledger.orgs["warehouse"]
    [pid] = ledger.register(maker, ["RLY-OTHER"])
    call = ledger.parts.functions.shipParts([pid], warehouse.id, NO_DOC)
    by_workshop = relay.sign(maker.key, call, signer=dev_keys()[workshop.key])
    with reverts("ERC2771ForwarderInvalidSigner", workshop.key, maker.key):
        relay.execute(by_workshop)
    by_relayer = relay.sign(maker.key, call, signer=relay.relayer)
    with reverts("ERC2771ForwarderInvalidSigner", relay.relayer.address, maker.key):
        relay.execute(by_relayer)
    # Signed by the relayer as itself, the request is valid for the forwarder, and the ledger refuses the relayer.
    as_relayer = relay.sign(relay.relayer.address, call, signer=relay.relayer)
    with reverts("ConsortiumRegistryUnknownKey", relay.relayer.address):
        relay.execute(as_relayer)
    assert on_chain(ledger, pid) == (S.IN_STOCK, maker.id, 0)


def test_a_relayer_cannot_act_for_a_site_by_appending_its_key_to_a_direct_call(ledger, relay):
    """ERC-2771 reads the appended sender only from the trusted forwarder: from anyone else it is ignored calldata."""
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    [pid] = ledger.register(maker, ["RLY-SUFFIX"])
    data = ledger.parts.functions.shipParts([pid], warehouse.id, NO_DOC)._encode_transaction_data() + maker.key[2:].lower()
    spoof = SimpleNamespace(address=ledger.parts.address, _encode_transaction_data=lambda: data)
    with reverts("ConsortiumRegistryUnknownKey", relay.relayer.address):
        relay.send(spoof)
    assert on_chain(ledger, pid) == (S.IN_STOCK, maker.id, 0)


def test_a_replayed_request_is_refused_even_when_the_state_would_allow_it_again(ledger, relay):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    [pid] = ledger.register(maker, ["RLY-REPLAY"])
    signed = relay.sign(maker.key, ledger.parts.functions.shipParts([pid], warehouse.id, NO_DOC))
    relay.execute(signed)
    ledger.act(maker.key, ledger.parts.functions.cancelShipments([pid], NO_DOC))  # back in stock: shipping is allowed again
    with reverts("ERC2771ForwarderInvalidSigner", recovered(relay, signed.request, signed.signature), maker.key):
        relay.execute(signed)
    receipt = relay.execute_batch([signed])
    assert relay.outcomes(receipt) == []
    assert on_chain(ledger, pid) == (S.IN_STOCK, maker.id, 0)


def test_a_request_whose_call_reverts_uses_its_nonce_and_changes_nothing(ledger, relay):
    """In a relayer's batch a forwarded call that reverts is reported (success false), spends its nonce like a
    reverted transaction, and cannot be replayed once its call would pass."""
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ghost = keccak(text="RLY-not-yet")
    signed = relay.sign(maker.key, ledger.parts.functions.quarantineParts([ghost], NO_DOC))
    assert relay.forwarded_revert(maker.key, ledger.parts.address, signed.request.data).name == "PartLedgerUnknownPart"
    receipt = relay.execute_batch([signed])
    assert relay.outcomes(receipt) == [(maker.key, signed.request.nonce, False)]
    assert not ledger.events(receipt, ledger.parts, "PartsQuarantined")
    assert relay.nonce(maker.key) == signed.request.nonce + 1
    with reverts("ERC2771ForwarderInvalidSigner"):
        relay.execute(signed)
    assert warehouse  # the part never existed; nothing else moved


def test_an_expired_request_is_refused(ledger, relay):
    maker = ledger.orgs["maker"]
    [pid] = ledger.register(maker, ["RLY-LATE"])
    now = ledger.w3.eth.get_block("latest")["timestamp"]
    late = relay.sign(maker.key, ledger.parts.functions.quarantineParts([pid], NO_DOC), deadline=now - 1)
    with reverts("ERC2771ForwarderExpiredRequest", now - 1):
        relay.execute(late)
    assert relay.outcomes(relay.execute_batch([late])) == []
    assert on_chain(ledger, pid) == (S.IN_STOCK, maker.id, 0) and relay.nonce(maker.key) == late.request.nonce


def test_a_request_to_a_contract_that_does_not_trust_the_forwarder_is_refused(ledger, relay):
    maker = ledger.orgs["maker"]
    signed = relay.sign(maker.key, ledger.registry.functions.revokeSiteKey(maker.keys[1]), gas=200_000)
    with reverts("ERC2771UntrustfulTarget", ledger.registry.address, ledger.manifest.forwarder):
        relay.execute(signed)
    assert ledger.registry.functions.siteKey(maker.keys[1]).call()[3] == 0  # not revoked


def test_one_batch_carries_many_sites_each_acting_as_itself_and_a_refused_call_alone_fails(ledger, relay):
    maker, warehouse, workshop, distributor = (ledger.orgs[name] for name in ("maker", "warehouse", "workshop", "distributor"))
    p = ledger.parts.functions
    ids = ledger.register(maker, [f"RLY-B{index}" for index in range(4)])
    ledger.act(maker.key, p.shipParts(ids[:2], warehouse.id, NO_DOC))
    ledger.act(maker.key, p.shipParts(ids[2:3], workshop.id, NO_DOC))
    batch = [
        relay.sign(warehouse.key, p.receiveParts(ids[:2], NO_DOC)),
        relay.sign(workshop.key, p.receiveParts(ids[2:3], NO_DOC)),
        relay.sign(distributor.key, p.receiveParts(ids[2:3], NO_DOC)),  # not addressed to it: refused alone
        relay.sign(maker.keys[1], p.quarantineParts(ids[3:], NO_DOC)),
    ]
    receipt = relay.execute_batch(batch)
    assert relay.outcomes(receipt) == [(signed.request.sender, signed.request.nonce, ok) for signed, ok in zip(batch, (True, True, False, True))]
    by_event = {event["args"]["siteKey"]: event["args"]["orgId"] for name in ("PartsReceived", "PartsQuarantined") for event in ledger.events(receipt, ledger.parts, name)}
    assert by_event == {warehouse.key: warehouse.id, workshop.key: workshop.id, maker.keys[1]: maker.id}
    assert [on_chain(ledger, pid)[:2] for pid in ids] == [(S.IN_STOCK, warehouse.id)] * 2 + [(S.IN_STOCK, workshop.id), (S.QUARANTINED, maker.id)]
    refused = relay.forwarded_revert(distributor.key, ledger.parts.address, batch[2].request.data, receipt["blockNumber"] - 1)
    assert (refused.name, refused.args_) == ("PartLedgerNotRecipient", (ids[2], workshop.id, distributor.id))


def test_a_high_s_twin_of_a_signature_is_refused_on_chain_and_by_the_services_check_alike(ledger, relay):
    """ECDSA malleability: (r, n - s, v ^ 1) recovers to the same key, and the forwarder (OpenZeppelin's tryRecover)
    refuses it; partledger.eip712.recover_forward_request_signer, which the relay's acceptance uses, too."""
    maker = ledger.orgs["maker"]
    [pid] = ledger.register(maker, ["RLY-HIGH-S"])
    signed = relay.sign(maker.key, ledger.parts.functions.quarantineParts([pid], NO_DOC))
    r, s, v = signed.signature[:32], int.from_bytes(signed.signature[32:64], "big"), signed.signature[64]
    twin = Signed(signed.request, r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v]))
    assert recover_forward_request_signer(relay.domain, signed.request, signed.signature) == maker.key
    assert recover_forward_request_signer(relay.domain, twin.request, twin.signature) is None
    with reverts("ERC2771ForwarderInvalidSigner", "0x0000000000000000000000000000000000000000", maker.key):
        relay.execute(twin)
    relay.execute(signed)
