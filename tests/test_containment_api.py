"""Containment and remanufacturing through the API on a live stack (Anvil, indexer, service, SQLite): packing,
assembling, moving containers, recalls that reach assemblies and vehicles, and every refusal with its HTTP status
and machine code.

The world: brake pads (lot PAD-E2E) in calipers, calipers in a brake module, the module in an axle: the pads three
levels down. The axle travels on a pallet (an SSCC) from the maker to the workshop, is unpacked and installed there;
then the pad lot is recalled. Everything the tests check goes through the API with the organisations' service-held
keys.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import keccak

from partledger.ids import gtin_check_digit, logistic_unit_id, part_id
from tests.chainkit import GTIN_A, GTIN_B
from tests.labelkit import JSON, caught_up, label_uri, live_stack, target
from tests.servicekit import wait_command

pytestmark = [pytest.mark.chain]

VIN = "LSVAU2180N2183294"
GTIN_MODULE = "0061414100003" + str(gtin_check_digit("0061414100003"))


def sscc(body: str) -> str:
    body = body.zfill(17)
    return body + str(gtin_check_digit(body))


PALLET, CARTON = sscc("95060001000001"), sscc("95060001000002")


def hex_id(pid: bytes) -> str:
    return "0x" + pid.hex()


class Api:
    def __init__(self, stack: Any, client: Any, ledger: Any) -> None:
        self.stack, self.client, self.ledger = stack, client, ledger

    def post(self, org: str, path: str, body: dict[str, Any], *, expect: int = 202) -> dict[str, Any]:
        answer = self.client.post(path, headers=self.stack.headers(org), json=body)
        assert answer.status_code == expect, answer.text
        return answer.json()

    def run(self, org: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A write accepted and followed until confirmed and indexed."""
        accepted = self.post(org, path, body)
        view = wait_command(self.stack, org, accepted["command_id"])
        assert view["status"] == "confirmed", view
        caught_up(self.client, self.ledger)
        return view

    def refused(self, org: str, path: str, body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        answer = self.client.post(path, headers=self.stack.headers(org), json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
        return answer.json()["error"]

    def get(self, org: str | None, path: str, **params: Any) -> Any:
        headers = self.stack.headers(org) if org else JSON
        answer = self.client.get(path, headers=headers, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def world(deployed, tmp_path_factory):
    ledger = deployed
    with live_stack(ledger, tmp_path_factory.mktemp("containment")) as (stack, client):
        api = Api(stack, client, ledger)
        pads = [f"PAD-{index}" for index in range(4)]
        api.run("maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "PAD-E2E", "serials": pads + ["PAD-SPARE", "PAD-X"]})
        api.run("maker", "/v1/parts/register", {"gtin": GTIN_B, "lot": "CAL-E2E", "serials": ["CAL-1", "CAL-2", "REMAN-ME"]})
        api.run("maker", "/v1/parts/register", {"gtin": GTIN_MODULE, "lot": "MOD-E2E", "serials": ["MODULE-1", "AXLE-1", "MODULE-2", "MODULE-3"]})
        ids = {serial: part_id(GTIN_A, serial) for serial in pads + ["PAD-SPARE", "PAD-X"]}
        ids |= {serial: part_id(GTIN_B, serial) for serial in ("CAL-1", "CAL-2", "REMAN-ME")}
        ids |= {serial: part_id(GTIN_MODULE, serial) for serial in ("MODULE-1", "AXLE-1", "MODULE-2", "MODULE-3")}
        # pads in calipers (by GTIN and serial), calipers in the module (by id), the module in the axle (by Digital Link)
        api.run("maker", "/v1/parts/assemble", {"parent": {"gtin": GTIN_B, "serial": "CAL-1"}, "parts": [{"gtin": GTIN_A, "serial": s} for s in pads[:2]]})
        api.run("maker", "/v1/parts/assemble", {"parent": hex_id(ids["CAL-2"]), "part_ids": [hex_id(ids[s]) for s in pads[2:]]})
        api.run("maker", "/v1/parts/assemble", {"parent": hex_id(ids["MODULE-1"]), "part_ids": [hex_id(ids["CAL-1"]), hex_id(ids["CAL-2"])]})
        api.run("maker", "/v1/parts/assemble", {"parent": f"https://id.example/01/{GTIN_MODULE}/21/AXLE-1", "part_ids": [hex_id(ids["MODULE-1"])]})
        # the axle on a pallet to the workshop, received and unpacked there, and installed
        api.run("maker", "/v1/parts/pack", {"sscc": PALLET, "part_ids": [hex_id(ids["AXLE-1"])]})
        workshop = ledger.orgs["workshop"].id
        api.run("maker", "/v1/parts/ship", {"parts": [{"sscc": PALLET}], "to_org": workshop})
        api.run("workshop", "/v1/parts/receive", {"part_ids": [hex_id(logistic_unit_id(PALLET))]})
        api.run("workshop", "/v1/parts/unpack", {"sscc": PALLET, "part_ids": [hex_id(ids["AXLE-1"])]})
        api.run("workshop", "/v1/parts/install", {"items": [{"part_id": hex_id(ids["AXLE-1"]), "vin": VIN}]})
        # a second module with a pad of the lot, in a carton at the maker: held back once the lot is recalled
        api.run("maker", "/v1/parts/assemble", {"parent": hex_id(ids["MODULE-2"]), "part_ids": [hex_id(ids["PAD-SPARE"])]})
        api.run("maker", "/v1/parts/pack", {"sscc": CARTON, "part_ids": [hex_id(ids["MODULE-2"])]})
        api.run("maker", "/v1/parts/assemble", {"parent": hex_id(ids["MODULE-3"]), "part_ids": [hex_id(ids["PAD-X"])]})  # loose, for the recycler
        lot = ledger.lot_number(ledger.orgs["maker"], "PAD-E2E")
        api.run("maker", "/v1/lots/recall", {"lot": lot, "notice_hash": hex_id(keccak(text="pad recall"))})
        yield {"api": api, "ids": ids, "lot": lot, "ledger": ledger}


def test_a_part_shows_its_containers_and_an_assembly_its_tree(world):
    api, ids = world["api"], world["ids"]
    pad = api.get("maker", f"/v1/parts/{hex_id(ids['PAD-0'])}")
    assert pad["containment"]["container"] == {"id": hex_id(ids["CAL-1"]), "kind": "assembly", "gtin": GTIN_B, "serial": "CAL-1", "sscc": None}
    assert pad["containment"]["outermost_container"]["id"] == hex_id(ids["AXLE-1"])
    assert pad["part"]["status"] == "installed" and pad["part"]["custodian"]["name"] == "workshop"  # its axle's state
    kinds = [(event["kind"], event["related_id"]) for event in pad["history"]]
    assert kinds[:2] == [("registered", None), ("assembled", hex_id(ids["CAL-1"]))]
    assert ("shipped", hex_id(logistic_unit_id(PALLET))) in kinds and ("installed", hex_id(ids["AXLE-1"])) in kinds
    axle = api.get("workshop", f"/v1/parts/{hex_id(ids['AXLE-1'])}")
    (module,) = axle["containment"]["children"]
    assert module["id"] == hex_id(ids["MODULE-1"]) and [c["serial"] for c in module["children"]] == sorted(["CAL-1", "CAL-2"], key=lambda s: ids[s])
    assert {pad["serial"] for caliper in module["children"] for pad in caliper["children"]} == {"PAD-0", "PAD-1", "PAD-2", "PAD-3"}
    assert all(pad["recalled"] for caliper in module["children"] for pad in caliper["children"])
    assert axle["containment"]["container"] is None and axle["containment"]["children_truncated"] is False
    unit = api.get("maker", f"/v1/units/{CARTON}")
    assert unit["unit"]["sscc"] == CARTON and unit["unit"]["status"] == "in_stock" and unit["containment"]["children"][0]["id"] == hex_id(ids["MODULE-2"])


def test_an_assembly_holding_a_recalled_part_three_levels_down_verifies_as_contains_recalled(world):
    api, ids = world["api"], world["ids"]
    verdict = api.client.get(f"/01/{GTIN_MODULE}/21/AXLE-1", headers=JSON).json()
    assert verdict["verdict"] == "contains_recalled" and verdict["severity"] == "danger"
    inside = verdict["contains_recalled"]
    assert inside["depth"] == 3 and inside["count"] == 4 and inside["part"]["gtin"] == GTIN_A and inside["part"]["serial"].startswith("PAD-")
    assert inside["recall"]["notice_hash"] == hex_id(keccak(text="pad recall"))
    pad = api.client.get(f"/01/{GTIN_A}/21/PAD-0", headers=JSON).json()
    assert pad["verdict"] == "recalled"  # its own recall first
    page = api.client.get(f"/01/{GTIN_MODULE}/21/AXLE-1", headers={"Accept": "text/html", "Accept-Language": "en"}).text
    assert "Contains a recalled part" in page and "PAD-" in page


def test_recall_impact_reaches_the_assemblies_and_the_vehicle(world):
    api, lot = world["api"], world["lot"]
    impact = api.get("maker", f"/v1/lots/{lot}/recall-impact")
    assert impact["installed_vehicles"] == 1
    assert impact["containers"] == {"assemblies": 6, "units": 1, "contained_parts": 6, "levels": 3}
    assert {entry["organisation"]["name"]: entry["parts"] for entry in impact["custodians"]} == {"workshop": 4, "maker": 2}
    outermost = {item["serial"]: item["outermost_container"] for item in impact["items"]}
    assert outermost["PAD-0"]["id"] == hex_id(world["ids"]["AXLE-1"]) and outermost["PAD-SPARE"] == {"id": hex_id(logistic_unit_id(CARTON)), "kind": "unit", "gtin": None, "serial": None, "sscc": CARTON}
    (vehicle,) = api.get("maker", f"/v1/lots/{lot}/recall-impact/vehicles")["items"]
    assert vehicle["lot_parts"] == 4 and vehicle["installed_by"]["name"] == "workshop"
    assert {item["vehicle_vin_hash"] for item in impact["items"] if item["status"] == "installed"} == {vehicle["vin_hash"]}
    containers = api.get("regulator", f"/v1/lots/{lot}/recall-impact/containers", limit=2)
    assert containers["total"] == 7 and len(containers["items"]) == 2 and containers["next_cursor"]
    rest = api.get("regulator", f"/v1/lots/{lot}/recall-impact/containers", cursor=containers["next_cursor"])
    every = {item["serial"] or item["sscc"]: item for item in containers["items"] + rest["items"]}
    assert set(every) == {"CAL-1", "CAL-2", "MODULE-1", "AXLE-1", "MODULE-2", "MODULE-3", CARTON}
    assert (every["AXLE-1"]["levels_above_lot"], every["AXLE-1"]["lot_parts_inside"], every["AXLE-1"]["vehicle_vin_hash"]) == (3, 4, vehicle["vin_hash"])
    assert every[CARTON]["kind"] == "unit" and every[CARTON]["status"] == "in_stock"
    denied = api.client.get(f"/v1/lots/{lot}/recall-impact/containers", headers=api.stack.headers("workshop"))
    assert denied.status_code == 403


def test_containers_holding_a_recalled_part_are_held_back_by_the_service(world):
    api, ids = world["api"], world["ids"]
    carton = hex_id(logistic_unit_id(CARTON))
    error = api.refused("maker", "/v1/parts/ship", {"part_ids": [carton], "to_org": world["ledger"].orgs["distributor"].id}, 409, "contains_recalled")
    assert error["details"][0]["part_id"] == carton and error["details"][0]["recalled_part"] == hex_id(ids["PAD-SPARE"])
    api.refused("maker", "/v1/parts/sell", {"part_ids": [hex_id(ids["MODULE-3"])]}, 403, "missing_role")  # a maker sells nothing anyway
    # out of use: to a recycler (or back to the recalled parts' manufacturer) it may go
    api.post("maker", "/v1/parts/ship", {"part_ids": [hex_id(ids["MODULE-3"])], "to_org": world["ledger"].orgs["recycler"].id})


def test_what_containment_refuses_has_its_own_code(world):
    api, ids, ledger = world["api"], world["ids"], world["ledger"]
    distributor = ledger.orgs["distributor"].id
    # a part inside a container moves only with it
    error = api.refused("workshop", "/v1/parts/remove", {"part_ids": [hex_id(ids["PAD-0"])]}, 409, "part_contained")
    assert error["details"] == [{"part_id": hex_id(ids["PAD-0"]), "container": hex_id(ids["CAL-1"])}]
    # a unit where a part is required
    api.refused("maker", "/v1/parts/quarantine", {"parts": [{"sscc": CARTON}]}, 422, "logistic_unit")
    # unpacking what is not directly inside
    api.refused("maker", "/v1/parts/unpack", {"sscc": CARTON, "part_ids": [hex_id(ids["PAD-SPARE"])]}, 409, "not_in_container")
    api.refused("maker", "/v1/parts/unpack", {"sscc": sscc("12345"), "part_ids": [hex_id(ids["PAD-SPARE"])]}, 404, "unknown_unit")
    # a unit is no assembly's child; a unit cannot go inside itself
    api.refused("maker", "/v1/parts/assemble", {"parent": hex_id(ids["MODULE-2"]), "parts": [{"sscc": CARTON}]}, 422, "logistic_unit")
    api.refused("maker", "/v1/parts/pack", {"sscc": CARTON, "parts": [{"sscc": CARTON}]}, 409, "containment_cycle")
    api.refused("maker", "/v1/parts/pack", {"sscc": sscc("777"), "part_ids": [hex_id(ids["MODULE-2"])]}, 409, "part_contained")
    # a container someone else holds
    api.refused("maker", "/v1/parts/assemble", {"parent": hex_id(ids["AXLE-1"]), "part_ids": [hex_id(ids["REMAN-ME"])]}, 409, "invalid_state")
    # an SSCC with a wrong check digit, a body without contents
    api.refused("maker", "/v1/parts/pack", {"sscc": PALLET[:-1] + str((int(PALLET[-1]) + 1) % 10), "part_ids": [hex_id(ids["REMAN-ME"])]}, 400, "invalid_sscc")
    api.refused("maker", "/v1/parts/pack", {"sscc": PALLET}, 422, "invalid_request")
    # the role: a distributor assembles nothing
    api.refused("distributor", "/v1/parts/assemble", {"parent": hex_id(ids["REMAN-ME"]), "part_ids": [hex_id(ids["MODULE-2"])]}, 403, "missing_role")
    assert distributor


def test_a_remanufactured_part_is_linked_to_its_original(world):
    api, ids = world["api"], world["ids"]
    api.refused("maker", "/v1/parts/remanufacture", {"original": hex_id(ids["MODULE-2"]), "gtin": GTIN_B, "lot": "REMAN-1", "serial": "RM-0"}, 409, "part_contained")
    api.run("maker", "/v1/parts/remanufacture", {"original": {"gtin": GTIN_B, "serial": "REMAN-ME"}, "gtin": GTIN_B, "lot": "REMAN-1", "serial": "RM-1"})
    reborn = api.get("maker", f"/v1/parts/{hex_id(part_id(GTIN_B, 'RM-1'))}")
    assert reborn["lineage"]["remanufactured_from"] == [{"part_id": hex_id(ids["REMAN-ME"]), "gtin": GTIN_B, "serial": "REMAN-ME"}]
    original = api.get("maker", f"/v1/parts/{hex_id(ids['REMAN-ME'])}")
    assert original["part"]["status"] == "remanufactured" and original["lineage"]["remanufactured_into"]["serial"] == "RM-1"
    assert original["history"][-1]["kind"] == "remanufactured" and original["history"][-1]["related_id"] == hex_id(part_id(GTIN_B, "RM-1"))
    scanned = api.client.get(f"/01/{GTIN_B}/21/RM-1", headers=JSON).json()
    assert scanned["remanufactured_from"] == {"part_id": hex_id(ids["REMAN-ME"]), "gtin": GTIN_B, "serial": "REMAN-ME"}
    page = api.client.get(f"/01/{GTIN_B}/21/RM-1", headers={"Accept": "text/html", "Accept-Language": "en"}).text
    assert "Remanufactured from" in page and "REMAN-ME" in page
    signed = target(label_uri(world["ledger"], gtin=GTIN_B, serial="REMAN-ME", key=world["ledger"].orgs["maker"].key))
    assert api.client.get(signed, headers=JSON).json()["verdict"] == "scrapped"  # consumed: a label on it in use is a copy
    public = api.get("distributor", f"/v1/parts/{hex_id(part_id(GTIN_B, 'RM-1'))}")
    assert public["classification"] == "public" and public["lineage"]["remanufactured_from"][0]["serial"] == "REMAN-ME" and public["containment"] is None
    api.refused("maker", "/v1/parts/remanufacture", {"original": hex_id(ids["REMAN-ME"]), "gtin": GTIN_B, "lot": "REMAN-1", "serial": "RM-2"}, 409, "invalid_state")
    api.refused("maker", "/v1/parts/remanufacture", {"original": hex_id(ids["CAL-1"]), "gtin": GTIN_B, "lot": "REMAN-1", "serial": "RM-1"}, 409, "already_registered")
