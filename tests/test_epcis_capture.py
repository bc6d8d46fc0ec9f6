"""EPCIS 2.0 capture into the ledger, end to end: documents posted to /epcis/capture on a live service (Anvil, the
indexer, the submitter), mapped to ledger commands or kept as anchored consortium data, refused per event or at once
with the reason, and proven offline."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ledger_service.epcis.identities import demo_gln
from ledger_service.epcis.routes import worker_of
from partledger.epcis.hashing import event_hash
from partledger.ids import part_id
from partledger.proofs import verifier as v
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.labelkit import live_stack
from tests.servicekit import Stack, wait_until
from tests.vectors import vectors_dir

VECTORS = vectors_dir() / "epcis"
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"partledger": "https://partledger.org/ns/epcis/"}]
VIN = "LSVAU2180N2183294"


@dataclass
class Site:
    stack: Stack
    client: TestClient
    ledger: Ledger

    def headers(self, org: str, **extra: str) -> dict[str, str]:
        return self.stack.headers(org, **extra)

    def party(self, org: str) -> str:
        return f"https://id.gs1.org/417/{demo_gln(self.ledger.orgs[org].id, 0)}"

    def location(self, org: str) -> str:
        return f"https://id.gs1.org/414/{demo_gln(self.ledger.orgs[org].id, 1)}"


@pytest.fixture(scope="module")
def site(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with live_stack(deployed, tmp_path_factory.mktemp("epcis-capture"), epcis_batch_seconds=0.2, epcis_prepare_processes=1) as (stack, client):
        here = Site(stack, client, deployed)
        for name, org in deployed.orgs.items():
            body = {"gln": demo_gln(org.id, 0), "locations": [{"gln": demo_gln(org.id, 1), "site": "service-site"}]}
            answer = client.put("/v1/gs1/identity", headers=stack.headers(name), json=body)
            assert answer.status_code == 200, answer.text
        yield here


def document(*events: dict[str, Any]) -> dict[str, Any]:
    return {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-12-02T08:00:00.000Z", "epcisBody": {"eventList": list(events)}}


def sgtin(gtin: str, serial: str) -> str:
    return f"https://id.gs1.org/01/{gtin}/21/{serial}"


def object_event(step: str, epcs: list[str], *, action: str = "OBSERVE", disposition: str | None = None, **fields: Any) -> dict[str, Any]:
    event = {"type": "ObjectEvent", "eventTime": "2026-12-02T08:00:00.000Z", "eventTimeZoneOffset": "+08:00", "epcList": epcs, "action": action, "bizStep": step}
    if disposition:
        event["disposition"] = disposition
    return event | fields


def commissioning(gtin: str, serials: list[str], lot: str, **fields: Any) -> dict[str, Any]:
    return object_event("commissioning", [sgtin(gtin, s) for s in serials], action="ADD", disposition="active", ilmd={"cbvmda:lotNumber": lot}, **fields)


def capture(site: Site, org: str, doc: dict[str, Any], *, behaviour: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Posts a document and waits for its job to end; the job's view."""
    headers = site.headers(org, **({"GS1-Capture-Error-Behaviour": behaviour} if behaviour else {}))
    accepted = site.client.post("/epcis/capture", headers=headers, json=doc)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["GS1-EPCIS-Version"] == "2.0.0"
    location = accepted.headers["Location"]
    assert location == f"/epcis/capture/{accepted.json()['captureID']}"

    def done() -> dict[str, Any] | None:
        view = site.client.get(location, headers=site.headers(org)).json()
        return None if view["running"] else view

    return wait_until(done, f"capture job {location}", timeout=timeout)


def part(site: Site, org: str, gtin: str, serial: str) -> dict[str, Any]:
    answer = site.client.get(f"/v1/parts/0x{part_id(gtin, serial).hex()}", headers=site.headers(org))
    assert answer.status_code == 200, answer.text
    return answer.json()["part"]


def codes(view: dict[str, Any]) -> list[tuple[int, str]]:
    return [(error["eventIndex"], error["code"]) for error in view["errors"]]


