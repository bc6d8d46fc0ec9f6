"""The write path end to end, against the node's own floor, in one run: `python -m benchmarks.e2e [--quick]`.

Its own Anvil (gas price zero, a 1,000,000,000 block gas limit, a block every second as a permissioned QBFT network
seals them; set up in automine, then switched to interval mining), its own SQLite databases, and the service
(`partledger serve`: API and submitter) and the indexer (`partledger index`) as processes. Each scenario runs for a
warm-up, then a fixed duration, with the load generator keeping the pipeline full; a transition counts when the
indexer has written it (the harness reads the mirror's part_events, read-only), so every figure is "accepted by the
API until confirmed on chain and visible in the index":
- register: bulk JSON registrations (1,000 serials a request), new parts per second;
- bulk: chunks of 1,000 parts cycling maker → warehouse → maker, each hand-over a ship then a receive request;
  part-transitions per second;
- single: many one-part chunks cycling the same way, each request with its own delivery-note hash, so that no two
  share a transaction (one transition per transaction);
- raw (the floor): the node alone, the service and indexer stopped: the same 200-part ship and receive
  transactions, pre-signed before the clock starts and pushed with eth_sendRawTransaction in JSON-RPC batches,
  a bounded window of them unconfirmed, until the receipts of all are in.
- open loop: one-part ship and receive requests arriving at fixed rates (fractions of the single scenario's rate),
  each posted in a task of its own whatever the service answers; per rate, percentiles of the seconds from the post
  to each stage the service records on the command (accepted, submitted, confirmed, mirrored).
peak_rss_mb samples each process tree (service, indexer, node) every 0.2 s with psutil. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psutil
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.rss import PeakRss
from ledger_service.settings import ServiceSettings
from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.chain import connect
from partledger.ids import ascii32, part_id, part_id_unchecked
from tests.chainkit import ANVIL_ACCOUNTS, GTIN_A, Ledger, build_ledger, dev_account
from tests.servicekit import PASSPHRASE, Stack, prepare_stack
from wallets.keystore import create_keystore
from tests.workload import Rpc

BULK = 200  # parts per transaction, the service's max_parts_per_tx
GAS = {"registerParts": 6_000_000, "shipParts": 2_200_000, "receiveParts": 2_200_000}  # explicit: no estimate per raw tx
TARGETS = {"e2e_register_parts_per_s": 5_000, "e2e_bulk_transitions_per_s": 10_000, "e2e_single_tx_per_s": 1_000, "e2e_vs_raw_ratio": 0.7}


@dataclass(frozen=True)
class E2eConfig:
    duration: float = 30.0  # measured seconds per scenario
    warmup: float = 5.0
    block_time: float = 1.0  # 0: automine (a block per transaction)
    register_request_parts: int = 1_000
    register_clients: int = 4
    register_backlog_parts: int = 30_000  # accepted but not yet indexed, at most: the load generator waits above it
    bulk_chunk_parts: int = 1_000
    bulk_chunks: int = 40
    single_parts: int = 1_024  # one-part chunks in flight
    raw_parts: int = 60_000  # parts per raw wave (300 transactions)
    max_in_flight_per_signer: int = 1_024  # the service's PARTLEDGER_MAX_IN_FLIGHT_PER_SIGNER for the run
    drain_timeout: float = 120.0  # after a scenario, how long to wait for requests in flight and the outbox to empty
    open_loop_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # open-loop arrival rates, as fractions of the closed-loop single rate
    open_loop_parts: int = 2_048  # one-part requests: parts that the open loop moves back and forth
    postgres: bool = False  # both databases on a PostgreSQL 15 cluster of the run's own (else SQLite files)
    api_workers: int = 1  # `partledger serve --workers N`
    submitters: int = 0  # `partledger submit` processes (0: the submitter runs inside the API process)
    scenarios: tuple[str, ...] = ("register", "bulk", "single", "open")
    pin_node: bool = False  # the node alone on CPU 1, everything else (service, submitters, indexer, PostgreSQL, load) on CPU 0
    custodial_relay: bool = False  # relayer keys for the service: its one-part commands go as requests signed with the site key, in batches
    relayer_keys: int = 4

    @classmethod
    def quick(cls) -> E2eConfig:
        return cls(
            duration=3.0, warmup=3.0, register_backlog_parts=5_000, bulk_chunks=10, single_parts=128, drain_timeout=30.0, raw_parts=20_000,
            open_loop_fractions=(0.5, 1.0), open_loop_parts=256,
        )  # fmt: skip


# --- the world: node, contracts, databases, service and indexer processes -----------------------------------------


class ReadOnly:
    """A read-only connection to one of the world's databases: a SQLite file (a Path, or a sqlite:/// URL) opened
    with mode=ro, or a PostgreSQL URL; `execute` takes SQLite's "?" placeholders for both."""

    def __init__(self, target: Path | str) -> None:
        text = str(target)
        self.postgres = text.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(text.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        else:
            self.conn = sqlite3.connect(f"file:{text.removeprefix('sqlite:///')}?mode=ro", uri=True, timeout=10, check_same_thread=False)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, tuple(params))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ReadOnly:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


@dataclass
class World:
    node: AnvilNode
    ledger: Ledger
    stack: Stack
    rpc: Rpc
    api: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    postgres: Any = None  # the PostgreSQL cluster of both databases, when the world runs on PostgreSQL

    @property
    def index_path(self) -> Path:
        return Path(self.stack.index_db_url.removeprefix("sqlite:///"))

    @property
    def index_target(self) -> Path | str:
        """What ReadOnly opens for the mirror: its SQLite file, or its PostgreSQL URL."""
        return self.stack.index_db_url if self.postgres is not None else self.index_path

    @property
    def service_target(self) -> Path | str:
        return self.stack.service_db_url if self.postgres is not None else Path(self.stack.service_db_url.removeprefix("sqlite:///"))


def start_node(*, accounts: int = ANVIL_ACCOUNTS, gas_limit: int = 1_000_000_000, prune_history: int | None = None) -> AnvilNode:
    """Anvil in automine (fast set-up); `set_block_time` then switches it to sealing a block every N seconds. For long
    runs `prune_history` keeps only that many recent states in memory (Anvil otherwise keeps every block's state:
    11.6 GB by the end of a full e2e run)."""
    return AnvilNode.start(AnvilConfig(port=free_port(), accounts=accounts, gas_limit=gas_limit, prune_history=prune_history))


