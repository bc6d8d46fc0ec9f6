"""EPCIS 2.0 AggregationEvents and TransformationEvents as the ledger's containment (issue 16's last mapping over
issue 15's containment), end to end on a live stack (Anvil, the indexer, the service and its capture worker):

- captured: packing into a carton and the carton onto a pallet (SSCCs, as EPC URNs and Digital Links), assembly as
  an AggregationEvent and as a TransformationEvent, the pallet shipped as one EPC and received, unpacking by a list
  and by an empty childEPCs ("everything inside"), disassembly both ways, remanufacturing (repairing) into a new part;
  the chain's containerOf and part views, and the mirror, after each document;
- per-event errors with their codes, idempotent capture again;
- derived: the same operations made through the API come back from GET /epcis/events and a lot's export as
  AggregationEvents and a TransformationEvent whose eventIDs are their canonical hashes, and the export captured into a
  fresh deployment gives the same chain state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ledger_service.auth import Principal
from ledger_service.epcis.identities import demo_gln
from ledger_service.epcis.query import lot_history_document
from partledger.epcis.hashing import event_hash
from partledger.epcis.identifiers import lgtin_uri, sgtin_uri
from partledger.ids import gtin_check_digit, logistic_unit_id, part_id
from partledger.db import make_engine
from partledger.model import PartStatus, Role
from tests.chainkit import GTIN_A, GTIN_B, Ledger, build_ledger
from tests.labelkit import live_stack
from tests.servicekit import Stack, prepare_stack, running_service, wait_command, wait_until

pytestmark = [pytest.mark.chain]

CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"partledger": "https://partledger.org/ns/epcis/"}]
NONE = bytes(32)


def sscc(body: str) -> str:
    body = body.zfill(17)
    return body + str(gtin_check_digit(body))


CARTON, PALLET, SPARE_UNIT = sscc("95060002000001"), sscc("95060002000002"), sscc("95060002000003")
RT_CARTON, RT_PALLET = sscc("95060002000011"), sscc("95060002000012")


def unit_dl(number: str) -> str:
    return f"https://id.gs1.org/00/{number}"


def unit_urn(number: str) -> str:  # company prefix 9506000 (7 digits): extension digit, then the serial reference
    return f"urn:epc:id:sscc:{number[1:8]}.{number[0]}{number[8:17]}"


def pad(serial: str) -> str:
    return sgtin_uri(GTIN_A, serial)


def module(serial: str) -> str:
    return sgtin_uri(GTIN_B, serial)


@dataclass
class Site:
    stack: Stack
    client: TestClient
    ledger: Ledger
    seen: dict[str, Any] = field(default_factory=dict)  # what the module's fixture observed between documents
    clock: list[int] = field(default_factory=lambda: [0])

    def headers(self, org: str, **extra: str) -> dict[str, str]:
        return self.stack.headers(org, **extra)

    def party(self, org: str) -> str:
        return f"https://id.gs1.org/417/{demo_gln(self.ledger.orgs[org].id, 0)}"

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event of `kind`, a second after the one before (so that no two share a hash, their eventID)."""
        self.clock[0] += 1
        minute, second = divmod(self.clock[0], 60)
        return {"type": kind, "eventTime": f"2026-12-03T08:{minute:02d}:{second:02d}.000Z", "eventTimeZoneOffset": "+08:00"} | fields

    def aggregation(self, action: str, parent: str, children: list[str] | None, step: str | None = None, **fields: Any) -> dict[str, Any]:
        event = self.event("AggregationEvent", parentID=parent, action=action, **fields)
        if children is not None:
            event["childEPCs"] = children
        if step is not None:
            event["bizStep"] = step
        return event

    def transformation(self, step: str, inputs: list[str], outputs: list[str], **fields: Any) -> dict[str, Any]:
        return self.event("TransformationEvent", inputEPCList=inputs, outputEPCList=outputs, bizStep=step, **fields)

    def objects(self, step: str, epcs: list[str], *, action: str = "OBSERVE", **fields: Any) -> dict[str, Any]:
        return self.event("ObjectEvent", epcList=epcs, action=action, bizStep=step, **fields)

    def commissioning(self, gtin: str, serials: list[str], lot: str) -> dict[str, Any]:
        return self.objects("commissioning", [sgtin_uri(gtin, s) for s in serials], action="ADD", disposition="active", ilmd={"cbvmda:lotNumber": lot})

    def shipping(self, epcs: list[str], to: str) -> dict[str, Any]:
        return self.objects("shipping", epcs, disposition="in_transit", destinationList=[{"type": "owning_party", "destination": self.party(to)}])

    def capture(self, org: str, *events: dict[str, Any], behaviour: str | None = None) -> dict[str, Any]:
        """Posts a document and waits for its job to end; the job's view."""
        return capture_into(self.client, self.stack, org, document(list(events)), behaviour=behaviour)

    def chain(self, pid: bytes) -> tuple[PartStatus, int, int, bytes]:
        """(status, custodian, recipient, container) as the chain answers PartLedger.part and containerOf."""
        return self.chain_of(self.ledger, pid)[:4]  # type: ignore[return-value]

    @staticmethod
    def chain_of(ledger: Ledger, pid: bytes) -> tuple[Any, ...]:
        """(status, custodian, recipient, container, VIN tag, recalled) of `pid` on `ledger`'s chain."""
        status, custodian, recipient, _, vin_tag, recalled = ledger.parts.functions.part(pid).call()
        return PartStatus(status), custodian, recipient, ledger.parts.functions.containerOf(pid).call(), vin_tag, recalled

    def get(self, path: str, org: str = "auditor", **params: Any) -> Any:
        answer = self.client.get(path, headers=self.headers(org), params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def events(self, org: str = "auditor", **params: Any) -> list[dict[str, Any]]:
        return self.get("/epcis/events", org, perPage="500", **params)["epcisBody"]["queryResults"]["resultsBody"]["eventList"]


def document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-12-03T08:00:00.000Z", "epcisBody": {"eventList": events}}


def capture_into(client: TestClient, stack: Stack, org: str, doc: dict[str, Any], *, behaviour: str | None = None) -> dict[str, Any]:
    headers = stack.headers(org, **({"GS1-Capture-Error-Behaviour": behaviour} if behaviour else {}))
    accepted = client.post("/epcis/capture", headers=headers, json=doc)
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]

    def done() -> dict[str, Any] | None:
        view = client.get(location, headers=stack.headers(org)).json()
        return None if view["running"] else view

    return wait_until(done, f"capture job {location}", timeout=120)