# --- into the ledger ---------------------------------------------------------------------------------------------


def test_capture_maps_commissioning_shipping_receiving_and_installing_to_the_ledger(site: Site):
    serials = ["EC-1", "EC-2", "EC-3"]
    made = capture(site, "maker", document(
        commissioning(GTIN_A, serials, "LOT-EPCIS-1", bizLocation={"id": site.location("maker")}),
        object_event("shipping", [sgtin(GTIN_A, s) for s in serials], disposition="in_transit",
                     sourceList=[{"type": "owning_party", "source": site.party("maker")}],
                     destinationList=[{"type": "owning_party", "destination": site.party("workshop")}]),
    ))  # fmt: skip
    assert made["success"] is True and made["capturedCount"] == 2 and made["errors"] == [], made
    shipped = part(site, "maker", GTIN_A, "EC-1")
    assert shipped["status"] == "in_transit" and shipped["manufacturer"]["id"] == site.ledger.orgs["maker"].id
    installing = object_event("installing", [sgtin(GTIN_A, "EC-1")], disposition="active", **{"partledger:vin": VIN})
    taken = capture(site, "workshop", document(object_event("receiving", [sgtin(GTIN_A, s) for s in serials], disposition="in_progress"), installing))
    assert taken["success"] is True, taken
    installed = part(site, "workshop", GTIN_A, "EC-1")
    assert installed["status"] == "installed" and installed["custodian"]["id"] == site.ledger.orgs["workshop"].id
    assert part(site, "workshop", GTIN_A, "EC-2")["status"] == "in_stock"
    # the VIN is private: never in what a member reads, nor on chain in clear
    events = site.client.get("/epcis/events", headers=site.headers("maker"), params={"MATCH_epc": sgtin(GTIN_A, "EC-1"), "EQ_bizStep": "installing"})
    assert events.status_code == 200, events.text
    assert VIN not in events.text and len(events.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]) == 1


def test_a_shipment_names_its_recipient_or_is_refused_with_the_reason(site: Site):
    capture(site, "maker", document(commissioning(GTIN_A, ["NR-1"], "LOT-EPCIS-2")))
    view = capture(site, "maker", document(object_event("shipping", [sgtin(GTIN_A, "NR-1")], disposition="in_transit")))
    assert view["success"] is False and codes(view) == [(0, "missing_destination")]
    assert "destinationList" in view["errors"][0]["message"]


def test_rollback_captures_nothing_when_one_event_fails_and_proceed_captures_the_rest(site: Site):
    good = commissioning(GTIN_B, ["RB-1"], "LOT-EPCIS-3", eventID="urn:uuid:7d0c6e6c-0000-4000-8000-000000000001")
    bad = commissioning(GTIN_B, ["RB-2"], "LOT-EPCIS-3", bizLocation={"id": f"https://id.gs1.org/414/{demo_gln(99, 99)}"})  # no member's
    view = capture(site, "maker", document(good, bad))
    assert view["success"] is False and codes(view) == [(1, "unknown_party")] and view["capturedCount"] == 0
    absent = site.client.get(f"/v1/parts/0x{part_id(GTIN_B, 'RB-1').hex()}", headers=site.headers("maker"))
    assert absent.status_code == 404  # nothing applied halfway
    view = capture(site, "maker", document(good, bad), behaviour="proceed")
    assert view["success"] is False and codes(view) == [(1, "unknown_party")] and view["capturedCount"] == 1
    assert part(site, "maker", GTIN_B, "RB-1")["status"] == "in_stock"


def test_capture_is_idempotent_by_event_id(site: Site):
    doc = document(commissioning(GTIN_A, ["ID-1"], "LOT-EPCIS-4", eventID="urn:uuid:7d0c6e6c-0000-4000-8000-000000000002"))
    first = capture(site, "maker", doc)
    again = capture(site, "maker", doc)
    assert first["success"] and again["success"] and again["capturedCount"] == 1, again
    changed = copy.deepcopy(doc)
    changed["epcisBody"]["eventList"][0]["eventTime"] = "2026-12-02T09:00:00.000Z"
    refused = capture(site, "maker", changed)
    assert codes(refused) == [(0, "event_id_reused")]


