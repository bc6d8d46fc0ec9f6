"""EPCIS 2.0 capture into the ledger, and a lot's history read back: `python -m benchmarks.epcis_bench [--quick]`.

Issue 16's bench acceptance: capture of ObjectEvents into the ledger >= 5,000 events/s; query of a lot's 10^4 events
<= 200 ms.

The e2e world (benchmarks.e2e.world: Anvil with a block every second after an automined set-up, `partledger serve`
with its submitter and capture worker, `partledger index`, SQLite files). The GS1 identities the documents name are
set first (PUT /v1/gs1/identity: a party GLN per organisation and a location GLN for its service-held site).

1. Capture. `documents` EPCISDocuments of `events_per_document` commissioning ObjectEvents each (one SGTIN each,
   ADD, bizStep commissioning, ilmd cbvmda:lotNumber, readPoint and bizLocation the maker's site), posted one after
   another with the maker's API key (POST /epcis/capture: 202 and the job's Location), then followed (GET
   /epcis/capture/{id}) until every job is done. A job is done when every event is checked (schema, CBV, identities,
   ledger state), hashed, stored and its registration command final on chain and in the mirror, so the rate is
   "posted until registered on chain and mirrored". Reported: events/s from the first POST to the last job's
   finishedAt, the POST answer times, each job's own time, and a document of observation events (bizStep
   inspecting, OBSERVE, on parts the capture registered: consortium data, no chain wait) as the capture-only rate.
   The floor, side by side in the same run and before the capture: the same number of parts registered through
   POST /v1/parts/register (JSON, `floor_request_parts` serials a request: a document's worth) until all are in the
   mirror. Only the ratio capture / API travels across machines. Between the two, untimed, the service is warmed
   (warm_service): the capture measures capturing, not the service's first use of EPCIS.
   Where a job's time goes: the service's tables give, per job, when its command was accepted (events prepared,
   checked and stored), its transactions signed and sent, and the blocks that hold them (`timeline`); with
   --profile and py-spy installed, the service is sampled during the commissioning capture (wall time, idle
   included) and the jobs' thread summarised by project function (`profile`).
2. Query. A lot of `lot_parts` parts (its own GTIN), loaded during the set-up with pre-signed transactions
   (benchmarks.e2e.RawSender) sealed in small blocks (a lot's history spreads over many blocks): registered in
   200-part transactions, then each part shipped to the warehouse and received there in its own transaction:
   2 x lot_parts + lot_parts / 200 ledger events, 10,025 at full size. It is read after the capture (the service's
   tables then hold 10^5 captured events, and the lot's blocks are far out of the indexer's reorg window: their
   times come from the mirror's block_times). Timed one request at a time over a kept-alive connection,
   `warmup` unmeasured requests first (the first, cold, one is reported apart), then `requests` measured. The service
   keeps the logs it derives encoded (ledger_service.epcis.derive.EncodedLogs), and its capture worker derives each
   block's as the indexer writes it: the first request finds the lot's logs kept unless something pushed them out
   (the in-process profile's cold figure is a process that derives them: a query's cost when they are not kept).
   Measured: GET /epcis/lots/{lot}/document, GET
   /epcis/events?MATCH_anyEPC=<the lot's GTIN, Digital Link>&perPage=10000 (the lot is the only one of its GTIN),
   GET /epcis/events?MATCH_epcClass=<the lot's LGTIN>&perPage=10000 (by the standard a class matches quantityList
   classes only: of the ledger's events, a lot's recall) and GET /epcis/events?MATCH_epc=<one part> (p50/p95). A
   query whose p50 is over the target (or every one, --profile) is run again in this process under cProfile: the
   functions with the most cumulative time, and the own time by package.

The last line printed is one JSON object; it is also saved as benchmarks/results/epcis-<UTC time>.json (and
epcis-latest.json; `-quick` for quick runs). On a shared machine only ratios travel: the JSON records the load.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.e2e import BULK, GAS, RawSender, World, py_spy, set_block_time, start_processes, stop_processes, world
from partledger.artifacts import REPO_ROOT
from partledger.ids import ascii32, part_id_unchecked
from tests.chainkit import GTIN_A, GTIN_B

RESULTS = REPO_ROOT / "benchmarks" / "results"
TARGET_CAPTURE_PER_S = 5_000.0
TARGET_LOT_QUERY_MS = 200.0
CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
SITE = "service-site"  # the site tests.servicekit.prepare_stack gives each organisation's service-held key
CAPTURE_LOT = "LOT-EPCIS-{n}"
FLOOR_LOT = "LOT-API-FLOOR"
QUERY_LOT = "LOT-QUERY"
QUERY_GTIN = GTIN_B  # the query lot's GTIN: no other lot has it


@dataclass(frozen=True)
class EpcisConfig:
    documents: int = 4  # commissioning documents, posted one after another
    events_per_document: int = 20_000  # the capture limit (GS1-EPCIS-Capture-Limit)
    observation_events: int = 20_000  # one document of observations (consortium data only)
    floor_request_parts: int = 20_000  # serials per POST /v1/parts/register in the floor: a document's worth
    lot_parts: int = 5_000  # the query lot: 2 x lot_parts + lot_parts / 200 ledger events
    requests: int = 10  # measured requests per query
    warmup: int = 2  # unmeasured requests per query first
    job_timeout: float = 900.0  # seconds for the capture jobs (and the floor) to finish
    submitters: int = 0  # `partledger submit` processes (0: the submitter runs inside the API process)

    @classmethod
    def quick(cls) -> EpcisConfig:
        return cls(documents=4, events_per_document=2_000, observation_events=2_000, floor_request_parts=2_000, lot_parts=500, requests=10, warmup=2, job_timeout=300.0)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def percentile(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 1) if ordered else None


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def sgtin(gtin: str, serial: str) -> str:
    return f"https://id.gs1.org/01/{gtin}/21/{serial}"


# --- identities ---------------------------------------------------------------------------------------------------


def set_identities(w: World, client: httpx.Client) -> dict[str, dict[str, str]]:
    """Each organisation's party GLN and its service-held site's location GLN (what the documents name); returns
    their URIs by organisation."""
    from ledger_service.epcis.identities import demo_gln

    uris = {}
    for name, org in w.ledger.orgs.items():
        body = {"gln": demo_gln(org.id, 0), "locations": [{"gln": demo_gln(org.id, 1), "site": SITE}]}
        reply = client.put("/v1/gs1/identity", json=body, headers=auth(w.stack.api_keys[name]))
        if reply.status_code != 200:
            raise RuntimeError(f"PUT /v1/gs1/identity as {name}: {reply.status_code} {reply.text[:300]}")
        uris[name] = {"party": f"https://id.gs1.org/417/{demo_gln(org.id, 0)}", "location": f"https://id.gs1.org/414/{demo_gln(org.id, 1)}"}
    return uris


# --- documents ----------------------------------------------------------------------------------------------------


def document(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": iso(time.time()), "epcisBody": {"eventList": events}})


def commissioning_document(number: int, count: int, location: str, base: float) -> tuple[bytes, list[str]]:
    """`count` commissioning events, one new SGTIN each, in lot CAPTURE_LOT; the document and its serials."""
    serials = [f"EC{number:02d}-{index:06d}" for index in range(count)]
    lot = CAPTURE_LOT.format(n=number)
    events = [
        {
            "type": "ObjectEvent", "eventTime": iso(base + index / 1000), "eventTimeZoneOffset": "+00:00", "epcList": [sgtin(GTIN_A, serial)],
            "action": "ADD", "bizStep": "commissioning", "disposition": "active", "readPoint": {"id": location}, "bizLocation": {"id": location},
            "ilmd": {"cbvmda:lotNumber": lot},
        }
        for index, serial in enumerate(serials)
    ]  # fmt: skip
    return document(events), serials


def observation_document(serials: list[str], location: str, base: float) -> bytes:
    """One inspecting (OBSERVE, no disposition: no ledger operation) event per serial, already registered."""
    events = [
        {
            "type": "ObjectEvent", "eventTime": iso(base + index / 1000), "eventTimeZoneOffset": "+00:00", "epcList": [sgtin(GTIN_A, serial)],
            "action": "OBSERVE", "bizStep": "inspecting", "readPoint": {"id": location},
        }
        for index, serial in enumerate(serials)
    ]  # fmt: skip
    return document(events)


# --- capture ------------------------------------------------------------------------------------------------------


# How often a job still running is asked about (GET /epcis/capture/{id}). The rate is taken from the jobs' own
# finishedAt, so the interval does not enter it; but each answer costs the service's interpreter: followed ten times a
# second, the four jobs' answers took about 7 % of it during the capture (py-spy --gil), a load no client makes.
POLL_SECONDS = 0.5


def capture(client: httpx.Client, key: str, bodies: list[bytes], *, timeout: float) -> dict[str, Any]:
    """Posts the documents one after another (each POST waited for, not its job), then follows every job until it
    is done (each asked every POLL_SECONDS); the figures."""
    posts: list[dict[str, Any]] = []
    started = time.time()
    for body in bodies:
        sent = time.perf_counter()
        reply = client.post("/epcis/capture", content=body, headers=auth(key, **{"Content-Type": "application/json"}))
        answered = time.perf_counter() - sent
        if reply.status_code != 202:
            raise RuntimeError(f"POST /epcis/capture answered {reply.status_code}: {reply.text[:400]}")
        posts.append({"location": reply.headers["Location"], "events": reply.json()["eventCount"], "post_ms": round(1000 * answered, 1), "bytes": len(body)})
    posted = time.time()
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(views) < len(posts):
        for post in posts:
            if post["location"] in views:
                continue
            reply = client.get(post["location"], headers=auth(key))
            view = reply.json()
            if reply.status_code != 200:
                raise RuntimeError(f"GET {post['location']} answered {reply.status_code}: {reply.text[:300]}")
            if not view["running"]:
                views[post["location"]] = view
        if len(views) < len(posts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(posts) - len(views)} capture jobs not done within {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
    seen_done = time.time()
    jobs, previous_end = [], 0.0
    for post in posts:
        view = views[post["location"]]
        created, finished = parse_iso(view["createdAt"]), parse_iso(view["finishedAt"])
        began = max(created, previous_end)  # one job at a time per organisation: the next starts when one ends
        previous_end = finished
        jobs.append({
            "capture_id": view["captureID"], "events": post["events"], "bytes": post["bytes"], "post_ms": post["post_ms"],
            "queued_s": round(began - created, 2), "job_s": round(finished - began, 2),
            "job_events_per_s": round(post["events"] / (finished - began)) if finished > began else None,
            "success": view["success"], "captured": view["capturedCount"], "errors": view["errors"][:3],
        })  # fmt: skip
    failed = [job for job in jobs if not job["success"] or job["captured"] != job["events"]]
    if failed:
        raise RuntimeError(f"capture jobs failed: {failed[:2]}")
    events = sum(job["events"] for job in jobs)
    last_finished = max(parse_iso(view["finishedAt"]) for view in views.values())
    elapsed = last_finished - started
    return {
        "events_per_s": round(events / elapsed),
        "events": events,
        "documents": len(jobs),
        "seconds": round(elapsed, 2),
        "post_seconds": round(posted - started, 2),
        "post_ms": [job["post_ms"] for job in jobs],
        "job_seconds": [job["job_s"] for job in jobs],
        "seen_done_s": round(seen_done - started, 2),
        "jobs": jobs,
    }


# --- the floor: the JSON API ----------------------------------------------------------------------------------------


def mirrored_parts(w: World, lot_code: str, manufacturer: int) -> int:
    with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(
            "SELECT count(*) FROM parts p JOIN lots l ON l.lot = p.lot WHERE l.lot_code = ? AND l.manufacturer = ?", (lot_code, manufacturer)
        ).fetchone()[0]  # fmt: skip


UNKNOWN_EVENT_ID = "ni:///sha-256;" + "0" * 64 + "?ver=CBV2.0"


def warm_service(client: httpx.Client, key: str) -> float:
    """Brings the service's index of derived eventIDs (ledger_service.epcis.derive.DerivedIds) up to the head before
    the capture, as a service that has served EPCIS for a while has it; returns the seconds it took.

    A service derives every ledger event once, the first time EPCIS is used in it, and then each new block's. Here
    the first use was the capture's first job: its window then also held the deriving of the 10,425 events the
    set-up and the floor had put on the ledger (7.3 s in one process under cProfile), a cost of the service's
    start, not of capturing. Looking up an eventID that no event has derives up to the head before it answers 404:
    the wait is on that answer, not on a time."""
    started = time.perf_counter()
    answer = client.get(f"/epcis/events/{quote(UNKNOWN_EVENT_ID, safe='')}", headers=auth(key))
    if answer.status_code != 404:
        raise RuntimeError(f"warming the service: GET /epcis/events/<unknown> answered {answer.status_code}: {answer.text[:200]}")
    return round(time.perf_counter() - started, 2)


def api_floor(w: World, client: httpx.Client, key: str, *, parts: int, per_request: int, timeout: float) -> dict[str, Any]:
    """`parts` registered through POST /v1/parts/register (`per_request` serials a request, posted one after another),
    until all are in the mirror."""
    maker = w.ledger.orgs["maker"].id
    serials = [f"AF-{index:07d}" for index in range(parts)]
    bodies = [orjson.dumps({"gtin": GTIN_A, "lot": FLOOR_LOT, "serials": serials[i : i + per_request]}) for i in range(0, parts, per_request)]
    post_ms = []
    started = time.time()
    for body in bodies:
        sent = time.perf_counter()
        reply = client.post("/v1/parts/register", content=body, headers=auth(key, **{"Content-Type": "application/json"}))
        post_ms.append(round(1000 * (time.perf_counter() - sent), 1))
        if reply.status_code != 202:
            raise RuntimeError(f"POST /v1/parts/register answered {reply.status_code}: {reply.text[:400]}")
    posted = time.time()
    deadline = time.monotonic() + timeout
    while (count := mirrored_parts(w, FLOOR_LOT, maker)) < parts:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{parts - count} parts registered through the API not in the mirror within {timeout:.0f} s")
        time.sleep(0.1)
    elapsed = time.time() - started
    return {
        "parts_per_s": round(parts / elapsed), "parts": parts, "requests": len(bodies), "seconds": round(elapsed, 2),
        "post_seconds": round(posted - started, 2), "post_ms": post_ms,
    }  # fmt: skip


# --- the query lot ---------------------------------------------------------------------------------------------------


def mine_wave(w: World, sender: RawSender, wave: list[tuple[str, bytes]], *, block_gas_limit: int) -> int:
    """Sends a wave of signed transactions to the paused node, then seals blocks of at most `block_gas_limit` gas until
    the last has its receipt (Anvil's automine, fed thousands at once, stops sealing with most of them pending);
    returns the blocks sealed."""
    w.rpc.call("anvil_setBlockGasLimit", [hex(block_gas_limit)])
    for start in range(0, len(wave), 200):
        sender.rpc.batch([("eth_sendRawTransaction", [raw]) for raw, _ in wave[start : start + 200]])
    blocks = 0
    while w.rpc.call("eth_getTransactionReceipt", ["0x" + wave[-1][1].hex()]) is None:
        w.rpc.call("evm_mine", [])
        blocks += 1
        if blocks > len(wave) + 10:
            raise RuntimeError(f"{len(wave)} transactions not mined in {blocks} blocks")
    return blocks


def load_query_lot(w: World, sender: RawSender, parts: int) -> tuple[list[str], dict[str, Any]]:
    """QUERY_LOT during the set-up, spread over many blocks as a lot's history is: `parts` registered by the maker in
    200-part transactions (a block each), then each shipped to the warehouse and received there in its own
    transaction (blocks of 2.5 M gas: a few hand-overs each); returns the serials and what it took."""
    maker, warehouse = w.ledger.orgs["maker"], w.ledger.orgs["warehouse"]
    serials = [f"Q{index:06d}" for index in range(parts)]
    encoded = [ascii32(serial) for serial in serials]
    ids = [part_id_unchecked(int(QUERY_GTIN), serial) for serial in encoded]
    started = time.perf_counter()
    register = [sender.sign(maker.key, "registerParts", [int(QUERY_GTIN), ascii32(QUERY_LOT), encoded[i : i + BULK]]) for i in range(0, parts, BULK)]
    ship = [sender.sign(maker.key, "shipParts", [[pid], warehouse.id, bytes(32)]) for pid in ids]
    receive = [sender.sign(warehouse.key, "receiveParts", [[pid], bytes(32)]) for pid in ids]
    first_block = int(w.rpc.call("eth_blockNumber", []), 16) + 1
    w.rpc.call("evm_setAutomine", [False])
    try:
        blocks = mine_wave(w, sender, register, block_gas_limit=GAS["registerParts"] + 500_000)
        blocks += mine_wave(w, sender, ship, block_gas_limit=GAS["shipParts"] + 300_000)
        blocks += mine_wave(w, sender, receive, block_gas_limit=GAS["receiveParts"] + 300_000)
    finally:
        w.rpc.call("anvil_setBlockGasLimit", [hex(1_000_000_000)])
        w.rpc.call("evm_setAutomine", [True])
    if reverted := sender.count_reverted(register + ship + receive):
        raise RuntimeError(f"{reverted} of the query lot's transactions reverted")
    last_block = int(w.rpc.call("eth_blockNumber", []), 16)
    figures = {"transactions": len(register) + len(ship) + len(receive), "blocks": [first_block, last_block], "blocks_sealed": blocks, "seconds": round(time.perf_counter() - started, 1)}
    log(f"epcis: query lot of {parts:,} parts: {figures['transactions']:,} transactions in {blocks:,} blocks ({figures['seconds']} s)")
    return serials, figures


def lot_number(w: World, code: str) -> int:
    with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute("SELECT lot FROM lots WHERE lot_code = ? AND manufacturer = ?", (code, w.ledger.orgs["maker"].id)).fetchone()
    if row is None:
        raise RuntimeError(f"lot {code} is not in the mirror")
    return int(row[0])


def event_list(body: dict[str, Any]) -> list[Any]:
    inner = body.get("epcisBody") or {}
    if "eventList" in inner:
        return inner["eventList"]
    return ((inner.get("queryResults") or {}).get("resultsBody") or {}).get("eventList") or []


def time_query(client: httpx.Client, key: str, name: str, url: str, config: EpcisConfig) -> dict[str, Any]:
    """The first (cold) request, `warmup` - 1 more unmeasured, then `requests` measured, one at a time."""
    wall: list[float] = []
    cold_ms = None
    reply = None
    for index in range(config.warmup + config.requests):
        started = time.perf_counter()
        reply = client.get(url, headers=auth(key))
        body = reply.content
        elapsed = 1000 * (time.perf_counter() - started)
        if reply.status_code != 200:
            raise RuntimeError(f"GET {url} answered {reply.status_code}: {reply.text[:300]}")
        if index == 0:
            cold_ms = round(elapsed, 1)
        if index >= config.warmup:
            wall.append(elapsed)
    assert reply is not None
    events = event_list(orjson.loads(body))
    return {
        "name": name, "url": url, "events": len(events), "bytes": len(body), "next_page": 'rel="next"' in reply.headers.get("link", ""),
        "cold_ms": cold_ms, "p50_ms": percentile(wall, 0.5), "p95_ms": percentile(wall, 0.95), "max_ms": round(max(wall), 1), "requests": len(wall),
    }  # fmt: skip


# --- where a slow query's time goes -----------------------------------------------------------------------------------


def profile_query(w: World, name: str, call: Callable[[Any, Any], Any], top: int = 14) -> dict[str, Any]:
    """The query run in this process against the same databases (read-only use): once to warm the caches (the
    derived events' hash memo), then timed, then under cProfile; the functions with the most cumulative time."""
    from ledger_service.auth import Principal
    from partledger.db import make_engine
    from partledger.model import Role

    maker = w.ledger.orgs["maker"].id
    sources = SimpleNamespace(index_engine=make_engine(w.stack.index_db_url), service_engine=make_engine(w.stack.service_db_url), vault=None)
    try:
        with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True, timeout=10) as conn:
            roles = conn.execute("SELECT roles FROM organisations WHERE org_id = ?", (maker,)).fetchone()[0]
        principal = Principal(org_id=maker, roles=Role(roles), key_id="epcis-bench", sites=None)
        started = time.perf_counter()
        call(sources, principal)
        cold = time.perf_counter() - started
        warm, collecting = float("inf"), GcClock()
        with collecting:
            for _ in range(3):
                started = time.perf_counter()
                result = call(sources, principal)
                warm = min(warm, time.perf_counter() - started)
        gc.disable()
        try:
            started = time.perf_counter()
            call(sources, principal)
            without_gc = time.perf_counter() - started
        finally:
            gc.enable()
        started = time.perf_counter()
        orjson.dumps(result)
        serialise = time.perf_counter() - started
        profiler = cProfile.Profile()
        profiler.runcall(call, sources, principal)
    finally:
        sources.index_engine.dispose()
        sources.service_engine.dispose()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)  # type: ignore[attr-defined]
    cumulative, own = [], []
    wanted = ("/ledger_service/", "/partledger/", "/indexer/", "sqlalchemy/engine/base.py", "sqlalchemy/engine/result.py", "sqlalchemy/engine/default.py")
    for (filename, line, function), (_, calls, _, total, _) in rows:
        if any(part in filename for part in wanted) or function in ("<method 'execute' of 'sqlite3.Cursor' objects>", "<built-in method orjson.dumps>"):
            cumulative.append(f"{total:7.3f} s  {calls:>7} calls  {Path(filename).parent.name}/{Path(filename).name}:{line}:{function}")
        if len(cumulative) == top:
            break
    for (filename, line, function), (_, calls, own_time, _, _) in sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]:  # type: ignore[attr-defined]
        own.append(f"{own_time:7.3f} s  {calls:>7} calls  {Path(filename).parent.name}/{Path(filename).name}:{line}:{function}")
    total_s = sum(value[2] for value in stats.stats.values())  # type: ignore[attr-defined]
    groups: Counter[str] = Counter()
    for (filename, _, function), (_, _, own_time, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        groups[_package(filename, function)] += own_time
    return {
        "query": name, "in_process_cold_ms": round(1000 * cold, 1), "in_process_warm_ms": round(1000 * warm, 1), "orjson_dumps_ms": round(1000 * serialise, 1),
        "gc_ms_per_call": round(1000 * collecting.seconds / 3, 1), "gc_collections_per_call": round(collecting.collections / 3, 1),
        "in_process_without_gc_ms": round(1000 * without_gc, 1),
        "profiled_s": round(total_s, 3),
        "own_time_pct": {group: round(100 * value / total_s, 1) for group, value in groups.most_common()} if total_s else {},
        "cumulative": cumulative, "own_time": own,
    }  # fmt: skip


class GcClock:
    """Time spent in the cyclic garbage collector while in the block (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds, self.collections, self._started = 0.0, 0, 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _package(filename: str, function: str) -> str:
    """Where a profiled function's own time belongs, for the share table."""
    if "sqlalchemy/" in filename:
        return "sqlalchemy (compile, execute, rows)"
    if "sqlite3" in function:
        return "sqlite3 (C: the SQL itself)"
    if "/partledger/epcis/hashing" in filename or "/partledger/epcis/canonical" in filename:
        return "canonical event hashing"
    if "/ledger_service/epcis/" in filename:
        return "ledger_service.epcis (building events)"
    if "/partledger/" in filename or "/ledger_service/" in filename or "/indexer/" in filename:
        return "partledger, ledger_service (other)"
    if "orjson" in function:
        return "orjson"
    return "other (builtins, stdlib)"


# --- where a capture job's time goes (py-spy, when installed) -----------------------------------------------------------


def start_spy(pid: int, out: Path) -> subprocess.Popen | None:
    """py-spy on the service (all threads, idle ones too: a job waiting for the chain is idle) until stop_spy."""
    spy = py_spy()
    if spy is None:
        return None
    command = [spy, "record", "-p", str(pid), "-d", "3600", "-r", "97", "-f", "raw", "-t", "--nolineno", "--nonblocking", "--idle", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first document is posted
    return process


def stop_spy(process: subprocess.Popen, out: Path, *, top: int = 16) -> dict[str, Any]:
    """Stops py-spy (it writes its samples on SIGINT) and summarises the capture jobs' threads: the share of their
    samples (wall time: idle included) in which each project function is on the stack."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if not out.exists():
        return {}
    inclusive: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not count_text.isdigit() or "epcis-job" not in frames[0]:
            continue
        count = int(count_text)
        total += count
        for frame in {frame for frame in frames[1:] if frame.split(" (")[-1].startswith(("ledger_service/", "partledger/", "indexer/"))}:
            inclusive[frame.split(" (")[0]] += count
        if frames[-1].startswith(("Condition.wait", "Event.wait")):
            project = [frame.split(" (")[0] for frame in frames if frame.split(" (")[-1].startswith(("ledger_service/", "partledger/"))]
            waiting[project[-1] if project else "?"] += count
    if not total:
        return {"samples": 0}
    skip = ("CaptureWorker._run_job", "run_job")
    return {
        "job_samples": total,
        "job_seconds_sampled": round(total / 97, 1),
        "inclusive_pct": {name: round(100 * n / total, 1) for name, n in [item for item in inclusive.most_common() if item[0] not in skip][:top]},
        "waiting_pct": {name: round(100 * n / total, 1) for name, n in waiting.most_common(4)},
    }


# --- the run ----------------------------------------------------------------------------------------------------------


def capture_timeline(w: World, job_ids: list[str]) -> list[dict[str, Any]]:
    """Per commissioning job, seconds from its start (received, or the previous job's end: one job at a time per
    organisation) to: its command accepted by the outbox (events prepared, checked against the mirror and stored),
    its first and last transactions signed, the last sent, and the job's end (final on chain and mirrored); and the
    blocks that hold them. From the service's tables."""
    path = Path(w.stack.service_db_url.removeprefix("sqlite:///"))
    out, previous = [], 0.0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        for job_id in job_ids:
            received, finished = conn.execute("SELECT received_at, finished_at FROM epcis_captures WHERE id = ?", (job_id,)).fetchone()
            start = max(received, previous)
            previous = finished
            accepted, signed_first, signed_last, sent_last, first_block, last_block, transactions = conn.execute(
                "SELECT min(c.created_at), min(t.created_at), max(t.created_at), max(t.sent_at), min(t.block_number), max(t.block_number), count(DISTINCT t.id) "
                "FROM epcis_commands e JOIN commands c ON c.id = e.command_id JOIN command_items i ON i.command_id = c.id "
                "LEFT JOIN chain_transactions t ON t.id = i.tx_id WHERE e.capture_id = ?", (job_id,),
            ).fetchone()  # fmt: skip

            def at(moment: float | None) -> float | None:
                return None if moment is None else round(moment - start, 2)

            out.append({
                "command_accepted_s": at(accepted), "first_signed_s": at(signed_first), "last_signed_s": at(signed_last),
                "last_sent_s": at(sent_last), "done_s": at(finished), "blocks": [first_block, last_block], "transactions": transactions,
            })  # fmt: skip
    return out


def settle_service(w: World, *, timeout: float) -> dict[str, int]:
    """Waits until the service's outbox is empty and every captured event is in an anchored batch (so that the query
    lot's blocks hold nothing else); returns what was left at the timeout."""
    path = Path(w.stack.service_db_url.removeprefix("sqlite:///"))
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
            left = {
                "command_items": conn.execute("SELECT count(*) FROM command_items WHERE state IN ('pending', 'signed', 'sent', 'mined')").fetchone()[0],
                "events_unbatched": conn.execute("SELECT count(*) FROM epcis_events WHERE batch_id IS NULL").fetchone()[0],
                "batches_unsubmitted": conn.execute("SELECT count(*) FROM epcis_batches WHERE command_id IS NULL").fetchone()[0],
            }
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def run_epcis_bench(config: EpcisConfig = EpcisConfig(), *, log: Callable[[str], None] = log, workdir: Path | None = None, profile: bool = False) -> dict[str, Any]:
    """Builds the world, measures the floor, the captures and the queries; returns the figures."""
    begun = time.perf_counter()
    loads: dict[str, list[float]] = {"before": load()}
    with tempfile.TemporaryDirectory(prefix="partledger-epcis-") as temporary, world(Path(workdir or temporary), prune_history=16) as w:
        query_serials, lot_load = load_query_lot(w, RawSender(w.ledger, w.rpc), config.lot_parts)
        set_block_time(w.rpc, 1.0)
        start_processes(w, {"PARTLEDGER_MAX_IN_FLIGHT_PER_SIGNER": "1024"}, submitters=config.submitters)
        maker_key = w.stack.api_keys["maker"]
        profiles: list[dict[str, Any]] = []
        try:
            with httpx.Client(base_url=w.api, timeout=600) as client:
                uris = set_identities(w, client)
                location = uris["maker"]["location"]
                total = config.documents * config.events_per_document
                log(f"epcis: world ready in {time.perf_counter() - begun:.0f} s; floor: {total:,} parts through POST /v1/parts/register ...")
                # 1. the write path: the JSON API's floor, then the same number of commissioning events, then observations
                loads["floor"] = load()
                floor = api_floor(w, client, maker_key, parts=total, per_request=config.floor_request_parts, timeout=config.job_timeout)
                log(f"epcis: floor {floor['parts_per_s']:,} parts/s ({floor['parts']:,} in {floor['seconds']} s; POSTs {floor['post_ms']} ms)")
                base = time.time() - 3_600
                built = [commissioning_document(n, config.events_per_document, location, base + n * 100) for n in range(config.documents)]
                warmed = warm_service(client, maker_key)
                log(f"epcis: the service's derived events brought up to the head ({warmed} s) before the capture")
                loads["capture"] = load()
                spy = start_spy(w.processes["service"].pid, w.stack.workdir / "profile-capture-service.txt") if profile else None
                commissioning = capture(client, maker_key, [body for body, _ in built], timeout=config.job_timeout)
                if spy is not None:
                    commissioning["profile"] = stop_spy(spy, w.stack.workdir / "profile-capture-service.txt")
                    log(f"epcis: capture jobs' time (py-spy, wall): {commissioning['profile'].get('inclusive_pct')}")
                commissioning["timeline"] = capture_timeline(w, [job["capture_id"] for job in commissioning["jobs"]])
                commissioning["service_warmed_s"] = warmed
                log(
                    f"epcis: capture {commissioning['events_per_s']:,} events/s ({commissioning['events']:,} commissioning events in {commissioning['seconds']} s; "
                    f"POSTs {commissioning['post_ms']} ms; jobs {commissioning['job_seconds']} s)"
                )
                registered = [serial for _, serials in built for serial in serials]
                observed = observation_document(registered[: config.observation_events], location, base + 1_000)
                loads["observations"] = load()
                observations = capture(client, maker_key, [observed], timeout=config.job_timeout)
                log(f"epcis: capture-only {observations['events_per_s']:,} events/s ({observations['events']:,} observations in {observations['seconds']} s; POST {observations['post_ms']} ms)")
                started = time.perf_counter()
                left = settle_service(w, timeout=120)
                observations["anchored_after_s"] = round(time.perf_counter() - started, 1)
                observations["left_unanchored"] = left
                # 2. the query lot, loaded during the set-up: its blocks are long out of the indexer's reorg window
                lot = lot_number(w, QUERY_LOT)
                lot_load["head_at_queries"] = int(w.rpc.call("eth_blockNumber", []), 16)
                part_uri = sgtin(QUERY_GTIN, query_serials[len(query_serials) // 2])
                gtin_params = {"MATCH_anyEPC": f"https://id.gs1.org/01/{QUERY_GTIN}", "perPage": "10000"}
                urls = {
                    "lot_document": f"/epcis/lots/{lot}/document",
                    "lot_events_by_gtin": "/epcis/events?" + urlencode(gtin_params),
                    "lot_events_by_class": "/epcis/events?" + urlencode({"MATCH_epcClass": f"https://id.gs1.org/01/{QUERY_GTIN}/10/{QUERY_LOT}", "perPage": "10000"}),
                    "one_part": "/epcis/events?" + urlencode({"MATCH_epc": part_uri}),
                }
                loads["queries"] = load()
                queries = {}
                for name, url in urls.items():
                    queries[name] = q = time_query(client, maker_key, name, url, config)
                    log(f"epcis: {name}: {q['events']:,} events, {q['bytes']:,} B, cold {q['cold_ms']} ms, p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms")
                from ledger_service.epcis import query as epcis_query

                calls: dict[str, Callable[[Any, Any], Any]] = {
                    "lot_document": lambda sources, principal: epcis_query.lot_history_document(services=sources, principal=principal, lot=lot, encoded=True),
                    "lot_events_by_gtin": lambda sources, principal: epcis_query.query_events(services=sources, principal=principal, params=gtin_params, base_url="/epcis/events", encoded=True),
                    "one_part": lambda sources, principal: epcis_query.query_events(services=sources, principal=principal, params={"MATCH_epc": part_uri}, base_url="/epcis/events"),
                }  # fmt: skip
                for name, call in calls.items():
                    if profile or (queries[name]["p50_ms"] or 0) > TARGET_LOT_QUERY_MS:
                        profiles.append(profile_query(w, name, call))
                        log(f"epcis: profile of {name}: in process {profiles[-1]['in_process_warm_ms']} ms warm; " + " | ".join(profiles[-1]["cumulative"][:6]))
        finally:
            stop_processes(w)
        with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True) as conn:
            mirror = {
                "parts": conn.execute("SELECT count(*) FROM parts").fetchone()[0],
                "part_events": conn.execute("SELECT count(*) FROM part_events").fetchone()[0],
                "query_lot_logs": conn.execute(
                    "SELECT count(*) FROM (SELECT DISTINCT e.tx_hash, e.log_index FROM part_events e JOIN parts p ON p.part_id = e.part_id WHERE p.lot = ?)", (lot,)
                ).fetchone()[0],  # fmt: skip
                "block_times": conn.execute("SELECT count(*) FROM block_times").fetchone()[0],
            }
        with sqlite3.connect(f"file:{Path(w.stack.service_db_url.removeprefix('sqlite:///'))}?mode=ro", uri=True) as conn:
            mirror["captured_events"] = conn.execute("SELECT count(*) FROM epcis_events").fetchone()[0]
    loads["after"] = load()
    lot_queries = [queries["lot_document"], queries["lot_events_by_gtin"]]
    worst = max(lot_queries, key=lambda q: q["p95_ms"] or 0)
    ratio = round(commissioning["events_per_s"] / floor["parts_per_s"], 3) if floor["parts_per_s"] else None
    notes = [
        "MATCH_epcClass matches the classes of an event's quantityList (the standard's SimpleEventQuery); a lot's ledger events name "
        "instances (SGTINs), so only its recall would match: the lot's events are asked for by its GTIN (MATCH_anyEPC; the lot is "
        "the only one of its GTIN) and as the lot's document.",
    ]
    return {
        "epcis_capture_events_per_s": commissioning["events_per_s"],
        "epcis_capture_only_events_per_s": observations["events_per_s"],
        "epcis_api_register_parts_per_s": floor["parts_per_s"],
        "epcis_capture_vs_api_ratio": ratio,
        "epcis_lot_query_p95_ms": worst["p95_ms"],
        "epcis_lot_query": worst["name"],
        "epcis_lot_events": queries["lot_document"]["events"],
        "epcis_part_query_p95_ms": queries["one_part"]["p95_ms"],
        "capture_met": commissioning["events_per_s"] >= TARGET_CAPTURE_PER_S,
        "lot_query_met": (worst["p95_ms"] or 0) <= TARGET_LOT_QUERY_MS,
        "targets": {"capture_events_per_s": TARGET_CAPTURE_PER_S, "lot_query_p95_ms": TARGET_LOT_QUERY_MS},
        "capture": commissioning,
        "capture_only": observations,
        "api_floor": floor,
        "query_lot": lot_load,
        "queries": queries,
        "profiles": profiles,
        "notes": notes,
        "mirror": mirror,
        "config": asdict(config),
        "load_average": loads,
        "cores": os.cpu_count(),
        "seconds": round(time.perf_counter() - begun, 1),
    }


def save(figures: dict[str, Any], quick: bool, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    suffix = "-quick" if quick else ""
    path = directory / f"epcis{suffix}-{stamp}.json"
    text = json.dumps(figures, indent=2)
    path.write_text(text)
    (directory / f"epcis{suffix}-latest.json").write_text(text)
    return path


def show(figures: dict[str, Any]) -> None:
    floor, commissioning, observations = figures["api_floor"], figures["capture"], figures["capture_only"]
    print(f"{'write path':<48} {'items':>8} {'seconds':>8} {'per s':>8}  POST ms / job s")
    print(f"{'API floor: POST /v1/parts/register until mirrored':<48} {floor['parts']:8,} {floor['seconds']:8.2f} {floor['parts_per_s']:8,}  {floor['post_ms']}")
    print(f"{'capture: commissioning until on chain, mirrored':<48} {commissioning['events']:8,} {commissioning['seconds']:8.2f} {commissioning['events_per_s']:8,}  "
          f"{commissioning['post_ms']} / {commissioning['job_seconds']}")  # fmt: skip
    print(f"{'capture only: observations (consortium data)':<48} {observations['events']:8,} {observations['seconds']:8.2f} {observations['events_per_s']:8,}  "
          f"{observations['post_ms']} / {observations['job_seconds']}")  # fmt: skip
    print(f"capture / API floor: {figures['epcis_capture_vs_api_ratio']}; target {TARGET_CAPTURE_PER_S:,.0f} events/s: {'met' if figures['capture_met'] else 'NOT met'}")
    print("commissioning jobs, seconds from each job's start: command accepted (prepared, checked, stored) / first, last signed / last sent / done; blocks")
    for number, step in enumerate(commissioning.get("timeline", [])):
        print(f"  job {number}: {step['command_accepted_s']} / {step['first_signed_s']}, {step['last_signed_s']} / {step['last_sent_s']} / {step['done_s']}; "
              f"blocks {step['blocks']} ({step['transactions']} transactions)")  # fmt: skip
    spied = commissioning.get("profile") or {}
    if spied.get("inclusive_pct"):
        print(f"capture jobs' thread, share of wall time (py-spy, {spied['job_seconds_sampled']} s sampled): {spied['inclusive_pct']}; waiting in: {spied['waiting_pct']}")
    print(f"{'query':<20} {'events':>7} {'bytes':>11} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} next")
    for q in figures["queries"].values():
        print(f"{q['name']:<20} {q['events']:7,} {q['bytes']:11,} {q['cold_ms']:8.1f} {q['p50_ms']:8.1f} {q['p95_ms']:8.1f} {q['max_ms']:8.1f} {'yes' if q['next_page'] else ''}")
    print(f"lot query ({figures['epcis_lot_query']}, {figures['epcis_lot_events']:,} events) p95 {figures['epcis_lot_query_p95_ms']} ms; target {TARGET_LOT_QUERY_MS:g} ms: "
          f"{'met' if figures['lot_query_met'] else 'NOT met'}")  # fmt: skip
    for found in figures["profiles"]:
        print(f"profile of {found['query']}: in process {found['in_process_cold_ms']} ms cold, {found['in_process_warm_ms']} ms warm (of which the garbage collector "
              f"{found['gc_ms_per_call']} ms, {found['gc_collections_per_call']} collections; {found['in_process_without_gc_ms']} ms with it off), "
              f"orjson.dumps {found['orjson_dumps_ms']} ms")  # fmt: skip
        print(f"  own time by package (% of {found['profiled_s']} s profiled): {found['own_time_pct']}")
        for line in found["cumulative"]:
            print(f"  cum  {line}")
        for line in found["own_time"][:8]:
            print(f"  own  {line}")
    for note in figures["notes"]:
        print(f"note: {note}")
    print(f"query lot {figures['query_lot']}; mirror {figures['mirror']}; load {figures['load_average']}; {figures['seconds']} s")


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="documents of 2,000 events, a lot of 1,003 events")
    parser.add_argument("--requests", type=int, help="measured requests per query")
    parser.add_argument("--profile", action="store_true", help="py-spy the service during the commissioning capture (when installed) and cProfile every query, slow or not")
    parser.add_argument("--workdir", type=Path, help="keep databases and logs here (an empty directory)")
    parser.add_argument("--submitters", type=int, help="partledger submit processes (0: the submitter inside the API process)")
    arguments = parser.parse_args()
    config = EpcisConfig.quick() if arguments.quick else EpcisConfig()
    if arguments.requests:
        config = EpcisConfig(**asdict(config) | {"requests": arguments.requests})
    if arguments.submitters is not None:
        config = EpcisConfig(**asdict(config) | {"submitters": arguments.submitters})
    if arguments.workdir is not None:
        arguments.workdir.mkdir(parents=True, exist_ok=True)
    figures = run_epcis_bench(config, workdir=arguments.workdir, profile=arguments.profile)
    figures["quick"] = arguments.quick
    show(figures)
    log(f"epcis: results saved to {save(figures, arguments.quick)}")
    print(json.dumps(figures, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