def set_block_time(rpc: Rpc, seconds: float) -> None:
    """A block every `seconds` (whole seconds: Anvil's evm_setIntervalMining); 0 leaves automine on."""
    if seconds > 0:
        rpc.call("evm_setIntervalMining", [max(1, round(seconds))])


@contextmanager
def world(workdir: Path, *, prune_history: int | None = None, postgres: bool = False) -> Iterator[World]:
    """A node with the contracts and the test consortium, service-held site keys and migrated databases (SQLite files,
    or with `postgres` both on a PostgreSQL 15 cluster of the world's own); on exit the service's, submitters' and
    indexer's processes (if started), the cluster and the node are stopped."""
    node = start_node(prune_history=prune_history)
    w = cluster = None
    try:
        ledger = build_ledger(connect(node.url))
        if postgres:
            from tests.pgcluster import PostgresCluster

            cluster = PostgresCluster(options="-c shared_preload_libraries=pg_stat_statements")  # where its time goes: postgres_statements
            urls = (cluster.create_database("index"), cluster.create_database("service"))
        else:
            urls = (f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
        stack = prepare_stack(ledger, workdir, *urls)
        w = World(node=node, ledger=ledger, stack=stack, rpc=Rpc(node.url), postgres=cluster)
        yield w
    finally:
        if w is not None:
            stop_processes(w)
        if cluster is not None:
            cluster.destroy()
        node.stop()


def start_processes(w: World, settings: dict[str, str], *, api_workers: int = 1, submitters: int = 0, relayer_process: bool = False) -> None:
    """`partledger index` and `partledger serve` as the devnet runs them, the service with these PARTLEDGER_*
    settings too (with `api_workers` worker processes; with `submitters`, that many `partledger submit` processes
    send the outbox and the API processes do not; with `relayer_process`, `partledger relay` relays and the API
    processes do not); returns once the service answers and the indexer has reached the head."""
    # The tests' stacks relay a part of a batch at once (no linger): the benchmarks measure the service's default.
    env = {**os.environ, **w.stack.env(), "PARTLEDGER_RELAY_LINGER": str(ServiceSettings.model_fields["relay_linger"].default), **settings}
    port = free_port()
    w.api = f"http://127.0.0.1:{port}"
    processes = [
        ("indexer", ["index", "--manifest", str(w.stack.manifest_path), "--db", w.stack.index_db_url]),
        ("service", ["serve", "--port", str(port), *(["--workers", str(api_workers)] if api_workers > 1 else [])]),
    ]
    if submitters:
        env["PARTLEDGER_SUBMITTER"] = "false"
        processes += [(f"submitter-{number}", ["submit"]) for number in range(1, submitters + 1)]
    if relayer_process:
        env["PARTLEDGER_RELAYER"] = "false"
        processes.append(("relayer", ["relay"]))
    for name, arguments in processes:
        log = open(w.stack.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        child_env = {**env, "PARTLEDGER_SUBMITTER": "true"} if name.startswith("submitter") else {**env, "PARTLEDGER_RELAYER": "true"} if name == "relayer" else env
        w.processes[name] = subprocess.Popen([sys.executable, "-m", "partledger_cli", *arguments], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env)
        log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, process in w.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {(w.stack.workdir / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{w.api}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError("the service did not answer within 60 s")
    wait_indexed(w, int(w.rpc.call("eth_blockNumber", []), 16), timeout=120)


def stop_processes(w: World) -> None:
    for process in w.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in w.processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def indexed_block(target: Path | str) -> int:
    with ReadOnly(target) as conn:
        row = conn.execute("SELECT block_number FROM indexer_state").fetchone()
    return -1 if row is None else row[0]


def wait_indexed(w: World, block: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while indexed_block(w.index_target) < block:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the indexer did not reach block {block} within {timeout:.0f} s")
        time.sleep(0.1)


# --- pre-signed raw transactions ------------------------------------------------------------------------------------


class RawSender:
    """Signs PartLedger calls with Anvil's dev keys (nonces counted here) and pushes them in JSON-RPC batches."""

    def __init__(self, ledger: Ledger, rpc: Rpc) -> None:
        self.ledger, self.rpc = ledger, rpc
        self.chain_id = ledger.manifest.chain_id
        self.accounts = {account.address: account for account in map(dev_account, range(ANVIL_ACCOUNTS))}
        self.nonces: dict[str, int] = {}
        self._encoders: dict[str, Callable[[list[Any]], bytes]] = {}

    def calldata(self, function: str, args: list[Any]) -> bytes:
        """By eth_abi directly: web3's encode_abi normalises every element and costs more than Anvil's execution."""
        if function not in self._encoders:
            (entry,) = [item for item in self.ledger.parts.abi if item.get("type") == "function" and item["name"] == function]
            types = [item["type"] for item in entry["inputs"]]
            selector = keccak(text=f"{function}({','.join(types)})")[:4]
            self._encoders[function] = lambda values: selector + encode(types, values)
        return self._encoders[function](args)

    def sign(self, sender: str, function: str, args: list[Any]) -> tuple[str, bytes]:
        """(raw transaction as hex, its hash) of PartLedger.`function`(args) from the dev key `sender`."""
        if sender not in self.nonces:
            self.nonces[sender] = int(self.rpc.call("eth_getTransactionCount", [sender, "pending"]), 16)
        transaction = {
            "to": self.ledger.parts.address, "data": self.calldata(function, args), "value": 0, "gas": GAS[function],
            "gasPrice": 0, "nonce": self.nonces[sender], "chainId": self.chain_id,
        }  # fmt: skip
        self.nonces[sender] += 1
        signed = Account.sign_transaction(transaction, self.accounts[sender].key)
        return "0x" + bytes(signed.raw_transaction).hex(), bytes(signed.hash)

    def push(self, signed: list[tuple[str, bytes]], *, window: int = 400, batch: int = 50) -> None:
        """Sends in order, at most `window` transactions unmined at a time, and waits for the last receipt. Anvil
        orders equal-fee transactions by arrival, so a receipt sent after its shipment lands after it."""
        for start in range(0, len(signed), batch):
            if start >= window:
                self.wait_receipt(signed[start - window][1])
            self.rpc.batch([("eth_sendRawTransaction", [raw]) for raw, _ in signed[start : start + batch]])
        if signed:
            self.wait_receipt(signed[-1][1])

    def wait_receipt(self, tx_hash: bytes, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (receipt := self.rpc.call("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for 0x{tx_hash.hex()} within {timeout:.0f} s")
            time.sleep(0.01)
        return receipt

    def count_reverted(self, signed: list[tuple[str, bytes]]) -> int:
        reverted = 0
        for start in range(0, len(signed), 200):
            receipts = self.rpc.batch([("eth_getTransactionReceipt", ["0x" + h.hex()]) for _, h in signed[start : start + 200]])
            reverted += sum(1 for receipt in receipts if receipt is None or receipt["status"] != "0x1")
        return reverted


def register_raw(sender: RawSender, maker_key: str, *, lot: str, prefix: str, count: int, window: int = 400) -> list[bytes]:
    """Registers `count` parts (serials prefix + 7 digits) in 200-part transactions; returns their ids."""
    serials = [ascii32(f"{prefix}{index:07d}") for index in range(count)]
    signed = [sender.sign(maker_key, "registerParts", [int(GTIN_A), ascii32(lot), serials[start : start + BULK]]) for start in range(0, count, BULK)]
    sender.push(signed, window=window)
    if reverted := sender.count_reverted(signed):
        raise RuntimeError(f"{reverted} registration transactions reverted")
    return [part_id_unchecked(int(GTIN_A), serial) for serial in serials]


def handover_waves(sender: RawSender, parts: list[bytes], *, a: tuple[str, int], b: tuple[str, int]) -> list[list[tuple[str, bytes]]]:
    """Signed transactions moving `parts` from a to b and back, 200 per transaction, as four waves of one sender
    each: ship, receive, ship back, receive back."""
    chunks = [parts[start : start + BULK] for start in range(0, len(parts), BULK)]
    no_doc = bytes(32)
    waves = []
    for (holder_key, _), (taker_key, taker_id) in ((a, b), (b, a)):
        waves.append([sender.sign(holder_key, "shipParts", [chunk, taker_id, no_doc]) for chunk in chunks])
        waves.append([sender.sign(taker_key, "receiveParts", [chunk, no_doc]) for chunk in chunks])
    return waves


def push_waves(sender: RawSender, waves: list[list[tuple[str, bytes]]]) -> None:
    """Each wave all at once, then its last receipt (one sender: nonce order) before the next, which depends on it."""
    for wave in waves:
        sender.push(wave, window=len(wave))


def measure_raw(sender: RawSender, parts: list[bytes], *, a: tuple[str, int], b: tuple[str, int], duration: float) -> dict[str, Any]:
    """The node's floor: pre-signed waves pushed back to back; a first timed round (warm-up) sizes the measured run."""
    warm = handover_waves(sender, parts, a=a, b=b)
    started = time.perf_counter()
    push_waves(sender, warm)
    per_round = time.perf_counter() - started
    rounds = max(1, round(duration / per_round))
    waves = [wave for _ in range(rounds) for wave in handover_waves(sender, parts, a=a, b=b)]
    started = time.perf_counter()
    push_waves(sender, waves)
    elapsed = time.perf_counter() - started
    signed = [tx for wave in warm + waves for tx in wave]
    transitions = rounds * 4 * len(parts)
    return {
        "raw_node_bulk_transitions_per_s": round(transitions / elapsed),
        "transitions": transitions, "transactions": len(signed) - sum(map(len, warm)), "seconds": round(elapsed, 2),
        "reverted": sender.count_reverted(signed), "warmup_transitions_per_s": round(4 * len(parts) / per_round),
    }  # fmt: skip


# --- following the mirror ---------------------------------------------------------------------------------------------


class Chunk:
    """Parts a request moves, and when they are all in the mirror as `kind`."""

    def __init__(self, parts: list[bytes], kind: str) -> None:
        self.parts, self.kind = parts, kind
        self.remaining = len(parts)
        self.done = asyncio.Event()
        self.posted = 0.0
        self.visible = 0.0


class SpreadClient:
    """Posts through several small httpx clients in turn, each letting at most as many requests into its pool as it has
    connections. httpcore's pool hands out a connection by checking every connection (a getpeername and a poll each)
    for every queued request, on every request and response: with 1,024 workers on one 64-connection client that took
    two thirds of the load generator's CPU, and the generator, not the service, set the single scenario's rate (58-66
    a second, 2026-12-04)."""

    def __init__(self, *, base_url: str, timeout: float, connections: int = 64, per_client: int = 4) -> None:
        count = max(1, connections // per_client)
        # Idle connections are let go after 2 s, before uvicorn's 5 s: a post on one the server was closing at that
        # moment failed with ReadError, and its worker stopped (one of 40 chunks, in a full e2e_pg run on 2026-12-05).
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client, keepalive_expiry=2.0)
        self.clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) for _ in range(count)]
        self.gates = [asyncio.Semaphore(per_client) for _ in range(count)]
        self.turn = 0

    async def post(self, *arguments: Any, **options: Any) -> httpx.Response:
        self.turn = (self.turn + 1) % len(self.clients)
        async with self.gates[self.turn]:
            return await self.clients[self.turn].post(*arguments, **options)

    async def __aenter__(self) -> SpreadClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        for client in self.clients:
            await client.aclose()


MIRROR_READ = 10_000  # rows a poll of the mirror reads at a time


class Mirror:
    """Reads the new part_events rows of the index (read-only, WAL) every 0.1 s: counts them by kind and time, and
    marks the chunks waiting for them."""

    def __init__(self, path: Path | str) -> None:
        self._conn = ReadOnly(path)
        self.last_id = self._conn.execute("SELECT coalesce(max(id), 0) FROM part_events").fetchone()[0]
        self.waiting: dict[tuple[bytes, str], Chunk] = {}
        self.seen: list[tuple[float, int]] = []  # (when read, how many of the rows were parts a chunk waited for)

    def expect(self, chunk: Chunk) -> None:
        for pid in chunk.parts:
            self.waiting[(pid, chunk.kind)] = chunk

    def _read(self) -> list[tuple[int, bytes, str]]:
        # LIMIT: without it PostgreSQL planned this as a parallel sequential scan and a sort of the whole table (the
        # bench's minutes are before autovacuum's first ANALYZE, and an open `id >` range is then a third of the
        # rows), 47 ms a poll, 0.15 of a core; with it, the primary key's index from last_id
        rows: list[tuple[int, bytes, str]] = []
        while True:
            after = rows[-1][0] if rows else self.last_id
            read = self._conn.execute("SELECT id, part_id, kind FROM part_events WHERE id > ? ORDER BY id LIMIT ?", (after, MIRROR_READ)).fetchall()
            rows.extend(read)
            if len(read) < MIRROR_READ:
                return rows

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            rows = await asyncio.to_thread(self._read)
            now = time.monotonic()
            matched = 0
            if rows:
                self.last_id = rows[-1][0]
            for _, pid, kind in rows:
                chunk = self.waiting.pop((bytes(pid), kind), None)
                if chunk is not None:
                    matched += 1
                    chunk.remaining -= 1
                    if chunk.remaining == 0:
                        chunk.visible = now
                        chunk.done.set()
            if matched:
                self.seen.append((now, matched))
            await asyncio.sleep(0.1)

    def count(self, since: float, until: float) -> int:
        """Parts of this scenario's requests that reached the mirror between `since` and `until` (monotonic time):
        rows of earlier scenarios still draining are not counted."""
        return sum(matched for at, matched in self.seen if since <= at < until)


@dataclass
class Load:
    """What the load generator saw: per-request latency (accepted → all its parts in the mirror), refusals."""

    latencies: list[float] = field(default_factory=list)
    accepted_parts: int = 0
    visible_parts: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def post(client: SpreadClient, path: str, body: dict[str, Any], key: str, load: Load, *, retry_conflict: bool = False) -> bool:
    for _ in range(100):
        try:
            reply = await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:  # a timeout under overload: counted, and this worker stops
            load.errors[f"http_{type(exc).__name__}"] += 1
            return False
        if reply.status_code == 202:
            load.requests += 1
            return True
        code = reply.json().get("error", {}).get("code", str(reply.status_code)) if reply.headers.get("content-type", "").startswith("application/json") else str(reply.status_code)
        load.errors[code] += 1
        if not (retry_conflict and reply.status_code == 409):
            return False
        await asyncio.sleep(0.2)
    return False


async def accept(client: SpreadClient, mirror: Mirror, load: Load, path: str, body: dict[str, Any], key: str, chunk: Chunk) -> bool:
    """Posts one request whose parts the mirror is to show as chunk.kind; False when it was refused."""
    mirror.expect(chunk)
    chunk.posted = time.monotonic()
    if not await post(client, path, body, key, load, retry_conflict=path.endswith("/receive")):
        for pid in chunk.parts:
            mirror.waiting.pop((pid, chunk.kind), None)
        return False
    load.accepted_parts += len(chunk.parts)
    return True


async def visible(mirror: Mirror, load: Load, chunk: Chunk, timeout: float = 120.0) -> bool:
    """Waits until the mirror has every part of an accepted chunk (at most `timeout` seconds)."""
    try:
        await asyncio.wait_for(chunk.done.wait(), timeout=timeout)
    except TimeoutError:
        load.errors[f"not_visible_within_{timeout:.0f}s"] += 1
        return False
    load.visible_parts += len(chunk.parts)
    load.latencies.append(chunk.visible - chunk.posted)
    return True


async def move(client: SpreadClient, mirror: Mirror, load: Load, path: str, body: dict[str, Any], key: str, chunk: Chunk) -> bool:
    """Posts one request and waits until the mirror has every part of it."""
    return await accept(client, mirror, load, path, body, key, chunk) and await visible(mirror, load, chunk)


async def cycle(client: SpreadClient, mirror: Mirror, load: Load, stop: asyncio.Event, parts: list[bytes], sides: list[tuple[str, int]], *, unique_docs: bool) -> None:
    """Moves `parts` back and forth between two organisations (api key, org id) until `stop`: ship, then receive."""
    hexes = ["0x" + pid.hex() for pid in parts]
    holder, taker = sides
    while not stop.is_set():
        doc = {"doc_hash": "0x" + secrets.token_hex(32)} if unique_docs else {}
        if not await move(client, mirror, load, "/v1/parts/ship", {"part_ids": hexes, "to_org": taker[1], **doc}, holder[0], Chunk(parts, "shipped")):
            return
        doc = {"doc_hash": "0x" + secrets.token_hex(32)} if unique_docs else {}
        if not await move(client, mirror, load, "/v1/parts/receive", {"part_ids": hexes, **doc}, taker[0], Chunk(parts, "received")):
            return
        holder, taker = taker, holder


async def register(client: SpreadClient, mirror: Mirror, load: Load, stop: asyncio.Event, key: str, serials: Iterator[str], *, size: int, backlog: int) -> None:
    """Registers `size` new serials a request until `stop`, without waiting for each to reach the mirror, while at most
    `backlog` parts are accepted and not yet in the mirror; then waits for those in flight."""
    in_flight: set[asyncio.Task[bool]] = set()
    while not stop.is_set():
        if load.accepted_parts - load.visible_parts >= backlog:
            await asyncio.sleep(0.02)
            continue
        batch = [next(serials) for _ in range(size)]
        chunk = Chunk([part_id(GTIN_A, serial) for serial in batch], "registered")
        if not await accept(client, mirror, load, "/v1/parts/register", {"gtin": GTIN_A, "lot": "LOT-E2E", "serials": batch}, key, chunk):
            break
        task = asyncio.create_task(visible(mirror, load, chunk))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


async def scenario(
    api: str, mirror_path: Path, workers: Callable[[SpreadClient, Mirror, Load, asyncio.Event], list[Any]], *, warmup: float, duration: float, drain: float,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Runs the workers for warm-up + duration, then lets them finish what they have in flight (at most `drain`
    seconds); the rate is what reached the mirror during the measured part. `cpu`: CPU seconds so far per process
    tree, read at the start and the end of the measured part (`cpu_window`)."""
    mirror, load = Mirror(mirror_path), Load()
    stop, stop_following = asyncio.Event(), asyncio.Event()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with SpreadClient(base_url=api, timeout=120, connections=limits.max_connections or 64) as client:
        follower = asyncio.create_task(mirror.follow(stop_following))
        started = time.monotonic()
        tasks = [asyncio.create_task(worker) for worker in workers(client, mirror, load, stop)]
        await asyncio.sleep(warmup)
        accepted_before = load.accepted_parts
        cpu_before, window_started = (cpu() if cpu else {}), time.monotonic()
        await asyncio.sleep(duration)
        cpu_window = cpu_during(cpu_before, cpu(), time.monotonic() - window_started) if cpu else None
        stop.set()
        measured_until = time.monotonic()
        accepted = load.accepted_parts - accepted_before
        done, pending = await asyncio.wait(tasks, timeout=drain)  # let the requests in flight reach the mirror
        for task in pending:
            task.cancel()
        stop_following.set()
        await follower
    count = mirror.count(started + warmup, measured_until)
    latencies = sorted(load.latencies)
    failed = [f"{type(task.exception()).__name__}: {task.exception()}" for task in done if task.exception() is not None]
    return {
        "per_s": round(count / duration),
        "counted": count,
        "accepted_per_s": round(accepted / duration),
        "requests": load.requests,
        "latency_p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2) if latencies else None,
        "errors": dict(load.errors) | ({"worker_failed": failed[:3]} if failed else {}),
        "undrained_workers": len(pending),
        **({"cpu_window": cpu_window} if cpu_window is not None else {}),
    }


# --- open loop: arrivals at a fixed rate ------------------------------------------------------------------------------


async def open_loop(api: str, mirror_path: Path, ready: deque[tuple[bytes, int]], sides: list[tuple[str, int]], *, rate: float, duration: float, drain: float) -> dict[str, Any]:
    """One-part requests arriving at `rate` per second for `duration` seconds, whatever the service answers: each
    arrival takes the next part whose previous step reached the mirror (ship from its holder, then receive by the
    other side) and posts it in a task of its own, so a slow answer delays no later arrival (a closed loop would wait,
    and hide the queueing). An arrival that finds no part ready is counted (`no_part_ready`), not deferred. `ready`
    holds (part, step), even steps a ship and odd ones a receive, and is carried from one rate to the next."""
    mirror, load = Mirror(mirror_path), Load()
    commands: dict[str, float] = {}  # command id -> when it was posted (unix time)
    stop_following = asyncio.Event()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)

    async def arrive(client: SpreadClient, pid: bytes, step: int) -> None:
        holder, taker = sides[(step // 2) % 2], sides[(step // 2 + 1) % 2]
        doc = {"doc_hash": "0x" + secrets.token_hex(32)}
        if step % 2 == 0:
            path, key, body, kind = "/v1/parts/ship", holder[0], {"part_ids": ["0x" + pid.hex()], "to_org": taker[1], **doc}, "shipped"
        else:
            path, key, body, kind = "/v1/parts/receive", taker[0], {"part_ids": ["0x" + pid.hex()], **doc}, "received"
        chunk = Chunk([pid], kind)
        mirror.expect(chunk)
        chunk.posted, posted = time.monotonic(), time.time()
        try:
            reply = await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            load.errors[f"http_{type(exc).__name__}"] += 1
            mirror.waiting.pop((pid, kind), None)
            return
        if reply.status_code != 202:
            load.errors[str(reply.status_code)] += 1
            mirror.waiting.pop((pid, kind), None)
            return
        load.requests += 1
        load.accepted_parts += 1
        commands[reply.json()["command_id"]] = posted
        if await visible(mirror, load, chunk, timeout=drain):
            ready.append((pid, step + 1))

    async with SpreadClient(base_url=api, timeout=drain, connections=limits.max_connections or 64) as client:
        follower = asyncio.create_task(mirror.follow(stop_following))
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        arrivals = int(rate * duration)
        for index in range(arrivals):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            if not ready:
                load.errors["no_part_ready"] += 1
                continue
            task = asyncio.create_task(arrive(client, *ready.popleft()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        late = time.monotonic() - (started + (arrivals - 1) / rate)  # how far the generator itself fell behind
        if tasks:
            await asyncio.wait(set(tasks), timeout=drain)
        stop_following.set()
        await follower
    return {"rate_per_s": rate, "arrivals": arrivals, "accepted": load.requests, "generator_late_s": round(late, 3), "errors": dict(load.errors), "commands": commands}


def stage_latencies(w: World, commands: dict[str, float]) -> dict[str, Any]:
    """Percentiles of seconds from the client's post to each stage the service recorded on the command's row:
    accepted (created_at), submitted (first transaction sent), confirmed, mirrored."""
    with ReadOnly(w.service_target) as conn:
        rows = []
        ids = list(commands)
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(f"SELECT id, created_at, submitted_at, confirmed_at, mirrored_at FROM commands WHERE id IN ({marks})", chunk).fetchall()
    stages: dict[str, list[float]] = {"accepted": [], "submitted": [], "confirmed": [], "mirrored": []}
    for command_id, *times in rows:
        for stage, at in zip(stages, times, strict=True):
            if at is not None:
                stages[stage].append(at - commands[command_id])

    def percentiles(values: list[float]) -> dict[str, Any]:
        values.sort()
        pick = lambda q: round(values[min(len(values) - 1, int(len(values) * q))], 3) if values else None  # noqa: E731
        return {"n": len(values), "p50_s": pick(0.5), "p95_s": pick(0.95), "p99_s": pick(0.99), "max_s": round(values[-1], 3) if values else None}

    return {stage: percentiles(values) for stage, values in stages.items()}


# --- peak memory ------------------------------------------------------------------------------------------------------


# --- where a transaction's time goes ---------------------------------------------------------------------------------


def inclusion_delays(w: World, since: float) -> dict[str, Any]:
    """For the service's transactions signed after `since` (unix time): seconds from signing (created_at) to the
    timestamp of the block that holds them, by kind (the node's share of the latency: block time plus any wait in
    its pool; block timestamps are whole seconds), and from acceptance to signing (the submitter's queue)."""
    with ReadOnly(w.service_target) as conn:
        rows = conn.execute("SELECT kind, created_at, block_number FROM chain_transactions WHERE created_at >= ? AND block_number IS NOT NULL", (since,)).fetchall()
        states = dict(conn.execute("SELECT state, count(*) FROM chain_transactions WHERE created_at >= ? GROUP BY state", (since,)).fetchall())
        queued = [row[0] for row in conn.execute(
            "SELECT t.created_at - i.created_at FROM command_items i JOIN chain_transactions t ON t.id = i.tx_id WHERE t.created_at >= ?", (since,)
        )]  # fmt: skip
    numbers = sorted({row[2] for row in rows})
    stamps: dict[int, int] = {}
    for start in range(0, len(numbers), 200):
        blocks = w.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers[start : start + 200]])
        stamps.update({int(block["number"], 16): int(block["timestamp"], 16) for block in blocks})
    by_kind: dict[str, list[float]] = {}
    for kind, created, block in rows:
        by_kind.setdefault(kind, []).append(stamps[block] - created)
    figures: dict[str, Any] = {"states": states}
    if queued:
        queued.sort()
        figures["accepted_to_signed"] = {"p50_s": round(queued[len(queued) // 2], 1), "p90_s": round(queued[int(len(queued) * 0.9)], 1), "max_s": round(queued[-1], 1)}
    for kind, delays in by_kind.items():
        delays.sort()
        figures[kind] = {
            "transactions": len(delays),
            "p50_s": round(delays[len(delays) // 2], 1),
            "p90_s": round(delays[int(len(delays) * 0.9)], 1),
            "max_s": round(delays[-1], 1),
            "over_3s": sum(1 for delay in delays if delay > 3),
        }
    return figures


def drain_outbox(w: World, *, timeout: float) -> int:
    """Waits until the service has no command item left to sign, send or confirm, so that the next scenario starts
    on an empty outbox; returns how many were left at the timeout (0: drained)."""
    deadline = time.monotonic() + timeout
    while True:
        with ReadOnly(w.service_target) as conn:
            left = conn.execute("SELECT count(*) FROM command_items WHERE state IN ('pending', 'signed', 'sent', 'mined')").fetchone()[0]
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


# --- profiling the bottleneck ----------------------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy (pip install py-spy) on PATH or in the venv, for profiles of the processes under load; None without."""
    return shutil.which("py-spy") or next((str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None)


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Samples `pid` (all its threads, idle ones left out) for `seconds` into `out` (py-spy's raw collapsed stacks)."""
    spy = py_spy()
    if spy is None:
        return None
    command = [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "47", "-f", "raw", "-t", "--nolineno", "--nonblocking", "--subprocesses", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a sampled stack spends its time, by the first of these found in it (leaf side first).
PROFILE_CATEGORIES = (
    ("json-rpc calls", ("HTTPProvider.make_request", "JsonRpcSource._call", "JsonRpcSource._post", "Session.post (requests")),
    ("sql", ("Connection.execute (sqlalchemy", "Connection.exec_driver_sql", "Session.execute (sqlalchemy", "cursor.copy", "do_execute")),
    ("abi encoding", ("encode_abi", "eth_abi/encoding")),
    ("abi decoding", ("eth_abi/decoding", "LogDecoder.decode")),
    ("signing", ("sign_transaction", "sign_message")),
    ("request parsing and validation", ("fastapi/routing.py", "pydantic", "json/decoder")),
)


def summarise_profile(path: Path, *, rate: float = 47.0, seconds: float = 1.0, top: int = 6) -> dict[str, Any]:
    """From py-spy's raw stacks: each thread's busy share of the window, what its samples were doing (by
    PROFILE_CATEGORIES), and the project's functions with the largest share of samples that include them."""
    if not path.exists():
        return {}
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0].split(": ", 1)[-1]] += count
        category = next((name for name, needles in PROFILE_CATEGORIES if any(needle in stack for needle in needles)), "other")
        categories[category] += count
        for name in {frame for frame in frames[1:] if frame.endswith(".py)") and frame.split(" (")[-1].startswith(("ledger_service/", "indexer/", "wallets/", "partledger/"))}:
            inclusive[name] += count
    loops = ("run_as_leader", "Submitter.run ", "Submitter.step ", "Indexer.run ", "Indexer.step ", "index_command ")
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "thread_busy_pct": {name: round(100 * n / (rate * seconds), 1) for name, n in threads.most_common(4)},
        "category_pct": {name: round(100 * n / total, 1) for name, n in categories.most_common()},
        "top_functions_pct": {
            name: round(100 * n / total, 1)
            for name, n in [(k, v) for k, v in inclusive.most_common() if not k.startswith(loops) and "__call__" not in k and "get_route_handler" not in k][:top]
        },
    }


# --- the run ----------------------------------------------------------------------------------------------------------


def process_cpu(w: World, *, load: bool = False) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process tree of the world: service (its workers included),
    submitters, indexer, node, and the PostgreSQL cluster (its postmaster and backends); with `load`, this process
    too (the load generator, its threads included)."""
    pids = {name: process.pid for name, process in w.processes.items()} | {"node": w.node.process.pid}
    if w.postgres is not None:
        pids["postgres"] = int((w.postgres.data / "postmaster.pid").read_text().split()[0])
    seconds = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            # with the children it has reaped: PostgreSQL's parallel workers and ended backends live between two reads
            reaped = root.cpu_times().children_user + root.cpu_times().children_system
            seconds[name] = reaped + sum(sum(p.cpu_times()[:2]) for p in (root, *root.children(recursive=True)))
        except psutil.Error:
            continue
    if load:
        seconds["load generator"] = sum(psutil.Process().cpu_times()[:2])
    return seconds


def reset_statements(w: World) -> None:
    """Empties pg_stat_statements (the cluster's, both databases) before a scenario; nothing on SQLite."""
    if w.postgres is not None:
        with psycopg.connect(f"host=127.0.0.1 port={w.postgres.port} user=postgres dbname=service", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")


def top_statements(w: World, count: int = 12) -> list[dict[str, Any]]:
    """The statements that took most of PostgreSQL's time since reset_statements, whoever sent them (the service, the
    submitters, the indexer, and this benchmark's own Mirror: its `SELECT id, part_id, kind FROM part_events`).
    Times are the backends' wall time, so they include waiting for a CPU on a busy machine."""
    assert w.postgres is not None
    with psycopg.connect(f"host=127.0.0.1 port={w.postgres.port} user=postgres dbname=service", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.datname, s.calls, s.total_exec_time, s.rows, regexp_replace(s.query, '\\s+', ' ', 'g') FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid ORDER BY s.total_exec_time DESC"
        ).fetchall()
    total = sum(row[2] for row in rows) or 1.0
    return [
        {"database": database, "calls": calls, "total_ms": round(ms), "share": round(ms / total, 3), "rows": count_rows, "query": query[:160]}
        for database, calls, ms, count_rows, query in rows[:count]
    ]


def cpu_during(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    """Per process tree, the CPU it used between two process_cpu readings, as seconds and as cores busy; and all of
    them together against the cores this process may run on."""
    used = {name: round(after[name] - before.get(name, 0.0), 1) for name in after}
    return {
        "seconds": used, "cores": {name: round(value / seconds, 2) for name, value in used.items()}, "wall_s": round(seconds, 1),
        "cores_busy_total": round(sum(used.values()) / seconds, 2), "cores_available": len(os.sched_getaffinity(0)),
    }  # fmt: skip


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (affinity is per thread; threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def run_e2e(config: E2eConfig = E2eConfig(), *, log: Callable[[str], None] = print, workdir: Path | None = None, profile: bool = False) -> dict[str, Any]:
    """The three end-to-end scenarios and the raw floor on a fresh node; returns the figures (and peak_rss_mb).
    `workdir` keeps the databases and the service's and indexer's logs (default: a temporary directory); `profile`
    samples the service and the indexer with py-spy during each scenario (when py-spy is installed)."""
    figures: dict[str, Any] = {}
    pinned = config.pin_node and len(os.sched_getaffinity(0)) >= 2
    if pinned:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})  # inherited by every process started from here: the node is moved off below
    with tempfile.TemporaryDirectory(prefix="partledger-e2e-") as temporary, world(Path(workdir or temporary), prune_history=16, postgres=config.postgres) as w, PeakRss() as rss:
        rss.watch("node", w.node.process.pid)
        if pinned:
            pin_threads(w.node.process.pid, {cpus[1]})
        ledger = w.ledger
        maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
        sender = RawSender(ledger, w.rpc)
        started = time.perf_counter()
        bulk_parts = register_raw(sender, maker.key, lot="LOT-BULK", prefix="K", count=config.bulk_chunks * config.bulk_chunk_parts)
        single_parts = register_raw(sender, maker.key, lot="LOT-SINGLE", prefix="S", count=config.single_parts)
        open_parts = register_raw(sender, maker.key, lot="LOT-OPEN", prefix="O", count=config.open_loop_parts)
        raw_parts = register_raw(sender, maker.key, lot="LOT-RAW", prefix="R", count=config.raw_parts)
        set_block_time(w.rpc, config.block_time)
        settings = {"PARTLEDGER_MAX_IN_FLIGHT_PER_SIGNER": str(config.max_in_flight_per_signer)}
        if config.custodial_relay:  # custodial_relay follows the relayer keys (ledger_service.custodial_relay)
            for number in range(1, config.relayer_keys + 1):
                create_keystore(w.stack.workdir / "relayer" / f"relayer-{number}.json", PASSPHRASE, light=True)
            settings["PARTLEDGER_RELAYER_KEYS_DIR"] = str(w.stack.workdir / "relayer")
        start_processes(w, settings, api_workers=config.api_workers, submitters=config.submitters)
        for name, process in w.processes.items():
            if name.startswith("submitter"):
                rss.watch(name, process.pid)
        rss.watch("service", w.processes["service"].pid)
        rss.watch("indexer", w.processes["indexer"].pid)
        log(f"e2e: world ready in {time.perf_counter() - started:.1f} s ({len(bulk_parts) + len(single_parts) + len(raw_parts):,} parts, block time {config.block_time or 'automine'} s)")
        keys = w.stack.api_keys
        sides = [(keys["maker"], maker.id), (keys["warehouse"], warehouse.id)]
        serial_numbers = (f"E{index:09d}" for index in range(10**9))

        def register_workers(client: SpreadClient, mirror: Mirror, load: Load, stop: asyncio.Event) -> list[Any]:
            size, backlog = config.register_request_parts, config.register_backlog_parts
            return [register(client, mirror, load, stop, keys["maker"], serial_numbers, size=size, backlog=backlog) for _ in range(config.register_clients)]

        def bulk_workers(client: SpreadClient, mirror: Mirror, load: Load, stop: asyncio.Event) -> list[Any]:
            size = config.bulk_chunk_parts
            return [cycle(client, mirror, load, stop, bulk_parts[i : i + size], sides, unique_docs=False) for i in range(0, len(bulk_parts), size)]

        def single_workers(client: SpreadClient, mirror: Mirror, load: Load, stop: asyncio.Event) -> list[Any]:
            return [cycle(client, mirror, load, stop, [pid], sides, unique_docs=True) for pid in single_parts]

        for name, workers in (("register", register_workers), ("bulk", bulk_workers), ("single", single_workers)):
            if name not in config.scenarios:
                figures[name] = {"per_s": None}
                continue
            spies = {
                process: start_profile(w.processes[process].pid, config.warmup + config.duration, w.stack.workdir / f"profile-{name}-{process}.txt")
                for process in ("service", "indexer")
            } if profile else {}  # fmt: skip
            reset_statements(w)
            begun, cpu_before, clock = time.time(), process_cpu(w), time.monotonic()
            result = asyncio.run(scenario(
                w.api, w.index_target, workers, warmup=config.warmup, duration=config.duration, drain=config.drain_timeout, cpu=lambda: process_cpu(w, load=True),
            ))  # fmt: skip
            result["cpu"] = cpu_during(cpu_before, process_cpu(w), time.monotonic() - clock)
            if pinned:  # this process runs on one of them, the node on the other
                for figures_of in (result["cpu"], result["cpu_window"]):
                    figures_of["cores_available"] = len(cpus)
            if w.postgres is not None:
                result["postgres_statements"] = top_statements(w)
            result["signed_to_block"] = inclusion_delays(w, begun)
            result["outbox_left"] = drain_outbox(w, timeout=config.drain_timeout)
            for process, spy in spies.items():
                if spy is not None:
                    spy.wait(timeout=60)
                    out = w.stack.workdir / f"profile-{name}-{process}.txt"
                    result.setdefault("profile", {})[process] = summarise_profile(out, seconds=max(1, int(config.warmup + config.duration)))
            figures[name] = result
            log(
                f"e2e {name}: {result['per_s']:,}/s in the mirror (accepted {result['accepted_per_s']:,}/s, accept-to-mirror p50 "
                f"{result['latency_p50_s']} s, errors {result['errors'] or 'none'}); cores busy in the measured {config.duration:.0f} s "
                f"{result['cpu_window']['cores']} ({result['cpu_window']['cores_busy_total']} of {result['cpu_window']['cores_available']}); signed-to-block {result['signed_to_block']}"
            )
        closed = figures["single"]["per_s"]  # requests per second: each of those transitions was a request of its own
        figures["open_loop"] = []
        ready = deque((pid, 0) for pid in open_parts)
        for fraction in config.open_loop_fractions if "open" in config.scenarios and closed else ():
            rate = max(1.0, round(closed * fraction, 1))
            result = asyncio.run(open_loop(w.api, w.index_target, ready, sides, rate=rate, duration=config.duration, drain=config.drain_timeout))
            result["fraction_of_closed_loop"] = fraction
            result["latency"] = stage_latencies(w, result.pop("commands"))
            result["outbox_left"] = drain_outbox(w, timeout=config.drain_timeout)
            figures["open_loop"].append(result)
            latency = result["latency"]
            log(
                f"e2e open loop at {rate}/s ({fraction:.0%} of closed): accepted {result['accepted']}/{result['arrivals']}, post to confirmed "
                f"p50 {latency['confirmed']['p50_s']} s p99 {latency['confirmed']['p99_s']} s, to mirror p50 {latency['mirrored']['p50_s']} s "
                f"p99 {latency['mirrored']['p99_s']} s, errors {result['errors'] or 'none'}"
            )
        stop_processes(w)
        raw = measure_raw(sender, raw_parts, a=(maker.key, maker.id), b=(warehouse.key, warehouse.id), duration=config.duration)
        log(f"raw node: {raw['raw_node_bulk_transitions_per_s']:,} transitions/s ({raw['transactions']} transactions in {raw['seconds']} s, {raw['reverted']} reverted)")
        figures["raw"] = raw
    if pinned:
        os.sched_setaffinity(0, set(cpus))
    bulk_rate, raw_rate = figures["bulk"]["per_s"], raw["raw_node_bulk_transitions_per_s"]
    setup = {"databases": "postgresql" if config.postgres else "sqlite", "api_workers": config.api_workers, "submitters": config.submitters,
             "custodial_relay": config.custodial_relay,
             "node_pinned": f"node on CPU {cpus[1]}, the rest on CPU {cpus[0]}" if pinned else None}  # fmt: skip
    return {
        "e2e_register_parts_per_s": figures["register"]["per_s"],
        "e2e_bulk_transitions_per_s": bulk_rate,
        "e2e_single_tx_per_s": figures["single"]["per_s"],
        "raw_node_bulk_transitions_per_s": raw_rate,
        "e2e_vs_raw_ratio": round(bulk_rate / raw_rate, 3) if raw_rate and bulk_rate is not None else None,
        "e2e_setup": setup,
        "peak_rss_mb": {name: round(rss.peak.get(name, 0.0), 1) for name in ("service", "indexer", "node")},
        "e2e_open_loop": [
            {"rate_per_s": r["rate_per_s"], "accepted": r["accepted"], "arrivals": r["arrivals"], "confirmed_p50_s": r["latency"]["confirmed"]["p50_s"],
             "confirmed_p99_s": r["latency"]["confirmed"]["p99_s"], "mirrored_p50_s": r["latency"]["mirrored"]["p50_s"], "mirrored_p99_s": r["latency"]["mirrored"]["p99_s"]}
            for r in figures["open_loop"]
        ],  # fmt: skip
        "e2e_details": figures | {"config": config.__dict__},
    }


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short scenarios (seconds, not minutes)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--block-time", type=float, help="seconds between blocks; 0: automine")
    parser.add_argument("--workdir", type=Path, help="keep databases and logs here (an empty directory)")
    parser.add_argument("--profile", action="store_true", help="py-spy the service and indexer during each scenario")
    parser.add_argument("--postgres", action="store_true", help="both databases on a PostgreSQL cluster of the run's own")
    parser.add_argument("--api-workers", type=int, help="API worker processes (partledger serve --workers N)")
    parser.add_argument("--submitters", type=int, help="partledger submit processes (0: the submitter inside the API process)")
    parser.add_argument("--scenarios", help="comma-separated subset of register,bulk,single,open")
    parser.add_argument("--pin-node", action="store_true", help="the node alone on one CPU, everything else on the other")
    parser.add_argument("--custodial-relay", action="store_true", help="relayer keys for the service: one-part commands relayed in batches")
    parser.add_argument("--single-parts", type=int, help="one-part chunks in flight in the single scenario")
    parser.add_argument("--bulk-chunks", type=int, help="1,000-part chunks in flight in the bulk scenario")
    parser.add_argument("--warmup", type=float, help="seconds of load before each scenario's measured part")
    arguments = parser.parse_args()
    config = E2eConfig.quick() if arguments.quick else E2eConfig()
    overrides = {
        "duration": arguments.duration, "block_time": arguments.block_time, "postgres": arguments.postgres or None,
        "api_workers": arguments.api_workers, "submitters": arguments.submitters, "pin_node": arguments.pin_node or None,
        "custodial_relay": arguments.custodial_relay or None, "single_parts": arguments.single_parts, "bulk_chunks": arguments.bulk_chunks, "warmup": arguments.warmup,
        "scenarios": tuple(arguments.scenarios.split(",")) if arguments.scenarios else None,
    }  # fmt: skip
    config = E2eConfig(**config.__dict__ | {k: v for k, v in overrides.items() if v is not None})
    if arguments.workdir is not None:
        arguments.workdir.mkdir(parents=True, exist_ok=True)
    figures = run_e2e(config, log=lambda line: print(line, file=sys.stderr), workdir=arguments.workdir, profile=arguments.profile)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
