"""Indexer catch-up speed against its floor, and paging a 100,000-part lot through the query API.

Run: `python -m benchmarks.indexer_bench [--parts N]`. A fresh Anvil gets N registered parts (200 per transaction)
and N/2 shipped and received; then, side by side in one run:
- floor: fetching and decoding the same logs (eth_getLogs + the indexer's decoder), writing nothing;
- the indexer catching up from the deployment block into SQLite (WAL) and into PostgreSQL (throwaway cluster).
Events are part-level events (one per part per log), the rows the indexer writes to part_events.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from benchmarks import stop_cleanly_on_sigterm
from indexer import migrate
from indexer.decoder import LogDecoder
from indexer.runner import SQLITE_CACHE_MIB, Indexer, IndexerConfig
from indexer.sink import Sink
from indexer.source import JsonRpcSource
from ledger_service.app import create_app
from ledger_service.auth import create_api_key
from ledger_service.settings import ServiceSettings
from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.chain import connect
from partledger.db import make_engine
from partledger.ids import ascii32
from partledger.manifest import save_manifest
from tests.chainkit import GTIN_A, Ledger, build_ledger
from tests.pgcluster import PostgresCluster

BULK = 200
GAS = 10_000_000  # given, so that sending does not wait for an estimate against a state still being mined


def make_workload(ledger: Ledger, parts: int) -> tuple[int, int]:
    """Registers `parts` parts in one lot and ships/receives half of them; returns (part events, lot number)."""
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    p = ledger.parts.functions
    hashes = []
    serials = [ascii32(f"B{index:07d}") for index in range(parts)]
    for start in range(0, parts, BULK):
        hashes.append(p.registerParts(int(GTIN_A), ascii32("LOT-BENCH"), serials[start : start + BULK]).transact({"from": maker.key, "gasPrice": 0, "gas": GAS}))
    ledger.w3.eth.wait_for_transaction_receipt(hashes[-1])
    from partledger.ids import part_id_unchecked

    ids = [part_id_unchecked(int(GTIN_A), serial) for serial in serials[: parts // 2]]
    for start in range(0, len(ids), BULK):
        chunk = ids[start : start + BULK]
        shipped = p.shipParts(chunk, warehouse.id, bytes(32)).transact({"from": maker.key, "gasPrice": 0, "gas": GAS})
        ledger.w3.eth.wait_for_transaction_receipt(shipped)
        last = p.receiveParts(chunk, bytes(32)).transact({"from": warehouse.key, "gasPrice": 0, "gas": GAS})
    ledger.w3.eth.wait_for_transaction_receipt(last)
    return parts + 2 * len(ids), ledger.lot_number(maker, "LOT-BENCH")


def measure_floor(ledger: Ledger, url: str) -> float:
    """Seconds to fetch and decode every log of the deployment, in the indexer's range size."""
    source = JsonRpcSource(url)
    decoder = LogDecoder({name: c.address for name, c in ledger.manifest.contracts.items()})
    head = source.head_number()
    started = time.perf_counter()
    count = 0
    for start in range(ledger.manifest.deployment_block, head + 1, 2_000):
        for raw in source.logs(start, min(head, start + 1_999), decoder.addresses):
            record = decoder.decode(raw)
            count += len(record.args.get("partIds", record.args.get("serials", ()))) if record else 0
    return time.perf_counter() - started


class SqlClock:
    """Seconds an engine spends inside its cursors' execute/executemany (SQLAlchemy's cursor events)."""

    def __init__(self, engine: Any) -> None:
        self.seconds = 0.0
        self._started = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._started = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._started


def measure_indexer(ledger: Ledger, url: str, db_url: str) -> tuple[float, float, Any]:
    """Seconds the indexer takes to catch up from the deployment block into `db_url`; the seconds of those spent
    in the database's statements (SQLite: every INSERT/UPDATE through SQLAlchemy's cursor events; PostgreSQL's COPY
    bypasses them, so there it is a lower bound); and the engine."""
    engine = make_engine(db_url, sqlite_cache_mib=SQLITE_CACHE_MIB)  # as `partledger index` runs it
    migrate.upgrade(engine)
    in_sql = SqlClock(engine)
    indexer = Indexer(source=JsonRpcSource(url), sink=Sink(engine, ledger.manifest.chain_id), manifest=ledger.manifest, config=IndexerConfig())
    head = ledger.w3.eth.block_number
    started = time.perf_counter()
    while (state := indexer.sink.state()) is None or state.block_number < head:
        indexer.step()
    return time.perf_counter() - started, in_sql.seconds, engine


