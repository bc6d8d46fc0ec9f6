"""The relay path under open-loop load (issue 17, "Throughput"): `python -m benchmarks.relay_bench [--quick] [--profile]`.

Sites that keep their own keys sign one-part receiveParts ForwardRequests; the service (`partledger serve --workers
2`) accepts them at POST /v1/relay, and the relayer (`partledger relay`, 4 relayer keys; --relayer-in-api: a thread
of the service, as `make run` has it) packs them into the forwarder's executeBatch transactions; the indexer
(`partledger index`) mirrors the receipts. Everything runs as in benchmarks.e2e: Anvil with
gas price zero and a block every second after an automined set-up, SQLite files, processes.

Set-up, before any clock: parts registered by the maker and shipped to the warehouse (pre-signed raw transactions),
fresh site keys added to the warehouse organisation by the operator (`sites` for each rate and as many for the floor,
so that a request one rate never got accepted holds no later one back), and every request of the run signed in each
site's forwarder nonce order (the digest computed from the EIP-712 struct directly and signed with coincurve;
the first one is checked against partledger.eip712).

Load, per arrival rate R (open loop: arrivals at fixed times whatever the service answers): arrival i at i/R goes to
site i mod `sites`, into that site's queue; each site flushes its queue every 0.5 s in one POST (phases spread over
the sites), as an edge agent does, in a task of its own, retried while the service refuses it for a passing reason
(5xx, 429, the connection, no answer in 30 s) after 0.5 s, doubling up to 8 s. Per rate: arrivals, accepted, reached
the mirror per second during the measured window, percentiles of acceptance -> confirmed (relay_requests created_at ->
updated_at, read from the service's database) and of acceptance -> mirror and arrival -> mirror (the mirror's
part_events, followed as benchmarks.e2e.Mirror does), errors by code, the relayed batches and their mean size, and CPU
seconds of each process during the window.

Raw floor (the service and indexer stopped): the same executeBatch transactions, 100 requests of 100 distinct sites
each, pre-signed by a relayer key and pushed with benchmarks.e2e.RawSender, transitions per second until the last
receipt. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import coincurve
import orjson
import psutil
from eth_account import Account
from eth_utils import keccak

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.e2e import BULK, Chunk, Mirror, RawSender, World, py_spy, register_raw, set_block_time, start_processes, start_profile, stop_processes, summarise_profile, world
from partledger.artifacts import FORWARDER, load_artifact
from partledger.eip712 import Eip712Domain, ForwardRequest, forward_request_digest, read_domain, recover_forward_request_signer
from partledger.ids import ascii32
from tests.servicekit import PASSPHRASE
from wallets.keystore import create_keystore

REQUEST_GAS = 150_000  # what each request offers its call (receiveParts of one part uses about a fifth)
DEADLINE_SECONDS = 6 * 3_600
OPEN = ("accepted", "relayed", "mined")
RETRY_MAX_SECONDS = 8.0  # a refused post is retried after 0.5 s, doubling up to this


@dataclass(frozen=True)
class RelayConfig:
    sites: int = 100  # site keys of the warehouse, each an edge agent
    relayer_keys: int = 4
    rates: tuple[float, ...] = (500.0, 1_000.0)  # arrivals per second (--rates adds a "max" run, e.g. 500,1000,2000)
    warmup: float = 5.0
    duration: float = 30.0  # measured seconds per rate
    flush_interval: float = 0.5  # an edge agent's flush period
    raw_requests: int = 20_000  # the raw floor's requests (batches of 100 distinct sites)
    batch_size: int = 100  # PARTLEDGER_RELAY_BATCH_SIZE
    max_in_flight: int = 16  # PARTLEDGER_RELAY_MAX_IN_FLIGHT: batches per relayer key sent and not yet mined
    drain_timeout: float = 60.0  # after a rate, how long to wait for its requests to settle and reach the mirror
    block_time: float = 1.0
    api_workers: int = 2  # `partledger serve --workers N`: the relay desk in N processes (one is GIL-bound at ~450/s)
    relayer_process: bool = True  # the relayer as `partledger relay`, not a thread of an API process

    @classmethod
    def quick(cls) -> RelayConfig:
        return cls(rates=(500.0, 1_000.0), warmup=2.0, duration=5.0, raw_requests=5_000, drain_timeout=15.0)

    def arrivals(self, rate: float) -> int:
        return int(rate * (self.warmup + self.duration))


# --- signing ForwardRequests fast -----------------------------------------------------------------------------------


class SiteSigner:
    """Signs ForwardRequests of many site keys: partledger.eip712's digest (the struct's words put together directly)
    and coincurve's recoverable signature (low s, as the forwarder requires)."""

    def __init__(self, domain: Eip712Domain) -> None:
        self.domain = domain
        self.keys: dict[str, coincurve.PrivateKey] = {}

    def add(self, key: bytes) -> str:
        address = Account.from_key(key).address
        self.keys[address] = coincurve.PrivateKey(key)
        return address

    def sign(self, request: ForwardRequest) -> bytes:
        signature = self.keys[request.sender].sign_recoverable(forward_request_digest(self.domain, request), hasher=None)
        return signature[:64] + bytes([signature[64] + 27])

    def check(self, request: ForwardRequest, signature: bytes) -> None:
        """The signature against partledger.eip712's recovery (once, before the run)."""
        if recover_forward_request_signer(self.domain, request, signature) != request.sender:
            raise AssertionError("the fast signature does not recover to its site key")


