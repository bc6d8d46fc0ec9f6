"""The write path end to end, briefly: register, ship, receive through the API, and a refusal by the contract."""

from partledger.ids import part_id
from tests.chainkit import GTIN_A
from tests.servicekit import prepare_stack, running_service, wait_command


def test_register_ship_receive_through_the_api(ledger, db_url, tmp_path):
    stack = prepare_stack(ledger, tmp_path, db_url, f"sqlite:///{tmp_path / 'service.db'}")
    with running_service(stack) as client:
        accepted = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-API", "serials": ["S1", "S2"]})
        assert accepted.status_code == 202, accepted.text
        view = wait_command(stack, "maker", accepted.json()["command_id"])
        assert view["status"] == "confirmed" and view["transactions"][0]["block"] == view["block"]
        ids = ["0x" + part_id(GTIN_A, s).hex() for s in ("S1", "S2")]
        shipped = client.post("/v1/parts/ship", headers=stack.headers("maker"), json={"part_ids": ids, "to_org": ledger.orgs["warehouse"].id})
        assert wait_command(stack, "maker", shipped.json()["command_id"])["status"] == "confirmed"
        received = client.post("/v1/parts/receive", headers=stack.headers("warehouse"), json={"part_ids": ids})
        assert wait_command(stack, "warehouse", received.json()["command_id"])["status"] == "confirmed"
        part = client.get(f"/v1/parts/{ids[0]}", headers=stack.headers("warehouse")).json()["part"]
        assert part["custodian"]["id"] == ledger.orgs["warehouse"].id and part["status"] == "in_stock"
        refused = client.post("/v1/parts/ship", headers=stack.headers("maker"), json={"part_ids": ids, "to_org": 2})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state"


def test_document_proposed_by_one_party_countersigned_by_the_other_is_anchored(ledger, tmp_path):
    from eth_utils import keccak

    from partledger.documents import new_salt, salted_document_hash

    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    doc_hash = "0x" + salted_document_hash(b"%PDF-1.7 invoice 2026-0042", new_salt()).hex()
    with running_service(stack) as client:
        proposal = client.post("/v1/documents/proposals", headers=stack.headers("maker"), json={"doc_hash": doc_hash, "doc_type": "invoice", "counterparty": ledger.orgs["distributor"].id})
        assert proposal.status_code == 201, proposal.text
        proposal_id = proposal.json()["proposal_id"]
        assert proposal.json()["status"] == "awaiting_countersignature"
        wrong = client.post(f"/v1/documents/proposals/{proposal_id}/countersign", headers=stack.headers("warehouse"), json={})
        assert wrong.status_code == 404
        signed = client.post(f"/v1/documents/proposals/{proposal_id}/countersign", headers=stack.headers("distributor"), json={})
        assert signed.status_code == 202, signed.text
        view = wait_command(stack, "distributor", signed.json()["command_id"])
        assert view["status"] == "confirmed", view
        documents = client.get("/v1/evidence", headers=stack.headers("auditor"), params={"doc_hash": doc_hash}).json()["items"]
        assert [d["doc_type"] for d in documents] == ["invoice"]
        assert documents[0]["issuer"]["id"] == ledger.orgs["maker"].id and documents[0]["counterparty_signer"] == stack.site_keys["distributor"]


def test_json_nested_too_deeply_is_a_4xx_on_every_endpoint_never_a_crash(ledger, tmp_path):
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    body = b"[" * 100_000 + b"]" * 100_000
    with running_service(stack) as client:
        for path in ("/v1/documents/proposals", "/v1/documents/proposals/x/countersign", "/v1/parts/ship", "/v1/batches"):
            response = client.post(path, headers={**stack.headers("maker"), "Content-Type": "application/json"}, content=body)
            assert 400 <= response.status_code < 500, (path, response.status_code)
        assert client.get("/v1/health").status_code == 200
