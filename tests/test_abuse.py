"""Members abusing the write path, each refusal asserted exactly: the HTTP status and error code when the service's
pre-check sees it, and the contract's custom error and arguments when only the chain can (directly, and through the
API as a command that ends rejected). Anvil + SQLite; the authorisation matrix and an API key acting for another
organisation's parts and sites are in tests/test_write_authz.py.

A captured request replayed without an Idempotency-Key is a new request: the API does not dedupe by body (two equal
shipments a month apart are legitimate). It has no second effect all the same, because every write is a transition
that cannot start from the state it leaves: the replay is refused at once by the pre-check once the first is indexed,
or by the contract while the first is still in flight.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from sqlalchemy import select
from web3.exceptions import ContractLogicError

from ledger_service.tables import ChainTransaction, Command, DocumentProposal
from partledger.chain import revert_of
from partledger.db import make_engine
from partledger.eip712 import Attestation, Eip712Domain, attestation_typed_data
from partledger.ids import ascii32, part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, Ledger, reverts
from tests.labelkit import dev_signer
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, wait_command
from tests.test_write_api import NO_DOC, VINS, accepted, caught_up, count_rows, hexid, held_by, on_chain, post, refused, serve, submitting
from wallets.signer import LocalSigner

S = PartStatus
T_CMD, T_TX = Command.__table__, ChainTransaction.__table__


@pytest.fixture
def stack(ledger: Ledger, tmp_path) -> Stack:
    return prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")


def contract_error(view: dict[str, Any]) -> tuple[str, list[Any]]:
    assert view["status"] == "rejected", view
    [error] = view["errors"]
    return error["error"], error["args"]


# --- custody --------------------------------------------------------------------------------------------------------


def test_receiving_a_shipment_addressed_to_someone_else_is_refused(stack, ledger):
    maker, warehouse, distributor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["distributor"]
    fn = ledger.parts.functions
    pid, raced = held_by(ledger, "maker", ["AB-RCV-1", "AB-RCV-2"])
    ledger.act(maker.key, fn.shipParts([pid], warehouse.id, NO_DOC))
    ledger.act(maker.key, fn.shipParts([raced], distributor.id, NO_DOC))
    with serve(stack, submitter=False) as client:
        error = refused(post(stack, "distributor", "/v1/parts/receive", {"part_ids": [hexid(pid)]}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pid), "reason": f"recipient is organisation {warehouse.id}"}]
        with reverts("PartLedgerNotRecipient", pid, warehouse.id, distributor.id):
            ledger.act(distributor.key, fn.receiveParts([pid], NO_DOC))
        # Accepted while addressed to the distributor, redirected to the warehouse before it is mined.
        command = accepted(post(stack, "distributor", "/v1/parts/receive", {"part_ids": [hexid(raced)]}))
        ledger.act(maker.key, fn.cancelShipments([raced], NO_DOC))
        ledger.act(maker.key, fn.shipParts([raced], warehouse.id, NO_DOC))
        with submitting(client):
            view = wait_command(stack, "distributor", command)
    assert contract_error(view) == ("PartLedgerNotRecipient", [hexid(raced), warehouse.id, distributor.id])
    assert view["transactions"] == []
    assert [on_chain(ledger, p) for p in (pid, raced)] == [(S.IN_TRANSIT, maker.id, warehouse.id)] * 2


# --- registration ---------------------------------------------------------------------------------------------------


def test_re_registering_a_scrapped_serial_is_refused_by_its_maker_and_by_a_cloner(stack, ledger):
    maker, maker2 = ledger.orgs["maker"], ledger.orgs["maker2"]
    fn = ledger.parts.functions
    [pid] = held_by(ledger, "maker", ["AB-SCR-1"], lot="L-AB")
    ledger.act(maker.key, fn.scrapParts([pid], NO_DOC))
    body = {"gtin": GTIN_A, "lot": "L-AB2", "serials": ["AB-SCR-1"]}
    scrapped = [{"part_id": hexid(pid), "manufacturer": maker.id, "status": "scrapped"}]
    with serve(stack, submitter=False) as client:
        assert refused(post(stack, "maker", "/v1/parts/register", body), 409, "already_registered")["details"] == scrapped
        assert refused(post(stack, "maker2", "/v1/parts/register", body), 409, "already_registered")["details"] == scrapped
        for key in (maker.key, maker2.key):
            with reverts("PartLedgerPartAlreadyRegistered", pid):
                ledger.act(key, fn.registerParts(int(GTIN_A), ascii32("L-AB2"), [ascii32("AB-SCR-1")]))
        # Registered and scrapped on chain between the 202 and the submitter.
        command = accepted(post(stack, "maker", "/v1/parts/register", body | {"serials": ["AB-SCR-2"]}))
        [raced] = ledger.register(maker, ["AB-SCR-2"], lot="L-AB")
        ledger.act(maker.key, fn.scrapParts([raced], NO_DOC))
        with submitting(client):
            view = wait_command(stack, "maker", command)
    assert contract_error(view) == ("PartLedgerPartAlreadyRegistered", [hexid(raced)])
    assert [on_chain(ledger, p) for p in (pid, raced)] == [(S.SCRAPPED, maker.id, 0)] * 2
    assert ledger.status(pid)[3] == ledger.lot_number(maker, "L-AB")  # still its first lot


# --- recalls --------------------------------------------------------------------------------------------------------


def test_installing_a_recalled_part_is_refused(stack, ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    fn = ledger.parts.functions
    [pid] = held_by(ledger, "workshop", ["AB-RCL-1"], lot="L-RCL")
    [raced] = held_by(ledger, "workshop", ["AB-RCL-2"], lot="L-RCL2")
    lot, lot2 = ledger.lot_number(maker, "L-RCL"), ledger.lot_number(maker, "L-RCL2")
    ledger.act(maker.key, fn.recallLot(lot, keccak(text="notice")))
    with serve(stack, submitter=False) as client:
        error = refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pid), "vin": VINS[0]}]}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pid), "reason": "its lot is recalled"}]
        with reverts("PartLedgerPartRecalled", pid, lot):
            ledger.act(workshop.key, fn.installParts([pid], [keccak(text="vin")], NO_DOC))
        command = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(raced), "vin": VINS[1]}]}))
        ledger.act(maker.key, fn.recallLot(lot2, keccak(text="notice 2")))
        with submitting(client):
            view = wait_command(stack, "workshop", command)
    assert contract_error(view) == ("PartLedgerPartRecalled", [hexid(raced), lot2])
    assert [on_chain(ledger, p) for p in (pid, raced)] == [(S.IN_STOCK, workshop.id, 0)] * 2


def test_the_pre_check_refuses_at_once_what_the_contract_would_refuse_after_the_202(stack, ledger):
    """Shipments the contract refuses are refused with a stable code before anything is written."""
    maker, auditor, warehouse = ledger.orgs["maker"], ledger.orgs["auditor"], ledger.orgs["warehouse"]
    fn = ledger.parts.functions
    pid, recalled = held_by(ledger, "maker", ["AB-SHIP-1"]) + held_by(ledger, "warehouse", ["AB-SHIP-2"], lot="L-SHR")
    lot = ledger.lot_number(maker, "L-SHR")
    ledger.act(maker.key, fn.recallLot(lot, keccak(text="notice")))
    cases = [  # (who, to, part, HTTP status, code, the contract's error)
        ("maker", maker.id, pid, 422, "shipment_to_self", ("PartLedgerShipmentToSelf", maker.id)),
        ("maker", auditor.id, pid, 422, "recipient_cannot_hold_parts", ("PartLedgerRecipientCannotHoldParts", auditor.id)),
        ("maker", 999, pid, 422, "unknown_recipient", ("ConsortiumRegistryUnknownOrganisation", 999)),
        ("warehouse", ledger.orgs["distributor"].id, recalled, 409, "invalid_state", ("PartLedgerPartRecalled", recalled, lot)),
    ]
    with serve(stack):
        for who, to, part, status, code, (error, *args) in cases:
            refused(post(stack, who, "/v1/parts/ship", {"part_ids": [hexid(part)], "to_org": to}), status, code)
            with reverts(error, *args):
                ledger.act(ledger.orgs[who].key, fn.shipParts([part], to, NO_DOC))
        error = refused(post(stack, "warehouse", "/v1/parts/ship", {"part_ids": [hexid(recalled)], "to_org": ledger.orgs["distributor"].id}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(recalled), "reason": "its lot is recalled: it may go back to its manufacturer or to a recycler only"}]
        # Back to its manufacturer is allowed.
        view = wait_command(stack, "warehouse", accepted(post(stack, "warehouse", "/v1/parts/ship", {"part_ids": [hexid(recalled)], "to_org": maker.id})))
        assert view["status"] == "confirmed"
    assert on_chain(ledger, pid) == (S.IN_STOCK, maker.id, 0)
    assert on_chain(ledger, recalled) == (S.IN_TRANSIT, warehouse.id, maker.id)
    assert count_rows(make_engine(stack.service_db_url), T_CMD) == 1


# --- trade evidence -------------------------------------------------------------------------------------------------


def _attestation(message: dict[str, Any]) -> Attestation:
    return Attestation(**{key: bytes.fromhex(value[2:]) if isinstance(value, str) else value for key, value in message.items()})


def _recovered(domain: Eip712Domain, attestation: Attestation, signature: bytes) -> str:
    return Account.recover_message(encode_typed_data(full_message=attestation_typed_data(domain, attestation)), signature=signature)


def test_another_partys_evidence_signature_cannot_be_reused_for_another_document_chain_or_contract(stack, ledger):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    doc = keccak(text="invoice 2026-0042")
    with serve(stack) as client:
        proposal = client.post(
            "/v1/documents/proposals", headers=stack.headers("maker"),
            json={"doc_hash": hexid(doc), "doc_type": "invoice", "counterparty": distributor.id, "valid_for": 3600},
        ).json()  # fmt: skip
        domain = Eip712Domain(**proposal["domain"])
        attestation = _attestation(proposal["attestation"])
        issuer_signature = bytes.fromhex(proposal["issuer_signature"][2:])
        signer = dev_signer(distributor.key)  # a site key of the distributor, outside the service
        other_doc = replace(attestation, docHash=keccak(text="invoice 2026-0043"))
        other_chain = replace(domain, chainId=1)
        other_contract = replace(domain, verifyingContract=ledger.manifest.address("PartLedger"))
        forged = {
            "the issuer's own signature": issuer_signature,
            "the distributor's, for another document": signer.sign_typed_data(attestation_typed_data(domain, other_doc)),
            "the distributor's, for another chain": signer.sign_typed_data(attestation_typed_data(other_chain, attestation)),
            "the distributor's, for another contract": signer.sign_typed_data(attestation_typed_data(other_contract, attestation)),
        }
        path = f"/v1/documents/proposals/{proposal['proposal_id']}/countersign"
        for case, signature in forged.items():
            response = client.post(path, headers=stack.headers("distributor"), json={"signature": hexid(signature)})
            assert refused(response, 422, "invalid_signature")["message"] == "the signature is not by an active site key of the counterparty", case
        # Another organisation cannot countersign, nor can the issuer; an extra body field does not make one someone else.
        refused(client.post(path, headers=stack.headers("workshop"), json={}), 404, "unknown_proposal")
        refused(client.post(path, headers=stack.headers("maker"), json={}), 403, "not_counterparty")
        refused(client.post(path, headers=stack.headers("maker"), json={"org_id": distributor.id}), 422, "invalid_request")
        assert client.get(f"/v1/documents/proposals/{proposal['proposal_id']}", headers=stack.headers("maker")).json()["status"] == "awaiting_countersignature"
        assert count_rows(make_engine(stack.service_db_url), T_CMD) == 0

        good = signer.sign_typed_data(attestation_typed_data(domain, attestation))
        view = wait_command(stack, "distributor", accepted(client.post(path, headers=stack.headers("distributor"), json={"signature": hexid(good)})))
        assert view["status"] == "confirmed"

    # Straight to the contract, as the distributor with its own key: the maker's signature on the anchored invoice,
    # and the maker's key signing for another chain or contract, recover to strangers.
    maker_signer = dev_signer(maker.key)
    fresh = replace(other_doc, nonce=keccak(text="fresh nonce"))
    attempts = {
        "another document": (fresh, issuer_signature),
        "another chain": (fresh, maker_signer.sign_typed_data(attestation_typed_data(other_chain, fresh))),
        "another contract": (fresh, maker_signer.sign_typed_data(attestation_typed_data(other_contract, fresh))),
    }
    for case, (anchored, stolen) in attempts.items():
        own = signer.sign_typed_data(attestation_typed_data(domain, anchored))
        with reverts("EvidenceLedgerSignerNotParty", _recovered(domain, anchored, stolen), maker.id):
            ledger.act(distributor.key, ledger.evidence.functions.anchorDocument(anchored.as_tuple(), stolen, own))
    # The anchored invoice replayed as it is.
    with reverts("EvidenceLedgerDocumentAlreadyAnchored", doc):
        ledger.act(distributor.key, ledger.evidence.functions.anchorDocument(attestation.as_tuple(), issuer_signature, good))
    assert ledger.evidence.functions.document(other_doc.docHash).call()[0] == 0
    with make_engine(stack.service_db_url).connect() as conn:
        [row] = conn.execute(select(DocumentProposal.__table__)).mappings().all()
    assert bytes(row["counterparty_signature"]) == good and row["counterparty_signer"] == distributor.key


# --- a compromised site key -----------------------------------------------------------------------------------------


def test_a_site_key_revoked_after_compromise_changes_nothing_raw_or_through_the_api(stack, ledger):
    warehouse = ledger.orgs["warehouse"]
    fn = ledger.parts.functions
    key = stack.site_keys["warehouse"]
    stolen = LocalSigner.from_keystore(stack.keys_dir / "warehouse" / "service-site.json", PASSPHRASE)
    pid, queued = held_by(ledger, "warehouse", ["AB-KEY-1", "AB-KEY-2"])
    with serve(stack, submitter=False) as client:
        command = accepted(post(stack, "warehouse", "/v1/parts/scrap", {"part_ids": [hexid(queued)]}))  # accepted while the key is valid
        revocation = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(key))
        revoked_block = revocation["blockNumber"]

        # A raw transaction signed with the revoked key, straight to the node.
        call = {"from": key, "to": ledger.parts.address, "data": ledger.parts.encode_abi("scrapParts", args=[[pid], NO_DOC])}
        with pytest.raises(ContractLogicError) as simulated:
            ledger.w3.eth.estimate_gas(call)
        assert (revert_of(simulated.value).name, revert_of(simulated.value).args_) == ("ConsortiumRegistryKeyRevoked", (key, revoked_block))
        nonce = ledger.w3.eth.get_transaction_count(key)
        raw = stolen.sign_transaction(call | {"gas": 200_000, "gasPrice": 0, "nonce": nonce, "chainId": ledger.manifest.chain_id})
        receipt = ledger.w3.eth.wait_for_transaction_receipt(ledger.w3.eth.send_raw_transaction(raw.raw_transaction), poll_latency=0.01)
        assert (receipt["status"], receipt["logs"]) == (0, [])
        with pytest.raises(ContractLogicError) as replayed:
            ledger.w3.eth.call(call, receipt["blockNumber"])
        assert revert_of(replayed.value).args_ == (key, revoked_block)

        # Through the API: once the mirror has the revocation, the organisation has no key to sign with.
        caught_up(stack)
        for site in (None, key, "service-site"):
            body = {"part_ids": [hexid(pid)]} | ({"site": site} if site else {})
            refused(post(stack, "warehouse", "/v1/parts/scrap", body), 403, "no_site_key")
        # The command accepted before the revocation ends rejected, with the chain's error and the reason.
        with submitting(client):
            view = wait_command(stack, "warehouse", command)
    assert contract_error(view) == ("ConsortiumRegistryKeyRevoked", [key, revoked_block])
    assert "holds no other active key of that organisation for site 'service-site'" in view["errors"][0]["message"]
    assert [on_chain(ledger, p) for p in (pid, queued)] == [(S.IN_STOCK, warehouse.id, 0)] * 2
    assert ledger.parts.events.PartsScrapped.get_logs(from_block=revoked_block) == []
    assert count_rows(make_engine(stack.service_db_url), T_TX) == 0  # the service signed nothing with it


# --- replays --------------------------------------------------------------------------------------------------------


def test_a_replayed_request_has_no_second_effect_with_or_without_its_idempotency_key(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    [pid] = held_by(ledger, "maker", ["AB-RPL-1"])
    register = {"gtin": GTIN_B, "lot": "L-RPL", "serials": ["AB-RPL-2", "AB-RPL-3"]}
    ship = {"part_ids": [hexid(pid)], "to_org": warehouse.id}
    batch = {"root": hexid(keccak(text="replayed batch")), "record_count": 3, "kind": "scan"}
    lot = ledger.lot_number(maker, "L-W")
    recall = {"lot": lot, "notice_hash": hexid(keccak(text="replayed recall"))}
    service = make_engine(stack.service_db_url)
    with serve(stack) as client:
        # Same Idempotency-Key, same body: the same command, written once, whenever the replay comes.
        first = post(stack, "maker", "/v1/parts/register", register, **{"Idempotency-Key": "capture-1"})
        command = accepted(first)
        again = post(stack, "maker", "/v1/parts/register", register, **{"Idempotency-Key": "capture-1"})
        assert again.status_code == 202 and again.json() == first.json() | {"idempotent_replay": True}
        assert wait_command(stack, "maker", command)["status"] == "confirmed"
        later = post(stack, "maker", "/v1/parts/register", register, **{"Idempotency-Key": "capture-1"})
        assert later.status_code == 202 and later.json()["command_id"] == command
        # Same key, another body or another endpoint: refused with a stable code.
        refused(post(stack, "maker", "/v1/parts/register", register | {"serials": ["AB-RPL-4"]}, **{"Idempotency-Key": "capture-1"}), 422, "idempotency_key_reused")
        refused(post(stack, "maker", "/v1/parts/ship", ship, **{"Idempotency-Key": "capture-1"}), 422, "idempotency_key_reused")
        assert count_rows(service, T_CMD) == 1 and count_rows(service, T_TX) == 1

        # Without a key, each replay is a new request that the first one's effect refuses.
        for path, body, owner in (("/v1/parts/ship", ship, "maker"), ("/v1/batches", batch, "warehouse"), ("/v1/lots/recall", recall, "maker")):
            assert wait_command(stack, owner, accepted(post(stack, owner, path, body)))["status"] == "confirmed"
        for path, body, owner, status, code in (
            ("/v1/parts/register", register, "maker", 409, "already_registered"),
            ("/v1/parts/ship", ship, "maker", 409, "invalid_state"),
            ("/v1/batches", batch, "warehouse", 409, "batch_anchored"),
            ("/v1/lots/recall", recall, "maker", 409, "lot_recalled"),
        ):
            refused(post(stack, owner, path, body), status, code)
        assert count_rows(service, T_CMD) == 4

    # Replayed while the first is still in flight: both accepted, the contract lets one through.
    raced_register = {"gtin": GTIN_B, "lot": "L-RPL", "serials": ["AB-RPL-5"]}
    raced_batch = batch | {"root": hexid(keccak(text="raced batch"))}
    with serve(stack, submitter=False) as client:
        registers = [accepted(post(stack, "maker", "/v1/parts/register", raced_register)) for _ in range(2)]
        batches = [accepted(post(stack, "warehouse", "/v1/batches", raced_batch)) for _ in range(2)]
        with submitting(client):
            views = [wait_command(stack, "maker", c) for c in registers] + [wait_command(stack, "warehouse", c) for c in batches]
    outcomes = sorted((view["kind"], view["status"], tuple(view["errors"][0]["args"]) if view["errors"] else None, view["errors"][0]["error"] if view["errors"] else None) for view in views)
    assert outcomes == sorted([
        ("register", "confirmed", None, None), ("register", "rejected", (hexid(part_id(GTIN_B, "AB-RPL-5")),), "PartLedgerPartAlreadyRegistered"),
        ("anchor_batch", "confirmed", None, None), ("anchor_batch", "rejected", (raced_batch["root"],), "EvidenceLedgerBatchAlreadyAnchored"),
    ])  # fmt: skip
    assert on_chain(ledger, pid) == (S.IN_TRANSIT, maker.id, warehouse.id)
    registered = ledger.parts.events.PartsRegistered.get_logs(from_block=0)
    assert sorted(s.rstrip(b"\0").decode() for log in registered for s in log["args"]["serials"] if s.startswith(b"AB-RPL")) == ["AB-RPL-1", "AB-RPL-2", "AB-RPL-3", "AB-RPL-5"]
