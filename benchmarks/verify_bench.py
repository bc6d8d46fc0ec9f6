"""The JSON verify endpoint's throughput and latency, side by side with a bare uvicorn JSON endpoint in the same run.

Run: `python -m benchmarks.verify_bench [--parts N] [--duration S]`. A fresh Anvil gets N registered parts (some
sold, installed, scrapped, a recalled lot), the indexer mirrors them into SQLite, and N signed Digital Links are
made. Then, one after the other on the same loopback, each under uvicorn with 2 workers (uvloop, httptools, no
access log) and loaded by wrk with 2 threads and 16 connections:
- bare: a raw ASGI app answering a fixed JSON body of the verdict's size (the floor of this stack on this machine);
- essential: a raw ASGI app doing only what no verification can skip, on the same databases: the part's row read
  by its id and the scan written behind (essential_app_from_env): the best verify/bare ratio this stack allows;
- verify (public tier): `GET /01/{gtin}/21/{serial}?sig=...` with Accept: application/json on the public
  verification app (ledger_service.public_app: the resolver alone, as internet-facing replicas run it; rate limit
  raised out of the way), cycling through the N labels: signature recovery, part state from the mirror, the scan
  recorded (written behind) — everything a consumer's scan costs;
- verify (service): the same requests on the whole service as `partledger serve` runs it (create_app, read-only:
  every router and middleware of the member API in front);
- service floor: the whole service refusing a malformed address (400) before any lookup: what its framework and
  middleware cost, to tell the verification's own cost from the stack's.
Targets (issue 5): verify >= 5,000 requests/s, p99 <= 10 ms, and verify/bare >= 0.6 ("met" for the public tier,
"met_by_service" for the whole service). The last line printed is one JSON object; its first keys, verify_rps,
verify_p50_ms, verify_p99_ms, bare_uvicorn_rps and verify_vs_bare_ratio, are the public tier's, and server_peak_rss_mb
is each server's process tree (supervisor and workers) at its peak, sampled every 0.2 s. Server CPU per request
(all of the server's processes, user and system) is the figure that does not depend on what else the machine runs.
From Python: run_verify_bench(parts, duration) returns the same object. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy.engine import make_url

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.rss import PeakRss
from ledger_service.scans import FLUSH_SECONDS, ROW_COLUMNS
from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.chain import connect
from partledger.ids import ascii32, part_id_unchecked
from tests.chainkit import GTIN_A, build_ledger
from tests.labelkit import label_uri
from tests.servicekit import IndexerThread, prepare_stack

TARGET_RPS, TARGET_P99_MS, TARGET_RATIO = 5_000, 10.0, 0.6
WORKERS, CONNECTIONS, THREADS = 2, 16, 2
BULK = 200
MIN_PARTS = 2 * BULK + 250  # a recalled lot of BULK, 50 scrapped, 200 installed, and at least BULK genuine
GAS = 10_000_000
BARE_BODY = json.dumps(
    {
        "verdict": "genuine", "severity": "ok", "suspicious": False, "flags": [], "gtin": GTIN_A, "serial": "B0000001",
        "signature": "valid", "block": 123, "part": {"part_id": "0x" + "ab" * 32, "manufacturer": {"id": 1, "name": "maker"},
        "status": "in_stock", "recalled": False}, "scan_id": "0x" + "cd" * 16,
    }
).encode()  # fmt: skip


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: an ASGI app that answers every request with the same JSON, as fast as uvicorn can."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BARE_BODY)).encode())]})
    await send({"type": "http.response.body", "body": BARE_BODY})


def essential_app_from_env() -> Any:
    """The least any verification must do, as a raw ASGI app on the same databases (PARTLEDGER_INDEX_DB_URL,
    PARTLEDGER_SERVICE_DB_URL, both SQLite): read the part's row by its id, and record the scan, written behind in
    batches by a thread as the scan keeper writes them (the same table, indexes and row). No signature, no rate
    limit, no clone rules, no framework: what the verify/bare ratio can reach at best on this stack."""
    index = sqlite3.connect(make_url(os.environ["PARTLEDGER_INDEX_DB_URL"]).database, check_same_thread=False)
    service = sqlite3.connect(make_url(os.environ["PARTLEDGER_SERVICE_DB_URL"]).database, check_same_thread=False, isolation_level=None)
    service.execute("PRAGMA journal_mode=WAL")
    service.execute("PRAGMA synchronous=NORMAL")
    service.execute("PRAGMA busy_timeout=30000")
    read = "SELECT manufacturer, status, recalled FROM parts WHERE part_id = ?"
    insert = f"INSERT INTO scans ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' for _ in ROW_COLUMNS)})"
    queue: list[tuple[Any, ...]] = []

    def keeper() -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            batch = queue[:]
            del queue[: len(batch)]
            if batch:
                service.execute("BEGIN")
                service.executemany(insert, batch)
                service.execute("COMMIT")

    threading.Thread(target=keeper, daemon=True).start()
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        _, _, gtin, _, serial = scope["path"].split("/", 4)
        part_id = part_id_unchecked(int(gtin), ascii32(serial))
        row = index.execute(read, (part_id,)).fetchone()
        now = time.time()
        scan_id = int(now * 1000).to_bytes(6, "big") + secrets.token_bytes(10)
        queue.append((scan_id, part_id, gtin, serial, row[0], now, "genuine", "", "json", None, None, None, bytes(16), "127.0.0.1", None, None))
        body = orjson.dumps({"verdict": "genuine", "gtin": gtin, "serial": serial, "part": {"part_id": "0x" + part_id.hex(), "manufacturer": row[0], "status": row[1], "recalled": bool(row[2])}, "scan_id": "0x" + scan_id.hex()})
        await send({"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def make_world(parts: int, workdir: Path) -> tuple[Any, Any, list[str], AnvilNode]:
    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=40))
    ledger = build_ledger(connect(node.url))
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    fn = ledger.parts.functions
    serials = [f"B{index:07d}" for index in range(parts)]
    last = None
    for start in range(0, parts, BULK):
        lot = "LOT-RECALLED" if start == 0 else "LOT-BENCH"
        last = fn.registerParts(int(GTIN_A), ascii32(lot), [ascii32(s) for s in serials[start : start + BULK]]).transact({"from": maker.key, "gasPrice": 0, "gas": GAS})
    ledger.w3.eth.wait_for_transaction_receipt(last)
    ids = [part_id_unchecked(int(GTIN_A), ascii32(s)) for s in serials]
    scrapped, installed = ids[BULK : BULK + 50], ids[BULK + 50 : BULK + 250]
    ledger.act(maker.key, fn.scrapParts(scrapped, bytes(32)))
    ledger.act(maker.key, fn.shipParts(installed, workshop.id, bytes(32)))
    ledger.act(workshop.key, fn.receiveParts(installed, bytes(32)))
    ledger.act(workshop.key, fn.installParts(installed, [bytes([7]) * 32] * len(installed), bytes(32)))
    ledger.act(maker.key, fn.recallLot(ledger.lot_number(maker, "LOT-RECALLED"), b"\x01" * 32))
    stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    with IndexerThread(ledger, stack.index_db_url) as indexer:
        indexer.wait_for(ledger.w3.eth.block_number, timeout=300)
    uris = [label_uri(ledger, gtin=GTIN_A, serial=s, key=maker.key, resolver="http://bench") for s in serials]
    paths = [uri.removeprefix("http://bench") for uri in uris]
    return ledger, stack, paths, node


def serve(target: str, port: int, env: dict[str, str], *, factory: bool) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if factory:
        command.append("--factory")
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code < 600:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"{target} did not start: {process.stderr.read().decode()[-2000:]}")
    raise RuntimeError(f"{target} did not answer within 60 s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants (Linux /proc): a server's cost
    per request that does not depend on what else the machine is running, unlike requests per second."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def wrk_script(paths: list[str], directory: Path, name: str = "verify") -> Path:
    script = directory / f"{name}.lua"
    listed = ",\n".join(json.dumps(path) for path in paths)
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = math.random(#paths)\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i], {['Accept'] = 'application/json'})\nend\n"
    )
    return script


def load(port: int, *, duration: float, script: Path | None) -> dict[str, Any]:
    """wrk against the port: requests/s, latency percentiles (ms), non-2xx answers."""
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    percentiles = {int(p): _ms(value) for p, value in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.MULTILINE)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    return {
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])),
        "p50_ms": percentiles.get(50),
        "p90_ms": percentiles.get(90),
        "p99_ms": percentiles.get(99),
        "requests": int(re.search(r"(\d+) requests in", output)[1]),
        "non_2xx": int(errors[1]) if errors else 0,
        "socket_errors": socket_errors[1].strip() if socket_errors else None,
    }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def run_verify_bench(parts: int = 2_000, duration: float = 15.0, *, warmup: float = 3.0, service: bool = True) -> dict[str, Any]:
    """Builds the world, loads bare, the public tier and (service=True) the whole service one after the other, and
    returns the summary (the keys of the module docstring). Progress goes to stderr. RuntimeError without wrk."""
    if parts < MIN_PARTS:
        raise ValueError(f"at least {MIN_PARTS} parts: the world holds {BULK} parts of each lifecycle state besides the genuine ones")
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is needed (apt-get install wrk)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as temporary, PeakRss() as rss:
        workdir = Path(temporary)
        started = time.perf_counter()
        ledger, stack, paths, node = make_world(parts, workdir)
        try:
            print(f"world: {parts} parts registered, indexed and labelled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            env = {key: value for key, value in stack.env().items() if not key.startswith("PARTLEDGER_KEYS") and "PASSPHRASE" not in key}
            env |= {"PARTLEDGER_PUBLIC_RATE_LIMIT": "100000000/second", "PARTLEDGER_SUBMITTER": "false"}
            verify_script = wrk_script(paths, workdir)
            floor_script = wrk_script([f"/01/{GTIN_A}/21/A%ZZ"], workdir, "floor")
            runs = [
                ("bare", "benchmarks.verify_bench:bare_app", False, (("bare", None),)),
                ("essential", "benchmarks.verify_bench:essential_app_from_env", True, (("essential", verify_script),)),
                ("public", "ledger_service.public_app:public_app_from_env", True, (("verify", verify_script),)),
            ]
            if service:
                runs.append(("service", "partledger_cli.stack:app_from_env", True, (("service_floor", floor_script), ("verify_service", verify_script))))
            for server, target, factory, loads in runs:
                port = free_port()
                process = serve(target, port, env, factory=factory)
                rss.watch(server, process.pid)
                try:
                    if factory and server != "essential":
                        probe = httpx.get(f"http://127.0.0.1:{port}{paths[BULK + 60]}", headers={"Accept": "application/json"}, timeout=5).json()
                        assert probe["verdict"] == "installed" and probe["signature"] == "valid", probe
                    for name, lua in loads:
                        load(port, duration=warmup, script=lua)  # warm-up: caches, connections, first paths
                        cpu = tree_cpu_seconds(process.pid)
                        results[name] = r = load(port, duration=duration, script=lua)
                        r["server_cpu_us_per_request"] = round((tree_cpu_seconds(process.pid) - cpu) / max(r["requests"], 1) * 1e6, 1)
                        print(
                            f"{name:>14}: {r['rps']:>7} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  non-2xx {r['non_2xx']}  "
                            f"server CPU {r['server_cpu_us_per_request']} us/request",
                            file=sys.stderr,
                        )
                finally:
                    time.sleep(0.5)  # one more RSS sample under the final state
                    stop(process)
        finally:
            node.stop()
    return summarise(results, parts=parts, duration=duration, peak_rss_mb={name: round(mb, 1) for name, mb in rss.peak.items()})


def summarise(results: dict[str, Any], *, parts: int, duration: float, peak_rss_mb: dict[str, float]) -> dict[str, Any]:
    verify, bare = results["verify"], results["bare"]
    ratio = round(verify["rps"] / bare["rps"], 3) if bare["rps"] else None
    summary: dict[str, Any] = {
        "benchmark": "verify_json_endpoint",
        "verify_rps": verify["rps"], "verify_p50_ms": verify["p50_ms"], "verify_p99_ms": verify["p99_ms"],
        "bare_uvicorn_rps": bare["rps"], "verify_vs_bare_ratio": ratio,
        "verify_server_cpu_us_per_request": verify["server_cpu_us_per_request"], "bare_server_cpu_us_per_request": bare["server_cpu_us_per_request"],
        "server_peak_rss_mb": peak_rss_mb,
        "workers": WORKERS, "connections": CONNECTIONS, "wrk_threads": THREADS, "duration_s": duration, "parts": parts,
        "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "bare": bare, "verify": verify, "ratio": ratio,
        "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO},
        "met": {"rps": verify["rps"] >= TARGET_RPS, "p99_ms": (verify["p99_ms"] or 1e9) <= TARGET_P99_MS, "ratio": (ratio or 0) >= TARGET_RATIO},
    }  # fmt: skip
    essential = results.get("essential")
    if essential is not None:
        summary |= {"essential": essential, "essential_vs_bare_ratio": round(essential["rps"] / bare["rps"], 3) if bare["rps"] else None}
    service = results.get("verify_service")
    if service is not None:
        summary |= {
            "verify_service": service, "service_ratio": round(service["rps"] / bare["rps"], 3) if bare["rps"] else None,
            "service_floor": results["service_floor"],
            "met_by_service": {"rps": service["rps"] >= TARGET_RPS, "p99_ms": (service["p99_ms"] or 1e9) <= TARGET_P99_MS,
                               "ratio": service["rps"] / bare["rps"] >= TARGET_RATIO if bare["rps"] else False},
        }  # fmt: skip
    return summary


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=2_000, help=f"labelled parts (at least {MIN_PARTS})")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per endpoint (after a warm-up)")
    parser.add_argument("--public-only", action="store_true", help="skip the whole service's runs")
    args = parser.parse_args()
    if args.parts < MIN_PARTS:
        parser.error(f"--parts must be at least {MIN_PARTS}")
    try:
        summary = run_verify_bench(args.parts, args.duration, service=not args.public_only)
    except RuntimeError as exc:
        print(f"verify_bench: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
