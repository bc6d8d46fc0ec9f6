"""The crash tests' kit: a dedicated Anvil that can be stopped and started again on the same port, and the service
(`partledger serve`) as a real process that a test SIGKILLs at its failpoints and starts again, with a client that
sends a request again, identically, when it got no answer.

The first run of the service in a test is a fresh `python -m partledger_cli serve`; the runs after a kill are forked
from a preloaded fork server (tests/forkserver.py), so that many restarts do not pay many interpreter start-ups.
Used by tests/test_write_crash.py (the command path) and tests/test_relay_crash.py (the relay path); the relay
path's stack, client (`Poster`) and final check serve tests/test_relay_process.py too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from web3.exceptions import TransactionNotFound

from ledger_service.relay_tables import RelayBatch, RelayRequest
from partledger.anvil import AnvilConfig, AnvilNode
from partledger.artifacts import REPO_ROOT
from partledger.chain import connect
from partledger.db import make_engine
from tests.chainkit import ANVIL_ACCOUNTS, Ledger, build_ledger
from tests.forkserver import ForkedProcess, ForkServer
from tests.ports import free_port
from tests.relaykit import Relay, Signed, Site
from tests.servicekit import PASSPHRASE, Stack, prepare_stack
from wallets.keystore import create_keystore

T_REQ, T_BATCH = RelayRequest.__table__, RelayBatch.__table__


# --- the chain node ---------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """A dedicated Anvil that dumps its state on SIGTERM and loads it again when started on the same port."""

    node: AnvilNode
    ledger: Ledger

    def stop(self) -> None:
        self.node.stop()

    def start(self) -> None:
        self.node = AnvilNode.start(self.node.config)


SWEEP_SECONDS = 2.0


@contextmanager
def dedicated_chain(workdir: Path) -> Iterator[Chain]:
    """An Anvil of the test's own (its state dumped to `workdir` when stopped), the contracts and the consortium.
    Automine with a sweep (AnvilConfig.sweep_seconds): services killed mid-send leave a key's transactions arriving
    out of order and all at once, which is when Anvil's automine can strand one."""
    config = AnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS, state_path=workdir / "anvil-state.json", sweep_seconds=SWEEP_SECONDS)
    node = AnvilNode.start(config, log_path=workdir / "anvil.log")
    chain = Chain(node, build_ledger(connect(node.url)))
    try:
        yield chain
    finally:
        chain.node.stop()


# --- the service as a process, and a client that retries ---------------------------------------------------------


