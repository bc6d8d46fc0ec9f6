"""Server time of every member-console page on a loaded mirror: `python -m benchmarks.console_bench [--quick]`.

Issue 14's speed acceptance: with 10^5 parts in the mirror, every console page renders in <= 50 ms of server time at
p95 for an organisation holding 10^4 of them, and lists are paginated.

A real stack as the other benchmarks build it (benchmarks.e2e.world: Anvil, `partledger index`, `partledger serve`
with its submitter, SQLite files). The chain is loaded with pre-signed raw transactions (benchmarks.e2e.RawSender):
10^5 parts registered by the maker in lots of 5,000 (and a small lot for a label job); 10^4 of them shipped to the
warehouse and received there; 60 more shipments of 20 parts left in transit to it. Then, through the API (so that
the per-organisation outbox and command tables are not empty): single-part registrations, shipments with their own
delivery notes both ways, a recall of a lot the warehouse holds, proposed trade documents (some countersigned and
anchored), and a few commands the chain rejects (the same part shipped twice before the mirror has the first).

Console users are created with ledger_service.accounts.create_user in the service's database (a warehouse operator
and admin, a maker operator, an auditor, a workshop operator) and sign in over HTTP. Every GET route under /console
of the app (enumerated from its routes; path parameters filled with real ids) is requested `requests` times (after a
few unmeasured ones) over a kept-alive connection, one at a time, as the user whose page it is. The server time is
the console's `Server-Timing: app;dur=<ms>` header (request start to response start, in the console's ASGI
middleware); the client's latency is recorded too. Reported per page: p50/p95/p99 server ms, client p50/p95 ms, the
page's size, the rows of its longest list and whether it links a next page; `met` is p95 server <= 50 ms. Pages
whose list is longer than a page must show at most `limit` rows and a next-page link (`paginated`).

The last line printed is one JSON object; it is also saved as benchmarks/results/console-<UTC time>.json (and
console-latest.json; `-quick` for quick runs). On a shared machine only ratios travel: the JSON records the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.e2e import BULK, RawSender, World, start_processes, stop_processes, wait_indexed, world
from partledger.artifacts import REPO_ROOT
from partledger.ids import ascii32, part_id_unchecked
from tests.chainkit import GTIN_A

RESULTS = REPO_ROOT / "benchmarks" / "results"
TARGET_P95_MS = 50.0
PASSWORD = "console bench password"
USERS = {  # username: (organisation, role)
    "wh.operator": ("warehouse", "operator"),
    "wh.admin": ("warehouse", "admin"),
    "mk.operator": ("maker", "operator"),
    "au.auditor": ("auditor", "operator"),
    "ws.operator": ("workshop", "operator"),
}
EXPORTS = ("/console/custody/inventory.csv", "/console/maker/labels/{job_id}/file", "/console/documents/proofs/{doc_hash}",
           "/console/audit/proofs/events/{tx_hash}/{log_index}", "/console/audit/log/{entry_id}/proof")  # fmt: skip


@dataclass(frozen=True)
class ConsoleConfig:
    parts: int = 100_000  # registered by the maker, in lots of lot_parts
    lot_parts: int = 5_000
    held: int = 10_000  # shipped to and received by the warehouse
    in_transit: int = 60  # shipments of transit_parts left in transit to the warehouse (one consignment each)
    transit_parts: int = 20
    api_commands: int = 100  # of each kind through the API: registrations, maker → warehouse, warehouse → maker
    proposals: int = 30  # maker → warehouse trade documents, countersigned: a third
    rejected: int = 5  # pairs of racing shipments of one part: the second reverts
    requests: int = 200  # measured requests per page
    warmup: int = 5  # unmeasured requests per page first

    @classmethod
    def quick(cls) -> ConsoleConfig:
        return cls(parts=10_000, lot_parts=1_000, held=2_000, in_transit=60, transit_parts=5, api_commands=20, proposals=9, rejected=2, requests=20, warmup=2)


@dataclass
class Probe:
    """One page as one user asks for it."""

    route: str  # the app's path template
    url: str
    user: str
    expect: int = 200
    limit: int | None = None  # a list page: at most this many rows
    longer: bool = False  # its list is longer than a page: it must link the next one
    export: bool = False  # a download, not a page (reported, not judged)
    org: str = ""  # the organisation whose data the page shows (default: the user's)


@dataclass
class Ids:
    """Real ids of the loaded world, to fill the routes' path parameters."""

    lots: dict[str, int] = field(default_factory=dict)  # lot code -> number
    held_part: str = ""
    maker_part: str = ""
    consignment: str = ""
    wh_command: str = ""
    mk_command: str = ""
    proposal: str = ""
    doc_hash: str = ""
    event: tuple[str, int] = ("", 0)
    audit_entry: int | None = None
    label_job: str | None = None


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- loading the chain ------------------------------------------------------------------------------------------------


