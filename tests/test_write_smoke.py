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
