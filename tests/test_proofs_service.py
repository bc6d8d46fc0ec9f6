"""Auditor proofs through the service: bundles by document, event and batched record for whoever may see them,
the document check with a file and its salt, and the audit log of auditor reads, anchored in batches and provable."""

from __future__ import annotations

import json

from typing import Any

import pytest

from partledger.documents import new_salt, salted_document_hash
from partledger.ids import part_id
from partledger.proofs import verifier as v
from tests.chainkit import GTIN_A, Ledger
from tests.proofkit import INVOICE_PDF
from tests.servicekit import Stack, prepare_stack, running_service, wait_command

pytestmark = pytest.mark.chain


def trusted(bundle: dict[str, Any]) -> v.TrustAnchors:
    return v.TrustAnchors(blocks={bundle["block"]["number"]: bytes.fromhex(bundle["block"]["hash"][2:])})


def anchor_through_api(stack: Stack, content: bytes, salt: bytes) -> dict[str, Any]:
    client = stack.client
    assert client is not None
    doc_hash = "0x" + salted_document_hash(content, salt).hex()
    proposal = client.post("/v1/documents/proposals", headers=stack.headers("maker"), json={"doc_hash": doc_hash, "doc_type": "invoice", "counterparty": stack.ledger.orgs["distributor"].id})
    assert proposal.status_code == 201, proposal.text
    signed = client.post(f"/v1/documents/proposals/{proposal.json()['proposal_id']}/countersign", headers=stack.headers("distributor"), json={})
    view = wait_command(stack, "distributor", signed.json()["command_id"])
    assert view["status"] == "confirmed", view
    return {"doc_hash": doc_hash, "block": view["block"]}