def lot_code(index: int) -> str:
    return f"LOT-{index:03d}"


def serial_of(lot: int, index: int) -> str:
    return f"C{lot:03d}-{index:06d}"


def load_chain(w: World, sender: RawSender, config: ConsoleConfig) -> list[bytes]:
    """Registers the parts lot by lot, ships `held` of them to the warehouse and receives them, and leaves
    `in_transit` shipments on their way to it; returns every part id in registration order."""
    maker, warehouse = w.ledger.orgs["maker"], w.ledger.orgs["warehouse"]
    lots = [(lot_code(i), [serial_of(i, n) for n in range(config.lot_parts)]) for i in range(config.parts // config.lot_parts)]
    lots.append(("LOT-SMALL", [f"CSMALL-{n:04d}" for n in range(24)]))
    signed, parts = [], []
    for code, serials in lots:
        encoded = [ascii32(serial) for serial in serials]
        parts += [part_id_unchecked(int(GTIN_A), serial) for serial in encoded]
        signed += [sender.sign(maker.key, "registerParts", [int(GTIN_A), ascii32(code), encoded[i : i + BULK]]) for i in range(0, len(encoded), BULK)]
    started = time.perf_counter()
    sender.push(signed, window=300)
    if reverted := sender.count_reverted(signed):
        raise RuntimeError(f"{reverted} registrations reverted")
    log(f"console: {len(parts):,} parts registered in {time.perf_counter() - started:.1f} s")
    held = parts[: config.held]
    chunks = [held[i : i + BULK] for i in range(0, len(held), BULK)]
    ship = [sender.sign(maker.key, "shipParts", [chunk, warehouse.id, bytes(32)]) for chunk in chunks]
    sender.push(ship, window=len(ship))
    receive = [sender.sign(warehouse.key, "receiveParts", [chunk, bytes(32)]) for chunk in chunks]
    sender.push(receive, window=len(receive))
    transit = parts[config.held : config.held + config.in_transit * config.transit_parts]
    moving = [sender.sign(maker.key, "shipParts", [transit[i : i + config.transit_parts], warehouse.id, bytes(32)]) for i in range(0, len(transit), config.transit_parts)]
    sender.push(moving, window=len(moving))
    if reverted := sender.count_reverted(ship + receive + moving):
        raise RuntimeError(f"{reverted} hand-over transactions reverted")
    log(f"console: {len(held):,} parts at the warehouse, {len(transit):,} in transit to it ({time.perf_counter() - started:.1f} s in all)")
    return parts


# --- commands through the API -----------------------------------------------------------------------------------------


def hex32(value: bytes) -> str:
    return "0x" + value.hex()


def api_post(client: httpx.Client, key: str, path: str, body: dict[str, Any], *, expect: tuple[int, ...] = (201, 202)) -> dict[str, Any]:
    reply = client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    if reply.status_code not in expect:
        raise RuntimeError(f"POST {path} answered {reply.status_code}: {reply.text[:400]}")
    return reply.json()


def wait_commands(client: httpx.Client, key: str, ids: list[str], *, timeout: float = 300.0) -> dict[str, int]:
    """Waits until every command is confirmed or rejected; returns the count by status."""
    deadline = time.monotonic() + timeout
    pending, final = list(ids), {}
    while pending:
        still = []
        for command_id in pending:
            status = client.get(f"/v1/commands/{command_id}", headers={"Authorization": f"Bearer {key}"}).json()["status"]
            if status in ("confirmed", "rejected"):
                final[command_id] = status
            else:
                still.append(command_id)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} commands not final within {timeout:.0f} s")
            time.sleep(0.5)
    counts: dict[str, int] = {}
    for status in final.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def api_load(w: World, client: httpx.Client, config: ConsoleConfig, parts: list[bytes], ids: Ids) -> dict[str, Any]:
    """A few hundred commands through the API, documents and a recall: the lists the console shows are not empty."""
    keys, orgs = w.stack.api_keys, w.ledger.orgs
    maker_key, wh_key = keys["maker"], keys["warehouse"]
    mk_ids: list[str] = []
    wh_ids: list[str] = []
    started = time.perf_counter()
    for n in range(config.api_commands):
        mk_ids.append(api_post(client, maker_key, "/v1/parts/register", {"gtin": GTIN_A, "lot": "LOT-API", "serials": [f"CAPI-{n:05d}"]})["command_id"])
    spare = parts[config.held + config.in_transit * config.transit_parts :]
    for n in range(config.api_commands):  # one part each, each with its own delivery note: a consignment each
        body = {"part_ids": [hex32(spare[n])], "to_org": orgs["warehouse"].id, "doc_hash": hex32(os.urandom(32))}
        mk_ids.append(api_post(client, maker_key, "/v1/parts/ship", body)["command_id"])
    for n in range(config.api_commands):  # the warehouse sends some back
        body = {"part_ids": [hex32(parts[n])], "to_org": orgs["maker"].id, "doc_hash": hex32(os.urandom(32))}
        wh_ids.append(api_post(client, wh_key, "/v1/parts/ship", body)["command_id"])
    counts = wait_commands(client, maker_key, mk_ids)
    wh_counts = wait_commands(client, wh_key, wh_ids)
    # Rejections: the same part shipped twice before the mirror has the first shipment (the second reverts).
    racing: list[str] = []
    for n in range(config.rejected):
        part = parts[config.api_commands + n]
        for _ in range(2):
            body = {"part_ids": [hex32(part)], "to_org": orgs["maker"].id, "doc_hash": hex32(os.urandom(32))}
            reply = client.post("/v1/parts/ship", json=body, headers={"Authorization": f"Bearer {wh_key}"})
            if reply.status_code == 202:
                racing.append(reply.json()["command_id"])
    race_counts = wait_commands(client, wh_key, racing)
    # A recall of the lot the warehouse holds parts of (its home page's recalls), by the API.
    recall = api_post(client, maker_key, "/v1/lots/recall", {"lot": ids.lots[lot_code(1 if config.held > config.lot_parts else 0)], "notice_hash": hex32(os.urandom(32))})
    recall_counts = wait_commands(client, maker_key, [recall["command_id"]])
    # Trade documents: proposed by the maker to the warehouse; a third countersigned (anchored).
    proposals = []
    for _ in range(config.proposals):
        body = {"doc_hash": hex32(os.urandom(32)), "doc_type": "delivery_note", "counterparty": orgs["warehouse"].id}
        proposals.append(api_post(client, maker_key, "/v1/documents/proposals", body))
    signed = []
    for proposal in proposals[: config.proposals // 3]:
        answer = api_post(client, wh_key, f"/v1/documents/proposals/{proposal['proposal_id']}/countersign", {})
        signed.append(answer["command_id"])
    doc_counts = wait_commands(client, wh_key, signed)
    ids.wh_command, ids.mk_command = wh_ids[0], mk_ids[0]
    ids.proposal = proposals[-1]["proposal_id"]  # still waiting for the warehouse's countersignature
    figures = {
        "maker_commands": counts, "warehouse_commands": wh_counts, "racing_pairs": race_counts, "recall": recall_counts,
        "proposals": len(proposals), "countersigned": doc_counts, "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    log(f"console: API load {figures}")
    return figures


# --- ids from the mirror ----------------------------------------------------------------------------------------------


def mirror_ids(w: World, ids: Ids, parts: list[bytes], config: ConsoleConfig) -> None:
    orgs = w.ledger.orgs
    with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True, timeout=10) as conn:
        ids.lots = dict(conn.execute("SELECT lot_code, lot FROM lots WHERE manufacturer = ?", (orgs["maker"].id,)).fetchall())
        row = conn.execute("SELECT from_org, doc_hash, shipped_tx FROM shipments WHERE to_org = ? AND outcome IS NULL AND doc_hash IS NULL ORDER BY id LIMIT 1", (orgs["warehouse"].id,)).fetchone()
        if row is not None:
            ids.consignment = f"{row[0]}-0x{bytes(row[2]).hex()}"
        event = conn.execute("SELECT tx_hash, log_index FROM part_events WHERE part_id = ? ORDER BY block_number DESC LIMIT 1", (parts[config.held - 1],)).fetchone()
        if event is not None:
            ids.event = (hex32(bytes(event[0])), int(event[1]))
        doc = conn.execute("SELECT doc_hash FROM documents ORDER BY block_number DESC LIMIT 1").fetchone()
        if doc is not None:
            ids.doc_hash = hex32(bytes(doc[0]))
    ids.held_part = hex32(parts[config.held - 1])  # at the warehouse, three events
    ids.maker_part = hex32(parts[-30])  # still at the maker


# --- console users --------------------------------------------------------------------------------------------------


def create_users(w: World) -> None:
    from ledger_service import accounts
    from partledger.db import make_engine

    engine = make_engine(w.stack.service_db_url)
    try:
        for username, (org, role) in USERS.items():
            accounts.create_user(engine, org_id=w.ledger.orgs[org].id, username=username, password=PASSWORD, role=role, display_name=username)
    finally:
        engine.dispose()


def sign_in(api: str, username: str) -> httpx.Client:
    """A kept-alive client with the user's session cookie, signed in through the sign-in form."""
    client = httpx.Client(base_url=api, timeout=60, follow_redirects=False)
    page = client.get("/console/sign-in")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    if page.status_code != 200 or token is None:
        raise RuntimeError(f"sign-in form: {page.status_code} {page.text[:300]}")
    reply = client.post("/console/sign-in", data={"username": username, "password": PASSWORD, "signin_token": token.group(1), "next": "/console"})
    if reply.status_code != 303:
        raise RuntimeError(f"sign-in of {username}: {reply.status_code} {reply.text[:300]}")
    return client


def csrf_of(client: httpx.Client, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    if found is None:
        raise RuntimeError(f"no CSRF token on {path}")
    return found.group(1)


def console_setup(clients: dict[str, httpx.Client], ids: Ids, w: World) -> dict[str, str]:
    """Things only the console makes: a label job (maker), an anchored batch of the auditor's own reads."""
    notes: dict[str, str] = {}
    maker = clients["mk.operator"]
    small = ids.lots.get("LOT-SMALL")
    if small is not None:
        reply = maker.post(f"/console/maker/lots/{small}/labels", data={"csrf_token": csrf_of(maker, f"/console/maker/lots/{small}"), "layout": "a4"})
        if reply.status_code == 303 and "/maker/labels/" in reply.headers.get("location", ""):
            ids.label_job = reply.headers["location"].rsplit("/", 1)[-1]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and 'data-phase="ready"' not in maker.get(f"/console/maker/labels/{ids.label_job}/progress").text:
                time.sleep(0.5)
        else:
            notes["label_job"] = f"POST labels answered {reply.status_code}"
    auditor = clients["au.auditor"]
    for _ in range(3):
        auditor.get("/console/audit")
    reply = auditor.post("/console/audit/log/anchor", data={"csrf_token": csrf_of(auditor, "/console/audit/log")})
    if reply.status_code != 303:
        notes["audit_anchor"] = f"POST anchor answered {reply.status_code}"
    path = Path(w.stack.service_db_url.removeprefix("sqlite:///"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
            row = conn.execute("SELECT e.id, b.root FROM audit_log e JOIN audit_batches b ON b.id = e.batch_id WHERE e.org_id = ? ORDER BY e.id LIMIT 1",
                               (w.ledger.orgs["auditor"].id,)).fetchone()  # fmt: skip
        if row is not None:
            with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True, timeout=10) as conn:
                if conn.execute("SELECT 1 FROM batches WHERE root = ?", (row[1],)).fetchone():
                    ids.audit_entry = int(row[0])
                    break
        time.sleep(0.5)
    else:
        notes["audit_entry"] = "no anchored audit-log batch within 120 s"
    return notes


# --- the pages --------------------------------------------------------------------------------------------------------


def console_get_routes() -> list[str]:
    """Every GET path template under /console, as the app routes it (static files aside)."""
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    from ledger_service.console import install_console

    app = FastAPI()
    install_console(app)
    found: set[str] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                if "GET" in route.methods and route.path.startswith("/console"):
                    found.add(route.path)
            elif hasattr(route, "original_router"):  # an included router (FastAPI >= 0.16x keeps it whole)
                walk(route.original_router.routes)

    walk(app.routes)
    return sorted(found)


def probes(ids: Ids, config: ConsoleConfig, w: World) -> dict[str, list[Probe]]:
    """The URLs of each GET route, as the user whose page it is."""
    orgs = w.ledger.orgs
    lot0 = ids.lots[lot_code(0)]
    held_gs1 = (GTIN_A, serial_of((config.held - 1) // config.lot_parts, (config.held - 1) % config.lot_parts))  # ids.held_part
    wh, mk, au, ad, ws = "wh.operator", "mk.operator", "au.auditor", "wh.admin", "ws.operator"
    P = Probe
    table: dict[str, list[Probe]] = {
        "/console/sign-in": [P("", "/console/sign-in", wh)],
        "/console": [P("", "/console", wh), P("", "/console", mk, limit=5), P("", "/console", au)],
        "/console/": [],  # the same page as /console
        "/console/home/{name}": [P("", f"/console/home/{name}", wh, limit=50, longer=name == "inbound") for name in ("inbound", "rejected", "recalls", "documents")]
        + [P("", "/console/home/flags", mk, limit=50)],
        "/console/commands": [P("", "/console/commands", wh, limit=50, longer=config.api_commands > 50), P("", "/console/commands", mk, limit=50, longer=config.api_commands > 25),
                              P("", "/console/commands?status=rejected", wh, limit=50)],
        "/console/commands/{command_id}": [P("", f"/console/commands/{ids.wh_command}", wh)],
        "/console/commands/{command_id}/status": [P("", f"/console/commands/{ids.wh_command}/status?row=1", wh)],
        "/console/admin": [P("", "/console/admin", ad, limit=50)],
        "/console/admin/keys": [P("", "/console/admin/keys", ad, limit=50)],
        "/console/admin/sites": [P("", "/console/admin/sites", ad)],
        "/console/totp": [P("", "/console/totp", wh)],
        "/console/maker": [P("", "/console/maker", mk, expect=303)],
        "/console/maker/lots": [P("", "/console/maker/lots", mk, limit=50)],
        "/console/maker/lots/{lot}": [P("", f"/console/maker/lots/{lot0}", mk, limit=50, longer=True),
                                      P("", f"/console/maker/lots/{lot0}?status=in_stock", mk, limit=50, longer=True)],
        "/console/maker/lots/{lot}/impact": [P("", f"/console/maker/lots/{lot0}/impact", mk, limit=50, longer=True)],
        "/console/maker/lots/{lot}/recall": [P("", f"/console/maker/lots/{lot0}/recall", mk)],
        "/console/maker/register": [P("", "/console/maker/register", mk)],
        "/console/maker/commands/{command_id}": [P("", f"/console/maker/commands/{ids.mk_command}", mk)],
        "/console/maker/commands/{command_id}/status": [P("", f"/console/maker/commands/{ids.mk_command}/status", mk)],
        "/console/maker/labels/{job_id}": [P("", f"/console/maker/labels/{ids.label_job}", mk)] if ids.label_job else [],
        "/console/maker/labels/{job_id}/progress": [P("", f"/console/maker/labels/{ids.label_job}/progress", mk)] if ids.label_job else [],
        "/console/maker/labels/{job_id}/file": [P("", f"/console/maker/labels/{ids.label_job}/file", mk, export=True)] if ids.label_job else [],
        "/console/custody": [P("", "/console/custody", wh), P("", "/console/custody", mk)],
        "/console/parts/gs1": [P("", f"/console/parts/gs1?gtin={held_gs1[0]}&serial={held_gs1[1]}", wh, expect=303)],
        "/console/parts/{part_id}": [P("", f"/console/parts/{ids.held_part}", wh), P("", f"/console/parts/{ids.maker_part}", mk)],
        "/console/custody/ship": [P("", "/console/custody/ship", wh), P("", "/console/custody/ship", mk)],
        "/console/custody/inbound": [P("", "/console/custody/inbound", wh, limit=50, longer=True)],
        "/console/custody/inbound/{key}": [P("", f"/console/custody/inbound/{ids.consignment}", wh, limit=50)],
        "/console/custody/inventory": [P("", "/console/custody/inventory", wh), P("", "/console/custody/inventory", mk)],
        "/console/custody/inventory/parts": [P("", "/console/custody/inventory/parts", wh, limit=50, longer=True),
                                             P("", "/console/custody/inventory/parts?status=in_stock", wh, limit=50, longer=True),
                                             P("", "/console/custody/inventory/parts", mk, limit=50, longer=True)],
        "/console/custody/inventory.csv": [P("", "/console/custody/inventory.csv", wh, export=True)],
        "/console/custody/install": [P("", "/console/custody/install", ws)],
        "/console/scan": [P("", "/console/scan", wh)],
        "/console/scan/open": [P("", f"/console/scan/open?code=/01/{GTIN_A}/21/{held_gs1[1]}", wh, expect=303)],
        "/console/documents": [P("", "/console/documents", wh, limit=50), P("", "/console/documents?box=issued", mk, limit=50),
                               P("", "/console/documents?box=anchored", wh, limit=50), P("", "/console/documents?box=anchored", au, limit=50)],
        "/console/documents/propose": [P("", "/console/documents/propose", mk)],
        "/console/documents/proposals/{proposal_id}": [P("", f"/console/documents/proposals/{ids.proposal}", wh)],
        "/console/documents/check": [P("", "/console/documents/check", wh)],
        "/console/documents/proofs/{doc_hash}": [P("", f"/console/documents/proofs/{ids.doc_hash}", wh, export=True)] if ids.doc_hash else [],
        "/console/audit": [P("", "/console/audit", au)],
        "/console/audit/orgs/{org_id}": [P("", f"/console/audit/orgs/{orgs['warehouse'].id}", au, limit=50, longer=True, org="warehouse"),
                                         P("", f"/console/audit/orgs/{orgs['maker'].id}", au, limit=50, longer=True, org="maker"),
                                         P("", f"/console/audit/orgs/{orgs['maker'].id}?tab=lots", au, limit=50, org="maker"),
                                         P("", f"/console/audit/orgs/{orgs['warehouse'].id}?tab=documents", au, limit=50, org="warehouse")],
        "/console/audit/find": [P("", f"/console/audit/find?what=part&part={ids.held_part}", au, expect=303)],
        "/console/audit/parts/{part}": [P("", f"/console/audit/parts/{ids.held_part}", au)],
        "/console/audit/lots/{lot}": [P("", f"/console/audit/lots/{lot0}", au, limit=50, longer=True)],
        "/console/audit/proofs/events/{tx_hash}/{log_index}": [P("", f"/console/audit/proofs/events/{ids.event[0]}/{ids.event[1]}", au, export=True)] if ids.event[0] else [],
        "/console/audit/log": [P("", "/console/audit/log", au, limit=50, longer=True)],
        "/console/audit/log/{entry_id}/proof": [P("", f"/console/audit/log/{ids.audit_entry}/proof", au, export=True)] if ids.audit_entry else [],
    }  # fmt: skip
    for route, listed in table.items():
        for probe in listed:
            probe.route = route
    return table


_LIST_BLOCK = re.compile(r"<tbody\b.*?</tbody>|<ul class=\"list\b.*?</ul>|<ol class=\"list\b.*?</ol>", re.S)


def list_rows(html: str) -> int:
    """The rows of the longest list on a page: <tr> of a <tbody>, <li> of a <ul class="list ...">, part rows."""
    counts = [block.count("<tr") if block.startswith("<tbody") else block.count("<li") for block in _LIST_BLOCK.findall(html)]
    counts.append(html.count('class="part-row"'))
    return max(counts)


def server_ms(reply: httpx.Response) -> float | None:
    found = re.search(r"app;dur=([0-9.]+)", reply.headers.get("server-timing", ""))
    return float(found.group(1)) if found else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 2) if ordered else 0.0


def measure(client: httpx.Client, probe: Probe, config: ConsoleConfig) -> dict[str, Any]:
    reply = None
    for _ in range(config.warmup):
        reply = client.get(probe.url)
    server, wall = [], []
    sizes = set()
    for _ in range(config.requests if not probe.export else max(3, config.requests // 10)):
        started = time.perf_counter()
        reply = client.get(probe.url)
        body = reply.content
        wall.append(1000 * (time.perf_counter() - started))
        sizes.add(len(body))
        if reply.status_code != probe.expect:
            code = re.search(r'<code id="error-code">([^<]+)</code>', reply.text)
            problem = re.search(r'<p class="problem-text">([^<]*)</p>', reply.text)
            raise RuntimeError(f"GET {probe.url} as {probe.user} answered {reply.status_code}, not {probe.expect}: {code and code.group(1)} {problem and problem.group(1)}")
        if (ms := server_ms(reply)) is not None:
            server.append(ms)
    assert reply is not None
    html = reply.text if reply.headers.get("content-type", "").startswith("text/html") else ""
    rows = list_rows(html) if html else None
    has_next = 'rel="next"' in html
    figures: dict[str, Any] = {
        "route": probe.route, "url": probe.url, "user": probe.user, "org": probe.org or USERS[probe.user][0], "status": reply.status_code, "requests": len(wall),
        "server_p50_ms": percentile(server, 0.5), "server_p95_ms": percentile(server, 0.95), "server_p99_ms": percentile(server, 0.99),
        "client_p50_ms": percentile(wall, 0.5), "client_p95_ms": percentile(wall, 0.95), "bytes": max(sizes),
        "rows": rows, "next_page": has_next, "export": probe.export,
    }  # fmt: skip
    if probe.limit is not None:
        figures["paginated"] = (rows or 0) <= probe.limit and (has_next or not probe.longer)
    figures["met"] = None if probe.export else figures["server_p95_ms"] <= TARGET_P95_MS
    return figures


# --- the run ----------------------------------------------------------------------------------------------------------


@contextmanager
def _clients(api: str) -> Iterator[dict[str, httpx.Client]]:
    clients = {username: sign_in(api, username) for username in USERS}
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def run_console_bench(config: ConsoleConfig = ConsoleConfig(), *, log: Callable[[str], None] = log, workdir: Path | None = None,
                      only: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Loads the world, signs the users in and times every console page; returns the figures."""
    load_before = [round(value, 2) for value in os.getloadavg()]
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="partledger-console-") as temporary, world(Path(workdir or temporary)) as w:  # full history: event proofs read old blocks' state
        sender = RawSender(w.ledger, w.rpc)
        parts = load_chain(w, sender, config)
        start_processes(w, {"PARTLEDGER_MAX_IN_FLIGHT_PER_SIGNER": "1024"})
        ids = Ids()
        try:
            mirror_ids(w, ids, parts, config)
            with httpx.Client(base_url=w.api, timeout=60) as client:
                api = api_load(w, client, config, parts, ids)
            wait_indexed(w, int(w.rpc.call("eth_blockNumber", []), 16), timeout=300)
            mirror_ids(w, ids, parts, config)
            create_users(w)
            with _clients(w.api) as clients:
                notes = console_setup(clients, ids, w)
                routes = console_get_routes()
                table = probes(ids, config, w)
                missing = [route for route in routes if route not in table]
                unfilled = [route for route in routes if route in table and not table[route] and route != "/console/"]
                pages: list[dict[str, Any]] = []
                errors: list[str] = []
                log(f"console: world ready in {time.perf_counter() - begun:.0f} s; {sum(map(len, table.values()))} pages over {len(routes)} GET routes")
                for route in routes:
                    for probe in table.get(route, []):
                        if only and only not in probe.url:
                            continue
                        try:
                            figures = measure(clients[probe.user], probe, config)
                        except Exception as exc:  # noqa: BLE001 - one page failing must not lose the others' figures
                            errors.append(f"{probe.url} as {probe.user}: {exc}")
                            log(f"  error: {errors[-1]}")
                            continue
                        pages.append(figures)
                        log(f"  {figures['server_p50_ms']:7.2f} {figures['server_p95_ms']:7.2f} {figures['server_p99_ms']:7.2f} ms  {figures['bytes']:>8,} B  rows {figures['rows']}  {probe.user:11} {probe.url[:90]}")
        finally:
            stop_processes(w)
        with sqlite3.connect(f"file:{w.index_path}?mode=ro", uri=True) as conn:
            mirror = {
                "parts": conn.execute("SELECT count(*) FROM parts").fetchone()[0],
                "held_by_warehouse": conn.execute("SELECT count(*) FROM parts WHERE custodian = ?", (w.ledger.orgs["warehouse"].id,)).fetchone()[0],
                "part_events": conn.execute("SELECT count(*) FROM part_events").fetchone()[0],
                "index_db_mb": round(sum(p.stat().st_size for p in w.index_path.parent.glob(w.index_path.name + "*")) / 2**20, 1),
                "held": {org: conn.execute("SELECT count(*) FROM parts WHERE custodian = ?", (w.ledger.orgs[org].id,)).fetchone()[0] for org in ("maker", "warehouse", "auditor", "workshop")},
            }
    for page in pages:
        page["org_holds"] = mirror["held"].get(page["org"], 0)
    judged = [page for page in pages if page["met"] is not None]
    slowest = max(judged, key=lambda page: page["server_p95_ms"]) if judged else None
    # The acceptance's scope: the pages of (or about) an organisation holding at most 10^4 parts; the maker holds the
    # other ~9 x 10^4 and its pages are reported and judged too, apart.
    in_scope = [page for page in judged if page["org_holds"] <= config.held]
    return {
        "console_pages": len(judged),
        "console_pages_met": sum(1 for page in judged if page["met"]),
        "console_worst_p95_ms": slowest["server_p95_ms"] if slowest else None,
        "console_worst_page": slowest["url"] if slowest else None,
        "console_all_met": all(page["met"] for page in judged) and not errors if judged else None,
        "console_scope_met": all(page["met"] for page in in_scope) and not errors if in_scope else None,
        "console_scope_pages": len(in_scope),
        "console_missed": [f"{page['url']} as {page['user']}: p95 {page['server_p95_ms']} ms" for page in judged if not page["met"]],
        "console_lists_paginated": all(page.get("paginated", True) for page in pages),
        "target_p95_ms": TARGET_P95_MS,
        "pages": pages,
        "routes_not_measured": missing + unfilled,
        "errors": errors,
        "notes": notes,
        "mirror": mirror,
        "api_load": api,
        "config": asdict(config),
        "load_average": {"before": load_before, "after": [round(value, 2) for value in os.getloadavg()]},
        "cores": os.cpu_count(),
        "seconds": round(time.perf_counter() - begun, 1),
    }


def save(figures: dict[str, Any], quick: bool, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    suffix = "-quick" if quick else ""
    path = directory / f"console{suffix}-{stamp}.json"
    text = json.dumps(figures, indent=2)
    path.write_text(text)
    (directory / f"console{suffix}-latest.json").write_text(text)
    return path


def show(figures: dict[str, Any]) -> None:
    print(f"{'server p50':>10} {'p95':>7} {'p99':>7} {'client p50':>10} {'p95':>7} {'bytes':>9} {'rows':>5} next  met  {'holds':>6}  user        page")
    for page in figures["pages"]:
        met = "-" if page["met"] is None else ("yes" if page["met"] else "NO")
        rows = "" if page["rows"] is None else page["rows"]
        print(f"{page['server_p50_ms']:10.2f} {page['server_p95_ms']:7.2f} {page['server_p99_ms']:7.2f} {page['client_p50_ms']:10.2f} {page['client_p95_ms']:7.2f} "
              f"{page['bytes']:9,} {rows:>5} {'yes' if page['next_page'] else '   '}  {met:>3}  {page['org_holds']:6}  {page['user']:11} {page['url'][:80]}")  # fmt: skip
    print(f"pages {figures['console_pages_met']}/{figures['console_pages']} within {TARGET_P95_MS:g} ms p95 (of an organisation holding at most "
          f"{figures['config']['held']:,} parts: {'all' if figures['console_scope_met'] else 'not all'} of {figures['console_scope_pages']}); worst {figures['console_worst_p95_ms']} ms "
          f"({figures['console_worst_page']}); lists paginated: {figures['console_lists_paginated']}; not measured: {figures['routes_not_measured'] or 'none'}; "
          f"mirror {figures['mirror']}; load {figures['load_average']}")  # fmt: skip


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 parts, 20 requests a page")
    parser.add_argument("--requests", type=int, help="measured requests per page")
    parser.add_argument("--only", help="only the pages whose URL contains this")
    parser.add_argument("--workdir", type=Path, help="keep databases and logs here (an empty directory)")
    arguments = parser.parse_args()
    config = ConsoleConfig.quick() if arguments.quick else ConsoleConfig()
    if arguments.requests:
        config = ConsoleConfig(**asdict(config) | {"requests": arguments.requests})
    if arguments.workdir is not None:
        arguments.workdir.mkdir(parents=True, exist_ok=True)
    figures = run_console_bench(config, workdir=arguments.workdir, only=arguments.only)
    figures["quick"] = arguments.quick
    show(figures)
    log(f"console: results saved to {save(figures, arguments.quick)}")
    print(json.dumps(figures, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
