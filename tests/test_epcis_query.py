"""The EPCIS query side (issue 16, section 3): ledger events derived from the mirror as EPCIS 2.0 events, merged with
captured ones; every query parameter, paging, refusals (400 with a stable code) and the data classes; a lot's history
as one document, also through `partledger epcis export`.

Pure unit tests on SQLite: the mirror and the service's EPCIS tables are written by hand (no chain, no sockets), once
per module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from indexer.tables import INDEX_METADATA, BlockTime, Installation, Lot, Organisation, Part, PartEvent, Recall, Shipment, SiteKey
from ledger_service.auth import Principal
from ledger_service.epcis.identities import set_identity
from ledger_service.epcis.mapping import CONTEXT
from ledger_service.epcis import derive
from ledger_service.epcis import query as epcis_query
from ledger_service.epcis.query import get_event, warm_derived
from ledger_service.epcis.tables import EpcisCommand, EpcisEvent, EpcisEventEpc
from ledger_service.errors import ApiError
from ledger_service.tables import SERVICE_METADATA, ChainTransaction, CommandItem
from ledger_service.vault import Vault
from partledger.db import make_engine
from partledger.epcis.hashing import event_hash, hash_digest
from partledger.epcis.identifiers import epc_key, lgtin_uri, location_uri, sgtin_uri, sgtin_urn
from partledger.epcis.schema import validate_document
from partledger.ids import gtin_check_digit, part_id
from partledger.model import PartStatus, Role
from partledger_cli.main import app as cli_app
from tests.chainkit import GTIN_A, GTIN_B

MAKER, WAREHOUSE, WORKSHOP, AUDITOR, DEALER = 1, 2, 3, 4, 5
SITE_M, SITE_W, SITE_S, SITE_D = ("0x" + c * 40 for c in "abcd")
GLN_MAKER = "401234500001" + str(gtin_check_digit("401234500001"))
GLN_PLANT = "401234500002" + str(gtin_check_digit("401234500002"))
SSCC = "urn:epc:id:sscc:4012345.0000000001"
BASE = 1_700_000_000
BASE_URL = "https://ledger.example.com/epcis/events"
VIN_1, VIN_2 = b"\x11" * 32, b"\x22" * 32
DOC = b"\xd0" * 32
NOTICE = b"\x0e" * 32
SELL_TX = b"\x5e" * 32

LOT_1 = [("P0", GTIN_A), ("P1", GTIN_A), ("P2", GTIN_A), ("P3", GTIN_A), ("Q0", GTIN_B)]
LOT_2 = [("R0", GTIN_A), ("R1", GTIN_A)]


def pid(serial: str, gtin: str = GTIN_A) -> bytes:
    return part_id(gtin, serial)


def dl(serial: str, gtin: str = GTIN_A) -> str:
    return sgtin_uri(gtin, serial)


def ts(block: int) -> int:
    return BASE + 12 * block


def iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def who(org_id: int, roles: Role) -> Principal:
    return Principal(org_id=org_id, roles=roles, key_id="k", sites=None)


MEMBER = who(DEALER, Role.DISTRIBUTOR)
CAPTURER = who(WAREHOUSE, Role.LOGISTICS)
GARAGE = who(WORKSHOP, Role.WORKSHOP)
AUDIT = who(AUDITOR, Role.AUDITOR)


@dataclass
class Sources:
    index_engine: Engine
    service_engine: Engine
    vault: Vault | None


class MirrorWriter:
    """Logs written into the mirror as the indexer would (part_events and the state tables they touch)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.shipments: list[dict[str, Any]] = []
        self.installations: list[dict[str, Any]] = []

    def log(self, block: int, index: int, kind: str, org: int, site: str, parts: list[tuple[str, str]], *, tx: bytes | None = None,
            counterparty: int | None = None, doc: bytes | None = None, vins: list[bytes] | None = None) -> None:  # fmt: skip
        tx_hash = tx or bytes([block, index]) * 16
        for position, (serial, gtin) in enumerate(parts):
            part = pid(serial, gtin)
            self.events.append({
                "chain_id": 31337, "block_number": block, "tx_hash": tx_hash, "log_index": index, "position": position, "part_id": part,
                "kind": kind, "org_id": org, "site_key": site, "counterparty": counterparty, "doc_hash": doc,
                "vin_hash": vins[position] if vins else None,
            })  # fmt: skip
            if kind == "shipped":
                self.shipments.append({"part_id": part, "from_org": org, "to_org": counterparty, "shipped_block": block, "shipped_tx": tx_hash, "outcome": None, "closed_block": None})
            elif kind == "received":
                shipment = next(s for s in reversed(self.shipments) if s["part_id"] == part and s["outcome"] is None)
                shipment.update(outcome="received", closed_block=block)
            elif kind == "installed":
                self.installations.append({"part_id": part, "org_id": org, "vin_hash": vins[position], "installed_block": block, "installed_tx": tx_hash, "removed_block": None})  # type: ignore[index]
            elif kind == "removed":
                next(i for i in self.installations if i["part_id"] == part and i["removed_block"] is None)["removed_block"] = block