class Service:
    """`python -m partledger_cli serve` with the stack's environment, started again whenever it dies. Each run arms
    at most one failpoint — the one with the fewest kills still under its target — so that a SIGKILL is
    attributed to it exactly. `kill_targets`: the kills wanted at each failpoint, in the order that breaks ties;
    an armed failpoint kills with `kill_probability` per pass."""

    def __init__(
        self,
        stack: Stack,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        kill_targets: dict[str, int] | None = None,
        kill_probability: float = 0.5,
        forkserver: ForkServer | None = None,
        seed: str = "",
    ) -> None:
        self.stack = stack
        self.forkserver = forkserver
        self.seed = seed
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **stack.env(), **(env or {})}
        self.env.pop("PARTLEDGER_FAILPOINTS", None)
        self.log_path = workdir / "service.log"
        self.kill_targets = kill_targets or {}
        self.kill_probability = kill_probability
        self.kills: Counter[str] = Counter()
        self.runs = 0
        self.startup_seconds: list[float] = []
        self.unanswered = 0  # requests that got no answer and were sent again
        self.replays = 0  # POSTs answered from the idempotency record: the first attempt's 202 was lost
        self.armed: str | None = None
        self.process: subprocess.Popen[bytes] | ForkedProcess | None = None
        self.http = requests.Session()

    # lifecycle

    def start(self) -> None:
        """Starts a run and waits until it answers; a run that dies on the way is counted and replaced."""
        while True:
            self._spawn()
            started = time.monotonic()
            deadline = started + 120
            while time.monotonic() < deadline:
                if self.process.poll() is not None:  # type: ignore[union-attr]
                    break
                try:
                    if requests.get(self.url + "/v1/health", timeout=2).status_code == 200:
                        self.startup_seconds.append(time.monotonic() - started)
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            else:
                raise AssertionError(f"the service did not answer within 120 s\n{self.log_tail()}")
            self._reap()

    def _spawn(self) -> None:
        order = list(self.kill_targets)
        below = [name for name in order if self.kills[name] < self.kill_targets[name]]
        self.armed = min(below, key=lambda name: (self.kills[name], order.index(name))) if below else None
        env = dict(self.env)
        if self.armed is not None:
            env["PARTLEDGER_FAILPOINTS"] = f"{self.armed}={self.kill_probability}"
            env["PARTLEDGER_FAILPOINTS_SEED"] = f"{self.seed}:{self.runs}"
        self.runs += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== run {self.runs}, failpoint {self.armed}, {time.strftime('%H:%M:%S')} ===\n".encode())
        arguments = ["serve", "--port", str(self.port)]
        if self.forkserver is not None and self.runs > 1:
            self.process = self.forkserver.spawn(arguments, env=env, stdout=self.log_path)
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "partledger_cli", *arguments], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _reap(self) -> None:
        """Counts a run that died by its failpoint's SIGKILL; any other end is a failure."""
        assert self.process is not None
        code = self.process.wait()
        if code != -signal.SIGKILL or self.armed is None:
            raise AssertionError(f"the service exited with {code} (failpoint {self.armed})\n{self.log_tail()}")
        self.kills[self.armed] += 1

    def kills_missing(self) -> bool:
        return any(self.kills[name] < target for name, target in self.kill_targets.items())

    def ensure_running(self) -> None:
        if self.process is None:
            self.start()
        elif self.process.poll() is not None:
            self._reap()
            self.start()

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # requests

    def request(self, method: str, path: str, *, org: str | None = None, timeout: float = 30.0, **kwargs: Any) -> requests.Response:
        """One request, sent again (identically) until it gets an answer; the service is restarted when it died."""
        headers = {**(self.stack.headers(org) if org else {}), **kwargs.pop("headers", {})}
        unexplained = 0
        while True:
            self.ensure_running()
            try:
                return self.http.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):  # no (whole) answer
                self.unanswered += 1
                if self._died_within(5.0):
                    continue
                unexplained += 1  # a stale pooled connection: try again, a few times
                if unexplained > 3:
                    raise

    def _died_within(self, seconds: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def post(self, path: str, org: str, body: dict[str, Any]) -> str:
        """POSTs a command with a fresh Idempotency-Key (kept for every retry); returns the id of the 202."""
        reply = self.request("POST", path, org=org, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert reply.status_code == 202, f"{path}: {reply.status_code} {reply.text}"
        self.replays += bool(reply.json().get("idempotent_replay"))
        return reply.json()["command_id"]

    def wait_confirmed(self, org: str, command_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.request("GET", f"/v1/commands/{command_id}", org=org).json()
            assert view["status"] != "rejected", view
            if view["status"] == "confirmed":
                return view
            assert time.monotonic() < deadline, f"command {command_id} still {view['status']} after {timeout:.0f}s: {view}"
            time.sleep(0.1)


def assert_sent_once_in_nonce_order(ledger: Ledger, recorded: list[Any], senders: dict[str, str], *, sender: str) -> dict[str, int]:
    """What the service recorded as sent (rows with `sender`'s key column, nonce, tx_hash, block_number, state), after
    its crashes: every transaction it did not void is confirmed, in its recorded block, with status 1, and each
    sender's nonces are gapless from 0 and all the chain holds; a voided one (its nonce went to another) was never
    mined. `senders`: name -> address. Returns the transactions per sender's name."""
    live = [row for row in recorded if row["state"] != "void"]
    assert Counter(row["state"] for row in live) == {"confirmed": len(live)}, Counter(row["state"] for row in live)
    per_sender = {}
    for name, address in senders.items():
        nonces = sorted(row["nonce"] for row in live if row[sender] == address)
        assert nonces == list(range(len(nonces))), f"{name}: nonces {nonces}"
        assert ledger.w3.eth.get_transaction_count(address) == len(nonces), name
        per_sender[name] = len(nonces)
    for row in live:
        receipt = ledger.w3.eth.get_transaction_receipt(bytes(row["tx_hash"]))
        assert receipt["status"] == 1 and receipt["blockNumber"] == row["block_number"], row["id"]
    for row in recorded:
        if row["state"] == "void":  # its nonce went to another transaction: these bytes must never be mined
            with pytest.raises(TransactionNotFound):
                ledger.w3.eth.get_transaction(bytes(row["tx_hash"]))
    return per_sender


# --- the relay path: sites that keep their keys, a client of POST /v1/relay, and what must hold in the end -----------


def prepare_relay_stack(ledger: Ledger, workdir: Path, *, sites: Sequence[str], relayer_keys: int) -> Stack:
    """The service's database and the mirror on SQLite; the `sites`' keys on their own side only (the service holds
    none of theirs); `relayer_keys` relayer keystores in workdir/relayer (PARTLEDGER_RELAYER_KEYS_DIR)."""
    stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    for name in sites:
        shutil.rmtree(stack.keys_dir / name)  # registered on chain; the service holds no key of these sites
    for number in range(1, relayer_keys + 1):
        create_keystore(workdir / "relayer" / f"relayer-{number}.json", PASSPHRASE, light=True)
    return stack


@dataclass
class Poster:
    """Posts requests to POST /v1/relay through a service that may die; keeps the id the service named each by."""

    service: Service
    ids: dict[bytes, str] = field(default_factory=dict)  # request signature -> id
    orgs: dict[str, str] = field(default_factory=dict)  # id -> the signer's organisation, which may follow it
    posts: int = 0
    replayed_posts: int = 0  # posts answered wholly from the stored requests: their first answer was lost
    replayed_requests: int = 0

    def post(self, poster: str, batch: list[tuple[str, Signed]]) -> list[str]:
        """Posts `batch` ((the signer's organisation, request) pairs) with `poster`'s API key; returns their ids."""
        body = {"requests": [signed.as_json() for _, signed in batch]}
        reply = self.service.request("POST", "/v1/relay", org=poster, json=body)
        assert reply.status_code == 202, f"{reply.status_code} {reply.text}"
        answers = reply.json()["requests"]
        assert len(answers) == len(batch), answers
        self.posts += 1
        replays = [bool(answer.get("idempotent_replay")) for answer in answers]
        self.replayed_requests += sum(replays)
        self.replayed_posts += all(replays)
        for (org, signed), answer in zip(batch, answers):
            assert (answer["signer"], answer["nonce"]) == (signed.request.sender, signed.request.nonce), answer
            named = self.ids.setdefault(signed.signature, answer["id"])
            assert named == answer["id"], f"one request named {named} and then {answer['id']}: stored twice"
            self.orgs[answer["id"]] = org
        return [answer["id"] for answer in answers]

    def wait_confirmed(self, request_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.service.request("GET", f"/v1/relay/{request_id}", org=self.orgs[request_id]).json()
            assert view["status"] != "failed", view
            if view["status"] == "confirmed":
                return view
            assert time.monotonic() < deadline, f"relayed request {request_id} still {view['status']} after {timeout:.0f}s: {view}"
            time.sleep(0.1)


def assert_relayed_exactly_once(stack: Stack, relay: Relay, sites: list[Site], poster: Poster, relayers: list[str]) -> dict[str, Any]:
    """Every signed request executed once and successfully, in its site's nonce sequence; each part's effect once;
    nothing else relayed; one row per request, confirmed; each relayer key's nonces gapless, and each key used.
    Numbers for the report."""
    ledger = relay.ledger
    signed = Counter((site.key, item.request.nonce) for site in sites for item in site.signed)
    executed = Counter()
    for entry in relay.forwarder.events.ExecutedForwardRequest().get_logs(from_block=0):
        assert entry["args"]["success"], entry
        executed[(entry["args"]["signer"], entry["args"]["nonce"])] += 1
    twice = [key for key, count in executed.items() if count != 1]
    assert not twice, f"{len(twice)} request(s) executed more than once, e.g. {twice[:3]}"
    assert executed == signed, f"executed {len(executed)}, signed {len(signed)}; missing {sorted(set(signed) - set(executed))[:5]}"
    for site in sites:
        assert relay.nonce(site.key) == len(site.signed), site.name

    expected = sum((site.effects for site in sites), Counter())
    keys = {site.key for site in sites}
    effects: Counter[tuple[str, bytes, str]] = Counter()
    for event in ("PartsReceived", "PartsShipped", "PartsSold", "PartsInstalled"):
        for entry in getattr(ledger.parts.events, event)().get_logs(from_block=0):
            if entry["args"]["siteKey"] in keys:
                effects.update((event, bytes(pid), entry["args"]["siteKey"]) for pid in entry["args"]["partIds"])
    assert effects == expected, f"{sum((effects - expected).values())} effect(s) too many, {sum((expected - effects).values())} missing"

    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(T_REQ.c.id, T_REQ.c.signer, T_REQ.c.nonce, T_REQ.c.state)).all()
        batches = conn.execute(select(T_BATCH).order_by(T_BATCH.c.relayer, T_BATCH.c.nonce)).mappings().all()
    engine.dispose()
    assert Counter((row.signer, row.nonce) for row in rows) == signed, "a request stored twice, or one lost"
    assert {row.id for row in rows} == set(poster.ids.values())
    assert Counter(row.state for row in rows) == {"confirmed": len(rows)}

    per_key = assert_sent_once_in_nonce_order(ledger, batches, {relayer[:8]: relayer for relayer in relayers}, sender="relayer")
    assert all(per_key.values()), f"a relayer key carried no batch: {per_key}"
    return {"requests": len(rows), "batches per relayer key": per_key, "void": len(batches) - sum(per_key.values())}