def test_an_event_of_another_organisations_location_is_refused(site: Site):
    view = capture(site, "maker", document(commissioning(GTIN_A, ["LOC-1"], "LOT-EPCIS-5", bizLocation={"id": site.location("workshop")})))
    assert codes(view) == [(0, "not_your_location")]


def test_a_commissioning_that_cannot_register_gets_its_reason_after_the_location_and_role_checks(site: Site):
    """What a commissioning registers is worked out in the first pass (possibly in the preparing process); its
    errors still come where the ledger checks come to them: an event at another organisation's location says so,
    however wrong its EPCs."""
    unregistered = dict(action="ADD", disposition="active")
    doc = document(
        object_event("commissioning", [sgtin(GTIN_A, "RG-1"), "https://id.gs1.org/00/106141412345678908"], ilmd={"cbvmda:lotNumber": "LOT-EPCIS-R1"}, **unregistered),
        object_event("commissioning", [sgtin(GTIN_A, "RG-2"), sgtin(GTIN_B, "RG-3")], ilmd={"cbvmda:lotNumber": "LOT-EPCIS-R1"}, **unregistered),
        object_event("commissioning", [sgtin(GTIN_A, "RG-4")], **unregistered),
        object_event("commissioning", [sgtin(GTIN_A, "RG-5")], bizLocation={"id": site.location("workshop")}, **unregistered),
        commissioning(GTIN_A, ["RG-6"], "LOT-EPCIS-R1"),
    )
    view = capture(site, "maker", doc, behaviour="proceed")
    assert codes(view) == [(0, "invalid_epc"), (1, "mixed_gtins"), (2, "missing_lot"), (3, "not_your_location")], view
    assert view["capturedCount"] == 1 and part(site, "maker", GTIN_A, "RG-6")["status"] == "in_stock"
    absent = site.client.get(f"/v1/parts/0x{part_id(GTIN_A, 'RG-2').hex()}", headers=site.headers("maker"))
    assert absent.status_code == 404


def test_single_event_capture_answers_201_with_its_location(site: Site):
    event = {"@context": CONTEXT} | commissioning(GTIN_B, ["SE-1"], "LOT-EPCIS-6")
    answer = site.client.post("/epcis/events", headers=site.headers("maker"), json=event)
    assert answer.status_code == 201, answer.text
    event_id = answer.json()["eventID"]
    assert event_id.startswith("ni:///sha-256;") and answer.headers["Location"].startswith("/epcis/events/")
    assert part(site, "maker", GTIN_B, "SE-1")["status"] == "in_stock"
    refused = site.client.post("/epcis/events", headers=site.headers("maker"), json={"@context": CONTEXT} | commissioning(GTIN_B, ["SE-1"], "LOT-EPCIS-6", eventID="urn:uuid:7d0c6e6c-0000-4000-8000-000000000003"))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_registered"


# --- bad input ---------------------------------------------------------------------------------------------------


def post_raw(site: Site, body: bytes, **headers: str) -> Any:
    return site.client.post("/epcis/capture", headers=site.headers("maker", **{"Content-Type": "application/json"} | headers), content=body)


def test_bad_documents_are_refused_at_once_with_a_code(site: Site):
    assert post_raw(site, b"{not json").json()["error"]["code"] == "invalid_json"
    assert post_raw(site, b"[]").json()["error"]["code"] == "not_an_epcis_document"
    wrong_context = document(commissioning(GTIN_A, ["X"], "L")) | {"@context": ["https://example.com/not-epcis.jsonld"]}
    answer = post_raw(site, json.dumps(wrong_context).encode())
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_document", answer.text
    assert post_raw(site, b"{}", **{"Content-Type": "text/csv"}).json()["error"]["code"] == "unsupported_media_type"
    assert post_raw(site, b"{}", **{"GS1-Capture-Error-Behaviour": "maybe"}).json()["error"]["code"] == "invalid_capture_behaviour"
    auditor = site.client.post("/epcis/capture", headers=site.headers("auditor"), json=document())
    assert auditor.status_code == 403 and auditor.json()["error"]["code"] == "missing_role"
    assert site.client.post("/epcis/capture", json=document()).status_code == 401


