"""Many processes on PostgreSQL (issue 18, acceptance "Crash test"): 2 API processes (`partledger serve --workers 2`,
PARTLEDGER_SUBMITTER=false), 2 `partledger submit` processes and `partledger index`, with the service's database and
the mirror on PostgreSQL, on Anvil. 5,000 commands from two manufacturers, four sites each (eight site keys, shared
out four and four between the submitters), one-part and many-part registrations, sent by eight clients at once; one
submitter is SIGKILLed mid-stream.

Every accepted command must be confirmed and on chain exactly once (each part's registrations counted on chain and in
the mirror), each key's nonces gapless, no transaction reverted, and no voided transaction on chain. Each key is sent
for by one process at a time (the submitters' `transaction_sent` log lines); the survivor must hold every key in the
end, and its first send for each of the dead one's keys must come within 10 s of the kill (the product's promise),
measured from the kill to the first transaction the survivor records as sent for that key.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from web3.exceptions import TransactionNotFound

from indexer.tables import IndexerState, PartEvent
from ledger_service.signer_leases import signer_holders
from ledger_service.tables import ChainTransaction, Command, CommandItem
from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from partledger.ids import ascii32, part_id
from tests.chainkit import GTIN_A, GTIN_B
from tests.pgcluster import PostgresCluster, unique_name
from tests.ports import free_port
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, wait_until
from tests.test_write_crash import on_chain
from tests.workload import start_chain
from wallets.keystore import create_keystore

pytestmark = [pytest.mark.chain, pytest.mark.heavy]

COMMANDS = 5_000
MANY_PARTS = 8  # every fifth command registers this many parts, the others one
MAKERS = ("maker", "maker2")
SITES_PER_MAKER = 4
KILL_AFTER = 2_000  # commands accepted before one submitter is SIGKILLed
CLIENTS = 16
TAKEOVER_SECONDS = 10.0
START_SECONDS = 180.0  # six Python processes importing web3 and FastAPI at once, on two shared cores
T_TX, T_ITEM, T_CMD = ChainTransaction.__table__, CommandItem.__table__, Command.__table__
T_EVENT, T_STATE = PartEvent.__table__, IndexerState.__table__


# --- the stack --------------------------------------------------------------------------------------------------


@dataclass
class Processes:
    """The stack's processes (`python -m partledger_cli ...`), each with its log in the work directory."""

    workdir: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *arguments: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log_path(name), "ab") as log:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "partledger_cli", *arguments], cwd=REPO_ROOT, env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self.running[name]

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def cpu_seconds(self) -> dict[str, float]:
        """The CPU (user and system) each live process, with its children (the API's workers), has used so far."""
        return {name: cpu_of(process.pid) for name, process in self.running.items() if process.poll() is None}

    def log_tails(self, lines: int = 30) -> str:
        tails = []
        for name, process in self.running.items():
            tail = self.log_path(name).read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {name} (exit code {process.poll()}) ---\n" + "\n".join(tail))
        return "\n".join(tails)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cpu_of(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        return round(sum(sum(member.cpu_times()[:2]) for member in (root, *root.children(recursive=True))), 1)
    except psutil.NoSuchProcess:
        return 0.0


@dataclass
class ScaledOut:
    stack: Stack
    keys: dict[str, list[str]]  # maker -> its service-held site keys
    processes: Processes
    postgres: PostgresCluster


def add_site_keys(stack: Stack) -> dict[str, list[str]]:
    """SITES_PER_MAKER service-held keys for each maker (the one prepare_stack made, and more), and none for the other
    organisations, so that every key the submitters share out has work."""
    ledger = stack.ledger
    for name in ledger.orgs:
        if name not in MAKERS:
            shutil.rmtree(stack.keys_dir / name)
    keys = {}
    for name in MAKERS:
        keys[name] = [stack.site_keys[name]]
        for line in range(1, SITES_PER_MAKER):
            account = create_keystore(stack.keys_dir / name / f"line-{line}.json", PASSPHRASE, light=True)
            ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(ledger.orgs[name].id, account.address, ascii32(f"line-{line}")))
            keys[name].append(account.address)
    return keys


