"""`make soak`: a bounded mixed load on the whole stack as real processes, with the chain node restarted twice and the
PostgreSQL server restarted once; then what was accepted, confirmed, on chain, indexed, lost or duplicated.

What runs: a throwaway PostgreSQL cluster (tests/pgcluster.py) holding the mirror and the service's tables; an Anvil
node with --state (stopped with SIGTERM, it dumps its state, and loads it when started again on the same port); the
indexer (`partledger index`); and the service as two processes — the API (PARTLEDGER_SUBMITTER=false), which the
clients call, and the submitter (`partledger serve` with its submitter thread, no client calls it). A process that
exits is started again, as a supervisor would, and counted.

The load, for --duration seconds: writer pipelines that register 20 parts, ship them to the warehouse once the
registration is indexed, and have the warehouse receive them once the shipment is; each request carries an
Idempotency-Key and is sent again with the same key after a connection error or a 503 (waiting its Retry-After). A
scanner verifies labels of registered parts on the public resolver (GET /01/{gtin}/21/{serial}?sig=..., JSON).
Faults, at fixed shares of the duration: node down at 25 % and 65 %, PostgreSQL down at 45 %. RSS of each process is
sampled every few seconds with psutil (with its child processes: npm's anvil is a launcher that runs the node as
its child); "after warm-up" means after the first 20 % of the duration.

In the end (after the load, every accepted command is waited for, and the indexer for the head): commands accepted,
confirmed, on chain (every part's event in the contract's logs), indexed (every part's event in the mirror), lost,
duplicated (a part's event on chain twice, or a command the service holds that no 202 answered); 5xx answers by
status, and how many lacked Retry-After; RSS first/last/max after warm-up per process. The last line printed is one
JSON object of those figures.

    python -m benchmarks.soak [--duration 600] [--node-down 15] [--pg-down 10] [--writers 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from sqlalchemy import select

from benchmarks import stop_cleanly_on_sigterm
from indexer.tables import IndexerState, PartEvent
from ledger_service.tables import Command
from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.artifacts import REPO_ROOT
from partledger.chain import connect
from partledger.db import make_engine
from partledger.ids import part_id, part_id_unchecked
from tests.chainkit import ANVIL_ACCOUNTS, GTIN_B, Ledger, build_ledger
from tests.labelkit import label_uri, target
from tests.pgcluster import PostgresCluster
from tests.servicekit import Stack, prepare_stack

PARTS_PER_BATCH = 20
AHEAD = 4  # registrations a pipeline keeps in flight before waiting for the oldest
WARMUP_SHARE = 0.2
NODE_RESTARTS_AT = (0.25, 0.65)
PG_RESTART_AT = 0.45
GIVE_UP_SECONDS = 300.0  # a request still unanswered (or 503) after this long is counted and dropped
KIND_EVENT = {"register": "registered", "ship": "shipped", "receive": "received"}
# The node keeps the state of this many recent blocks in memory, as a long-running validator prunes history: Anvil
# otherwise holds every block's state and grows without bound (160 MB to 1.5 GB in 10 minutes).
NODE_STATE_HISTORY = 128

log_lock = threading.Lock()


def say(message: str) -> None:
    with log_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------------------------


class Supervised:
    """A `python -m partledger_cli ...` process, started again when it exits (counted)."""

    def __init__(self, name: str, arguments: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name, self.arguments, self.env = name, arguments, env
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts: list[tuple[float, int | None]] = []  # (time, exit code)
        self.stopping = False

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "partledger_cli", *self.arguments],
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def watch(self) -> None:
        if self.stopping or self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        self.restarts.append((time.time(), code))
        say(f"{self.name} exited with {code}: started again (see {self.log_path})")
        time.sleep(1.0)
        self.start()

    def stop(self) -> None:
        self.stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_http(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


# --- the client ----------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Every answer the clients got, and every attempt that got none."""

    statuses: Counter[str] = field(default_factory=Counter)  # "group status" -> count
    errors_5xx: Counter[int] = field(default_factory=Counter)
    without_retry_after: Counter[int] = field(default_factory=Counter)
    examples_without: list[str] = field(default_factory=list)
    connection_errors: int = 0
    retries: int = 0
    gave_up: int = 0
    replays: int = 0  # 202s answered from the idempotency record: an earlier attempt had been accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, group: str, response: requests.Response, what: str) -> None:
        with self.lock:
            self.statuses[f"{group} {response.status_code}"] += 1
            if response.status_code >= 500:
                self.errors_5xx[response.status_code] += 1
                if response.status_code != 503 or "Retry-After" not in response.headers:
                    self.without_retry_after[response.status_code] += 1
                    if len(self.examples_without) < 10:
                        self.examples_without.append(f"{what}: {response.status_code} {response.text[:200]}")