def test_bad_events_are_per_event_errors_with_the_reason(site: Site):
    no_time = commissioning(GTIN_A, ["BE-1"], "LOT-EPCIS-7")
    del no_time["eventTime"]
    unknown_action = commissioning(GTIN_A, ["BE-2"], "LOT-EPCIS-7") | {"action": "UPSERT"}
    nobody = demo_gln(98, 98)  # a location GLN no member has
    unknown_party = object_event("inspecting", [sgtin(GTIN_A, "BE-3")], readPoint={"id": f"urn:epc:id:sgln:{nobody[:7]}.{nobody[7:12]}.0"})
    bad_epc = object_event("inspecting", ["https://id.gs1.org/01/04012345000017/21/BAD"])  # wrong check digit
    view = capture(site, "maker", document(no_time, unknown_action, unknown_party, bad_epc, commissioning(GTIN_A, ["BE-5"], "LOT-EPCIS-7")), behaviour="proceed")
    assert codes(view) == [(0, "invalid_event"), (1, "invalid_event"), (2, "unknown_party"), (3, "invalid_epc")], view
    assert "eventTime" in view["errors"][0]["message"] and "UPSERT" in view["errors"][1]["message"]
    assert view["capturedCount"] == 1 and all(error["status"] == 400 for error in view["errors"])


def test_capture_limits_are_413_with_the_standards_headers(site: Site):
    observation = object_event("inspecting", [sgtin(GTIN_A, "LIM-1")])
    over = json.dumps(document(*[observation] * 20_001)).encode()
    answer = post_raw(site, over)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "capture_limit" and answer.headers["GS1-EPCIS-Capture-Limit"] == "20000"
    huge = b" " * (16 * 1024 * 1024 + 1)
    answer = post_raw(site, huge)
    assert answer.status_code == 413 and answer.headers["GS1-EPCIS-Capture-File-Size-Limit"] == str(16 * 1024 * 1024)


def test_a_20000_event_document_is_captured(site: Site):
    events = [object_event("inspecting", [sgtin(GTIN_B, f"BIG-{i}")], eventTime=f"2026-12-02T10:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 10:03d}Z") for i in range(20_000)]
    view = capture(site, "maker", document(*events), timeout=240)
    assert view["success"] is True and view["capturedCount"] == 20_000, view["errors"][:3]
    from sqlalchemy import text

    from ledger_service.epcis.capture import BATCH_SIZE
    from partledger.db import make_engine

    engine = make_engine(site.stack.service_db_url)

    def batches() -> list[int] | None:  # the job's events' batch sizes, once every one of them is in a batch
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT batch_id, count(*) FROM epcis_events WHERE capture_id = :job GROUP BY batch_id"), {"job": view["captureID"]}).all()
        return None if any(batch is None for batch, _ in rows) else sorted(count for _, count in rows)

    try:  # closed BATCH_SIZE at a time, one after another in one round (the round comes once a second at most)
        sizes = wait_until(batches, "the 20,000 events batched", timeout=120)
    finally:
        engine.dispose()
    assert sum(sizes) == 20_000 and max(sizes) <= BATCH_SIZE and len(sizes) >= 20_000 // BATCH_SIZE


def test_a_large_document_prepared_by_the_worker_process_goes_into_the_ledger(site: Site):
    preparer = worker_of(site.client.app).preparer
    assert preparer.wait_until_up(timeout=120), "the preparing process did not start"
    before = preparer.by_workers
    serials = [f"WP-{i}" for i in range(preparer.in_process_below)]
    bad = object_event("inspecting", ["urn:epc:id:sgtin:not-an-epc"])
    made = capture(site, "maker", document(*[commissioning(GTIN_A, [serial], "LOT-WORKER", bizLocation={"id": site.location("maker")}) for serial in serials], bad), behaviour="proceed")
    assert preparer.by_workers == before + 1
    assert made["capturedCount"] == len(serials) and codes(made) == [(len(serials), "invalid_epc")], made["errors"][:3]
    assert {part(site, "maker", GTIN_A, serial)["status"] for serial in (serials[0], serials[-1])} == {"in_stock"}