@pytest.fixture
def scaled_out(postgres: PostgresCluster, tmp_path: Path) -> Iterator[ScaledOut]:
    with start_chain() as (_, ledger):
        stack = prepare_stack(ledger, tmp_path, postgres.create_database(unique_name("scale_index")), postgres.create_database(unique_name("scale_service")))
        keys = add_site_keys(stack)
        processes = Processes(tmp_path, {key: value for key, value in {**os.environ, **stack.env()}.items() if key != "PARTLEDGER_FAILPOINTS"})
        try:
            yield ScaledOut(stack, keys, processes, postgres)
        finally:
            processes.stop_all()


# --- the clients ------------------------------------------------------------------------------------------------


def make_commands(keys: dict[str, list[str]]) -> list[tuple[str, dict[str, Any]]]:
    """(org, body) of COMMANDS registrations, round robin over the makers and their sites; one lot per maker, so that
    a key's pending items pack into shared transactions."""
    commands = []
    for number in range(COMMANDS):
        org = MAKERS[number % len(MAKERS)]
        site = keys[org][(number // len(MAKERS)) % SITES_PER_MAKER]
        serials = [f"S{number:05d}-{index}" for index in range(MANY_PARTS if number % 5 == 0 else 1)]
        commands.append((org, {"gtin": GTIN_A if org == "maker" else GTIN_B, "lot": "L-SCALE", "serials": serials, "site": site}))
    return commands


class Client:
    """Posts commands over kept-alive connections, one per thread (http.client: a fraction of the CPU requests takes
    per call, and the test shares two cores with the whole stack); every 202's command id is kept."""

    def __init__(self, stack: Stack, port: int) -> None:
        self.stack, self.port = stack, port
        self.local = threading.local()
        self.accepted: list[tuple[str, str, list[bytes]]] = []  # (org, command id, part ids)
        self.lock = threading.Lock()

    def post(self, org: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        headers = self.stack.headers(org, **{"Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"})
        for attempt in range(3):
            if getattr(self.local, "connection", None) is None:
                self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.local.connection.request("POST", "/v1/parts/register", body=payload, headers=headers)
                reply = self.local.connection.getresponse()
                answer = reply.read()
                break
            except (OSError, http.client.HTTPException):  # a kept-alive connection the server closed: the same request again
                self.local.connection.close()
                self.local.connection = None
                if attempt == 2:
                    raise
        assert reply.status == 202, f"{reply.status} {answer!r}"
        with self.lock:
            self.accepted.append((org, json.loads(answer)["command_id"], [part_id(body["gtin"], serial) for serial in body["serials"]]))


# --- watching ---------------------------------------------------------------------------------------------------


def first_sends_after(engine: Engine, signers: list[str], dead_at: float, timeout: float = 60.0) -> dict[str, float]:
    """For each of `signers`, when (time.time()) a transaction of that key was first recorded as sent after `dead_at`,
    polling the outbox every 50 ms (a transaction's sent_at changes again only when it is sent again, seconds later,
    so the poll that first sees it reads the first send)."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(signers) and time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(
                select(T_TX.c.signer, func.min(T_TX.c.sent_at)).where(T_TX.c.signer.in_(signers), T_TX.c.sent_at > dead_at).group_by(T_TX.c.signer)
            ).all()
        for signer, sent_at in rows:
            found.setdefault(signer, sent_at)
        time.sleep(0.05)
    return found


def sends_logged(path: Path) -> list[tuple[float, str]]:
    """(time.time(), signer) of every `transaction_sent` line a submitter logged (one JSON object a line; a SIGKILLed
    process may leave half a line)."""
    sends = []
    for line in path.read_text(errors="replace").splitlines():
        if '"transaction_sent"' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            sends.append((datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp(), entry["signer"]))
    return sends


def outbox_states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(select(T_ITEM.c.state, func.count()).group_by(T_ITEM.c.state)).all()))


def mirror_cursor(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(T_STATE.c.block_number)).scalar() or -1


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/v1/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# --- the test ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_survivor_takes_over_a_sigkilled_submitters_keys_and_every_command_lands_once(scaled_out: ScaledOut) -> None:
    stack, processes = scaled_out.stack, scaled_out.processes
    ledger = stack.ledger
    keys = [key for name in MAKERS for key in scaled_out.keys[name]]
    service_engine, index_engine = make_engine(stack.service_db_url), make_engine(stack.index_db_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        processes.start("indexer", "index", "--manifest", str(stack.manifest_path), "--db", stack.index_db_url)
        processes.start("api", "serve", "--port", str(port), "--workers", "2", env={"PARTLEDGER_SUBMITTER": "false"})
        victim, survivor = (processes.start(f"submit-{number}", "submit") for number in (1, 2))

        def holders() -> dict[str, str]:
            return signer_holders(service_engine, keys)

        head = ledger.w3.eth.block_number
        wait_until(lambda: mirror_cursor(index_engine) >= head, "the mirror at the chain's head (the site keys)", START_SECONDS, ignoring=(Exception,))
        wait_until(lambda: answers(url), "the API processes", START_SECONDS)
        wait_until(lambda: sorted(Counter(holders().values()).values()) == [4, 4], "the submitters holding four keys each", START_SECONDS)
        setup_seconds = time.monotonic() - started
        victim_name = next(name for name in holders().values() if name.endswith(f":{victim.pid}"))

        client = Client(stack, port)
        killed: dict[str, Any] = {}

        def kill_when_due() -> None:
            wait_until(lambda: len(client.accepted) >= KILL_AFTER, "commands accepted before the kill", 600)
            killed["keys"] = sorted(key for key, holder in holders().items() if holder == victim_name)
            killed["at"] = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed["first_sends"] = first_sends_after(service_engine, killed["keys"], dead_at=time.time())

        killer = threading.Thread(target=kill_when_due, daemon=True)
        cpu_before, test_cpu_before = processes.cpu_seconds(), time.process_time()
        postgres_pid = int((scaled_out.postgres.data / "postmaster.pid").read_text().split()[0])
        postgres_cpu_before = cpu_of(postgres_pid)
        stream_started = time.monotonic()
        killer.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda command: client.post(*command), make_commands(scaled_out.keys)))
        stream_seconds = time.monotonic() - stream_started
        killer.join(120)
        assert "first_sends" in killed, "the submitter was not killed"

        wait_until(lambda: (states := outbox_states(service_engine)).keys() == {"confirmed"} or "rejected" in states, "every item confirmed or one rejected", 300)
        states = outbox_states(service_engine)
        assert set(states) == {"confirmed"}, states
        drained_seconds = time.monotonic() - stream_started
        cpu = {name: round(seconds - cpu_before.get(name, 0.0), 1) for name, seconds in processes.cpu_seconds().items()}
        cpu |= {"postgres": round(cpu_of(postgres_pid) - postgres_cpu_before, 1), "test": round(time.process_time() - test_cpu_before, 1)}
        head = ledger.w3.eth.block_number
        wait_until(lambda: mirror_cursor(index_engine) >= head, "the mirror at the chain's head", 120)

        # The survivor holds every key; it sent for each of the dead one's keys within TAKEOVER_SECONDS of the kill.
        assert survivor.poll() is None, processes.log_tails()
        assert len(killed["keys"]) == len(keys) // 2, killed["keys"]
        final = holders()
        assert set(final) == set(keys) and all(name.endswith(f":{survivor.pid}") for name in final.values()), final
        takeover = {key: killed["first_sends"].get(key, float("inf")) - killed["at"] for key in killed["keys"]}
        # One process per key at a time: the dead one sent only for its keys, the survivor for its own until the kill.
        victim_sends, survivor_sends = sends_logged(processes.log_path("submit-1")), sends_logged(processes.log_path("submit-2"))
        assert victim_sends and {signer for _, signer in victim_sends} <= set(killed["keys"]), Counter(signer for _, signer in victim_sends)
        assert not {signer for at, signer in survivor_sends if at < killed["at"]} & set(killed["keys"]), "the survivor sent for the other's keys before the kill"
        assert {signer for at, signer in survivor_sends if at > killed["at"]} == set(keys)

        # Every command once: in the outbox, on chain, in the mirror; the API processes report them confirmed.
        assert len(client.accepted) == COMMANDS
        for org, command_id, _ in client.accepted[:: COMMANDS // 20]:
            view = requests.get(f"{url}/v1/commands/{command_id}", headers=stack.headers(org), timeout=30).json()
            assert view["status"] == "confirmed", view
        with service_engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(T_CMD)).scalar() == COMMANDS, "a retry wrote a second command"
            txs = conn.execute(select(T_TX).order_by(T_TX.c.signer, T_TX.c.nonce)).mappings().all()
        accepted_parts = Counter(pid for _, _, ids in client.accepted for pid in ids)
        assert set(accepted_parts.values()) == {1}
        chain = on_chain(ledger)["register"]
        assert set(chain.values()) == {1}, f"{sum(count > 1 for count in chain.values())} part(s) registered more than once on chain"
        assert set(chain) == set(accepted_parts), f"on chain {len(chain)} parts, accepted {len(accepted_parts)}"
        with index_engine.connect() as conn:
            rows = conn.execute(select(T_EVENT.c.part_id, func.count()).where(T_EVENT.c.kind == "registered").group_by(T_EVENT.c.part_id))
            mirror = Counter({bytes(pid): count for pid, count in rows})
        assert mirror == chain, "the mirror's registrations differ from the chain's"
        live = [tx for tx in txs if tx["state"] != "void"]
        assert {tx["state"] for tx in live} == {"confirmed"}, Counter(tx["state"] for tx in live)
        for key in keys:
            nonces = [tx["nonce"] for tx in live if tx["signer"] == key]
            assert nonces == list(range(len(nonces))), f"{key}: nonces {nonces}"
            assert ledger.w3.eth.get_transaction_count(key) == len(nonces), key
        for tx in txs:
            if tx["state"] == "void":  # its nonce went to another transaction: these bytes must never be mined
                with pytest.raises(TransactionNotFound):
                    ledger.w3.eth.get_transaction(bytes(tx["tx_hash"]))

        print(
            f"\nscale-out crash test: {COMMANDS} commands ({len(accepted_parts)} parts) through `serve --workers 2` and 2 `submit`; "
            f"set-up {setup_seconds:.1f}s; stream {stream_seconds:.1f}s ({COMMANDS / stream_seconds:.0f} commands/s), all confirmed "
            f"{drained_seconds:.1f}s after the first; CPU seconds meanwhile {cpu}; {len(live)} transactions, {len(txs) - len(live)} void; "
            f"submitter pid {victim.pid} SIGKILLed after {KILL_AFTER} commands, holding {len(killed['keys'])} keys; the survivor's first "
            "send for each, after the kill: " + ", ".join(f"{key[:8]} {seconds:.2f}s" for key, seconds in sorted(takeover.items()))
        )
        slow = {key: seconds for key, seconds in takeover.items() if seconds > TAKEOVER_SECONDS}
        assert not slow, f"keys the survivor sent for only later than {TAKEOVER_SECONDS:.0f}s after the kill (inf: never): {slow}"
    except BaseException:
        print(processes.log_tails())
        raise
    finally:
        service_engine.dispose()
        index_engine.dispose()
