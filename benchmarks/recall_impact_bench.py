"""Recall impact through containment at scale (issue 15): `python -m benchmarks.recall_impact_bench [--quick]
[--parts N] [--samples N] [--workdir DIR] [--only sqlite|postgresql]`.

The mirror is written by the indexer's own Sink from synthetic logs: the events the contracts emit, decoded as
indexer.decoder decodes them, in blocks with linked headers, but no chain (registering 10^6 parts on Anvil takes the
better part of an hour, and what is measured here is the read). A lot of 10^4 brake pads sits three containment
levels down: pads in calipers (2 each), calipers in brake modules (2 each), and the modules either in axles (2
each; 60 % of them; the axles shipped to a workshop and installed in vehicles) or in cartons (logistic units of 10;
shipped to a distributor). The rest of the mirror, up to 10^6 parts in all, is other lots: a fifth of them packed in
units of 100 and moved, so that the containment table is not the lot's alone. Then the lot is recalled.

Measured through the service (create_app, in process over ASGI, as the lot's manufacturer; the JSON answer included; a regulator's reads add the audit log's committed row), each
after a warm-up, one request at a time: GET /v1/lots/{lot}/recall-impact (the summary: counts, vehicles,
custodians, containers at every level, the first page of parts with their outermost container),
/recall-impact/containers (the first page of the assemblies and units holding the lot's parts) and
/recall-impact/vehicles. Target: p95 <= 200 ms for each, on SQLite and on PostgreSQL. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_utils import keccak

from benchmarks import stop_cleanly_on_sigterm
from indexer import migrate
from indexer.decoder import DecodedLog
from indexer.sink import Sink
from indexer.source import BlockHeader
from partledger.db import make_engine
from partledger.ids import ascii32, gtin_check_digit, logistic_unit_id, part_id_unchecked
from partledger.model import Role

TARGET_P95_MS = 200.0
PARTS = 1_000_000
QUICK_PARTS = 50_000
LOT_PARTS = 10_000
QUICK_LOT_PARTS = 2_000
REGISTER_CHUNK = 1_000  # serials per PartsRegistered log
LOGS_PER_BLOCK = 50
BLOCKS_PER_WRITE = 200
IDS_PER_WRITE = 50_000  # a write (one transaction) also ends once its logs name this many ids
MAKER, WAREHOUSE, DISTRIBUTOR, WORKSHOP, REGULATOR = 1, 2, 3, 4, 5
ORGS = ((MAKER, "maker", Role.MANUFACTURER), (WAREHOUSE, "warehouse", Role.LOGISTICS), (DISTRIBUTOR, "distributor", Role.DISTRIBUTOR),
        (WORKSHOP, "workshop", Role.WORKSHOP), (REGULATOR, "regulator", Role.REGULATOR))  # fmt: skip
KEYS = {org: "0x" + keccak(text=f"site-{org}")[:20].hex() for org, _, _ in ORGS}


def gtin(body: str) -> int:
    return int(body + str(gtin_check_digit(body)))


GTIN_PAD, GTIN_CALIPER, GTIN_MODULE, GTIN_AXLE, GTIN_FILL = (gtin(b) for b in ("0401234500001", "0401234500002", "0401234500003", "0401234500004", "0401234500005"))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the synthetic chain ------------------------------------------------------------------------------------------


class LogWriter:
    """Synthetic decoded logs, LOGS_PER_BLOCK to a block, written through the Sink BLOCKS_PER_WRITE blocks (or
    IDS_PER_WRITE ids) at a time, as the indexer writes a range of blocks."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.block = 1
        self.index = 0
        self.pending: list[DecodedLog] = []
        self.headers: list[BlockHeader] = []
        self.parent = keccak(text="block-0")
        sink.start(BlockHeader(0, self.parent, bytes(32), 1_700_000_000))
        self.events = 0
        self.ids = 0  # named by the pending logs

    def emit(self, contract: str, event: str, args: dict[str, Any]) -> None:
        tx = keccak(text=f"tx-{self.block}-{self.index}")
        self.pending.append(DecodedLog(contract, event, self.block, self._hash(self.block), tx, self.index, args))
        self.ids += len(args.get("serials") or args.get("partIds") or args.get("childIds") or ())
        self.index += 1
        if self.index == LOGS_PER_BLOCK:
            self.seal()
        if self.ids >= IDS_PER_WRITE:
            self.flush()

    def _hash(self, number: int) -> bytes:
        return keccak(text=f"block-{number}")

    def seal(self) -> None:
        if self.index == 0:
            return
        header = BlockHeader(self.block, self._hash(self.block), self.parent, 1_700_000_000 + self.block)
        self.headers.append(header)
        self.parent = header.hash
        self.block += 1
        self.index = 0
        if len(self.headers) >= BLOCKS_PER_WRITE:
            self.flush()

    def flush(self) -> None:
        self.seal()
        if not self.headers:
            return
        cursor = self.headers[-1]
        self.events += len(self.pending)
        self.sink.write(self.pending, cursor=cursor, headers=self.headers, head=cursor.number, journal_from=cursor.number + 1, prune_below=cursor.number - 64)
        self.pending, self.headers, self.ids = [], [], 0