def seed_mirror(engine: Engine) -> None:
    w = MirrorWriter()
    w.log(10, 0, "registered", MAKER, SITE_M, LOT_1[:4])
    w.log(10, 1, "registered", MAKER, SITE_M, LOT_1[4:])
    w.log(10, 2, "registered", MAKER, SITE_M, LOT_2)
    w.log(11, 0, "shipped", MAKER, SITE_M, [LOT_1[0], LOT_1[1], LOT_1[2], LOT_2[0]], counterparty=WAREHOUSE, doc=DOC)
    w.log(11, 1, "shipped", MAKER, SITE_M, [LOT_1[4]], counterparty=DEALER)
    w.log(11, 2, "received", DEALER, SITE_D, [LOT_1[4]])
    w.log(11, 3, "shipped", DEALER, SITE_D, [LOT_1[4]], counterparty=WAREHOUSE)
    w.log(12, 0, "received", WAREHOUSE, SITE_W, [LOT_1[0], LOT_1[1], LOT_1[2], LOT_2[0], LOT_1[4]])  # from two senders
    w.log(13, 0, "shipped", WAREHOUSE, SITE_W, [LOT_1[0], LOT_1[1]], counterparty=WORKSHOP)
    w.log(13, 1, "sold", WAREHOUSE, SITE_W, [LOT_2[0]], tx=SELL_TX)  # an EPCIS capture job's command: not derived
    w.log(14, 0, "received", WORKSHOP, SITE_S, [LOT_1[0], LOT_1[1]])
    w.log(15, 0, "installed", WORKSHOP, SITE_S, [LOT_1[0], LOT_1[1]], vins=[VIN_1, VIN_2])  # two vehicles
    w.log(16, 0, "removed", WORKSHOP, SITE_S, [LOT_1[1]])
    parts = [
        {"part_id": pid(serial, gtin), "gtin": gtin, "serial": serial, "lot": lot, "manufacturer": MAKER, "status": int(PartStatus.IN_STOCK),
         "custodian": MAKER, "site_key": SITE_M, "registered_block": 10, "updated_block": 10, "recalled": lot == 1}
        for lot, members in ((1, LOT_1), (2, LOT_2)) for serial, gtin in members
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(Organisation.__table__), [
            {"org_id": org, "name": name, "roles": int(roles), "registered_block": 1, "updated_block": 1}
            for org, name, roles in ((MAKER, "maker", Role.MANUFACTURER), (WAREHOUSE, "warehouse", Role.LOGISTICS),
                                     (WORKSHOP, "workshop", Role.WORKSHOP), (AUDITOR, "auditor", Role.AUDITOR), (DEALER, "dealer", Role.DISTRIBUTOR))
        ])  # fmt: skip
        conn.execute(insert(SiteKey.__table__), [
            {"address": address, "org_id": org, "site": site, "added_block": 1}
            for address, org, site in ((SITE_M, MAKER, "plant"), (SITE_W, WAREHOUSE, "dock"), (SITE_S, WORKSHOP, "bay"), (SITE_D, DEALER, "shop"))
        ])  # fmt: skip
        conn.execute(insert(Lot.__table__), [
            {"lot": 1, "manufacturer": MAKER, "lot_code": "L-1", "opened_block": 10, "recalled": True},
            {"lot": 2, "manufacturer": MAKER, "lot_code": "L-2", "opened_block": 10, "recalled": False},
        ])  # fmt: skip
        conn.execute(insert(Part.__table__), parts)
        conn.execute(insert(PartEvent.__table__), w.events)
        conn.execute(insert(Shipment.__table__), w.shipments)
        conn.execute(insert(Installation.__table__), w.installations)
        conn.execute(insert(Recall.__table__), [{"lot": 1, "org_id": MAKER, "site_key": SITE_M, "notice_hash": NOTICE, "block_number": 17, "tx_hash": b"\x17" * 32}])
        conn.execute(insert(BlockTime.__table__), [{"number": n, "timestamp": ts(n)} for n in range(9, 19)])


