"""Read latency as the mirror grows: `python -m benchmarks.scaling [--quick]`.

A fresh Anvil (gas price zero, 1 s blocks) gets 1,000,000 parts registered in 200-part transactions, pre-signed and
pushed straight to the node (the write path is measured by benchmarks.e2e; here it would only be slow), while
`partledger index` mirrors them into SQLite and `partledger serve` answers. At 10^4, 10^5 and 10^6 parts, a few
hundred parts picked at random (each shipped and received first, so that its history has three events) are
asked for, one request at a time over a kept-alive connection:
- the part-history query, `GET /v1/parts/{id}` as the part's manufacturer (the part and its full history);
- the verify endpoint, `GET /01/{gtin}/21/{serial}?sig=...` with Accept: application/json (signature recovery,
  state from the mirror, the scan recorded behind the answer).
The latencies should stay flat (indexes, not scans): the target is p50 at 10^6 within 1.5x of p50 at 10^4.
EXPLAIN QUERY PLAN of the queries behind both answers shows the indexes they use. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.e2e import BULK, RawSender, World, set_block_time, start_processes, stop_processes, wait_indexed, world
from indexer.tables import Lot, Part, PartEvent, SiteKey
from labels.digital_link import build_uri
from labels.signature import label_domain, sign_label
from partledger.ids import ascii32, part_id_unchecked
from tests.chainkit import GTIN_A
from tests.labelkit import dev_signer

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
TARGET_RATIO = 1.5
T_PART, T_EVENT, T_LOT, T_KEY = Part.__table__, PartEvent.__table__, Lot.__table__, SiteKey.__table__


def serial_of(index: int) -> str:
    return f"M{index:08d}"


def grow(sender: RawSender, maker_key: str, start: int, end: int, *, window: int = 300) -> None:
    """Registers parts start..end-1 (serials serial_of(i)) in one lot, 200 per transaction, 100 transactions (about
    half the block gas limit) signed, then pushed, at a time."""
    step = BULK * 100
    for first in range(start, end, step):
        serials = [ascii32(serial_of(i)) for i in range(first, min(end, first + step))]
        signed = [sender.sign(maker_key, "registerParts", [int(GTIN_A), ascii32("LOT-SCALE"), serials[i : i + BULK]]) for i in range(0, len(serials), BULK)]
        sender.push(signed, window=window)


def give_history(sender: RawSender, parts: list[bytes], *, maker: tuple[str, int], warehouse: tuple[str, int]) -> None:
    """Ships the probe parts to the warehouse and receives them there: three events each."""
    chunks = [parts[i : i + BULK] for i in range(0, len(parts), BULK)]
    signed = [sender.sign(maker[0], "shipParts", [chunk, warehouse[1], bytes(32)]) for chunk in chunks]
    signed += [sender.sign(warehouse[0], "receiveParts", [chunk, bytes(32)]) for chunk in chunks]
    sender.push(signed)
    if reverted := sender.count_reverted(signed):
        raise RuntimeError(f"{reverted} probe transactions reverted")


def latencies(client: httpx.Client, paths: list[str], headers: dict[str, str], *, expect: int = 200) -> dict[str, float]:
    """p50 / p99 / mean (ms) of one request at a time, after one unmeasured pass over the same paths (the rows in
    the page cache at every size alike: what is compared is the lookups' cost, not the disk)."""
    for path in paths:
        client.get(path, headers=headers)
    timings = []
    for path in paths:
        started = time.perf_counter()
        reply = client.get(path, headers=headers)
        timings.append(time.perf_counter() - started)
        if reply.status_code != expect:
            raise RuntimeError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    timings.sort()
    return {
        "p50_ms": round(1000 * timings[len(timings) // 2], 2),
        "p99_ms": round(1000 * timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2),
        "mean_ms": round(1000 * sum(timings) / len(timings), 2),
    }


def query_plans(index_path: Path, part: bytes) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN (SQLite) of the statements behind the history and verify answers, compiled from the same
    SQLAlchemy expressions the service uses."""
    statements = {
        "part by id (history, verify)": select(T_PART).where(T_PART.c.part_id == part),
        "history events of a part": select(T_EVENT).where(T_EVENT.c.part_id == part).order_by(T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position),
        "lot code of a part": select(T_LOT.c.lot_code).where(T_LOT.c.lot == 1),
        "site keys of a manufacturer (verify)": select(T_KEY).where(T_KEY.c.org_id == 1),
    }
    plans = {}
    with sqlite3.connect(f"file:{index_path}?mode=ro", uri=True) as conn:
        for name, statement in statements.items():
            compiled = statement.compile(dialect=sqlite_dialect.dialect())
            rows = conn.execute("EXPLAIN QUERY PLAN " + str(compiled), tuple(compiled.params[key] for key in compiled.positiontup or ())).fetchall()
            plans[name] = [row[-1] for row in rows]
    return plans


def uses_index(plans: dict[str, list[str]]) -> bool:
    """True when no step of any plan scans a whole table."""
    return all(not step.startswith("SCAN") for steps in plans.values() for step in steps)


def measure_level(w: World, sender: RawSender, client: httpx.Client, count: int, samples: int, rng: random.Random, api_key: str, probed: set[int]) -> dict[str, Any]:
    ledger = w.ledger
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    picked = []
    while len(picked) < samples:  # parts not probed at a smaller size (those are at the warehouse now)
        index = rng.randrange(count)
        if index not in probed:
            probed.add(index)
            picked.append(index)
    serials = [serial_of(i) for i in picked]
    parts = [part_id_unchecked(int(GTIN_A), ascii32(serial)) for serial in serials]
    give_history(sender, parts, maker=(maker.key, maker.id), warehouse=(warehouse.key, warehouse.id))
    wait_indexed(w, int(w.rpc.call("eth_blockNumber", []), 16), timeout=600)
    domain = label_domain(chain_id=ledger.manifest.chain_id, part_ledger=ledger.manifest.address("PartLedger"))
    signer = dev_signer(maker.key)
    labels = [build_uri("http://bench", gtin=GTIN_A, serial=serial, signature=sign_label(signer, domain, gtin=GTIN_A, serial=serial)).removeprefix("http://bench") for serial in serials]
    history = latencies(client, [f"/v1/parts/0x{pid.hex()}" for pid in parts], {"Authorization": f"Bearer {api_key}"})
    verify = latencies(client, labels, {"Accept": "application/json"})
    return {
        "parts": count,
        "history": history,
        "verify": verify,
        "index_db_mb": round(sum(path.stat().st_size for path in w.index_path.parent.glob(w.index_path.name + "*")) / 2**20, 1),
        "query_plans": query_plans(w.index_path, parts[0]),
    }


def run_scaling(sizes: tuple[int, ...] = SIZES, *, samples: int = 300, log: Callable[[str], None] = print, workdir: Path | None = None, seed: int = 7) -> dict[str, Any]:
    """Latency of the history and verify answers at each size in `sizes` (parts in the mirror)."""
    rng = random.Random(seed)
    levels: list[dict[str, Any]] = []
    probed: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="partledger-scaling-") as temporary, world(Path(workdir or temporary), prune_history=4) as w:
        sender = RawSender(w.ledger, w.rpc)
        set_block_time(w.rpc, 1)
        start_processes(w, {"PARTLEDGER_PUBLIC_RATE_LIMIT": "100000000/second", "PARTLEDGER_SUBMITTER": "false"})
        try:
            maker_key = w.ledger.orgs["maker"].key
            with httpx.Client(base_url=w.api, timeout=30) as client:
                registered = 0
                for size in sizes:
                    started = time.perf_counter()
                    grow(sender, maker_key, registered, size)
                    wait_indexed(w, int(w.rpc.call("eth_blockNumber", []), 16), timeout=1800)
                    log(f"scaling: {size:,} parts registered and mirrored ({size - registered:,} more in {time.perf_counter() - started:.1f} s)")
                    registered = size
                    level = measure_level(w, sender, client, size, min(samples, size // 4), rng, w.stack.api_keys["maker"], probed)
                    levels.append(level)
                    log(f"scaling: at {size:,} parts history p50 {level['history']['p50_ms']} ms p99 {level['history']['p99_ms']} ms, verify p50 {level['verify']['p50_ms']} ms p99 {level['verify']['p99_ms']} ms")
        finally:
            stop_processes(w)
    first, last = levels[0], levels[-1]

    def ratio(kind: str, stat: str) -> float:
        return round(last[kind][stat] / first[kind][stat], 3) if first[kind][stat] else 0.0

    ratios = {f"{kind}_{stat}_ratio": ratio(kind, stat) for kind in ("history", "verify") for stat in ("p50_ms", "p99_ms")}
    plans = last["query_plans"]
    return {
        "sizes": list(sizes),
        "levels": [{k: v for k, v in level.items() if k != "query_plans"} for level in levels],
        "ratios_largest_vs_smallest": ratios,
        "query_plans": plans,
        "indexes_used": uses_index(plans),
        "met": {"history": ratios["history_p50_ms_ratio"] <= TARGET_RATIO, "verify": ratios["verify_p50_ms_ratio"] <= TARGET_RATIO},
    }


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} instead of {SIZES}")
    parser.add_argument("--samples", type=int, default=300)
    arguments = parser.parse_args()
    figures = run_scaling(QUICK_SIZES if arguments.quick else SIZES, samples=arguments.samples, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