def test_a_long_query_warm_up_does_not_hold_the_next_capture_job(site: Site, monkeypatch: pytest.MonkeyPatch):
    """The warm-up (deriving newly indexed blocks for the query) once ran in the loop that starts capture jobs: the
    first use of EPCIS in a service with a long ledger held a queued job back for seconds."""
    import threading

    from ledger_service.epcis import query as epcis_query

    inside, release = threading.Event(), threading.Event()

    def held_warm_up(services: Any) -> int:
        inside.set()
        release.wait(120)
        return 0

    monkeypatch.setattr(epcis_query, "warm_derived", held_warm_up)
    epcis_query.note_use()
    try:
        wait_until(inside.is_set, "the warm-up to start", timeout=60)
        observation = object_event("inspecting", [sgtin(GTIN_A, "WARM-1")], eventID="urn:uuid:7d0c6e6c-0000-4000-8000-000000000031")
        view = capture(site, "maker", document(observation))
        assert view["success"] and view["capturedCount"] == 1, view
        assert not release.is_set()  # the job ran while the warm-up was still held
    finally:
        release.set()


# --- proofs ------------------------------------------------------------------------------------------------------


def test_every_captured_event_has_a_proof_bundle_the_offline_verifier_accepts(site: Site):
    observation = object_event("inspecting", [sgtin(GTIN_A, "PF-1")], eventID="urn:uuid:7d0c6e6c-0000-4000-8000-000000000004", disposition="conformant")
    view = capture(site, "maker", document(observation))
    assert view["success"], view

    def bundle() -> dict[str, Any] | None:
        answer = site.client.get(f"/epcis/events/{quote('urn:uuid:7d0c6e6c-0000-4000-8000-000000000004', safe='')}/proof", headers=site.headers("auditor"))
        return answer.json() if answer.status_code == 200 else None

    proof = wait_until(bundle, "the event's batch anchored", timeout=60)
    anchors = v.TrustAnchors(blocks={proof["block"]["number"]: bytes.fromhex(proof["block"]["hash"][2:])})
    verdict = v.verify_bundle(proof, anchors=anchors)
    assert verdict.ok, verdict
    assert proof["batchRecord"]["value"][0] == "0x" + event_hash(proof["epcisEvent"], context=proof["epcisEvent"]["@context"]).split(";")[1][:64]
    forged = copy.deepcopy(proof)
    forged["epcisEvent"]["disposition"] = "non_conformant"
    assert not v.verify_bundle(forged, anchors=anchors).ok


# --- GS1's examples and the published hashes ---------------------------------------------------------------------


def example_files() -> list[str]:
    return sorted(str(path.relative_to(VECTORS / "examples")) for path in (VECTORS / "examples").rglob("*.jsonld"))