def set_identities(client: TestClient, stack: Stack, ledger: Ledger) -> None:
    for name, org in ledger.orgs.items():
        body = {"gln": demo_gln(org.id, 0), "locations": [{"gln": demo_gln(org.id, 1), "site": "service-site"}]}
        answer = client.put("/v1/gs1/identity", headers=stack.headers(name), json=body)
        assert answer.status_code == 200, answer.text


PADS = ["CT-P1", "CT-P2", "CT-P3", "CT-P4", "CT-P5", "CT-P6"]
MODULES = ["CT-M1", "CT-M2"]
P = {serial: part_id(GTIN_A, serial) for serial in PADS} | {serial: part_id(GTIN_B, serial) for serial in MODULES}
U = {number: logistic_unit_id(number) for number in (CARTON, PALLET, SPARE_UNIT)}
REBORN = part_id(GTIN_A, "CT-R1")


@pytest.fixture(scope="module")
def site(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Three documents captured in turn: the maker assembles, packs and ships a pallet; the warehouse receives and
    unpacks it and sends the modules back; the maker disassembles and remanufactures. What the chain and the mirror
    said after the first one is kept in `seen`."""
    with live_stack(deployed, tmp_path_factory.mktemp("epcis-containment"), epcis_batch_seconds=0.2) as (stack, client):
        set_identities(client, stack, deployed)
        s = Site(stack, client, deployed)
        first = [
            s.commissioning(GTIN_A, PADS, "LOT-CT"),
            s.commissioning(GTIN_B, MODULES, "LOT-CT"),
            s.aggregation("ADD", module("CT-M1"), [pad("CT-P1"), pad("CT-P2")], "assembling"),
            s.transformation("assembling", [pad("CT-P3")], [module("CT-M2")]),
            s.aggregation("ADD", unit_urn(CARTON), [module("CT-M1"), pad("CT-P4")], "packing"),
            s.aggregation("ADD", unit_dl(PALLET), [unit_dl(CARTON), module("CT-M2"), pad("CT-P6")]),  # no bizStep
            s.aggregation("OBSERVE", unit_dl(PALLET), [unit_dl(CARTON)], "staging_outbound"),  # an observation: kept only
            s.shipping([unit_urn(PALLET)], "warehouse"),
        ]
        s.seen["first"] = first
        s.seen["made"] = s.capture("maker", *first)
        s.seen["shipped"] = {name: s.chain(pid) for name, pid in (P | U).items()}
        s.seen["shipped_mirror"] = s.get(f"/v1/parts/0x{P['CT-P1'].hex()}")
        s.seen["unpacked"] = s.capture(
            "warehouse",
            s.objects("receiving", [unit_dl(PALLET)], disposition="in_progress"),
            s.aggregation("DELETE", unit_dl(PALLET), [unit_urn(CARTON)], "unpacking"),
            s.aggregation("DELETE", unit_dl(CARTON), None, "unpacking"),  # no childEPCs: everything inside
            s.aggregation("DELETE", unit_dl(PALLET), [], "unpacking"),  # an empty list: the same
            s.shipping([module("CT-M1"), module("CT-M2"), pad("CT-P4")], "maker"),
        )
        s.seen["remade"] = s.capture(
            "maker",
            s.objects("receiving", [module("CT-M1"), module("CT-M2"), pad("CT-P4")], disposition="in_progress"),
            s.aggregation("DELETE", module("CT-M1"), [pad("CT-P1")], "disassembling"),
            s.transformation("disassembling", [module("CT-M2")], [pad("CT-P3")]),
            s.transformation("repairing", [pad("CT-P1")], [pad("CT-R1")], disposition="active", ilmd={"cbvmda:lotNumber": "LOT-CT-R"}),
        )
        yield s


# --- capture -------------------------------------------------------------------------------------------------------


def test_packing_nested_packing_and_both_kinds_of_assembly_travel_with_the_pallet_shipped_as_one_epc(site: Site):
    made = site.seen["made"]
    assert made["success"] is True and made["errors"] == [] and made["capturedCount"] == len(site.seen["first"]), made
    shipped, orgs = site.seen["shipped"], site.ledger.orgs
    maker, warehouse = orgs["maker"].id, orgs["warehouse"].id
    assert shipped[PALLET] == (PartStatus.IN_TRANSIT, maker, warehouse, NONE)
    inside = {"CT-P1": P["CT-M1"], "CT-P2": P["CT-M1"], "CT-P3": P["CT-M2"], "CT-M1": U[CARTON], "CT-P4": U[CARTON], CARTON: U[PALLET],
              "CT-M2": U[PALLET], "CT-P6": U[PALLET]}  # fmt: skip
    for name, container in inside.items():  # every level takes the pallet's state, as the chain answers part(id)
        assert shipped[name] == (PartStatus.IN_TRANSIT, maker, warehouse, container), name
    assert shipped["CT-P5"] == (PartStatus.IN_STOCK, maker, 0, NONE)
    mirrored = site.seen["shipped_mirror"]
    assert mirrored["part"]["status"] == "in_transit"
    assert mirrored["containment"]["container"]["id"] == "0x" + P["CT-M1"].hex()
    assert mirrored["containment"]["outermost_container"] == {"id": "0x" + U[PALLET].hex(), "kind": "unit", "gtin": None, "serial": None, "sscc": PALLET}


def test_unpacking_by_list_and_by_empty_child_list_then_disassembly_leave_the_parts_loose(site: Site):
    for name in ("unpacked", "remade"):
        view = site.seen[name]
        assert view["success"] is True and view["errors"] == [], (name, view)
    maker, warehouse = site.ledger.orgs["maker"].id, site.ledger.orgs["warehouse"].id
    for name in ("CT-M1", "CT-M2", "CT-P3", "CT-P4", "CT-P5"):
        assert site.chain(P[name]) == (PartStatus.IN_STOCK, maker, 0, NONE), name
    assert site.chain(P["CT-P2"]) == (PartStatus.IN_STOCK, maker, 0, P["CT-M1"])  # left in the module
    assert site.chain(P["CT-P6"]) == (PartStatus.IN_STOCK, warehouse, 0, NONE)  # out of the pallet by the empty list
    for number in (CARTON, PALLET):
        assert site.chain(U[number]) == (PartStatus.IN_STOCK, warehouse, 0, NONE), number
        unit = site.get(f"/v1/units/{number}")
        assert unit["unit"]["custodian"]["id"] == warehouse and unit["containment"]["children"] == [], unit
    module_one = site.get(f"/v1/parts/0x{P['CT-M1'].hex()}")
    assert [child["id"] for child in module_one["containment"]["children"]] == ["0x" + P["CT-P2"].hex()]
    assert site.get(f"/v1/parts/0x{P['CT-M2'].hex()}")["containment"]["children"] == []


def test_a_repairing_transformation_remanufactures_the_part_into_a_new_one_of_the_lot_in_ilmd(site: Site):
    maker = site.ledger.orgs["maker"].id
    assert site.chain(P["CT-P1"])[:2] == (PartStatus.REMANUFACTURED, maker)
    assert site.chain(REBORN) == (PartStatus.IN_STOCK, maker, 0, NONE)
    assert site.ledger.parts.functions.remanufacturedFrom(REBORN).call() == P["CT-P1"]
    reborn = site.get(f"/v1/parts/0x{REBORN.hex()}")
    assert reborn["part"]["lot"]["code"] == "LOT-CT-R"
    assert reborn["lineage"]["remanufactured_from"] == [{"part_id": "0x" + P["CT-P1"].hex(), "gtin": GTIN_A, "serial": "CT-P1"}]


def test_what_the_chain_would_refuse_is_a_per_event_error_and_nothing_is_applied(site: Site):
    s = site
    events = [
        s.aggregation("ADD", unit_dl(SPARE_UNIT), [pad("CT-P5"), pad("CT-NOPE")], "packing"),  # a child the ledger does not know
        s.aggregation("ADD", unit_dl(SPARE_UNIT), [pad("CT-P6")], "packing"),  # the warehouse's part
        s.aggregation("ADD", pad("CT-P2"), [module("CT-M1")], "assembling"),  # the module holds CT-P2: a cycle
        s.shipping([pad("CT-P2")], "warehouse"),  # a contained part moves only with its module
        s.aggregation("ADD", unit_dl(SPARE_UNIT), [pad("CT-P2")], "packing"),  # ... and is packed only with it
        s.transformation("disassembling", [module("CT-M1")], [pad("CT-P3")]),  # CT-P3 is not in it
        s.aggregation("ADD", module("CT-M2"), [unit_dl(CARTON)], "assembling"),  # a unit is no child of an assembly
        s.transformation("repairing", [pad("CT-P1")], [pad("CT-R2")], ilmd={"cbvmda:lotNumber": "LOT-CT-R"}),  # consumed already
        s.transformation("repairing", [module("CT-M1")], [module("CT-R3")], ilmd={"cbvmda:lotNumber": "LOT-CT-R"}),  # holds a pad
        s.aggregation("DELETE", unit_dl(CARTON), None, "unpacking"),  # the warehouse's, and empty
        s.aggregation("ADD", unit_dl(SPARE_UNIT), [pad("CT-P5")], "packing"),  # fine alone
        s.objects("holding", [], disposition="recalled", quantityList=[{"epcClass": lgtin_uri(GTIN_A, "LOT-CT")}]),  # fine too
        s.shipping([unit_dl(SPARE_UNIT)], "warehouse"),  # the unit now holds a recalled part: not to the warehouse
    ]
    view = s.capture("maker", *events)
    assert view["success"] is False and view["capturedCount"] == 0, view
    got = [(error["eventIndex"], error["code"]) for error in view["errors"]]
    assert got == [
        (0, "unknown_part"), (1, "invalid_state"), (2, "containment_cycle"), (3, "part_contained"), (4, "part_contained"),
        (5, "not_in_container"), (6, "logistic_unit"), (7, "invalid_state"), (8, "container_not_empty"), (9, "invalid_state"),
        (12, "contains_recalled"),
    ], view["errors"]  # fmt: skip
    assert [error["status"] for error in view["errors"]] == [400, 409, 409, 409, 409, 409, 400, 409, 409, 409, 409]
    assert {error["type"] for error in view["errors"]} == {"epcisException:ValidationException"}
    assert "CT-NOPE" in view["errors"][0]["message"]
    assert f"custodian is organisation {site.ledger.orgs['warehouse'].id}" in view["errors"][1]["message"]
    # rollback: the good events (the packing, the recall) were not applied either
    assert site.chain(P["CT-P5"]) == (PartStatus.IN_STOCK, site.ledger.orgs["maker"].id, 0, NONE)
    assert site.client.get(f"/v1/units/{SPARE_UNIT}", headers=site.headers("auditor")).status_code == 404
    assert site.get(f"/v1/parts/0x{P['CT-P5'].hex()}")["part"]["recalled"] is False


def test_capturing_the_same_document_again_changes_nothing(site: Site):
    before = {name: site.chain(pid) for name, pid in (P | U).items()}
    parent_events = site.events(MATCH_parentID=unit_dl(PALLET))
    again = site.capture("maker", *site.seen["first"])
    assert again["success"] is True and again["errors"] == [] and again["capturedCount"] == len(site.seen["first"]), again
    assert {name: site.chain(pid) for name, pid in (P | U).items()} == before
    assert site.events(MATCH_parentID=unit_dl(PALLET)) == parent_events


def test_captured_containment_events_answer_the_standards_match_parameters(site: Site):
    by_parent = site.events(MATCH_parentID=unit_urn(PALLET))
    assert [(e["action"], e.get("bizStep")) for e in by_parent] == [("ADD", None), ("OBSERVE", "staging_outbound"), ("DELETE", "unpacking"), ("DELETE", "unpacking")]
    assert [e["bizStep"] for e in site.events(MATCH_inputEPC=pad("CT-P1"))] == ["repairing"]
    assert [e["bizStep"] for e in site.events(MATCH_outputEPC=pad("CT-R1"))] == ["repairing"]
    assert [e["bizStep"] for e in site.events(MATCH_epc=unit_dl(PALLET))] == ["shipping", "receiving"]
    lot = site.get(f"/v1/parts/0x{P['CT-P1'].hex()}")["part"]["lot"]["number"]
    history = site.get(f"/epcis/lots/{lot}/document")["epcisBody"]["eventList"]
    moves = [(e["type"], e.get("bizStep")) for e in history]
    assert ("ObjectEvent", "shipping") in moves and ("ObjectEvent", "receiving") in moves  # the pallet's: it held the lot's parts
    assert ("TransformationEvent", "repairing") in moves and moves.count(("AggregationEvent", "unpacking")) == 3


# --- derived from the mirror, exported, captured into a fresh deployment ------------------------------------------------


RT_PADS, RT_MODULE = ["RC-X1", "RC-X2", "RC-X3"], "RC-K1"


def test_containment_made_through_the_api_exports_as_epcis_and_captures_into_a_fresh_deployment_alike(site: Site, tmp_path):
    client, stack, orgs = site.client, site.stack, site.ledger.orgs
    ids = {serial: part_id(GTIN_A, serial) for serial in RT_PADS} | {RT_MODULE: part_id(GTIN_B, RT_MODULE)}
    hex_ids = {name: "0x" + pid.hex() for name, pid in ids.items()}
    reborn = part_id(GTIN_A, "RC-XR1")

    def act(org: str, path: str, body: dict[str, Any]) -> None:
        answer = client.post(path, headers=stack.headers(org), json=body)
        assert answer.status_code == 202, answer.text
        assert wait_command(stack, org, answer.json()["command_id"])["status"] == "confirmed"

    act("maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "LOT-RTC", "serials": RT_PADS})
    act("maker", "/v1/parts/register", {"gtin": GTIN_B, "lot": "LOT-RTC", "serials": [RT_MODULE]})
    act("maker", "/v1/parts/assemble", {"parent": hex_ids[RT_MODULE], "part_ids": [hex_ids["RC-X1"], hex_ids["RC-X2"]]})
    act("maker", "/v1/parts/pack", {"sscc": RT_CARTON, "part_ids": [hex_ids[RT_MODULE], hex_ids["RC-X3"]]})
    act("maker", "/v1/parts/pack", {"sscc": RT_PALLET, "parts": [{"sscc": RT_CARTON}]})
    act("maker", "/v1/parts/ship", {"parts": [{"sscc": RT_PALLET}], "to_org": orgs["warehouse"].id})
    act("warehouse", "/v1/parts/receive", {"parts": [{"sscc": RT_PALLET}]})
    act("warehouse", "/v1/parts/unpack", {"sscc": RT_PALLET, "parts": [{"sscc": RT_CARTON}]})
    act("warehouse", "/v1/parts/unpack", {"sscc": RT_CARTON, "part_ids": [hex_ids[RT_MODULE], hex_ids["RC-X3"]]})
    act("warehouse", "/v1/parts/ship", {"part_ids": [hex_ids[RT_MODULE], hex_ids["RC-X3"]], "to_org": orgs["maker"].id})
    act("maker", "/v1/parts/receive", {"part_ids": [hex_ids[RT_MODULE], hex_ids["RC-X3"]]})
    act("maker", "/v1/parts/disassemble", {"parent": hex_ids[RT_MODULE], "part_ids": [hex_ids["RC-X1"]]})
    act("maker", "/v1/parts/remanufacture", {"original": hex_ids["RC-X1"], "gtin": GTIN_A, "lot": "LOT-RTR", "serial": "RC-XR1"})

    lot = site.get(f"/v1/parts/{hex_ids['RC-X1']}")["part"]["lot"]["number"]
    history = site.get(f"/epcis/lots/{lot}/document")
    events = history["epcisBody"]["eventList"]
    # read again (from the logs the service keeps encoded), and derived afresh from the databases: the same events
    assert site.get(f"/epcis/lots/{lot}/document")["epcisBody"] == history["epcisBody"]
    sources = SimpleNamespace(index_engine=make_engine(stack.index_db_url), service_engine=make_engine(stack.service_db_url), vault=None)
    auditor = Principal(org_id=orgs["auditor"].id, roles=Role.AUDITOR, key_id="test", sites=None)
    try:
        assert lot_history_document(services=sources, principal=auditor, lot=lot)["epcisBody"] == history["epcisBody"]
    finally:
        sources.index_engine.dispose()
        sources.service_engine.dispose()
    shape = [(e["type"], e.get("action"), e["bizStep"]) for e in events]
    assert shape == [
        ("ObjectEvent", "ADD", "commissioning"), ("ObjectEvent", "ADD", "commissioning"), ("AggregationEvent", "ADD", "assembling"),
        ("AggregationEvent", "ADD", "packing"), ("AggregationEvent", "ADD", "packing"), ("ObjectEvent", "OBSERVE", "shipping"),
        ("ObjectEvent", "OBSERVE", "receiving"), ("AggregationEvent", "DELETE", "unpacking"), ("AggregationEvent", "DELETE", "unpacking"),
        ("ObjectEvent", "OBSERVE", "shipping"), ("ObjectEvent", "OBSERVE", "receiving"), ("AggregationEvent", "DELETE", "disassembling"),
        ("TransformationEvent", None, "repairing"),
    ], shape  # fmt: skip
    assert events[4]["parentID"] == unit_dl(RT_PALLET) and events[4]["childEPCs"] == [unit_dl(RT_CARTON)]
    assert events[5]["epcList"] == [unit_dl(RT_PALLET)]  # the pallet moves as one EPC: its contents are its aggregation's
    assert events[12]["inputEPCList"] == [pad("RC-X1")] and events[12]["outputEPCList"] == [pad("RC-XR1")]
    assert events[12]["ilmd"] == {"cbvmda:lotNumber": "LOT-RTR"} and events[12]["disposition"] == "active"
    for event in events:  # each eventID is the canonical hash of the event, and names it in GET /events/{eventID}
        assert event["eventID"] == event_hash({k: v for k, v in event.items() if k != "eventID"}, context=history["@context"]), event
    one = site.get(f"/epcis/events/{quote(events[3]['eventID'], safe='')}")
    assert {k: v for k, v in one.items() if k != "@context"} == events[3]
    by_parent = site.events(MATCH_parentID=unit_urn(RT_CARTON))
    assert [(e["type"], e["action"], e["bizStep"]) for e in by_parent] == [("AggregationEvent", "ADD", "packing"), ("AggregationEvent", "DELETE", "unpacking")]
    assert [e["bizStep"] for e in site.events(MATCH_epc=unit_dl(RT_PALLET))] == ["shipping", "receiving"]
    assert [e["bizStep"] for e in site.events(MATCH_anyEPC=unit_dl(RT_PALLET))] == ["packing", "shipping", "receiving", "unpacking"]
    assert [e["bizStep"] for e in site.events(MATCH_outputEPC=pad("RC-XR1"))] == ["repairing"]
    assert [e["bizStep"] for e in site.events(eventType="TransformationEvent", MATCH_anyEPC=pad("RC-X1"))] == ["repairing"]
    assert [e["bizStep"] for e in site.events(MATCH_epc=pad("RC-XR1"))] == []  # its registration is the transformation's

    fresh = build_ledger(site.ledger.w3)
    second = prepare_stack(fresh, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    by_location = {f"https://id.gs1.org/414/{demo_gln(org.id, 1)}": name for name, org in orgs.items()}
    with running_service(second, epcis_batch_seconds=0.2) as client2:
        set_identities(client2, second, fresh)
        runs: list[tuple[str, list[dict[str, Any]]]] = []
        for event in events:  # consecutive events of one organisation, captured by it, in the order they happened
            actor = by_location[event["readPoint"]["id"]]
            if runs and runs[-1][0] == actor:
                runs[-1][1].append(event)
            else:
                runs.append((actor, [event]))
        assert [actor for actor, _ in runs] == ["maker", "warehouse", "maker"]
        for actor, run in runs:
            view = capture_into(client2, second, actor, history | {"epcisBody": {"eventList": run}})
            assert view["success"], (actor, view["errors"])
        for pid in [*ids.values(), reborn, logistic_unit_id(RT_CARTON), logistic_unit_id(RT_PALLET)]:
            before, after = (Site.chain_of(ledger, pid) for ledger in (site.ledger, fresh))
            assert before == after, "0x" + pid.hex()  # lot numbers aside: each deployment numbers its lots
        assert fresh.parts.functions.remanufacturedFrom(reborn).call() == ids["RC-X1"]
        assert fresh.parts.functions.containerOf(ids["RC-X2"]).call() == ids[RT_MODULE]
        for pid, code in ((ids["RC-X3"], "LOT-RTC"), (reborn, "LOT-RTR")):
            assert client2.get(f"/v1/parts/0x{pid.hex()}", headers=second.headers("auditor")).json()["part"]["lot"]["code"] == code