def as_json(request: ForwardRequest, signature: bytes) -> dict[str, Any]:
    """A request as POST /v1/relay takes it (tests.relaykit.Signed.as_json)."""
    return {
        "from": request.sender, "to": request.to, "value": request.value, "gas": request.gas, "nonce": request.nonce,
        "deadline": request.deadline, "data": "0x" + request.data.hex(), "signature": "0x" + signature.hex(),
    }  # fmt: skip


@dataclass
class Signed:
    part: bytes
    site: int
    request: ForwardRequest
    signature: bytes
    body: bytes = b""  # the request as POST /v1/relay takes it, serialised before the clock


def sign_receipts(signer: SiteSigner, sender: RawSender, target: str, sites: list[str], nonces: list[int], parts: list[bytes], deadline: int) -> list[Signed]:
    """receiveParts([part]) of each part, part k by site k mod len(sites), each site in its nonce order."""
    signed = []
    for index, pid in enumerate(parts):
        site = index % len(sites)
        data = sender.calldata("receiveParts", [[pid], bytes(32)])
        request = ForwardRequest(sender=sites[site], to=target, value=0, gas=REQUEST_GAS, nonce=nonces[site], deadline=deadline, data=data)
        nonces[site] += 1
        signature = signer.sign(request)
        signed.append(Signed(pid, site, request, signature, orjson.dumps(as_json(request, signature))))
    return signed


# --- CPU per process tree ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds of a process and its children (the node's launcher, uvicorn's workers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process tree; the benchmark's own process without its children (the stack it started)."""
    return {name: cpu_seconds(pid, children=pid != os.getpid()) for name, pid in pids.items()}


# --- the open-loop load -------------------------------------------------------------------------------------------