def gs1_identifiers(value: Any, key: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(kind, GLN, extension) of every party and location an example names."""
    from partledger.epcis.identifiers import parse_epc

    if isinstance(value, dict):
        for name, inner in value.items():
            yield from gs1_identifiers(inner, name)
    elif isinstance(value, list):
        for inner in value:
            yield from gs1_identifiers(inner, key)
    elif isinstance(value, str) and key in ("source", "destination", "id"):
        try:
            epc = parse_epc(value)
        except ValueError:
            return
        if epc.kind in ("pgln", "sgln"):
            yield epc.kind, epc.gln or "", epc.extension or ""


def normalised(event: dict[str, Any]) -> dict[str, Any]:
    """An event as a repository may give it back: without @context, recordTime and this server's own fields."""
    return {key: value for key, value in event.items() if key not in ("@context", "recordTime") and not key.startswith("partledger:")}


def test_gs1_examples_are_captured_come_back_equal_and_hash_as_published(site: Site):
    documents = {name: json.loads((VECTORS / "examples" / name).read_text()) for name in example_files()}
    found = {item for doc in documents.values() for item in gs1_identifiers(doc.get("epcisBody"))}
    parties = sorted({gln for kind, gln, _ in found if kind == "pgln"} - {demo_gln(org.id, 0) for org in site.ledger.orgs.values()})
    orgs = sorted(site.ledger.orgs, key=lambda name: site.ledger.orgs[name].id)
    for index, name in enumerate(orgs):  # the examples' parties spread over the members, their locations the maker's
        org = site.ledger.orgs[name]
        locations = [{"gln": demo_gln(org.id, 1), "site": "service-site"}]
        if name == "maker":
            locations += [{"gln": gln, "extension": ext or None} for kind, gln, ext in sorted(found) if kind == "sgln"]
        body = {"gln": demo_gln(org.id, 0), "party_glns": parties[index :: len(orgs)], "locations": locations}
        assert site.client.put("/v1/gs1/identity", headers=site.headers(name), json=body).status_code == 200
    published = json.loads((VECTORS / "hashes.json").read_text())
    for name, doc in documents.items():
        view = capture(site, "maker", doc)
        assert view["success"], (name, view["errors"][:3])
        for index, sent in enumerate(doc["epcisBody"]["eventList"]):
            expected_hash = event_hash(sent, context=doc.get("@context"))
            event_id = sent.get("eventID") or expected_hash
            answer = site.client.get(f"/epcis/events/{quote(event_id, safe='')}", headers=site.headers("distributor"))
            assert answer.status_code == 200, (name, index, answer.text)
            got = answer.json()
            assert normalised(got) == normalised(sent | {"eventID": event_id}), (name, index)
            assert got.get("partledger:eventHash", event_id) == expected_hash, (name, index)
    for vector in published:
        sent = documents[vector["file"]]
        event = sent["epcisBody"]["eventList"][vector["event_index"]]
        assert event_hash(event, context=sent.get("@context")) == vector["hash"], vector["file"]


# --- a lot's history, exported and captured into a fresh deployment ----------------------------------------------


def test_a_lots_exported_history_captured_into_a_fresh_deployment_gives_the_same_ledger_state(site: Site, tmp_path):
    from tests.chainkit import build_ledger
    from tests.servicekit import prepare_stack, running_service, wait_command

    client, stack, orgs = site.client, site.stack, site.ledger.orgs
    serials = ["RT-1", "RT-2", "RT-3"]
    ids = ["0x" + part_id(GTIN_A, s).hex() for s in serials]
    doc_hash = "0x" + "ab" * 32

    def act(org: str, path: str, body: dict[str, Any]) -> None:
        answer = client.post(path, headers=stack.headers(org), json=body)
        assert answer.status_code == 202, answer.text
        assert wait_command(stack, org, answer.json()["command_id"])["status"] == "confirmed"

    act("maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "LOT-RT", "serials": serials})
    act("maker", "/v1/parts/ship", {"part_ids": ids, "to_org": orgs["distributor"].id, "doc_hash": doc_hash})
    act("distributor", "/v1/parts/receive", {"part_ids": ids})
    act("distributor", "/v1/parts/ship", {"part_ids": ids[:2], "to_org": orgs["workshop"].id})
    act("workshop", "/v1/parts/receive", {"part_ids": ids[:2]})
    act("workshop", "/v1/parts/install", {"items": [{"part_id": ids[0], "vin": VIN}]})
    act("distributor", "/v1/parts/sell", {"part_ids": ids[2:]})
    lot = client.get(f"/v1/parts/{ids[0]}", headers=stack.headers("maker")).json()["part"]["lot"]["number"]
    act("maker", "/v1/lots/recall", {"lot": lot, "notice_hash": "0x" + "cd" * 32})
    exported = client.get(f"/epcis/lots/{lot}/document", headers=stack.headers("auditor"))
    assert exported.status_code == 200, exported.text
    history = exported.json()
    assert VIN not in exported.text
    steps = [event["bizStep"] for event in history["epcisBody"]["eventList"]]
    assert steps == ["commissioning", "shipping", "receiving", "shipping", "receiving", "installing", "retail_selling", "holding"], steps

    fresh = build_ledger(site.ledger.w3)
    assert {name: org.id for name, org in fresh.orgs.items()} == {name: org.id for name, org in orgs.items()}
    second = prepare_stack(fresh, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    by_location = {f"https://id.gs1.org/414/{demo_gln(org.id, 1)}": name for name, org in orgs.items()}
    with running_service(second, epcis_batch_seconds=0.2) as client2:
        for name, org in fresh.orgs.items():
            body = {"gln": demo_gln(org.id, 0), "locations": [{"gln": demo_gln(org.id, 1), "site": "service-site"}]}
            assert client2.put("/v1/gs1/identity", headers=second.headers(name), json=body).status_code == 200
        replay = Site(second, client2, fresh)
        events = history["epcisBody"]["eventList"]
        runs: list[tuple[str, list[dict[str, Any]]]] = []
        for event in events:  # consecutive events of one organisation, captured by it, in the order they happened
            actor = by_location[event["readPoint"]["id"]]  # where the acting site read the parts
            if runs and runs[-1][0] == actor:
                runs[-1][1].append(event)
            else:
                runs.append((actor, [event]))
        for actor, run in runs:
            view = capture(replay, actor, history | {"epcisBody": {"eventList": run}})
            assert view["success"], (actor, view["errors"])
        for pid in ids:
            before = client.get(f"/v1/parts/{pid}", headers=stack.headers("auditor")).json()["part"]
            after = client2.get(f"/v1/parts/{pid}", headers=second.headers("auditor")).json()["part"]
            keys = ("status", "custodian", "recipient", "manufacturer", "recalled", "gtin", "serial", "vin_hash")
            assert {k: before.get(k) for k in keys} == {k: after.get(k) for k in keys}, pid
            assert before["lot"]["code"] == after["lot"]["code"] == "LOT-RT"
            assert before["status"] in ("installed", "sold", "in_stock") and before["recalled"] is True


# --- a job outlives its process ----------------------------------------------------------------------------------


def test_a_capture_job_cut_short_by_a_stop_resumes_at_the_next_start_and_captures_each_event_once(deployed: Ledger, tmp_path):
    """The service stops (its worker mid-job, waiting for the chain) right after the 202; the next service instance
    runs the job to its end: each event captured once, each part registered once, the shipment made."""
    from tests.chainkit import revert_to, snapshot
    from tests.servicekit import prepare_stack, running_service

    snapshot_id = snapshot(deployed.w3)
    try:
        stack = prepare_stack(deployed, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
        serials = [f"RS-{i}" for i in range(5)]
        doc = document(
            commissioning(GTIN_A, serials, "LOT-RESUME"),
            object_event("shipping", [sgtin(GTIN_A, s) for s in serials], disposition="in_transit",
                         destinationList=[{"type": "owning_party", "destination": f"urn:partledger:org:{deployed.orgs['warehouse'].id}"}]),
        )  # fmt: skip
        with running_service(stack) as client:
            accepted = client.post("/epcis/capture", headers=stack.headers("maker"), json=doc)
            assert accepted.status_code == 202, accepted.text
            location = accepted.headers["Location"]
            wait_until(lambda: client.get(location, headers=stack.headers("maker")).json()["state"] == "running", "the job started")
        with running_service(stack) as client:
            site = Site(stack, client, deployed)
            view = wait_until(lambda: (v := client.get(location, headers=stack.headers("maker")).json())["state"] == "done" and v, "the job resumed", timeout=120)
            assert view["success"] and view["capturedCount"] == 2, view
            assert part(site, "maker", GTIN_A, "RS-0")["status"] == "in_transit"
            from sqlalchemy import select

            from ledger_service.tables import Command
            from partledger.db import make_engine

            with make_engine(stack.service_db_url).connect() as conn:
                kinds = sorted(row.kind for row in conn.execute(select(Command.__table__.c.kind)) if row.kind != "anchor_batch")
            assert kinds == ["register", "ship"], kinds
    finally:
        revert_to(deployed.w3, snapshot_id)