def serial(prefix: str, index: int) -> bytes:
    return ascii32(f"{prefix}{index:07d}")


def register(w: LogWriter, *, lot: int, code: str, gtin_value: int, prefix: str, count: int) -> list[bytes]:
    w.emit("PartLedger", "LotOpened", {"lot": lot, "manufacturer": MAKER, "lotCode": ascii32(code)})
    ids = []
    for start in range(0, count, REGISTER_CHUNK):
        serials = [serial(prefix, index) for index in range(start, min(count, start + REGISTER_CHUNK))]
        w.emit("PartLedger", "PartsRegistered", {"lot": lot, "manufacturer": MAKER, "siteKey": KEYS[MAKER], "gtin": gtin_value, "serials": serials})
        ids += [part_id_unchecked(gtin_value, s) for s in serials]
    return ids


def move(w: LogWriter, ids: list[bytes], *, frm: int, to: int, install: bool = False) -> None:
    """Shipped and received (and installed, one vehicle per id), 200 ids a log."""
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        w.emit("PartLedger", "PartsShipped", {"from": frm, "to": to, "siteKey": KEYS[frm], "docHash": bytes(32), "partIds": chunk})
        w.emit("PartLedger", "PartsReceived", {"orgId": to, "siteKey": KEYS[to], "docHash": bytes(32), "partIds": chunk})
        if install:
            vins = [keccak(b"vin" + pid) for pid in chunk]
            w.emit("PartLedger", "PartsInstalled", {"orgId": to, "siteKey": KEYS[to], "docHash": bytes(32), "partIds": chunk, "vinHashes": vins})


def sscc(number: int) -> int:
    body = f"{number:017d}"
    return int(body + str(gtin_check_digit(body)))


def pack(w: LogWriter, unit_number: int, ids: list[bytes]) -> bytes:
    code = sscc(unit_number)
    unit = logistic_unit_id(code)
    w.emit("PartLedger", "LogisticUnitCreated", {"sscc": code, "unitId": unit, "orgId": MAKER})
    w.emit("PartLedger", "PartsPacked", {"unitId": unit, "orgId": MAKER, "siteKey": KEYS[MAKER], "partIds": ids})
    return unit


def assemble(w: LogWriter, parents: list[bytes], children: list[bytes], per_parent: int) -> None:
    for index, parent in enumerate(parents):
        w.emit("PartLedger", "PartsAssembled", {"parentId": parent, "orgId": MAKER, "siteKey": KEYS[MAKER], "childIds": children[index * per_parent : (index + 1) * per_parent]})


