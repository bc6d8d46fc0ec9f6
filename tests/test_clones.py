"""Clone detection: the rules alone (no sockets), then against the live stack: a scrapped part scanned, an installed
part scanned from two far-apart places within an hour, an owner's ordinary repeated scans; the manufacturer's view
of the flags; scans anchored as Merkle roots with proofs that verify on chain; raw addresses purged after a day."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from ledger_service.clones import (
    IMPOSSIBLE_TRAVEL,
    SCANNED_AFTER_SCRAP,
    SCANNED_AS_NEW_AFTER_INSTALLATION,
    PriorScan,
    ScanFacts,
    assess_scan,
    distance_km,
)
from ledger_service.routes.resolver import desk_of
from ledger_service.scan_tables import Scan
from ledger_service.scans import LEAF_TYPES
from partledger.merkle import leaf_hash, verify_proof
from partledger.model import PartStatus
from partledger.ids import part_id
from tests.chainkit import GTIN_A
from tests.labelkit import BEIJING, GUANGZHOU, JSON, caught_up, label_uri, live_stack, register, target
from tests.servicekit import wait_command, wait_until

S = PartStatus
HOUR = 3600.0
SHANGHAI = (31.2, 121.5)
SUZHOU = (31.3, 120.6)


def prior(at: float, where: tuple[float, float] | None) -> PriorScan:
    return PriorScan(b"\x01" * 16, at, *(where or (None, None)))


# --- the rules -----------------------------------------------------------------------------------------------


def test_distance_beijing_guangzhou_is_about_1900_km():
    assert 1850 < distance_km(*BEIJING, *GUANGZHOU) < 1920


def test_two_far_apart_scans_within_an_hour_are_impossible_travel():
    now = 100 * HOUR
    flags = assess_scan(ScanFacts(at=now, lat=GUANGZHOU[0], lon=GUANGZHOU[1]), registered=True, status=S.INSTALLED, history=[prior(now - 50 * 60, BEIJING)])
    assert [f.kind for f in flags] == [IMPOSSIBLE_TRAVEL]
    assert flags[0].detail["distance_km"] > 1800 and flags[0].detail["minutes_between"] == 50.0


def test_the_same_places_a_day_apart_or_by_plane_are_possible():
    now = 100 * HOUR
    facts = ScanFacts(at=now, lat=GUANGZHOU[0], lon=GUANGZHOU[1])
    assert assess_scan(facts, registered=True, status=S.INSTALLED, history=[prior(now - 3 * HOUR, BEIJING)]) == []
    assert assess_scan(facts, registered=True, status=S.INSTALLED, history=[prior(now - 25 * HOUR, BEIJING)]) == []


def test_neighbouring_cities_minutes_apart_are_possible_and_unlocated_scans_prove_nothing():
    now = 100 * HOUR
    assert assess_scan(ScanFacts(at=now, lat=SUZHOU[0], lon=SUZHOU[1]), registered=True, status=S.SOLD, history=[prior(now - 600, SHANGHAI)]) == []
    assert assess_scan(ScanFacts(at=now), registered=True, status=S.SOLD, history=[prior(now - 60, BEIJING)]) == []
    assert assess_scan(ScanFacts(at=now, lat=BEIJING[0], lon=BEIJING[1]), registered=True, status=S.SOLD, history=[prior(now - 60, None)]) == []


def test_owner_repeated_scans_at_home_raise_nothing():
    now = 100 * HOUR
    history = [prior(now - minutes * 60, BEIJING) for minutes in (1, 5, 30, 240)]
    assert assess_scan(ScanFacts(at=now, lat=BEIJING[0], lon=BEIJING[1], context="vehicle", vin_match=True), registered=True, status=S.INSTALLED, history=history) == []


def test_state_rules():
    now = 100 * HOUR
    assert [f.kind for f in assess_scan(ScanFacts(at=now), registered=True, status=S.SCRAPPED, history=[])] == [SCANNED_AFTER_SCRAP]
    assert [f.kind for f in assess_scan(ScanFacts(at=now), registered=True, status=S.RECYCLED, history=[])] == [SCANNED_AFTER_SCRAP]
    assert [f.kind for f in assess_scan(ScanFacts(at=now, context="purchase"), registered=True, status=S.INSTALLED, history=[])] == [SCANNED_AS_NEW_AFTER_INSTALLATION]
    assert assess_scan(ScanFacts(at=now, context="purchase"), registered=True, status=S.IN_STOCK, history=[]) == []
    assert [f.kind for f in assess_scan(ScanFacts(at=now), registered=False, status=None, history=[])] == ["unregistered_serial"]


# --- against the live stack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(deployed, tmp_path_factory):
    ledger = deployed
    with live_stack(ledger, tmp_path_factory.mktemp("clones"), public_rate_limit="10000/minute") as (stack, client):
        o, fn = ledger.orgs, ledger.parts.functions
        maker = o["maker"].key
        register(ledger, maker, gtin=GTIN_A, lot="LOT-C", serials=["SCRAPPED", "FITTED", "HOME", "NEW"])
        pid = {s: part_id(GTIN_A, s) for s in ("SCRAPPED", "FITTED", "HOME", "NEW")}
        ledger.act(maker, fn.scrapParts([pid["SCRAPPED"]], bytes(32)))
        ledger.act(maker, fn.shipParts([pid["FITTED"], pid["HOME"]], o["workshop"].id, bytes(32)))
        ledger.act(o["workshop"].key, fn.receiveParts([pid["FITTED"], pid["HOME"]], bytes(32)))
        ledger.act(o["workshop"].key, fn.installParts([pid["FITTED"], pid["HOME"]], [b"\x11" * 32, b"\x22" * 32], bytes(32)))
        caught_up(client, ledger)
        yield {"ledger": ledger, "stack": stack, "client": client, "uri": lambda serial: label_uri(ledger, gtin=GTIN_A, serial=serial, key=maker)}


def scan(world, serial, *, where=None, agent="phone-A", **extra):
    body = {"uri": world["uri"](serial), **extra}
    if where is not None:
        body |= {"lat": where[0], "lon": where[1]}
    answer = world["client"].post("/v1/scan", json=body, headers={"User-Agent": agent})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_scrapped_part_scanned_is_suspicious(world):
    answer = scan(world, "SCRAPPED")
    assert (answer["verdict"], answer["suspicious"], answer["flags"]) == ("scrapped", True, [SCANNED_AFTER_SCRAP])


def test_installed_part_scanned_in_beijing_then_guangzhou_within_an_hour_is_suspicious(world):
    first = scan(world, "FITTED", where=BEIJING, agent="phone-A")
    assert (first["verdict"], first["suspicious"], first["flags"]) == ("installed", False, [])
    second = scan(world, "FITTED", where=GUANGZHOU, agent="phone-B")
    assert (second["verdict"], second["suspicious"], second["flags"]) == ("installed", True, [IMPOSSIBLE_TRAVEL])
    page = world["client"].get(target(world["uri"]("FITTED")) + f"&lat={BEIJING[0]}&lon={BEIJING[1]}", headers={"Accept": "text/html", "Accept-Language": "en"})
    assert "Suspicious: this label may be a copy" in page.text and "too far apart" in page.text


def test_owner_scanning_again_and_again_is_not_suspicious(world):
    answers = [scan(world, "HOME", where=BEIJING, agent="owner-phone", context="vehicle") for _ in range(4)]
    answers.append(world["client"].get(target(world["uri"]("HOME")), headers={**JSON, "User-Agent": "owner-phone"}).json())
    assert [(a["verdict"], a["suspicious"], a["flags"]) for a in answers] == [("installed", False, [])] * 5


def test_installed_part_offered_as_new_is_suspicious(world):
    answer = scan(world, "FITTED", context="purchase")
    assert (answer["suspicious"], answer["flags"]) == (True, [SCANNED_AS_NEW_AFTER_INSTALLATION])
    assert scan(world, "NEW", context="purchase")["flags"] == []


def test_manufacturer_sees_the_flags_of_its_parts_and_nobody_else_but_auditors(world):
    stack, client = world["stack"], world["client"]
    scan(world, "SCRAPPED")
    mine = client.get("/v1/scan-flags", headers=stack.headers("maker")).json()["items"]
    assert {item["flag"] for item in mine} >= {SCANNED_AFTER_SCRAP}
    scrapped = next(item for item in mine if item["flag"] == SCANNED_AFTER_SCRAP)
    assert (scrapped["serial"], scrapped["gtin"], scrapped["verdict"]) == ("SCRAPPED", GTIN_A, "scrapped")
    assert "client_ip" not in scrapped and len(scrapped["client"]) == 34
    only = client.get("/v1/scan-flags", params={"kind": SCANNED_AFTER_SCRAP, "limit": 1}, headers=stack.headers("maker")).json()
    assert [item["flag"] for item in only["items"]] == [SCANNED_AFTER_SCRAP] and (only["next_cursor"] is not None) == (len([i for i in mine if i["flag"] == SCANNED_AFTER_SCRAP]) > 1)
    assert client.get("/v1/scan-flags", headers=stack.headers("maker2")).json()["items"] == []
    assert len(client.get("/v1/scan-flags", headers=stack.headers("auditor")).json()["items"]) == len(mine)
    refused = client.get("/v1/scan-flags", headers=stack.headers("workshop"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_role"
    assert client.get("/v1/scan-flags").status_code == 401


def test_invented_serials_of_a_gtin_are_flagged_to_its_manufacturer(world):
    answer = world["client"].get(target(world["uri"]("INVENTED-1")), headers=JSON)
    assert answer.status_code == 404 and answer.json()["flags"] == []  # the public answer says nothing of flags
    flags = world["client"].get("/v1/scan-flags", params={"kind": "unregistered_serial"}, headers=world["stack"].headers("maker")).json()["items"]
    assert [item["serial"] for item in flags] == ["INVENTED-1"]


def test_scans_are_anchored_as_merkle_roots_and_each_keeps_its_proof(world):
    stack, client, ledger = world["stack"], world["client"], world["ledger"]
    scanned = [scan(world, "HOME", where=BEIJING, agent="anchor-test") for _ in range(3)]
    desk = desk_of(client.app)
    batches = desk.book.anchor(desk.services.outbox, desk.services.index_engine)
    (batch,) = [b for b in batches if b["org_id"] == ledger.orgs["maker"].id]
    assert wait_command(stack, "maker", batch["command_id"])["status"] == "confirmed"
    root = bytes.fromhex(batch["root"][2:])
    assert desk.book.anchor(desk.services.outbox, desk.services.index_engine) == []  # nothing left to anchor
    on_chain = ledger.evidence.functions.batch(root).call()
    assert (on_chain[1], on_chain[2]) == (ledger.orgs["maker"].id, batch["scans"])  # (orgId, recordCount)
    for answer in scanned:
        record = wait_until(lambda: (r := client.get(f"/v1/scans/{answer['scan_id']}", headers=stack.headers("maker")).json())["batch"]["anchored"] and r, "the scan's batch anchored")
        assert record["batch"]["root"] == batch["root"] and record["batch"]["anchored"]["org_id"] == ledger.orgs["maker"].id
        types, raw = record["leaf"]["types"], record["leaf"]["value"]
        assert tuple(types) == LEAF_TYPES
        value = [bytes.fromhex(v[2:]) if t.startswith("bytes") else v for t, v in zip(types, raw)]
        proof = [bytes.fromhex(node[2:]) for node in record["batch"]["proof"]]
        assert verify_proof(root=root, types=types, value=value, proof=proof)
        assert ledger.evidence.functions.verifyBatchRecord(root, proof, leaf_hash(types, value)).call()
        assert value[4] == "39.9,116.4" and value[5] == "installed"
    assert client.get(f"/v1/scans/{scanned[0]['scan_id']}", headers=stack.headers("maker2")).status_code == 404


def test_raw_addresses_are_kept_a_day_at_most(world):
    answer = scan(world, "NEW")
    desk = desk_of(world["client"].app)
    desk.book.flush()
    engine, table = desk.services.service_engine, Scan.__table__
    scan_id = bytes.fromhex(answer["scan_id"][2:])
    with engine.connect() as conn:
        assert conn.execute(select(table.c.client_ip).where(table.c.scan_id == scan_id)).scalar() == "testclient"
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.scan_id == scan_id).values(scanned_at=table.c.scanned_at - 24 * HOUR - 1))
    recent = bytes.fromhex(scan(world, "NEW")["scan_id"][2:])  # a scan of now, whatever the other tests scanned before
    desk.book.flush()
    desk.book.purge_addresses()  # the service's keeper thread purges too (first soon after it starts): what counts is the state
    with engine.connect() as conn:
        assert conn.execute(select(table.c.client_ip).where(table.c.scan_id == scan_id)).scalar() is None
        assert conn.execute(select(table.c.client_ip).where(table.c.scan_id == recent)).scalar() == "testclient"


def test_a_scan_being_written_is_still_history_for_the_next_scan(tmp_path):
    """A flush takes the queue and writes it in a transaction: a scan read in between must still see the queued
    scans (it saw neither the queue nor the table, and an impossible journey went unflagged)."""
    import threading

    from sqlalchemy import event

    from ledger_service import migrate as service_migrate
    from ledger_service.scans import ScanBook, ScanRecord
    from partledger.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    service_migrate.upgrade(engine)
    book = ScanBook(engine)
    part = b"\x07" * 32
    book.record(ScanRecord(b"\x01" * 16, part, GTIN_A, "S", None, 1000.0, "installed", "json", b"\x00" * 16, None, lat=BEIJING[0], lon=BEIJING[1]))
    inserting, release = threading.Event(), threading.Event()

    def hold(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO scans"):
            inserting.set()
            assert release.wait(60)

    event.listen(engine, "before_cursor_execute", hold)
    flushing = threading.Thread(target=book.flush)
    flushing.start()
    try:
        assert inserting.wait(60)
        during = book.history(part, since=0)
    finally:
        release.set()
        flushing.join(60)
        event.remove(engine, "before_cursor_execute", hold)
    after = book.history(part, since=0)
    assert [p.scan_id for p in during] == [p.scan_id for p in after] == [b"\x01" * 16]