class Client:
    def __init__(self, base: str, stack: Stack, tally: Tally) -> None:
        self.base, self.stack, self.tally = base, stack, tally
        self.session = requests.Session()

    def request(self, method: str, path: str, *, group: str, org: str | None = None, body: Any = None, key: str | None = None, accept: str | None = None) -> requests.Response | None:  # fmt: skip
        """Sends until a final answer: connection errors and 503s are retried (same Idempotency-Key), waiting for
        Retry-After; None when GIVE_UP_SECONDS pass without one."""
        headers = dict(self.stack.headers(org)) if org else {}
        if key:
            headers["Idempotency-Key"] = key
        if accept:
            headers["Accept"] = accept
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                response = self.session.request(method, self.base + path, headers=headers, json=body, timeout=30)
            except requests.RequestException:
                with self.tally.lock:
                    self.tally.connection_errors += 1
                wait = 1.0
            else:
                self.tally.answer(group, response, f"{method} {path}")
                if response.status_code < 500:
                    return response
                try:
                    wait = min(float(response.headers.get("Retry-After", "1")), 5.0)
                except ValueError:
                    wait = 1.0
            if time.monotonic() + wait > deadline:
                with self.tally.lock:
                    self.tally.gave_up += 1
                return None
            with self.tally.lock:
                self.tally.retries += 1
            time.sleep(wait)


# --- the load ------------------------------------------------------------------------------------------------------


@dataclass
class Accepted:
    commands: dict[str, tuple[str, str, list[bytes]]] = field(default_factory=dict)  # id -> (org, kind, part ids)
    refused: Counter[str] = field(default_factory=Counter)  # "kind status code" of 4xx answers to writes
    lock: threading.Lock = field(default_factory=threading.Lock)


class Pipeline:
    """Register → (indexed) ship to the warehouse → (indexed) receive, batch after batch."""

    def __init__(self, number: int, client: Client, ledger: Ledger, accepted: Accepted, registered: list[str]) -> None:
        self.number, self.client, self.ledger, self.accepted, self.registered = number, client, ledger, accepted, registered
        self.warehouse = ledger.orgs["warehouse"].id
        self.batches = 0

    def post(self, kind: str, org: str, body: dict[str, Any], ids: list[bytes]) -> str | None:
        answer = self.client.request("POST", f"/v1/parts/{kind}", group="write", org=org, body=body, key=str(uuid.uuid4()))
        if answer is None:
            return None
        if answer.status_code != 202:
            with self.accepted.lock:
                self.accepted.refused[f"{kind} {answer.status_code} {answer.json().get('error', {}).get('code')}"] += 1
            return None
        reply = answer.json()
        with self.accepted.lock:
            self.accepted.commands[reply["command_id"]] = (org, kind, ids)
            if reply.get("idempotent_replay"):
                self.client.tally.replays += 1
        return reply["command_id"]

    def done(self, org: str, command_id: str) -> bool | None:
        """True once confirmed and indexed; None when rejected (or no answer)."""
        view = self.client.request("GET", f"/v1/commands/{command_id}", group="read", org=org)
        if view is None or view.status_code != 200 or view.json()["status"] == "rejected":
            return None
        if view.json()["status"] != "confirmed":
            return False
        health = self.client.request("GET", "/v1/health", group="read")
        return health is not None and (health.json().get("indexed_block") or -1) >= view.json()["block"]

    def run(self, until: float) -> None:
        registered: deque[tuple[list[str], str]] = deque()
        shipped: deque[tuple[list[str], str]] = deque()
        while time.monotonic() < until:
            moved = False
            if len(registered) < AHEAD:
                serials = [f"P{self.number}B{self.batches:05d}S{n:02d}" for n in range(PARTS_PER_BATCH)]
                self.batches += 1
                ids = [part_id(GTIN_B, s) for s in serials]
                command_id = self.post("register", "maker", {"gtin": GTIN_B, "lot": f"SOAK-{self.number}-{self.batches // 50}", "serials": serials}, ids)
                if command_id is not None:
                    registered.append((serials, command_id))
                moved = True
            for queue, then in ((registered, "ship"), (shipped, "receive")):
                if not queue or time.monotonic() >= until:
                    continue
                state = self.done("maker", queue[0][1])  # registrations and shipments are the maker's commands
                if state is None:
                    queue.popleft()  # rejected: counted at the end, not followed
                elif state:
                    serials, _ = queue.popleft()
                    ids = [part_id(GTIN_B, s) for s in serials]
                    hex_ids = ["0x" + pid.hex() for pid in ids]
                    if then == "ship":  # registered and indexed: ship
                        self.registered.extend(serials)
                        command_id = self.post("ship", "maker", {"part_ids": hex_ids, "to_org": self.warehouse}, ids)
                        if command_id is not None:
                            shipped.append((serials, command_id))
                    else:  # shipped and indexed: the warehouse receives
                        self.post("receive", "warehouse", {"part_ids": hex_ids}, ids)
                    moved = True
            if not moved:
                time.sleep(0.2)