def captured(seq: int, event: dict[str, Any], *, org: int, epcs: list[tuple[str, str]], private: dict[str, Any] | None = None,
             vault: Vault, record_delay: float = 1.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """A captured event's rows as capture writes them: the body without private fields, eventID given or the hash."""
    event = {"@context": CONTEXT, **event}
    ni = event_hash(event, context=CONTEXT)
    event.setdefault("eventID", ni)
    digest = hash_digest(ni)
    seconds = event_time = _seconds(event["eventTime"])
    row = {
        "seq": seq, "event_id": event["eventID"], "event_hash": digest, "capture_id": f"job-{seq}", "org_id": org, "event_type": event["type"],
        "action": event.get("action"), "biz_step": event.get("bizStep"), "disposition": event.get("disposition"),
        "biz_location": (event.get("bizLocation") or {}).get("id"), "read_point": (event.get("readPoint") or {}).get("id"),
        "event_time_ms": int(event_time * 1000), "record_time_ms": int((seconds + record_delay) * 1000), "body": json.dumps(event),
        "private": vault.seal(orjson.dumps(private), digest) if private else None, "state": "kept",
    }  # fmt: skip
    rows = []
    for uri, role in epcs:
        part = None
        if uri.startswith("https://id.gs1.org/01/") and "/21/" in uri:
            gtin, serial = uri.split("/01/")[1].split("/21/")
            part = pid(serial, gtin)
        rows.append({"seq": seq, "epc": epc_key(uri), "role": role, "part_id": part})
    return row, rows


def _seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def seed_captured(engine: Engine, vault: Vault) -> dict[str, str]:
    """Five captured events; returns their eventIDs by name."""
    common = {"eventTimeZoneOffset": "+00:00"}
    c1 = {**common, "type": "ObjectEvent", "eventID": "urn:uuid:00000000-0000-4000-8000-000000000001", "eventTime": iso(ts(12) + 5),
          "epcList": [dl("P2")], "action": "OBSERVE", "bizStep": "inspecting", "readPoint": {"id": "urn:partledger:site:2:dock"}}  # fmt: skip
    c2 = {**common, "type": "ObjectEvent", "eventTime": iso(ts(13)), "epcList": [dl("R0")], "action": "OBSERVE", "bizStep": "retail_selling",
          "disposition": "retail_sold", "readPoint": {"id": "urn:partledger:site:2:dock"}}  # fmt: skip
    c3 = {**common, "type": "AggregationEvent", "eventID": "urn:uuid:00000000-0000-4000-8000-000000000003", "eventTime": iso(ts(17) + 10),
          "parentID": SSCC, "childEPCs": [dl("P3")], "action": "ADD", "bizStep": "packing", "bizLocation": {"id": location_uri(GLN_PLANT)}}  # fmt: skip
    c4 = {**common, "type": "TransformationEvent", "eventID": "urn:uuid:00000000-0000-4000-8000-000000000004", "eventTime": iso(ts(17) + 20),
          "inputEPCList": [dl("Q0", GTIN_B)], "outputEPCList": [dl("X9")]}  # fmt: skip
    c5 = {**common, "type": "ObjectEvent", "eventID": "urn:uuid:00000000-0000-4000-8000-000000000005", "eventTime": iso(ts(17) + 30),
          "quantityList": [{"epcClass": lgtin_uri(GTIN_A, "L-1"), "quantity": 3}], "action": "OBSERVE", "bizStep": "storing"}  # fmt: skip
    rows = [
        captured(1, c1, org=WAREHOUSE, epcs=[(dl("P2"), "epc")], private={"partledger:vin": "WVWZZZ1JZXW000001"}, vault=vault),
        captured(2, c2, org=WAREHOUSE, epcs=[(dl("R0"), "epc")], vault=vault),
        captured(3, c3, org=MAKER, epcs=[(SSCC, "parent"), (dl("P3"), "child")], vault=vault),
        captured(4, c4, org=MAKER, epcs=[(dl("Q0", GTIN_B), "input"), (dl("X9"), "output")], vault=vault, record_delay=3600),
        captured(5, c5, org=MAKER, epcs=[(lgtin_uri(GTIN_A, "L-1"), "quantity")], vault=vault),
    ]
    with engine.begin() as conn:
        conn.execute(insert(EpcisEvent.__table__), [row for row, _ in rows])
        conn.execute(insert(EpcisEventEpc.__table__), [epc for _, epcs in rows for epc in epcs])
        # c2's ledger command: the sale's transaction is the capture job's, so the mirror's sale is not derived again
        conn.execute(insert(EpcisCommand.__table__).values(command_id="cmd-2", capture_id="job-2"))
        conn.execute(insert(ChainTransaction.__table__).values(id=1, signer=SITE_W, nonce=0, tx_hash=SELL_TX, raw=b"", kind="sell", part_count=1, state="confirmed", created_at=0.0))
        conn.execute(insert(CommandItem.__table__).values(
            command_id="cmd-2", signer=SITE_W, kind="sell", pack_key="", payload="{}", part_count=1, state="confirmed", tx_id=1, created_at=0.0, updated_at=0.0,
        ))  # fmt: skip
    return {"c1": c1["eventID"], "c2": rows[1][0]["event_id"], "c3": c3["eventID"], "c4": c4["eventID"], "c5": c5["eventID"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sources, dict[str, str], Path]]:
    yield from make_world(tmp_path_factory.mktemp("epcis-query"))


def make_world(folder: Path) -> Iterator[tuple[Sources, dict[str, str], Path]]:
    index, service = make_engine(f"sqlite:///{folder / 'index.db'}"), make_engine(f"sqlite:///{folder / 'service.db'}")
    INDEX_METADATA.create_all(index)
    SERVICE_METADATA.create_all(service)
    seed_mirror(index)
    set_identity(service, index, MAKER, gln=GLN_MAKER, company_prefix="4012345", locations=[{"gln": GLN_PLANT, "site": "plant"}])
    key = os.urandom(32)
    vault = Vault(key)
    names = seed_captured(service, vault)
    (folder / "vin.key").write_text(__import__("base64").b64encode(key).decode())
    yield Sources(index, service, vault), names, folder
    index.dispose()
    service.dispose()


# The module runs twice: the events derived as dicts (as `partledger epcis export` and the tests read them), and as the
# routes answer, encoded, from the logs kept encoded (derive.EncodedLogs). In "kept", each query is asked twice: the
# first derives and keeps its logs, the second reads them kept; both must give the same JSON.
MODE = {"kept": False}


@pytest.fixture(autouse=True, params=["derived", "kept"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    MODE["kept"] = request.param == "kept"
    yield request.param
    MODE["kept"] = False


def _as_json(answer: Any) -> Any:
    """An answer as it goes out (orjson.Fragments and all) and comes back, without its creationDate (the time now)."""
    document = orjson.loads(orjson.dumps(answer))
    document.pop("creationDate", None)
    return document


def _kept(function: Any, **kwargs: Any) -> Any:
    first = function(**kwargs, encoded=True)
    again = function(**kwargs, encoded=True)
    if isinstance(first, tuple):  # query_events: (document, next_url)
        assert (_as_json(first[0]), first[1]) == (_as_json(again[0]), again[1])
        return orjson.loads(orjson.dumps(again[0])), again[1]
    assert _as_json(first) == _as_json(again)
    return orjson.loads(orjson.dumps(again))


def query_events(**kwargs: Any) -> tuple[dict[str, Any], str | None]:
    return _kept(epcis_query.query_events, **kwargs) if MODE["kept"] else epcis_query.query_events(**kwargs)


def lot_history_document(**kwargs: Any) -> dict[str, Any]:
    return _kept(epcis_query.lot_history_document, **kwargs) if MODE["kept"] else epcis_query.lot_history_document(**kwargs)


def label(event: dict[str, Any], names: dict[str, str]) -> str:
    """A short name: `bizStep@block` for a derived event, c1..c5 for the captured ones."""
    if "partledger:blockNumber" in event:
        return f"{event['bizStep']}@{event['partledger:blockNumber']}"
    return next(name for name, event_id in names.items() if event_id == event["eventID"])


def run(world: Any, principal: Principal = MEMBER, **params: str) -> tuple[list[dict[str, Any]], str | None]:
    sources, _, _ = world
    document, next_url = query_events(services=sources, principal=principal, params=params, base_url=BASE_URL)
    assert document["type"] == "EPCISQueryDocument"
    return document["epcisBody"]["queryResults"]["resultsBody"]["eventList"], next_url


def labels(world: Any, principal: Principal = MEMBER, **params: str) -> list[str]:
    events, next_url = run(world, principal, perPage="1000", **params)
    assert next_url is None
    return [label(event, world[1]) for event in events]


def refused(world: Any, code: str, **params: str) -> ApiError:
    with pytest.raises(ApiError) as raised:
        run(world, **params)
    assert (type(raised.value).__name__, raised.value.code) == ("BadRequest", code)
    return raised.value


TIMELINE = [
    "commissioning@10", "commissioning@10", "commissioning@10",
    "shipping@11", "shipping@11", "receiving@11", "shipping@11",
    "receiving@12", "receiving@12", "c1",
    "c2", "shipping@13",
    "receiving@14", "installing@15", "installing@15", "removing@16", "holding@17",
    "c3", "c4", "c5",
]  # fmt: skip


# --- derived events -------------------------------------------------------------------------------------------------


def test_every_event_comes_once_in_event_time_order_derived_and_captured_merged(world):
    assert labels(world) == TIMELINE


def test_a_ledger_log_is_one_object_event_naming_its_parts_in_position_order(world):
    events, _ = run(world, EQ_bizStep="shipping", perPage="1")
    first = events[0]
    assert first["epcList"] == [dl("P0"), dl("P1"), dl("P2"), dl("R0")]
    assert (first["type"], first["action"], first["bizStep"], first["disposition"]) == ("ObjectEvent", "OBSERVE", "shipping", "in_transit")
    assert (first["eventTime"], first["recordTime"], first["eventTimeZoneOffset"]) == (iso(ts(11)), iso(ts(11)), "+00:00")
    assert first["readPoint"] == {"id": location_uri(GLN_PLANT)} and "bizLocation" not in first  # the parts leave the plant
    assert first["destinationList"] == [{"type": "owning_party", "destination": f"urn:partledger:org:{WAREHOUSE}"}]
    assert first["bizTransactionList"] == [{"type": "urn:partledger:btt:ledger_document", "bizTransaction": "urn:partledger:doc:0x" + DOC.hex()}]
    assert (first["partledger:txHash"], first["partledger:logIndex"], first["partledger:blockNumber"], first["partledger:docHash"]) == (
        "0x" + (bytes([11, 0]) * 16).hex(), 0, 11, "0x" + DOC.hex()
    )


def test_a_registration_is_a_commissioning_add_with_its_lot_in_ilmd_at_the_maker_s_gs1_location(world):
    events, _ = run(world, EQ_action="ADD", eventType="ObjectEvent")
    assert [event["ilmd"] for event in events] == [{"cbvmda:lotNumber": "L-1"}, {"cbvmda:lotNumber": "L-1"}, {"cbvmda:lotNumber": "L-2"}]
    assert events[1]["epcList"] == [dl("Q0", GTIN_B)]
    assert events[0]["bizLocation"] == events[0]["readPoint"] == {"id": location_uri(GLN_PLANT)}
    assert (events[0]["disposition"], events[0]["action"]) == ("active", "ADD")


def test_an_install_splits_per_vehicle_and_a_receipt_per_sender(world):
    installs, _ = run(world, GARAGE, EQ_bizStep="installing")
    assert [(e["epcList"], e["partledger:vinHash"]) for e in installs] == [([dl("P0")], "0x" + VIN_1.hex()), ([dl("P1")], "0x" + VIN_2.hex())]
    removals, _ = run(world, GARAGE, EQ_bizStep="removing")
    assert [(e["epcList"], e["partledger:vinHash"]) for e in removals] == [([dl("P1")], "0x" + VIN_2.hex())]
    receipts, _ = run(world, GE_eventTime=iso(ts(12)), LT_eventTime=iso(ts(13)), EQ_bizStep="receiving")
    assert [(e["epcList"], e["sourceList"]) for e in receipts] == [
        ([dl("P0"), dl("P1"), dl("P2"), dl("R0")], [{"type": "owning_party", "source": f"https://id.gs1.org/417/{GLN_MAKER}"}]),
        ([dl("Q0", GTIN_B)], [{"type": "owning_party", "source": f"urn:partledger:org:{DEALER}"}]),
    ]
    assert receipts[0]["bizLocation"] == {"id": f"urn:partledger:site:{WAREHOUSE}:dock"}


def test_a_recall_names_its_lot_as_an_lgtin_class_per_gtin_with_its_notice_hash(world):
    (recall,), _ = run(world, EQ_disposition="recalled")
    assert recall["quantityList"] == [{"epcClass": lgtin_uri(GTIN_A, "L-1")}, {"epcClass": lgtin_uri(GTIN_B, "L-1")}]
    assert (recall["bizStep"], recall["partledger:noticeHash"], recall["eventTime"]) == ("holding", "0x" + NOTICE.hex(), iso(ts(17)))
    assert "epcList" not in recall and "bizLocation" not in recall


def test_a_derived_event_id_is_its_canonical_hash_and_stable(world):
    first, _ = run(world, AUDIT, perPage="1000")  # the whole events (a member's lack the VIN hashes)
    again, _ = run(world, AUDIT, perPage="1000")
    derived = [event for event in first if "partledger:txHash" in event]
    assert len(derived) == 15
    for event in derived:
        rest = {name: value for name, value in event.items() if name != "eventID"}
        assert event["eventID"] == event_hash(rest, context=CONTEXT)
    assert [event["eventID"] for event in first] == [event["eventID"] for event in again]
    assert len({event["eventID"] for event in first}) == len(first)


def test_a_capture_job_s_transaction_is_answered_by_the_captured_event_only(world):
    assert labels(world, EQ_bizStep="retail_selling") == ["c2"]


def test_a_lot_s_history_is_one_valid_epcis_document_oldest_first(world):
    sources, names, _ = world
    document = lot_history_document(services=sources, principal=AUDIT, lot=1)
    assert document["type"] == "EPCISDocument" and document["@context"] == CONTEXT
    assert validate_document(document) == []
    events = document["epcisBody"]["eventList"]
    assert [label(e, names) for e in events] == [
        "commissioning@10", "commissioning@10", "shipping@11", "shipping@11", "receiving@11", "shipping@11",
        "receiving@12", "receiving@12", "c1", "shipping@13", "receiving@14", "installing@15", "installing@15",
        "removing@16", "holding@17", "c3", "c4", "c5",
    ]  # fmt: skip
    lot_2 = lot_history_document(services=sources, principal=AUDIT, lot=2)["epcisBody"]["eventList"]
    assert [label(e, names) for e in lot_2] == ["commissioning@10", "shipping@11", "receiving@12", "c2"]


def test_a_lot_s_history_of_an_unknown_lot_is_404(world):
    with pytest.raises(ApiError) as raised:
        lot_history_document(services=world[0], principal=AUDIT, lot=99)
    assert (raised.value.code, type(raised.value).__name__) == ("unknown_lot", "NotFound")


def test_the_cli_exports_a_lot_s_history_from_the_databases(world):
    sources, names, folder = world
    out = folder / "lot-1.jsonld"
    result = CliRunner().invoke(cli_app, [
        "epcis", "export", "--lot", "1", "-o", str(out), "--index-db", str(sources.index_engine.url), "--service-db", str(sources.service_engine.url),
        "--vin-key-file", str(folder / "vin.key"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text())
    expected = lot_history_document(services=sources, principal=AUDIT, lot=1)
    assert exported["epcisBody"] == expected["epcisBody"]
    assert exported["epcisBody"]["eventList"][8]["partledger:vin"] == "WVWZZZ1JZXW000001"  # c1's private field, with the key
    missing = CliRunner().invoke(cli_app, ["epcis", "export", "--lot", "99", "-o", str(out), "--index-db", str(sources.index_engine.url), "--service-db", str(sources.service_engine.url)])
    assert missing.exit_code != 0


def test_the_cli_exports_through_a_service_with_an_api_key(world, monkeypatch):
    import httpx

    folder = world[2]
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["authorization"]))
        if request.url.path != "/epcis/lots/1/document":
            return httpx.Response(404, json={"error": {"code": "unknown_lot", "message": "no lot"}})
        return httpx.Response(200, json={"type": "EPCISDocument", "epcisBody": {"eventList": [{"type": "ObjectEvent"}]}})

    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **options: real(transport=httpx.MockTransport(answer), **options))
    out = folder / "via-service.jsonld"
    result = CliRunner().invoke(cli_app, ["epcis", "export", "--lot", "1", "-o", str(out), "--service", "https://ledger.example.com", "--key", "plk_a_b"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["epcisBody"]["eventList"] == [{"type": "ObjectEvent"}]
    assert seen == [("/epcis/lots/1/document", "Bearer plk_a_b")]
    refused = CliRunner().invoke(cli_app, ["epcis", "export", "--lot", "2", "-o", str(out), "--service", "https://ledger.example.com", "--key", "plk_a_b"])
    assert refused.exit_code != 0 and "404" in str(refused.exception)


# --- every query parameter ------------------------------------------------------------------------------------------


def test_event_type_selects_the_standard_s_event_types(world):
    assert labels(world, eventType="AggregationEvent") == ["c3"]
    assert labels(world, eventType="AggregationEvent|TransformationEvent") == ["c3", "c4"]
    assert len(labels(world, eventType="ObjectEvent")) == len(TIMELINE) - 2


def test_event_and_record_time_bounds_are_inclusive_below_and_exclusive_above(world):
    assert labels(world, GE_eventTime=iso(ts(12)), LT_eventTime=iso(ts(14))) == ["receiving@12", "receiving@12", "c1", "c2", "shipping@13"]
    assert labels(world, GE_eventTime=iso(ts(17) + 10)) == ["c3", "c4", "c5"]
    # a derived event's recordTime is its eventTime; c4 was recorded an hour after it happened
    assert labels(world, GE_recordTime=iso(ts(17) + 11)) == ["c3", "c4", "c5"]
    assert labels(world, GE_recordTime=iso(ts(17) + 15)) == ["c4", "c5"]
    assert labels(world, GE_recordTime=iso(ts(17) + 40)) == ["c4"]
    assert labels(world, LT_recordTime=iso(ts(11))) == ["commissioning@10"] * 3
    assert labels(world, GE_eventTime="2100-01-01T00:00:00+08:00") == []
    assert labels(world, LT_eventTime=iso(ts(11)).replace("Z", " 00:00")) == ["commissioning@10"] * 3  # "+" unencoded


def test_action_biz_step_and_disposition_take_bare_words_or_cbv_uris(world):
    assert labels(world, EQ_action="ADD") == ["commissioning@10"] * 3 + ["c3"]
    for form in ("installing", "https://ref.gs1.org/cbv/BizStep-installing", "urn:epcglobal:cbv:bizstep:installing", "cbv:BizStep-installing"):
        assert labels(world, EQ_bizStep=form) == ["installing@15", "installing@15"]
    assert labels(world, EQ_bizStep="receiving|removing") == ["receiving@11", "receiving@12", "receiving@12", "receiving@14", "removing@16"]
    assert labels(world, EQ_disposition="https://ref.gs1.org/cbv/Disp-retail_sold") == ["c2"]
    assert labels(world, EQ_disposition="in_transit", EQ_action="OBSERVE") == ["shipping@11", "shipping@11", "shipping@11", "shipping@13"]


def test_match_epc_takes_epc_uris_and_digital_links_alike(world):
    expected = ["commissioning@10", "shipping@11", "receiving@12", "c1"]
    assert labels(world, MATCH_epc=dl("P2")) == expected
    assert labels(world, MATCH_epc=sgtin_urn(GTIN_A, "P2", company_prefix_length=7)) == expected
    assert labels(world, MATCH_epc=f"https://resolver.example.com/01/{GTIN_A}/21/P2") == expected


def test_match_epc_with_a_pattern_and_a_split_event_matches_its_own_parts_only(world):
    gtin_b = "urn:epc:idpat:sgtin:9506000.013435.*"
    assert labels(world, MATCH_epc=gtin_b) == ["commissioning@10", "shipping@11", "receiving@11", "shipping@11", "receiving@12"]
    (receipt,) = run(world, MATCH_epc=f"https://id.gs1.org/01/{GTIN_B}", EQ_bizStep="receiving", GE_eventTime=iso(ts(12)))[0]
    assert receipt["epcList"] == [dl("Q0", GTIN_B)]  # the dealer's parcel, not the maker's
    assert labels(world, MATCH_epc=dl("P1"), EQ_bizStep="installing") == ["installing@15"]


def test_match_parent_input_output_and_any_epc_look_at_their_own_fields(world):
    assert labels(world, MATCH_parentID=SSCC) == ["c3"]
    assert labels(world, MATCH_parentID=dl("P3")) == []
    assert labels(world, MATCH_anyEPC=dl("P3")) == ["commissioning@10", "c3"]
    assert labels(world, MATCH_anyEPC=epc_key(SSCC)) == ["c3"]  # the SSCC as a Digital Link
    assert labels(world, MATCH_inputEPC=dl("Q0", GTIN_B)) == ["c4"]
    assert labels(world, MATCH_outputEPC=dl("X9")) == ["c4"]
    assert labels(world, MATCH_epc=dl("X9")) == []


def test_match_epc_class_takes_lgtins_in_both_forms_and_gtin_patterns(world):
    assert labels(world, MATCH_epcClass=lgtin_uri(GTIN_A, "L-1")) == ["holding@17", "c5"]
    assert labels(world, MATCH_epcClass="urn:epc:class:lgtin:4012345.000001.L-1") == ["holding@17", "c5"]
    assert labels(world, MATCH_epcClass=lgtin_uri(GTIN_B, "L-1")) == ["holding@17"]
    assert labels(world, MATCH_anyEPCClass="urn:epc:idpat:sgtin:4012345.000001.*") == ["holding@17", "c5"]
    assert labels(world, MATCH_epcClass=lgtin_uri(GTIN_A, "L-2")) == []


def test_biz_location_and_read_point_name_sites_by_gs1_location_or_partledger_urn(world):
    plant_urn = "urn:epc:id:sgln:4012345.00002.0"
    assert epc_key(plant_urn) == location_uri(GLN_PLANT)
    assert labels(world, EQ_bizLocation=plant_urn) == ["commissioning@10"] * 3 + ["c3"]
    assert labels(world, EQ_readPoint=location_uri(GLN_PLANT)) == ["commissioning@10"] * 3 + ["shipping@11", "shipping@11", "holding@17"]
    assert labels(world, EQ_readPoint=f"urn:partledger:site:{WAREHOUSE}:dock") == ["receiving@12", "receiving@12", "c1", "c2", "shipping@13"]
    assert labels(world, EQ_bizLocation=f"urn:partledger:site:{WAREHOUSE}:dock") == ["receiving@12", "receiving@12"]
    assert labels(world, EQ_readPoint="urn:partledger:site:77:nowhere") == []


def test_eq_event_id_finds_captured_and_derived_events(world):
    names = world[1]
    everything, _ = run(world, perPage="1000")
    install = next(event for event in everything if event.get("bizStep") == "installing")
    assert labels(world, EQ_eventID=f"{names['c1']}|{install['eventID']}") == ["c1", "installing@15"]
    assert labels(world, EQ_eventID="ni:///sha-256;" + "00" * 32 + "?ver=CBV2.0") == []


def test_a_parameter_given_twice_in_a_query_string_is_one_list(world):
    from starlette.datastructures import QueryParams

    sources = world[0]
    params = QueryParams("EQ_bizStep=removing&EQ_bizStep=installing&perPage=100")
    document, _ = query_events(services=sources, principal=MEMBER, params=params, base_url=BASE_URL)
    events = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert [label(event, world[1]) for event in events] == ["installing@15", "installing@15", "removing@16"]
    with pytest.raises(ApiError) as raised:
        query_events(services=sources, principal=MEMBER, params=QueryParams("GE_eventTime=2024-01-01T00:00:00Z&GE_eventTime=2025-01-01T00:00:00Z"), base_url=BASE_URL)
    assert raised.value.code == "invalid_parameter"


def test_warming_indexes_every_derived_event_id_once(world):
    assert warm_derived(world[0]) == 15
    assert warm_derived(world[0]) == 15  # nothing new indexed since


@pytest.mark.parametrize("read", ["events", "event", "lot"])
def test_a_process_warms_only_while_epcis_is_used_in_it(world, monkeypatch, read):
    import time

    quiet = epcis_query.WARM_WHILE_USED_SECONDS + 1
    monkeypatch.setattr(epcis_query, "_last_used", time.monotonic() - quiet)
    assert not epcis_query.used_recently()  # relay and command traffic alone: no warm-up
    if read == "events":
        query_events(services=world[0], principal=MEMBER, params={"perPage": "1"}, base_url=BASE_URL)
    elif read == "event":
        with pytest.raises(ApiError):
            get_event(services=world[0], principal=MEMBER, event_id="urn:uuid:00000000-0000-4000-8000-000000000000")
    else:
        lot_history_document(services=world[0], principal=AUDIT, lot=1)
    assert epcis_query.used_recently()
    monkeypatch.setattr(epcis_query, "_last_used", epcis_query._last_used - quiet)
    assert not epcis_query.used_recently()


def test_the_capture_worker_warms_only_after_an_epcis_read(world, monkeypatch):
    """And starts its preparing process then, so that the next large capture's first job does not prepare the whole
    document in the service's interpreter while the process starts."""
    import time

    from ledger_service.epcis import worker as capture_worker
    from ledger_service.epcis.preparing import Preparer
    from ledger_service.epcis.worker import CaptureWorker

    warmed: list[int] = []
    monkeypatch.setattr(capture_worker, "WARM_SECONDS", 3_600.0)  # "not again" below, however long the process takes to start
    monkeypatch.setattr(epcis_query, "warm_derived", lambda sources: warmed.append(1) or 0)
    monkeypatch.setattr(epcis_query, "_last_used", time.monotonic() - epcis_query.WARM_WHILE_USED_SECONDS - 1)
    worker = object.__new__(CaptureWorker)  # its warm-up alone: no jobs
    worker.services, worker._next_warm = world[0], 0.0
    worker.preparer = Preparer(processes=1, in_process_below=1_000)
    try:
        assert not worker.warm() and warmed == [] and not worker.preparer.worker_up_for(1_000)
        assert worker.preparer._pool is None  # a process that serves no EPCIS starts none
        query_events(services=world[0], principal=MEMBER, params={"perPage": "1"}, base_url=BASE_URL)
        assert worker.warm() and warmed == [1]
        assert worker.preparer._pool is not None
        started = worker.preparer._started
        assert started is not None and started.result(timeout=120) > 0  # the worker's pid: it is up
        assert worker.preparer.worker_up_for(1_000)
        assert not worker.warm() and warmed == [1]  # not again within WARM_SECONDS
    finally:
        worker.preparer.close()


# --- the ways a query reads (each must give the same events) ---------------------------------------------------------

MATCH_QUERIES = [
    ({"MATCH_epc": dl("P2")}, ["commissioning@10", "shipping@11", "receiving@12", "c1"]),
    ({"MATCH_epc": "urn:epc:idpat:sgtin:9506000.013435.*"}, ["commissioning@10", "shipping@11", "receiving@11", "shipping@11", "receiving@12"]),
    ({"MATCH_anyEPC": f"https://id.gs1.org/01/{GTIN_A}", "EQ_bizStep": "packing|inspecting"}, ["c1", "c3"]),
    ({"MATCH_anyEPC": dl("P3")}, ["commissioning@10", "c3"]),
    ({"MATCH_anyEPC": epc_key(SSCC), "MATCH_epc": dl("P3")}, ["c3"]),  # P3 is c3's child
    ({"MATCH_parentID": SSCC, "MATCH_anyEPC": dl("P3")}, ["c3"]),
    ({"MATCH_epcClass": lgtin_uri(GTIN_A, "L-1")}, ["holding@17", "c5"]),
    ({"MATCH_anyEPCClass": "urn:epc:idpat:sgtin:4012345.000001.*"}, ["holding@17", "c5"]),
    ({"MATCH_inputEPC": dl("Q0", GTIN_B)}, ["c4"]),
]


@pytest.mark.parametrize("sparse", [10_000, 0], ids=["through-the-epc-index", "in-event-time-order"])
def test_match_finds_the_same_captured_events_through_the_epc_index_or_in_event_time_order(world, monkeypatch, sparse):
    import ledger_service.epcis.query as query_module

    monkeypatch.setattr(query_module, "SPARSE_EPCS", sparse)  # 0: every MATCH_ names "many" EPC rows
    for params, expected in MATCH_QUERIES:
        assert labels(world, **params) == expected, params


def test_capture_jobs_transactions_are_told_apart_read_whole_or_asked_in_batches(world, monkeypatch):
    import ledger_service.epcis.derive as derive_module
    from ledger_service.epcis.derive import CapturedTransactions

    sources = world[0]
    others = {bytes([n]) * 32 for n in range(100, 200)}
    with sources.service_engine.connect() as conn:
        for read_from in (0, 10_000):  # read whole (fewer capture transactions than asked about), or IN lists
            monkeypatch.setattr(derive_module, "READ_CAPTURED_FROM", read_from)
            assert CapturedTransactions(conn).among(others | {SELL_TX}) == {SELL_TX}
            assert CapturedTransactions(conn).among(others) == set()
    monkeypatch.setattr(derive_module, "READ_CAPTURED_FROM", 0)
    monkeypatch.setattr(derive_module, "SQL_CHUNK", 1)  # every IN list the driver gets, one value a statement
    assert labels(world) == TIMELINE
    assert labels(world, EQ_bizStep="retail_selling") == ["c2"]
    expected = ["commissioning@10", "commissioning@10", "shipping@11", "shipping@11", "receiving@11", "shipping@11", "receiving@12",
                "receiving@12", "c1", "shipping@13", "receiving@14", "installing@15", "installing@15", "removing@16", "holding@17", "c3", "c4", "c5"]  # fmt: skip
    assert [label(e, world[1]) for e in lot_history_document(services=sources, principal=AUDIT, lot=1)["epcisBody"]["eventList"]] == expected


def test_a_lots_captured_events_are_looked_up_per_part_only_when_one_of_its_gtins_was_captured(world):
    from ledger_service.epcis.query import _may_name_parts_of

    with world[0].service_engine.connect() as conn:
        assert _may_name_parts_of(conn, [GTIN_B])  # c4's input, Q0
        assert _may_name_parts_of(conn, ["00000000000017", GTIN_A])
        assert not _may_name_parts_of(conn, ["00000000000017"])


def test_a_derived_event_is_the_same_hashed_afresh_or_from_the_hash_memo(world):
    from ledger_service.epcis.derive import HASHES

    warm, _ = run(world, AUDIT, perPage="1000")
    warm_lot = lot_history_document(services=world[0], principal=AUDIT, lot=1)["epcisBody"]
    HASHES.clear()
    cold, _ = run(world, AUDIT, perPage="1000")
    assert orjson.dumps(cold) == orjson.dumps(warm)
    HASHES.clear()
    assert orjson.dumps(lot_history_document(services=world[0], principal=AUDIT, lot=1)["epcisBody"]) == orjson.dumps(warm_lot)


def test_a_query_pauses_the_cyclic_garbage_collector_and_resumes_it_as_it_was(world, monkeypatch):
    import gc

    import ledger_service.epcis.query as query_module

    seen = []
    places = query_module._places
    monkeypatch.setattr(query_module, "_places", lambda *args: seen.append(gc.isenabled()) or places(*args))
    assert gc.isenabled()
    epcis_query.query_events(services=world[0], principal=MEMBER, params={"perPage": "5"}, base_url=BASE_URL, encoded=MODE["kept"])
    epcis_query.lot_history_document(services=world[0], principal=AUDIT, lot=1, encoded=MODE["kept"])
    with pytest.raises(ApiError):
        epcis_query.lot_history_document(services=world[0], principal=AUDIT, lot=99)
    assert seen == [False, False] and gc.isenabled()  # paused while building, resumed after (an error too)
    gc.disable()
    try:
        run(world, perPage="5")
        assert not gc.isenabled()  # paused by someone else: left paused
    finally:
        gc.enable()


# --- paging -----------------------------------------------------------------------------------------------------------


def test_pages_of_any_size_give_every_event_once_with_a_next_link_bound_to_the_query(world):
    names = world[1]
    for size in (1, 3, 7):
        seen, params = [], {"perPage": str(size)}
        while True:
            events, next_url = run(world, **params)
            assert len(events) <= size
            seen += [label(event, names) for event in events]
            if next_url is None:
                break
            assert next_url.startswith(BASE_URL + "?")
            params = {name: values[0] for name, values in parse_qs(urlsplit(next_url).query).items()}
            assert params["perPage"] == str(size)
        assert seen == TIMELINE


def test_a_page_token_of_another_query_or_a_forged_one_is_refused(world):
    _, next_url = run(world, perPage="2", EQ_bizStep="shipping")
    token = parse_qs(urlsplit(next_url).query)["nextPageToken"][0]
    assert labels(world, EQ_bizStep="shipping", nextPageToken=token) == ["shipping@11", "shipping@13"]  # perPage may change
    refused(world, "invalid_page_token", EQ_bizStep="receiving", nextPageToken=token)
    refused(world, "invalid_page_token", nextPageToken="not-a-token")
    refused(world, "invalid_page_token", nextPageToken="WyJ4Il0")  # valid base64 JSON, not a token


# --- refusals -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"EQ_colour": "red"}, "unknown_parameter"),
        ({"orderBy": "eventTime"}, "unknown_parameter"),
        ({"GE_eventTime": "yesterday"}, "invalid_parameter"),
        ({"LT_recordTime": "2024-13-01T00:00:00Z"}, "invalid_parameter"),
        ({"EQ_action": "MOVE"}, "invalid_parameter"),
        ({"eventType": "FooEvent"}, "invalid_parameter"),
        ({"MATCH_epc": f"https://id.gs1.org/01/{GTIN_A[:-1]}7/21/P0"}, "invalid_parameter"),  # wrong check digit
        ({"MATCH_epc": "urn:epc:id:sgtin:4012345.000001"}, "invalid_parameter"),
        ({"MATCH_anyEPC": dl("P0") + "||" + dl("P1")}, "invalid_parameter"),
        ({"EQ_bizLocation": "urn:epc:id:sgln:4012345.00002"}, "invalid_parameter"),
        ({"perPage": "0"}, "invalid_parameter"),
        ({"perPage": "10001"}, "invalid_parameter"),
        ({"perPage": "ten"}, "invalid_parameter"),
    ],
)
def test_an_unknown_parameter_or_a_malformed_value_is_a_400_with_its_code(world, params, code):
    refused(world, code, **params)


# --- the data classes ----------------------------------------------------------------------------------------------------


def test_a_vin_hash_is_shown_to_the_workshop_and_auditors_not_to_other_members(world):
    for principal, shown in ((GARAGE, True), (AUDIT, True), (MEMBER, False), (CAPTURER, False)):
        events, _ = run(world, principal, EQ_bizStep="installing|removing")
        assert [("partledger:vinHash" in event) for event in events] == [shown] * 3, principal


def test_a_captured_private_field_is_unsealed_for_its_capturer_and_auditors_only(world):
    names = world[1]
    for principal, shown in ((CAPTURER, True), (AUDIT, True), (MEMBER, False), (GARAGE, False)):
        events, _ = run(world, principal, EQ_eventID=names["c1"])
        assert ("partledger:vin" in events[0]) is shown, principal
        assert events[0]["epcList"] == [dl("P2")]  # every member sees the event itself


# --- one event ------------------------------------------------------------------------------------------------------------


def test_get_event_answers_a_captured_event_by_its_id_or_hash_and_a_derived_one_by_its_hash(world):
    sources, names, _ = world
    event = get_event(services=sources, principal=MEMBER, event_id=names["c3"])
    assert (event["type"], event["parentID"], event["@context"]) == ("AggregationEvent", SSCC, CONTEXT)
    c3_hash = event["partledger:eventHash"]  # its canonical hash, beside the eventID it was captured with
    assert c3_hash == event_hash({name: value for name, value in event.items() if name not in ("eventID", "partledger:eventHash")}, context=CONTEXT)
    assert get_event(services=sources, principal=MEMBER, event_id=c3_hash)["eventID"] == names["c3"]
    c2 = get_event(services=sources, principal=MEMBER, event_id=names["c2"])  # captured without an eventID: the hash is it
    assert c2["eventID"].startswith("ni:///sha-256;") and "partledger:eventHash" not in c2
    everything, _ = run(world, AUDIT, perPage="1000")
    for derived in (e for e in everything if "partledger:txHash" in e):
        found = get_event(services=sources, principal=AUDIT, event_id=derived["eventID"])
        assert found == {"@context": CONTEXT, **derived}


def test_get_event_of_an_unknown_id_is_404_unknown_event(world):
    for event_id in ("urn:uuid:00000000-0000-4000-8000-00000000ffff", "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0"):
        with pytest.raises(ApiError) as raised:
            get_event(services=world[0], principal=MEMBER, event_id=event_id)
        assert (raised.value.code, type(raised.value).__name__) == ("unknown_event", "NotFound")


# --- logs kept encoded (derive.EncodedLogs) ---------------------------------------------------------------------------


def _encoded_lot(sources: Sources, principal: Principal = AUDIT, lot: int = 1) -> Any:
    return _as_json(epcis_query.lot_history_document(services=sources, principal=principal, lot=lot, encoded=True))


def _encoded_page(sources: Sources, principal: Principal = AUDIT, **params: str) -> Any:
    document, next_url = epcis_query.query_events(services=sources, principal=principal, params=params, base_url=BASE_URL, encoded=True)
    return _as_json(document), next_url


@pytest.fixture
def fresh_world(tmp_path: Path) -> Iterator[tuple[Sources, dict[str, str], Path]]:
    """A world of this test's own (its identities and mirror may change), its kept logs its own."""
    yield from make_world(tmp_path)


def test_kept_logs_answer_a_lot_and_a_query_again_without_deriving_them(fresh_world, monkeypatch):
    sources = fresh_world[0]
    asked = [
        lambda: _encoded_lot(sources), lambda: _encoded_lot(sources, MEMBER), lambda: _encoded_lot(sources, lot=2),
        lambda: _encoded_page(sources), lambda: _encoded_page(sources, GARAGE, perPage="3"),
        lambda: _encoded_page(sources, MATCH_epc="urn:epc:idpat:sgtin:9506000.013435.*"),  # a split receipt's own parts
        lambda: _encoded_page(sources, MATCH_epc=dl("P1"), EQ_bizStep="installing"),  # one vehicle's install of two
    ]
    first = [ask() for ask in asked]
    assert len(derive.encoded_logs(sources.index_engine)) == 13  # every log of blocks 10-16 (the sale's kept with no event)

    def derived(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a kept log was derived again")

    monkeypatch.setattr(derive, "_events_of_rows", derived)
    assert [ask() for ask in asked] == first
    assert [label(event, fresh_world[1]) for event in first[6][0]["epcisBody"]["queryResults"]["resultsBody"]["eventList"]] == ["installing@15"]
    assert "partledger:vinHash" in first[0]["epcisBody"]["eventList"][11] and "partledger:vinHash" not in first[1]["epcisBody"]["eventList"][11]
    with pytest.raises(AssertionError, match="derived again"):  # an eventID lookup derives its event
        _encoded_page(sources, EQ_eventID=first[0]["epcisBody"]["eventList"][0]["eventID"])


def test_kept_logs_start_over_when_identities_change_or_the_indexer_rolls_a_reorganisation_back(fresh_world):
    from indexer.tables import IndexerState

    sources = fresh_world[0]
    before = _encoded_lot(sources)
    assert _encoded_lot(sources) == before
    dock = "409876500002" + str(gtin_check_digit("409876500002"))
    set_identity(sources.service_engine, sources.index_engine, WAREHOUSE, gln=None, company_prefix="4098765", locations=[{"gln": dock, "site": "dock"}])
    changed = _encoded_lot(sources)
    assert changed != before and location_uri(dock) in orjson.dumps(changed).decode()
    assert changed == _as_json(epcis_query.lot_history_document(services=sources, principal=AUDIT, lot=1))
    memo = derive.encoded_logs(sources.index_engine)
    fingerprint = memo.fingerprint
    with sources.index_engine.begin() as conn:  # the indexer rolled a reorganisation back: block 16's log came again, in another block time
        conn.execute(insert(IndexerState.__table__).values(chain_id=31337, block_number=17, block_hash=b"\x01" * 32, reorgs=1))
        conn.execute(BlockTime.__table__.update().where(BlockTime.__table__.c.number == 16).values(timestamp=ts(16) + 1))
    after = _encoded_lot(sources)
    assert memo.fingerprint != fingerprint
    assert after == _as_json(epcis_query.lot_history_document(services=sources, principal=AUDIT, lot=1)) != changed
    removal = next(event for event in after["epcisBody"]["eventList"] if event.get("bizStep") == "removing")
    assert removal["eventTime"] == iso(ts(16) + 1)


def test_a_kept_log_whose_transaction_changed_is_derived_again(fresh_world):
    sources = fresh_world[0]
    before = _encoded_lot(sources)
    with sources.index_engine.begin() as conn:  # a mirror rebuilt from another chain: block 16's log is another transaction
        conn.execute(PartEvent.__table__.update().where(PartEvent.__table__.c.block_number == 16).values(tx_hash=b"\x99" * 32))
    after = _encoded_lot(sources)
    removal = next(event for event in after["epcisBody"]["eventList"] if event.get("bizStep") == "removing")
    assert removal["partledger:txHash"] == "0x" + "99" * 32
    assert after == _as_json(epcis_query.lot_history_document(services=sources, principal=AUDIT, lot=1)) != before


def test_kept_logs_are_bounded_and_the_first_kept_go_first(fresh_world):
    sources = fresh_world[0]
    memo = derive.encoded_logs(sources.index_engine)
    memo.limit = 4_000
    expected = _as_json(epcis_query.lot_history_document(services=sources, principal=AUDIT, lot=1))
    for _ in range(2):
        assert _encoded_lot(sources) == expected
        assert 0 < memo.held <= 4_000
    with sources.index_engine.connect() as conn:
        lot_logs = conn.exec_driver_sql(
            "SELECT DISTINCT e.block_number, e.log_index FROM part_events e JOIN parts p ON p.part_id = e.part_id WHERE p.lot = 1 ORDER BY 1, 2"
        ).all()  # fmt: skip
    kept = list(memo.logs)
    assert 0 < len(kept) < len(lot_logs) and kept == [tuple(log) for log in lot_logs[-len(kept) :]]  # the newest ones


def test_the_hash_memo_is_bounded_and_forgets_the_oldest_first():
    memo = derive.HashMemo(size=2)
    events = [{"type": "ObjectEvent", "eventTime": iso(ts(n)), "eventTimeZoneOffset": "+00:00", "epcList": [dl(f"H{n}")], "action": "OBSERVE"} for n in range(3)]
    hashes = [memo(event) for event in events]
    assert hashes == [event_hash(event, context=CONTEXT) for event in events]
    assert len(memo.hashes) == 2 and list(memo.hashes.values()) == hashes[1:]