@dataclass
class RateLoad:
    accepted: dict[str, float] = field(default_factory=dict)  # relay request id -> when its 202 arrived (monotonic)
    accepted_in_window: int = 0
    posts: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def run_rate(w: World, api_key: str, work: list[Signed], *, rate: float, config: RelayConfig, cpu_pids: dict[str, int]) -> dict[str, Any]:
    """`work` arriving at `rate` per second, flushed per site every flush_interval; returns the rate's figures."""
    mirror, load = Mirror(w.index_path), RateLoad()
    stop_following, give_up = asyncio.Event(), asyncio.Event()
    period = config.flush_interval
    # Flush events in time order: site s flushes at phase s/sites * period, then every period; arrival i (at i/rate)
    # of site i mod sites rides the site's first flush at or after it.
    flushes: dict[tuple[int, int], list[int]] = {}
    for index, item in enumerate(work):
        phase = item.site / config.sites * period
        tick = max(0, -int(-(index / rate - phase) // period))  # ceil((arrival - phase) / period)
        flushes.setdefault((tick, item.site), []).append(index)
    schedule = sorted(((tick * period + site / config.sites * period, indices) for (tick, site), indices in flushes.items()), key=lambda event: event[0])
    window_start, window_end = config.warmup, config.warmup + config.duration
    chunks = [Chunk([item.part], "received") for item in work]
    accepted_at: dict[int, float] = {}  # work index -> when its post was answered 202 (monotonic)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def flush(session: aiohttp.ClientSession, indices: list[int], started: float) -> None:
        """One edge agent's post of its queue, retried with backoff while the refusal is a passing one (as the agent
        does), so that no site is left with a gap in its nonces."""
        body = b'{"requests":[' + b",".join(work[i].body for i in indices) + b"]}"
        for i in indices:
            chunks[i].posted = started + i / rate  # its arrival
            mirror.expect(chunks[i])
        attempt = 0
        while True:
            load.posts += 1
            try:
                async with session.post("/v1/relay", data=body, headers=headers) as reply:
                    status, content = reply.status, await reply.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                code, passing = f"http_{type(exc).__name__}", True
            else:
                if status == 202:
                    break
                try:
                    error = orjson.loads(content)["error"]
                    code = error["code"]
                    for row in error.get("details") or []:
                        load.errors[f"row:{row.get('code')}"] += 1
                except (ValueError, KeyError, TypeError):
                    code = str(status)
                passing = status >= 500 or status == 429
            load.errors[code] += 1
            if not passing or give_up.is_set():
                for i in indices:
                    mirror.waiting.pop((work[i].part, "received"), None)
                return
            load.retries += 1
            await asyncio.sleep(min(RETRY_MAX_SECONDS, 0.5 * 2 ** min(attempt, 8)))  # backing off, as the edge agent does
            attempt += 1
        now = time.monotonic()
        for i, answer in zip(indices, orjson.loads(content)["requests"], strict=True):
            load.accepted[answer["id"]] = now
            accepted_at[i] = now
            if window_start <= i / rate < window_end:
                load.accepted_in_window += 1

    timeout = aiohttp.ClientTimeout(total=30)  # a post unanswered this long is retried (the same requests: idempotent)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url=w.api, timeout=timeout, connector=connector) as session:
        follower = asyncio.create_task(mirror.follow(stop_following))
        tasks: set[asyncio.Task[None]] = set()
        began_unix, started = time.time(), time.monotonic()
        cpu_before = cpu_after = None
        cpu_t0 = cpu_t1 = started
        late = 0.0
        for at, indices in schedule:
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            if cpu_before is None and at >= window_start:
                cpu_before, cpu_t0 = cpu_snapshot(cpu_pids), time.monotonic()
            if cpu_after is None and at >= window_end:
                cpu_after, cpu_t1 = cpu_snapshot(cpu_pids), time.monotonic()
            task = asyncio.create_task(flush(session, indices, started))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if cpu_after is None:
            await asyncio.sleep(max(0.0, started + window_end - time.monotonic()))
            cpu_after, cpu_t1 = cpu_snapshot(cpu_pids), time.monotonic()
        generator_seconds = time.monotonic() - started
        # Drain: the posts still retrying, then the accepted requests until they are all in the mirror.
        drain_until = time.monotonic() + config.drain_timeout
        if tasks:
            await asyncio.wait(set(tasks), timeout=max(0.1, drain_until - time.monotonic()))
        give_up.set()  # posts still unanswered at the end of the drain are abandoned (counted)
        if tasks:
            await asyncio.wait(set(tasks), timeout=2)
        abandoned = len(tasks)
        for task in list(tasks):
            task.cancel()
        while time.monotonic() < drain_until and any(chunks[i].visible == 0.0 for i in accepted_at):
            await asyncio.sleep(0.2)
        stop_following.set()
        await follower
    in_mirror = mirror.count(started + window_start, started + window_end)
    to_mirror = [chunks[i].visible - at for i, at in accepted_at.items() if chunks[i].visible]
    arrival_to_mirror = [chunks[i].visible - chunks[i].posted for i in accepted_at if chunks[i].visible]
    load.errors["accepted_not_in_mirror_after_drain"] += len(accepted_at) - len(to_mirror)
    load.errors["posts_abandoned"] += abandoned
    figures = {
        "rate_per_s": rate,
        "arrivals": len(work),
        "accepted": len(load.accepted),
        "accepted_per_s_in_window": round(load.accepted_in_window / config.duration),
        "mirror_per_s_in_window": round(in_mirror / config.duration),
        "in_mirror": len(to_mirror),
        "posts": load.posts,
        "retries": load.retries,
        "requests_per_post": round(len(work) / max(1, len(schedule)), 2),
        "generator_late_max_s": round(late, 3),
        "generator_seconds": round(generator_seconds, 1),
        "errors": {code: count for code, count in load.errors.items() if count},
        "accepted_to_mirror": percentiles(to_mirror),
        "arrival_to_mirror": percentiles(arrival_to_mirror),
        "cpu_s_in_window": {name: round(cpu_after[name] - cpu_before[name], 1) for name in cpu_pids} if cpu_before else None,
        "cpu_window_s": round(cpu_t1 - cpu_t0, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }
    figures |= relay_outcome(w, list(load.accepted), began_unix + window_start, began_unix + window_end)
    return figures


def percentiles(values: list[float]) -> dict[str, Any]:
    values = sorted(values)
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    pick = lambda q: round(1_000 * values[min(len(values) - 1, int(len(values) * q))])  # noqa: E731
    return {"n": len(values), "p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": round(1_000 * values[-1])}


def service_db(w: World) -> sqlite3.Connection:
    path = Path(w.stack.service_db_url.removeprefix("sqlite:///"))
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def relay_outcome(w: World, ids: list[str], window_start: float, window_end: float) -> dict[str, Any]:
    """From the service's tables (read-only): acceptance -> confirmed per request, states and failures by error, and
    the batches created during the window (unix times). A request still open counts with its age so far (a lower
    bound), so that the percentiles are not those of the survivors alone."""
    confirmed: list[float] = []
    still_open = 0
    now = time.time()
    states: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    with service_db(w) as conn:
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for state, created, updated, error in conn.execute(f"SELECT state, created_at, updated_at, error_name FROM relay_requests WHERE id IN ({marks})", chunk):
                states[state] += 1
                if state == "confirmed":
                    confirmed.append(updated - created)
                elif state == "failed":
                    failures[error or "?"] += 1
                else:
                    confirmed.append(now - created)
                    still_open += 1
        batches, mean, gas = conn.execute(
            "SELECT count(*), avg(request_count), avg(gas_used * 1.0 / request_count) FROM relay_batches WHERE created_at >= ? AND created_at < ?", (window_start, window_end)
        ).fetchone()
        by_relayer = dict(conn.execute("SELECT relayer, count(*) FROM relay_batches WHERE created_at >= ? AND created_at < ? GROUP BY relayer", (window_start, window_end)).fetchall())
    return {
        "accepted_to_confirmed": percentiles(confirmed) | {"still_open_counted_as_age": still_open},
        "states": dict(states),
        "failed_by_error": dict(failures),
        "batches_in_window": batches,
        "batch_mean_requests": round(mean, 1) if mean else None,
        "gas_per_request": round(gas) if gas else None,
        "batches_by_relayer": by_relayer,
    }


def wait_settled(w: World, *, timeout: float) -> int:
    """Waits until no relay request is accepted, relayed or mined; returns how many were left (0: settled)."""
    deadline = time.monotonic() + timeout
    while True:
        with service_db(w) as conn:
            left = conn.execute(f"SELECT count(*) FROM relay_requests WHERE state IN ({','.join('?' * len(OPEN))})", OPEN).fetchone()[0]
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


# --- the raw floor --------------------------------------------------------------------------------------------------


def measure_raw_floor(w: World, sender: RawSender, requests: list[Signed], *, batch_size: int) -> dict[str, Any]:
    """executeBatch transactions of `batch_size` requests (distinct sites each), signed by a fresh relayer key before
    the clock, pushed in JSON-RPC batches; transitions per second from the first push to the last receipt."""
    forwarder = w.ledger.w3.eth.contract(address=w.ledger.manifest.forwarder, abi=load_artifact(FORWARDER).abi)
    relayer = Account.create()
    batches = [requests[start : start + batch_size] for start in range(0, len(requests), batch_size)]
    calldata = [
        forwarder.encode_abi("executeBatch", args=[[item.request.as_call_data(item.signature) for item in batch], relayer.address]) for batch in batches
    ]  # fmt: skip
    estimate = int(w.rpc.call("eth_estimateGas", [{"from": relayer.address, "to": forwarder.address, "data": calldata[0]}]), 16)
    gas = estimate + estimate // 4 + 100_000  # as ledger_service.relayer sizes its batches
    started = time.perf_counter()
    signed = []
    for nonce, data in enumerate(calldata):
        transaction = {"to": forwarder.address, "data": data, "value": 0, "gas": gas, "gasPrice": 0, "nonce": nonce, "chainId": w.ledger.manifest.chain_id}
        raw = Account.sign_transaction(transaction, relayer.key)
        signed.append(("0x" + bytes(raw.raw_transaction).hex(), bytes(raw.hash)))
    signing = time.perf_counter() - started
    first_block = int(w.rpc.call("eth_blockNumber", []), 16)
    started = time.perf_counter()
    sender.push(signed, window=len(signed), batch=4)
    elapsed = time.perf_counter() - started
    receipts = [sender.wait_receipt(tx_hash) for _, tx_hash in signed]
    blocks = {int(receipt["blockNumber"], 16) for receipt in receipts}
    executed = sum(
        1 for receipt in receipts for entry in receipt["logs"]
        if entry["address"].lower() == forwarder.address.lower() and entry["topics"][0] == "0x" + keccak(text="ExecutedForwardRequest(address,uint256,bool)").hex()
        and entry["data"][-1] == "1"
    )  # fmt: skip
    return {
        "relay_raw_floor_per_s": round(len(requests) / elapsed),
        "requests": len(requests),
        "transactions": len(signed),
        "seconds": round(elapsed, 2),
        "blocks": len(blocks),
        "first_block_after": min(blocks) - first_block if blocks else None,
        "reverted": sum(1 for receipt in receipts if receipt["status"] != "0x1"),
        "executed_ok": executed,
        "gas_per_request": round(sum(int(receipt["gasUsed"], 16) for receipt in receipts) / len(requests)),
        "tx_signing_s": round(signing, 1),
    }


# --- the run --------------------------------------------------------------------------------------------------------


def run_relay_bench(config: RelayConfig = RelayConfig(), *, log: Any = print, workdir: Path | None = None, profile: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {"load_average_before": [round(value, 2) for value in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="partledger-relay-") as temporary, world(Path(workdir or temporary), prune_history=16) as w:
        began = time.perf_counter()
        ledger, rpc = w.ledger, w.rpc
        maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
        sender = RawSender(ledger, rpc)
        load_parts = sum(config.arrivals(rate) for rate in config.rates)
        parts = register_raw(sender, maker.key, lot="LOT-RELAY", prefix="Y", count=load_parts + config.raw_requests)
        ships = [sender.sign(maker.key, "shipParts", [parts[start : start + BULK], warehouse.id, bytes(32)]) for start in range(0, len(parts), BULK)]
        sender.push(ships, window=400)
        if reverted := sender.count_reverted(ships):
            raise RuntimeError(f"{reverted} shipments reverted")
        forwarder = w.ledger.w3.eth.contract(address=ledger.manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        signer = SiteSigner(read_domain(forwarder))
        # Sites of their own for each rate and for the floor: a request a rate never got accepted leaves a hole in its
        # site's nonces, which would hold that site's later requests back in the next rate.
        groups = [[signer.add(os.urandom(32)) for _ in range(config.sites)] for _ in range(len(config.rates) + 1)]
        for number, site in enumerate(site for group in groups for site in group):
            ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(warehouse.id, site, ascii32(f"edge-{number}")))
        keys_dir = w.stack.workdir / "relayer"
        relayers = [create_keystore(keys_dir / f"relayer-{index + 1}.json", PASSPHRASE, light=True).address for index in range(config.relayer_keys)]
        setup_s = time.perf_counter() - began
        log(f"relay: {len(parts):,} parts shipped to the warehouse, {len(groups)} x {config.sites} site keys added, in {setup_s:.1f} s")

        started = time.perf_counter()
        deadline = int(time.time()) + DEADLINE_SECONDS
        works, offset = [], 0
        for group, rate in zip(groups, config.rates):
            count = config.arrivals(rate)
            works.append(sign_receipts(signer, sender, ledger.parts.address, group, [0] * config.sites, parts[offset : offset + count], deadline))
            offset += count
        raw_work = sign_receipts(signer, sender, ledger.parts.address, groups[-1], [0] * config.sites, parts[load_parts:], deadline)
        signer.check(works[0][0].request, works[0][0].signature)
        signed_count = sum(map(len, works)) + len(raw_work)
        signing_s = time.perf_counter() - started
        log(f"relay: {signed_count:,} ForwardRequests signed in {signing_s:.1f} s ({1_000 * signing_s / signed_count:.2f} ms each)")

        set_block_time(rpc, config.block_time)
        settings = {
            "PARTLEDGER_RELAYER_KEYS_DIR": str(keys_dir),
            "PARTLEDGER_RELAY_BATCH_SIZE": str(config.batch_size),
            "PARTLEDGER_RELAY_MAX_IN_FLIGHT": str(config.max_in_flight),
            "PARTLEDGER_SUBMIT_INTERVAL": "0.05",  # the default (tests.servicekit's stack polls every 0.02 s); the relayer's step too
        }
        start_processes(w, settings, api_workers=config.api_workers, relayer_process=config.relayer_process)
        pids = {"service": w.processes["service"].pid, "indexer": w.processes["indexer"].pid, "node": w.node.process.pid, "bench": os.getpid()}
        if "relayer" in w.processes:
            pids["relayer"] = w.processes["relayer"].pid
        api_key = w.stack.api_keys["warehouse"]
        runs = []
        for rate, chunk in zip(config.rates, works):
            spies = {}
            if profile:
                spies = {
                    name: start_profile(w.processes[name].pid, config.warmup + config.duration, w.stack.workdir / f"profile-relay-{rate:.0f}-{name}.txt")
                    for name in ("service", "indexer", "relayer") if name in w.processes
                }  # fmt: skip
            result = asyncio.run(run_rate(w, api_key, chunk, rate=rate, config=config, cpu_pids=pids))
            result["left_unsettled"] = wait_settled(w, timeout=config.drain_timeout)
            for name, spy in spies.items():
                if spy is not None:
                    spy.wait(timeout=120)
                    result.setdefault("profile", {})[name] = summarise_profile(
                        w.stack.workdir / f"profile-relay-{rate:.0f}-{name}.txt", seconds=max(1, int(config.warmup + config.duration)), top=10
                    )
            runs.append(result)
            confirm = result["accepted_to_confirmed"]
            log(
                f"relay at {rate:,.0f}/s: accepted {result['accepted']:,}/{result['arrivals']:,}, in the mirror {result['mirror_per_s_in_window']:,}/s "
                f"(accepted {result['accepted_per_s_in_window']:,}/s), accepted->confirmed p50 {confirm['p50_ms']} p99 {confirm['p99_ms']} ms, "
                f"accepted->mirror p99 {result['accepted_to_mirror']['p99_ms']} ms, batches {result['batches_in_window']} of {result['batch_mean_requests']}, "
                f"cpu {result['cpu_s_in_window']} in {result['cpu_window_s']} s, errors {result['errors'] or 'none'}, load {result['load_average']}"
            )
        stop_processes(w)
        log("relay: service and indexer stopped; the raw floor next")

        raw = measure_raw_floor(w, sender, raw_work, batch_size=config.batch_size)
        log(f"relay raw floor: {raw['relay_raw_floor_per_s']:,} transitions/s ({raw['transactions']} executeBatch transactions in {raw['seconds']} s over {raw['blocks']} blocks, {raw['reverted']} reverted, {raw['executed_ok']:,} requests executed)")

    by_rate = {run["rate_per_s"]: run for run in runs}
    at_500 = by_rate.get(500.0)
    best = max((run["mirror_per_s_in_window"] for run in runs), default=0)
    floor = raw["relay_raw_floor_per_s"]
    figures |= {
        "relay_transitions_per_s": best,
        "relay_p99_confirm_ms_at_500": at_500["accepted_to_confirmed"]["p99_ms"] if at_500 else None,
        "relay_raw_floor_per_s": floor,
        "relay_vs_raw_ratio": round(best / floor, 3) if floor else None,
        "relay_sites": config.sites,
        "relay_keys": relayers,
        "setup_s": round(setup_s, 1),
        "request_signing_s": round(signing_s, 1),
        "requests_signed": signed_count,
        "runs": runs,
        "raw": raw,
        "config": config.__dict__,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "seconds": round(time.perf_counter() - began, 1),
    }
    return figures


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rates of 7 s, a small floor (under three minutes)")
    parser.add_argument("--rates", help="comma-separated arrival rates per second (default 500,1000)")
    parser.add_argument("--duration", type=float, help="measured seconds per rate")
    parser.add_argument("--workdir", type=Path, help="keep databases and logs here (an empty directory)")
    parser.add_argument("--profile", action="store_true", help="py-spy the service and indexer during each rate")
    parser.add_argument("--workers", type=int, help="API worker processes (partledger serve --workers)")
    parser.add_argument("--relayer-in-api", dest="relayer_process", action="store_false", default=None, help="the relayer as a thread of an API process, not `partledger relay`")
    arguments = parser.parse_args()
    config = RelayConfig.quick() if arguments.quick else RelayConfig()
    overrides: dict[str, Any] = {"duration": arguments.duration, "api_workers": arguments.workers, "relayer_process": arguments.relayer_process}
    if arguments.rates:
        overrides["rates"] = tuple(float(rate) for rate in arguments.rates.split(","))
    config = RelayConfig(**config.__dict__ | {k: v for k, v in overrides.items() if v is not None})
    if arguments.profile and py_spy() is None:
        print("relay: py-spy not found, no profile", file=sys.stderr)
    if arguments.workdir is not None:
        arguments.workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    figures = run_relay_bench(config, log=lambda line: print(f"[{time.monotonic() - began:5.0f} s] {line}", file=sys.stderr), workdir=arguments.workdir, profile=arguments.profile)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