def measure_paging(ledger: Ledger, url: str, db_url: str, lot: int, workdir: Path) -> dict[str, float]:
    """Pages through the whole lot with limit=1000; returns pages and ms per page (mean, worst)."""
    manifest_path = workdir / "manifest.json"
    save_manifest(ledger.manifest.__class__(**{**ledger.manifest.__dict__, "rpc_url": url}), manifest_path)
    app = create_app(ServiceSettings(manifest=manifest_path, index_db_url=db_url, service_db_url=f"sqlite:///{workdir / 'svc.db'}"))
    key = create_api_key(app.state.services.service_engine, org_id=ledger.orgs["maker"].id)
    timings, cursor, items = [], None, 0
    with TestClient(app) as client:
        while True:
            params: dict[str, Any] = {"lot": lot, "limit": 1000} | ({"cursor": cursor} if cursor else {})
            started = time.perf_counter()
            body = client.get("/v1/parts", params=params, headers={"Authorization": f"Bearer {key}"}).json()
            timings.append(time.perf_counter() - started)
            items += len(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
    return {"pages": len(timings), "items": items, "page_ms_mean": 1000 * sum(timings) / len(timings), "page_ms_max": 1000 * max(timings)}


def indexer_figures(events: int, *, floor_s: float, sqlite_s: float, postgres_s: float, sqlite_sql_s: float) -> dict[str, Any]:
    """The catch-up figures from `events` part events and the seconds the floor and each indexer took;
    `sqlite_sql_s`: of the SQLite run, the seconds inside SQL statements (what the writes alone cost)."""
    return {
        "part_events": events,
        "fetch_decode_floor_events_per_s": round(events / floor_s),
        "indexer_sqlite_events_per_s": round(events / sqlite_s),
        "indexer_postgres_events_per_s": round(events / postgres_s),
        "indexer_vs_floor_ratio": round(floor_s / sqlite_s, 3),
        "indexer_postgres_vs_floor_ratio": round(floor_s / postgres_s, 3),
        "indexer_sqlite_sql_share": round(sqlite_sql_s / sqlite_s, 3),
        "sqlite_sql_alone_vs_floor_ratio": round(floor_s / sqlite_sql_s, 3),
    }


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", type=int, default=100_000)
    arguments = parser.parse_args()
    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=40))
    cluster = PostgresCluster()
    workdir = Path(tempfile.mkdtemp(prefix="partledger-bench-"))
    try:
        ledger = build_ledger(connect(node.url))
        started = time.perf_counter()
        events, lot = make_workload(ledger, arguments.parts)
        print(f"workload: {events:,} part events in {time.perf_counter() - started:.1f}s")
        floor = measure_floor(ledger, node.url)
        sqlite_s, sqlite_sql_s, _ = measure_indexer(ledger, node.url, f"sqlite:///{workdir / 'index.db'}")
        pg_url = cluster.create_database("bench")
        postgres_s, _, _ = measure_indexer(ledger, node.url, pg_url)
        paging = measure_paging(ledger, node.url, f"sqlite:///{workdir / 'index.db'}", lot, workdir)
    finally:
        cluster.destroy()
        node.stop()
    figures = indexer_figures(events, floor_s=floor, sqlite_s=sqlite_s, postgres_s=postgres_s, sqlite_sql_s=sqlite_sql_s)
    figures["lot_paging"] = {k: round(v, 2) for k, v in paging.items()}
    print(f"{'fetch + decode (floor)':<28} {figures['fetch_decode_floor_events_per_s']:>10,} events/s")
    print(f"{'indexer → SQLite (WAL)':<28} {figures['indexer_sqlite_events_per_s']:>10,} events/s  ({figures['indexer_vs_floor_ratio']:.2f} of floor)")
    print(f"{'  of which SQL statements':<28} {figures['indexer_sqlite_sql_share']:>10.0%} of its time (alone {figures['sqlite_sql_alone_vs_floor_ratio']:.2f} of floor)")
    print(f"{'indexer → PostgreSQL':<28} {figures['indexer_postgres_events_per_s']:>10,} events/s  ({figures['indexer_postgres_vs_floor_ratio']:.2f} of floor)")
    print(f"paging a lot of {paging['items']:,} parts: {paging['pages']:.0f} pages of 1000, {paging['page_ms_mean']:.1f} ms mean, {paging['page_ms_max']:.1f} ms worst")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