def scanner(client: Client, ledger: Ledger, registered: list[str], until: float, counts: Counter[str]) -> None:
    rng = random.Random(7)
    uris: dict[str, str] = {}
    while time.monotonic() < until:
        if not registered:
            time.sleep(0.5)
            continue
        serial = registered[rng.randrange(len(registered))]
        if serial not in uris:
            uris[serial] = target(label_uri(ledger, gtin=GTIN_B, serial=serial, key=ledger.orgs["maker"].key))
        answer = client.request("GET", uris[serial], group="scan", accept="application/json")
        counts["scans"] += 1
        if answer is not None and answer.status_code == 200:
            counts[answer.json().get("verdict", "?")] += 1
        time.sleep(0.05)


# --- faults and memory ---------------------------------------------------------------------------------------------


class Node:
    """The Anvil node, stopped (SIGTERM: its state dumped) and started again on the same port."""

    def __init__(self, config: AnvilConfig, log_path: Path) -> None:
        self.config, self.log_path = config, log_path
        self.node = AnvilNode.start(config, log_path=log_path)
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.node.process.pid if self.node.process.poll() is None else None

    def restart(self, down: float) -> None:
        # Block production stops first, as a validator leaving a QBFT network does: Anvil's state dump, taken on
        # SIGTERM while a block is being mined, can keep that block's state without the block (a soak run lost 2 of
        # 6,243 commands so: confirmed, their effect in the state, their logs gone), which no BFT chain does.
        try:
            requests.post(self.node.url, json={"jsonrpc": "2.0", "id": 1, "method": "evm_setAutomine", "params": [False]}, timeout=5)
            time.sleep(0.5)
        except requests.RequestException:
            pass
        self.node.stop(timeout=60)
        time.sleep(down)
        self.node = AnvilNode.start(self.config, log_path=self.log_path)
        self.restarts += 1


def faults(node: Node, cluster: PostgresCluster, started: float, duration: float, node_down: float, pg_down: float, events: list[dict[str, Any]]) -> None:
    plan = sorted([(share, "node") for share in NODE_RESTARTS_AT] + [(PG_RESTART_AT, "postgresql")])
    for share, what in plan:
        time.sleep(max(0.0, started + share * duration - time.monotonic()))
        at = time.monotonic() - started
        say(f"fault: {what} down")
        if what == "node":
            node.restart(node_down)
        else:
            cluster.stop("fast")
            time.sleep(pg_down)
            cluster.start()
        events.append({"fault": f"{what} restart", "at_s": round(at, 1), "down_s": round(time.monotonic() - started - at, 1)})
        say(f"fault: {what} back after {events[-1]['down_s']} s")


def sample_rss(processes: dict[str, Callable[[], int | None]], samples: dict[str, list[tuple[float, int]]], started: float, stop: threading.Event, every: float) -> None:  # fmt: skip
    while not stop.wait(every):
        for name, pid_of in processes.items():
            pid = pid_of()
            if pid is None:
                continue
            try:
                samples.setdefault(name, []).append((time.monotonic() - started, tree_rss(pid)))
            except psutil.Error:
                pass