def build_mirror(db_url: str, *, parts: int, lot_parts: int) -> dict[str, Any]:
    """The mirror described above; returns the lot number and what was built."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sink = Sink(engine, 31337)
    w = LogWriter(sink)
    started = time.perf_counter()
    for org, name, roles in ORGS:
        w.emit("ConsortiumRegistry", "OrganisationRegistered", {"orgId": org, "name": name, "roles": int(roles)})
    calipers_n, modules_n = lot_parts // 2, lot_parts // 4
    in_axles = (modules_n * 3 // 5) // 2 * 2
    axles_n = in_axles // 2
    lot = 1
    pads = register(w, lot=lot, code="PADS-RECALL", gtin_value=GTIN_PAD, prefix="P", count=lot_parts)
    calipers = register(w, lot=2, code="CALIPERS", gtin_value=GTIN_CALIPER, prefix="C", count=calipers_n)
    modules = register(w, lot=3, code="MODULES", gtin_value=GTIN_MODULE, prefix="M", count=modules_n)
    axles = register(w, lot=4, code="AXLES", gtin_value=GTIN_AXLE, prefix="A", count=axles_n)
    assemble(w, calipers, pads, 2)
    assemble(w, modules, calipers, 2)
    assemble(w, axles, modules[:in_axles], 2)
    cartons = [pack(w, 10_000_000 + index, modules[start : start + 10]) for index, start in enumerate(range(in_axles, modules_n, 10))]
    move(w, axles, frm=MAKER, to=WORKSHOP, install=True)
    move(w, cartons, frm=MAKER, to=DISTRIBUTOR)
    w.flush()
    log(f"recall impact bench: the lot's {lot_parts:,} pads in {calipers_n:,} calipers, {modules_n:,} modules, {axles_n:,} installed axles and {len(cartons):,} cartons ({time.perf_counter() - started:.1f} s)")
    filler = parts - lot_parts - calipers_n - modules_n - axles_n
    fill_lot, made, unit_number = 10, 0, 20_000_000
    while made < filler:
        count = min(10_000, filler - made)
        ids = register(w, lot=fill_lot, code=f"FILL-{fill_lot}", gtin_value=GTIN_FILL, prefix=f"F{fill_lot:03d}-", count=count)
        if fill_lot % 5 == 0:  # a fifth of the other lots: in units of 100, shipped to the warehouse
            units = [pack(w, unit_number + index, ids[start : start + 100]) for index, start in enumerate(range(0, len(ids), 100))]
            unit_number += len(units)
            move(w, units, frm=MAKER, to=WAREHOUSE)
        made += count
        fill_lot += 1
        if fill_lot % 10 == 0:
            log(f"recall impact bench: {lot_parts + calipers_n + modules_n + axles_n + made:,} parts in the mirror ({time.perf_counter() - started:.0f} s)")
    w.emit("PartLedger", "LotRecalled", {"lot": lot, "orgId": MAKER, "siteKey": KEYS[MAKER], "noticeHash": keccak(text="pad recall")})
    w.flush()
    seconds = time.perf_counter() - started
    engine.dispose()
    log(f"recall impact bench: {parts:,} parts, {w.events:,} logs written through the sink in {seconds:.1f} s")
    return {"lot": lot, "parts": parts, "lot_parts": lot_parts, "calipers": calipers_n, "modules": modules_n, "axles": axles_n, "cartons": len(cartons),
            "logs": w.events, "build_s": round(seconds, 1)}  # fmt: skip


# --- the service ----------------------------------------------------------------------------------------------------------


@contextmanager
def service(index_url: str, workdir: Path) -> Iterator[Any]:
    """create_app over the mirror (its manifest points at no node: these reads never reach one), the lot manufacturer's key."""
    from fastapi.testclient import TestClient

    from ledger_service.app import create_app
    from ledger_service.auth import create_api_key
    from ledger_service.settings import ServiceSettings
    from partledger.manifest import DeployedContract, Manifest, save_manifest

    contracts = {
        name: DeployedContract(address="0x" + keccak(text=name)[:20].hex(), block=0, tx_hash="0x" + "00" * 32, artifact_sha256="", code_hash="")
        for name in ("ConsortiumRegistry", "PartLedger", "EvidenceLedger")
    }
    manifest = Manifest(chain_id=31337, rpc_url="http://127.0.0.1:9", deployment_block=0, deployer=KEYS[MAKER], operator=KEYS[MAKER], contracts=contracts, dev_chain=True)
    path = workdir / "manifest.json"
    save_manifest(manifest, path)
    app = create_app(ServiceSettings(manifest=path, index_db_url=index_url, service_db_url=f"sqlite:///{workdir / 'service.db'}"))
    key = create_api_key(app.state.services.service_engine, org_id=MAKER)  # a regulator's reads are audited: a row written and committed per read
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def percentiles(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def measure(client: Any, path: str, samples: int) -> dict[str, Any]:
    for _ in range(3):
        reply = client.get(path)
        if reply.status_code != 200:
            raise RuntimeError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        reply = client.get(path)
        timings.append(time.perf_counter() - started)
        assert reply.status_code == 200
    return percentiles(timings) | {"bytes": len(reply.content)}


def run_backend(db_url: str, workdir: Path, *, parts: int, lot_parts: int, samples: int) -> dict[str, Any]:
    built = build_mirror(db_url, parts=parts, lot_parts=lot_parts)
    lot = built["lot"]
    with service(db_url, workdir) as client:
        summary = client.get(f"/v1/lots/{lot}/recall-impact").json()
        expected = {"assemblies": built["calipers"] + built["modules"] + built["axles"], "units": built["cartons"]}
        found = {key: summary["containers"][key] for key in expected}
        if found != expected or summary["installed_vehicles"] != built["axles"]:
            raise RuntimeError(f"recall impact answered {summary['containers']}, {summary['installed_vehicles']} vehicles; built {built}")
        figures = {
            "summary": measure(client, f"/v1/lots/{lot}/recall-impact", samples),
            "containers": measure(client, f"/v1/lots/{lot}/recall-impact/containers", samples),
            "vehicles": measure(client, f"/v1/lots/{lot}/recall-impact/vehicles", samples),
        }
    worst = max(figures.values(), key=lambda f: f["p95_ms"])
    return {"mirror": built, "answers": figures, "containers": summary["containers"], "vehicles": summary["installed_vehicles"],
            "worst_p95_ms": worst["p95_ms"], "met": worst["p95_ms"] <= TARGET_P95_MS}  # fmt: skip


def run_recall_impact_bench(*, parts: int = PARTS, lot_parts: int = LOT_PARTS, samples: int = 40, backends: tuple[str, ...] = ("sqlite", "postgresql"),
                            workdir: Path | None = None, log: Callable[[str], None] = log) -> dict[str, Any]:  # fmt: skip
    figures: dict[str, Any] = {"parts": parts, "lot_parts": lot_parts, "samples": samples, "target_p95_ms": TARGET_P95_MS}
    with tempfile.TemporaryDirectory(prefix="partledger-recall-impact-") as temporary:
        base = Path(workdir or temporary)
        for backend in backends:
            directory = base / backend
            directory.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            if backend == "sqlite":
                result = run_backend(f"sqlite:///{directory / 'index.db'}", directory, parts=parts, lot_parts=lot_parts, samples=samples)
            else:
                from tests.pgcluster import PostgresCluster

                cluster = PostgresCluster()
                try:
                    result = run_backend(cluster.create_database("impact"), directory, parts=parts, lot_parts=lot_parts, samples=samples)
                finally:
                    cluster.destroy()
            result["total_s"] = round(time.perf_counter() - started, 1)
            figures[backend] = result
            log(f"recall impact bench ({backend}): " + ", ".join(f"{name} p50 {f['p50_ms']} ms p95 {f['p95_ms']} ms" for name, f in result["answers"].items()))
    figures["recall_impact_sqlite_p95_ms"] = (figures.get("sqlite") or {}).get("worst_p95_ms")
    figures["recall_impact_postgres_p95_ms"] = (figures.get("postgresql") or {}).get("worst_p95_ms")
    figures["load_average"] = [round(value, 2) for value in os.getloadavg()]
    return figures


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PARTS:,} parts, a lot of {QUICK_LOT_PARTS:,}")
    parser.add_argument("--parts", type=int)
    parser.add_argument("--lot-parts", type=int)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--workdir", type=Path)
    arguments = parser.parse_args()
    parts = arguments.parts or (QUICK_PARTS if arguments.quick else PARTS)
    lot_parts = arguments.lot_parts or (QUICK_LOT_PARTS if arguments.quick else LOT_PARTS)
    backends = (arguments.only,) if arguments.only else ("sqlite", "postgresql")
    figures = run_recall_impact_bench(parts=parts, lot_parts=lot_parts, samples=arguments.samples, backends=backends, workdir=arguments.workdir)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