def test_proofs_the_document_check_and_the_audit_log_through_the_service(ledger: Ledger, tmp_path):
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    salt = new_salt()
    with running_service(stack) as client:
        anchored = anchor_through_api(stack, INVOICE_PDF, salt)
        doc_hash = anchored["doc_hash"]

        # a party gets the bundle; it verifies offline; an outsider is told nothing
        reply = client.get(f"/v1/proofs/documents/{doc_hash}", headers=stack.headers("maker"))
        assert reply.status_code == 200, reply.text
        bundle = reply.json()
        assert bundle["subject"] == "document" and "document" not in bundle and bundle["block"]["number"] == anchored["block"]
        assert v.verify_bundle(bundle, anchors=trusted(bundle)).ok
        outsider = client.get(f"/v1/proofs/documents/{doc_hash}", headers=stack.headers("warehouse"))
        assert outsider.status_code == 404 and outsider.json()["error"]["code"] == "unknown_document"

        # the auditor checks the file with its salt: the bundle comes back with the salt, verified by the service
        check = client.post("/v1/evidence/verify", content=INVOICE_PDF, headers=stack.headers("auditor", **{"X-Document-Salt": "0x" + salt.hex()}))
        assert check.status_code == 200, check.text
        answer = check.json()
        assert answer["doc_hash"] == doc_hash and answer["verdict"]["valid"] and answer["verdict"]["failed"] == []
        assert v.verify_bundle(answer["bundle"], document=INVOICE_PDF, anchors=trusted(answer["bundle"])).ok
        other = client.post("/v1/evidence/verify", content=INVOICE_PDF + b"\n", headers=stack.headers("auditor", **{"X-Document-Salt": "0x" + salt.hex()}))
        assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_document"
        no_salt = client.post("/v1/evidence/verify", content=INVOICE_PDF, headers=stack.headers("auditor"))
        assert no_salt.status_code == 422 and no_salt.json()["error"]["code"] == "salt_required"

        # a lifecycle event: its organisations and auditors get the bundle, nobody else
        registered = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-PROOF", "serials": ["Q1"]})
        wait_command(stack, "maker", registered.json()["command_id"])
        pid = "0x" + part_id(GTIN_A, "Q1").hex()
        shipped = client.post("/v1/parts/ship", headers=stack.headers("maker"), json={"part_ids": [pid], "to_org": ledger.orgs["warehouse"].id})
        wait_command(stack, "maker", shipped.json()["command_id"])
        event = client.get(f"/v1/parts/{pid}", headers=stack.headers("warehouse")).json()["history"][-1]
        path = f"/v1/proofs/events/{event['tx_hash']}/{event['log_index']}"
        for org in ("warehouse", "auditor"):
            reply = client.get(path, headers=stack.headers(org))
            assert reply.status_code == 200, reply.text
            assert reply.json()["event"]["name"] == "PartsShipped" and v.verify_bundle(reply.json(), anchors=trusted(reply.json())).ok
        assert client.get(path, headers=stack.headers("distributor")).status_code == 404

        # every auditor read was logged: who, what, when; others may not read the log
        log = client.get("/v1/audit/log", headers=stack.headers("auditor"))
        assert log.status_code == 200
        entries = log.json()["items"]
        targets = [(e["method"], e["target"], e["status"]) for e in entries]
        assert ("POST", "/v1/evidence/verify", 200) in targets and ("GET", path, 200) in targets
        assert all(e["org_id"] == ledger.orgs["auditor"].id and e["at"] > 0 and e["key_id"] for e in entries)
        assert not any("/v1/proofs/documents" in t for _, t, _ in targets)  # the maker's read is not an auditor read
        assert client.get("/v1/audit/log", headers=stack.headers("maker")).status_code == 403

        # the log is anchored in a batch; an entry's proof bundle is a batched record that verifies offline
        submitted = client.post("/v1/audit/anchor", headers=stack.headers("auditor")).json()["submitted"]
        assert len(submitted) == 1 and submitted[0]["entries"] >= len(entries)
        assert wait_command(stack, "auditor", submitted[0]["command_id"])["status"] == "confirmed"
        entry = next(e for e in entries if e["target"] == "/v1/evidence/verify")
        reply = client.get(f"/v1/audit/log/{entry['id']}/proof", headers=stack.headers("auditor"))
        assert reply.status_code == 200, reply.text
        proof = reply.json()
        assert proof["subject"] == "batch-record" and proof["event"]["args"]["root"] == submitted[0]["root"]
        assert proof["batchRecord"]["value"][:6] == [entry["id"], entry["org_id"], entry["key_id"], "POST", "/v1/evidence/verify", 200]
        verdict = v.verify_bundle(proof, anchors=trusted(proof))
        assert verdict.ok, verdict.checks
        assert any(label == "site key" and "auditor" in value for label, value in verdict.facts)

        batch = client.get(f"/v1/proofs/batches/{submitted[0]['root']}", headers=stack.headers("regulator"))
        assert batch.status_code == 200 and batch.json()["subject"] == "batch" and v.verify_bundle(batch.json(), anchors=trusted(batch.json())).ok
        assert client.get(f"/v1/proofs/batches/{submitted[0]['root']}", headers=stack.headers("maker")).status_code == 404

        # a record that is not in the batch is refused
        wrong = {"types": proof["batchRecord"]["types"], "value": [*proof["batchRecord"]["value"][:-1], 0], "proof": proof["batchRecord"]["proof"]}
        refused = client.post(f"/v1/proofs/batches/{submitted[0]['root']}/records", json=wrong, headers=stack.headers("auditor"))
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "record_not_in_batch"
        # a record that cannot be encoded is a 422 invalid_record: a value too many (found by the API fuzzer as a 500),
        # a string no UTF-8 holds (JSON's lone surrogate), a type the verifier does not take
        types, value = proof["batchRecord"]["types"], proof["batchRecord"]["value"]
        string_at = types.index("string")
        for kinds, values in (
            (types, [*value, 0]),
            (types[:1], value),
            (types, [*value[:string_at], "\ud883", *value[string_at + 1 :]]),
            (["uint7", *types[1:]], value),
        ):
            body = json.dumps({"types": kinds, "value": values, "proof": proof["batchRecord"]["proof"]})  # escaped as JSON escapes it: httpx would not send the surrogate
            refused = client.post(f"/v1/proofs/batches/{submitted[0]['root']}/records", content=body, headers=stack.headers("auditor") | {"content-type": "application/json"})
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_record", refused.text


def test_an_unlogged_auditor_read_is_refused(ledger: Ledger, tmp_path, monkeypatch):
    from ledger_service.audit import AuditLog

    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    with running_service(stack, submitter=False) as client:
        assert client.get("/v1/organisations", headers=stack.headers("auditor")).status_code == 200

        def broken(*_: Any, **__: Any) -> int:
            raise OSError("disk full")

        monkeypatch.setattr(AuditLog, "record", broken)
        refused = client.get("/v1/organisations", headers=stack.headers("auditor"))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_log_unavailable"
        assert client.get("/v1/organisations", headers=stack.headers("maker")).status_code == 200  # not an auditor read
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/proofs/documents/{doc_hash}", "/v1/evidence/verify", "/v1/audit/log/{entry_id}/proof"} <= set(paths)