def tree_rss(pid: int) -> int:
    """RSS of a process and its descendants: npm's `anvil` is a Node.js launcher whose child is the node itself."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def memory_report(samples: dict[str, list[tuple[float, int]]], warmup: float) -> dict[str, Any]:
    report = {}
    for name, series in samples.items():
        after = [rss for at, rss in series if at >= warmup]
        if not after:
            continue
        first, last, top = after[0], after[-1], max(after)
        report[name] = {
            "first_mb": round(first / 2**20, 1), "last_mb": round(last / 2**20, 1), "max_mb": round(top / 2**20, 1),
            "growth_pct": round(100 * (last / first - 1), 1), "max_over_first_pct": round(100 * (top / first - 1), 1),
            "flat_within_20pct": top <= 1.2 * first, "samples": len(after),
        }  # fmt: skip
    return report


# --- the reckoning ---------------------------------------------------------------------------------------------------


def reckon(ledger: Ledger, stack: Stack, client: Client, accepted: Accepted, timeout: float) -> dict[str, Any]:
    """Waits for every accepted command to end and for the mirror to reach the head, then counts."""
    say(f"draining: {len(accepted.commands)} accepted commands")
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    for command_id, (org, _, _) in accepted.commands.items():
        while True:
            view = client.request("GET", f"/v1/commands/{command_id}", group="read", org=org)
            status = view.json()["status"] if view is not None and view.status_code == 200 else "unknown"
            if status in ("confirmed", "rejected") or time.monotonic() > deadline:
                final[command_id] = status
                break
            time.sleep(0.5)
    head = ledger.w3.eth.block_number
    index_engine, service_engine = make_engine(stack.index_db_url), make_engine(stack.service_db_url)
    while time.monotonic() < deadline:
        with index_engine.connect() as conn:
            cursor = conn.execute(select(IndexerState.__table__.c.block_number)).scalar()
        if cursor is not None and cursor >= head:
            break
        time.sleep(0.5)

    events = ledger.parts.events
    on_chain: dict[str, Counter[bytes]] = {kind: Counter() for kind in KIND_EVENT}
    for entry in events.PartsRegistered().get_logs(from_block=0):
        on_chain["register"].update(part_id_unchecked(entry["args"]["gtin"], serial) for serial in entry["args"]["serials"])
    for kind, event in (("ship", events.PartsShipped), ("receive", events.PartsReceived)):
        for entry in event().get_logs(from_block=0):
            on_chain[kind].update(bytes(pid) for pid in entry["args"]["partIds"])
    indexed: dict[str, Counter[bytes]] = {kind: Counter() for kind in KIND_EVENT}
    t_event = PartEvent.__table__
    with index_engine.connect() as conn:
        for kind, event_kind in KIND_EVENT.items():
            indexed[kind].update(bytes(row[0]) for row in conn.execute(select(t_event.c.part_id).where(t_event.c.kind == event_kind)))
    t_command = Command.__table__
    with service_engine.connect() as conn:
        held = {row.id: row.kind for row in conn.execute(select(t_command.c.id, t_command.c.kind))}
    # Commands no client was answered 202 for: the service's own (scan and audit-log batch anchors) are expected;
    # one of the kinds the clients send would be a retry that made a second command.
    unanswered = Counter(kind for command_id, kind in held.items() if command_id not in accepted.commands)

    figures: Counter[str] = Counter()
    accepted_parts: dict[str, Counter[bytes]] = {kind: Counter() for kind in KIND_EVENT}
    for command_id, (_, kind, ids) in accepted.commands.items():
        accepted_parts[kind].update(ids)
        figures["accepted"] += 1
        figures["confirmed"] += final[command_id] == "confirmed"
        figures["rejected"] += final[command_id] == "rejected"
        figures["on_chain"] += all(on_chain[kind][pid] >= 1 for pid in ids)
        figures["indexed"] += all(indexed[kind][pid] >= 1 for pid in ids)
        missing = any(on_chain[kind][pid] == 0 for pid in ids)
        figures["lost"] += missing and final[command_id] != "rejected"
        figures["confirmed_not_on_chain"] += missing and final[command_id] == "confirmed"  # answered confirmed, gone
        figures["unfinished"] += final[command_id] not in ("confirmed", "rejected")  # still waiting at the drain's end
        figures["duplicated"] += any(on_chain[kind][pid] > 1 or indexed[kind][pid] > 1 for pid in ids)
    parts = {
        kind: {"accepted": sum(accepted_parts[kind].values()), "on_chain": sum(on_chain[kind][p] for p in accepted_parts[kind]),
               "indexed": sum(indexed[kind][p] for p in accepted_parts[kind]),
               "on_chain_not_accepted": sum(c for p, c in on_chain[kind].items() if p not in accepted_parts[kind])}
        for kind in KIND_EVENT
    }  # fmt: skip
    return {
        "commands": dict(figures) | {
            "held_by_service": len(held),
            "held_not_answered_202_by_kind": dict(unanswered),
            "second_commands_from_retries": sum(count for kind, count in unanswered.items() if kind in KIND_EVENT),
        },
        "parts": parts,
        "drained": all(status in ("confirmed", "rejected") for status in final.values()),
    }


# --- main --------------------------------------------------------------------------------------------------------------


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--node-down", type=float, default=15.0, help="seconds the node stays down at each restart")
    parser.add_argument("--pg-down", type=float, default=10.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--writers", type=int, default=2, help="writer pipelines")
    parser.add_argument("--sample-every", type=float, default=3.0, help="seconds between RSS samples")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for accepted commands after the load")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="partledger-soak-"))
    say(f"work directory {workdir}")
    cluster = PostgresCluster()
    node = Node(AnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS, state_path=workdir / "anvil-state.json", prune_history=NODE_STATE_HISTORY), workdir / "anvil.log")
    processes: list[Supervised] = []
    stop_sampling = threading.Event()
    try:
        ledger = build_ledger(connect(node.node.url))
        stack = prepare_stack(ledger, workdir, cluster.create_database("soak_index"), cluster.create_database("soak_service"))
        env = {**os.environ, **stack.env(), "PARTLEDGER_PUBLIC_RATE_LIMIT": "100000/second"}
        api_port, submitter_port = free_port(), free_port()
        indexer = Supervised("indexer", ["index", "--manifest", str(stack.manifest_path), "--db", stack.index_db_url], env, workdir)
        api = Supervised("service-api", ["serve", "--port", str(api_port)], {**env, "PARTLEDGER_SUBMITTER": "false"}, workdir)
        submitter = Supervised("service-submitter", ["serve", "--port", str(submitter_port)], env, workdir)
        processes = [indexer, api, submitter]
        for process in processes:
            process.start()
        wait_http(f"http://127.0.0.1:{api_port}/v1/health")
        wait_http(f"http://127.0.0.1:{submitter_port}/v1/health")
        say(f"stack up: node {node.config.url}, API :{api_port}, submitter :{submitter_port}, PostgreSQL :{cluster.port}")

        tally, accepted, registered, scan_counts = Tally(), Accepted(), [], Counter()
        started = time.monotonic()
        until = started + args.duration
        samples: dict[str, list[tuple[float, int]]] = {}
        watched = {"service-api": lambda: api.pid, "service-submitter": lambda: submitter.pid, "indexer": lambda: indexer.pid, "node": lambda: node.pid}
        fault_events: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=sample_rss, args=(watched, samples, started, stop_sampling, args.sample_every), daemon=True),
            threading.Thread(target=faults, args=(node, cluster, started, args.duration, args.node_down, args.pg_down, fault_events), daemon=True),
            threading.Thread(target=scanner, args=(Client(f"http://127.0.0.1:{api_port}", stack, tally), ledger, registered, until, scan_counts), daemon=True),
        ]  # fmt: skip
        pipelines = [Pipeline(n, Client(f"http://127.0.0.1:{api_port}", stack, tally), ledger, accepted, registered) for n in range(args.writers)]
        threads += [threading.Thread(target=pipeline.run, args=(until,), daemon=True) for pipeline in pipelines]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads[1:]):
            for process in processes:
                process.watch()
            time.sleep(0.5)
            elapsed = time.monotonic() - started
            if int(elapsed) % 30 == 0 and elapsed - int(elapsed) < 0.5:
                say(f"{elapsed:.0f}s: accepted {len(accepted.commands)}, scans {scan_counts['scans']}, 5xx {dict(tally.errors_5xx)}")
        say("load over")
        reckoning = reckon(ledger, stack, Client(f"http://127.0.0.1:{api_port}", stack, tally), accepted, args.drain_timeout)
        stop_sampling.set()
        result = {
            "duration_s": args.duration,
            "faults": fault_events,
            **reckoning,
            "write_refusals": dict(accepted.refused),
            "scans": dict(scan_counts),
            "http": {
                "answers": dict(sorted(tally.statuses.items())),
                "5xx_by_status": {str(k): v for k, v in tally.errors_5xx.items()},
                "5xx_without_retry_after": {str(k): v for k, v in tally.without_retry_after.items()},
                "every_5xx_is_503_with_retry_after": not tally.without_retry_after,
                "examples_without_retry_after": tally.examples_without,
                "connection_errors": tally.connection_errors, "retries": tally.retries, "gave_up": tally.gave_up,
                "idempotent_replays": tally.replays,
            },
            "process_restarts": {p.name: [code for _, code in p.restarts] for p in processes} | {"node": node.restarts},
            "rss_after_warmup": memory_report(samples, WARMUP_SHARE * args.duration),
            "workdir": str(workdir) if args.keep else None,
        }  # fmt: skip
        print(json.dumps(result))
    finally:
        stop_sampling.set()
        for process in processes:
            process.stop()
        node.node.stop()
        cluster.destroy()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
