"""The embedded default keeps its data: `partledger up` (what `make run` runs) resumes its run directory after a stop,
a crash or a power cut, and nothing the API accepted is lost.

Real processes throughout: `partledger up`, `down` and `devnet reset` as a user runs them, and the stack they start
(Anvil, the chain keeper, the indexer, the service), all SIGKILLed together as a power cut would, at moments drawn
from the run's seed. Clients retry a request that got no answer with the same Idempotency-Key, as in the write
path's crash test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from partledger.anvil import running
from partledger.artifacts import REPO_ROOT
from partledger.chain import connect
from partledger.db import make_engine
from partledger.ids import ascii32
from partledger.manifest import load_manifest
from tests.chainkit import GTIN_B, Ledger
from tests.ports import free_port
from tests.relaykit import Relay
from tests.servicekit import wait_until
from tests.test_indexer_equality import assert_mirror_equals, cursor_of, read_chain, rebuild
from tests.test_write_crash import Accepted, chunks, hex_ids, on_chain, serials_of
from wallets.keystore import load_keystore, read_passphrase

pytestmark = [pytest.mark.chain, pytest.mark.heavy, pytest.mark.spread]

STREAM_PARTS = 2_000
PARTS_PER_REQUEST = 20
KILLS = 10
STALL_SECONDS = 300  # the stack comes back from a cut in seconds; five minutes without a step is a command lost
PROCESSES = ("anvil", "keeper", "indexer", "service")


@dataclass
class Devnet:
    """A run directory of its own, and the commands a user types on it."""

    run: Path
    anvil_port: int
    api_port: int
    outputs: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PARTLEDGER_DEVNET_DIR": str(self.run)}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def cli(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "partledger_cli", *arguments], cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        self.outputs.append(result.stdout + result.stderr)
        if check:
            assert result.returncode == 0, f"partledger {' '.join(arguments)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def up(self, *arguments: str) -> str:
        """`partledger up`; returns its summary line (the first after any notes)."""
        out = self.cli("up", "--anvil-port", str(self.anvil_port), "--api-port", str(self.api_port), *arguments).stdout
        return next(line for line in out.splitlines() if not line.startswith("removed "))

    def pids(self) -> dict[str, int]:
        pids = {}
        for name in PROCESSES:
            path = self.run / f"{name}.pid"
            if path.exists():
                pids[name] = int(path.read_text())
        return pids

    def kill_all(self) -> dict[str, int]:
        """SIGKILL to every process of the stack at once, as a power cut; returns when all are gone."""
        pids = self.pids()
        assert set(pids) == set(PROCESSES), pids
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and _state(pid) not in "ZX" for pid in pids.values()), "the stack's processes to die")
        return pids

    def api_keys(self) -> dict[str, str]:
        return {slug: entry["api_key"] for slug, entry in json.loads((self.run / "api-keys.json").read_text()).items()}

    def ledger(self) -> Ledger:
        manifest = load_manifest(self.run / "manifest.json")
        return Ledger(connect(manifest.rpc_url), manifest, operator="")


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat[stat.rindex(")") + 2]


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    devnet = Devnet(tmp_path / "run", free_port(), free_port())
    try:
        yield devnet
    finally:
        devnet.cli("down", check=False)
        for pid in devnet.pids().values():  # whatever `down` could not stop (a failed test)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Client:
    """Requests to the stack's API that wait out its restarts: a request that got no answer is sent again,
    identically (the same Idempotency-Key), until the stack answers."""

    def __init__(self, devnet: Devnet, keys: dict[str, str]) -> None:
        self.devnet = devnet
        self.keys = keys
        self.http = requests.Session()
        self.unanswered = 0
        self.refused = 0  # follow-up commands refused because the node lost the step before (see post)

    def request(self, method: str, path: str, *, org: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys[org]}", **kwargs.pop("headers", {})}
        deadline = time.monotonic() + 300
        while True:
            try:
                return self.http.request(method, self.devnet.url + path, headers=headers, timeout=30, **kwargs)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
                self.unanswered += 1
                assert time.monotonic() < deadline, f"no answer from the stack for 300 s: {method} {path}"
                time.sleep(0.2)

    def post(self, path: str, org: str, body: dict[str, Any], *, may_wait: bool = False) -> str | None:
        """The command's id once accepted (202). With `may_wait`, a pre-check refusal (409 invalid_state, 422
        unknown_part) gives None: the step before was undone with the blocks a power cut took from the node, and
        will be confirmed again."""
        reply = self.request("POST", path, org=org, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        if may_wait and (reply.status_code, reply.json().get("error", {}).get("code")) in {(409, "invalid_state"), (422, "unknown_part")}:
            self.refused += 1
            return None
        assert reply.status_code == 202, f"{path}: {reply.status_code} {reply.text}"
        return reply.json()["command_id"]

    def view(self, org: str, command_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"/v1/commands/{command_id}", org=org)
        assert reply.status_code == 200, reply.text
        view = reply.json()
        assert view["status"] != "rejected", view
        return view

    def indexed(self, org: str, command_id: str) -> bool:
        """Confirmed, and the mirror has its block (so that the next step's pre-check sees it)."""
        view = self.view(org, command_id)
        if view["status"] != "confirmed":
            return False
        health = self.request("GET", "/v1/health", org=org).json()
        return (health["indexed_block"] or -1) >= view["block"]


@pytest.mark.timeout(1800)
def test_a_stack_sigkilled_ten_times_resumes_and_loses_nothing(devnet: Devnet, test_rng: random.Random) -> None:
    """2,000 parts registered, shipped and received through the API of `partledger up`'s stack while all its
    processes are SIGKILLed together ten times, each followed by `partledger up`: every command answered 202 ends
    confirmed and on chain exactly once, the mirror equals a rebuild from the chain, and the API keys still work.

    A command confirmed in the last second before a cut can be undone with the blocks the node loses (the devnet's
    chain is saved every second), then is confirmed again when the submitter re-sends it; a follow-up the client
    sent in between is refused by the pre-check (409 or 422), and the client sends it again later, as a user would."""
    assert devnet.up() == "started a new devnet"
    keys = devnet.api_keys()
    client = Client(devnet, keys)
    accepted = Accepted()
    warehouse = json.loads((devnet.run / "consortium.json").read_text())["organisations"][1]["id"]
    serials = chunks(serials_of("E", STREAM_PARTS), PARTS_PER_REQUEST)
    batches = [hex_ids(chunk) for chunk in serials]
    commands = 3 * len(batches)
    kill_after = sorted(test_rng.sample(range(5, commands - 5), KILLS))  # kill once this many commands were accepted
    summaries: list[str] = []
    killer_error: list[BaseException] = []

    def killer() -> None:
        try:
            for threshold in kill_after:
                while len(accepted.commands) < threshold:
                    time.sleep(0.01)
                time.sleep(test_rng.uniform(0, 0.5))  # somewhere in what the stack is doing then
                devnet.kill_all()
                summaries.append(devnet.up())
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            killer_error.append(exc)

    def post(kind: str, org: str, number: int) -> str | None:
        ids = batches[number]
        if kind == "register":
            body: dict[str, Any] = {"gtin": GTIN_B, "lot": f"RUN-{number // 10}", "serials": serials[number]}
        else:
            body = {"part_ids": ids} | ({"to_org": warehouse} if kind == "ship" else {})
        command_id = client.post(f"/v1/parts/{kind}", org, body, may_wait=kind != "register")
        if command_id is not None:
            accepted.add(org, kind, command_id, [bytes.fromhex(h[2:]) for h in ids])
        return command_id

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    registered: list[tuple[int, str]] = []
    shipped: list[tuple[int, str]] = []
    following = 0
    stalled_since = time.monotonic()
    while following < len(batches) or registered or shipped:
        assert not killer_error, killer_error
        waiting_on = registered[0][1] if registered else shipped[0][1] if shipped else None
        assert time.monotonic() - stalled_since < STALL_SECONDS, f"no step for {STALL_SECONDS} s; waiting on command {waiting_on}: {waiting_on and client.view('maker', waiting_on)}"
        moved = False
        if following < len(batches) and len(registered) < 10:
            registered.append((following, post("register", "maker", following)))  # type: ignore[arg-type]
            following += 1
            moved = True
        if registered and client.indexed("maker", registered[0][1]) and (shipping := post("ship", "maker", registered[0][0])):
            shipped.append((registered.pop(0)[0], shipping))
            moved = True
        if shipped and client.indexed("maker", shipped[0][1]) and post("receive", "warehouse", shipped[0][0]):
            shipped.pop(0)
            moved = True
        if moved:
            stalled_since = time.monotonic()
        else:
            time.sleep(0.1)
    thread.join(timeout=600)
    assert not thread.is_alive() and not killer_error, killer_error
    assert len(summaries) == KILLS and all(summary.startswith("resumed the devnet at block ") for summary in summaries), summaries

    for org, _, command_id in accepted.commands:
        wait_until(lambda: client.view(org, command_id)["status"] == "confirmed", f"command {command_id} confirmed", timeout=300)
    ledger = devnet.ledger()
    chain_counts = on_chain(ledger)
    for kind in ("register", "ship", "receive"):
        twice = [pid.hex() for pid, count in chain_counts[kind].items() if count != 1]
        assert not twice, f"{len(twice)} part(s) {kind}ed more than once on chain"
        assert set(chain_counts[kind]) == set(accepted.parts[kind]), f"{kind}: {len(chain_counts[kind])} on chain, {len(accepted.parts[kind])} accepted"

    head = ledger.w3.eth.block_number
    engine = make_engine(f"sqlite:///{devnet.run / 'index.db'}")
    wait_until(lambda: cursor_of(engine) >= head, "the mirror at the head", timeout=300)
    assert_mirror_equals(engine, rebuild(read_chain(ledger), up_to=cursor_of(engine)))
    engine.dispose()
    for org in keys:
        assert client.request("GET", "/v1/parts?limit=1", org=org).status_code == 200, org
    print(f"\nembedded stack: {KILLS} power cuts, resumed at {summaries}, {len(accepted.commands)} commands, requests sent again "
          f"{client.unanswered}, follow-ups refused while the node re-mined a lost step {client.refused}")  # fmt: skip


def test_a_clean_restart_resumes_the_same_devnet_and_fresh_starts_over_only_when_asked(devnet: Devnet) -> None:
    assert devnet.up() == "started a new devnet"
    keys = devnet.api_keys()
    client = Client(devnet, keys)
    command_id = client.post("/v1/parts/register", "maker", {"gtin": GTIN_B, "lot": "CLEAN", "serials": ["C0001", "C0002"]})
    wait_until(lambda: client.indexed("maker", command_id), "the registration indexed", timeout=120)
    ledger = devnet.ledger()
    chain_id, head = ledger.w3.eth.chain_id, ledger.w3.eth.block_number
    manifest = (devnet.run / "manifest.json").read_bytes()
    key_files = {path.relative_to(devnet.run): path.read_bytes() for path in (devnet.run / "keys").rglob("*.json")}
    assert devnet.up() == "PartLedger is already running"

    assert devnet.cli("down").stdout.strip() == "stopped service, indexer, anvil"
    assert not any(Path(f"/proc/{pid}").exists() and _state(pid) not in "ZX" for pid in devnet.pids().values())
    summary = devnet.up()
    assert summary.startswith("resumed the devnet at block ") and int(summary.rsplit(" ", 1)[1]) >= head, summary
    ledger = devnet.ledger()
    assert ledger.w3.eth.chain_id == chain_id and ledger.w3.eth.block_number >= head
    assert (devnet.run / "manifest.json").read_bytes() == manifest
    assert {path.relative_to(devnet.run): path.read_bytes() for path in (devnet.run / "keys").rglob("*.json")} == key_files
    assert devnet.api_keys() == keys
    assert client.view("maker", command_id)["status"] == "confirmed"
    part = client.request("GET", f"/v1/parts/{hex_ids(['C0001'])[0]}", org="maker")
    assert part.status_code == 200 and part.json()["part"]["status"] == "in_stock", part.text

    # The stack relays what a site signs with its own key (its relayer key made with the devnet).
    site_key = load_keystore(next((devnet.run / "keys" / "maker").glob("*.json")), read_passphrase(devnet.run / "passphrase"))
    signed = Relay(ledger).sign(site_key.address, ledger.parts.functions.registerParts(int(GTIN_B), ascii32("CLEAN"), [ascii32("C0003")]), signer=site_key)
    answer = client.request("POST", "/v1/relay", org="maker", json={"requests": [signed.as_json()]})
    assert answer.status_code == 202, answer.text
    relayed = f"/v1/relay/{answer.json()['requests'][0]['id']}"
    wait_until(lambda: client.request("GET", relayed, org="maker").json()["status"] == "confirmed", "the relayed registration confirmed", timeout=120)

    refused = devnet.cli("up", "--fresh", check=False)
    assert refused.returncode == 1 and refused.stderr.strip().endswith("add --yes to confirm"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and (devnet.run / "manifest.json").read_bytes() == manifest
    assert devnet.up("--fresh", "--yes") == "started a new devnet"
    assert (devnet.run / "manifest.json").read_bytes() != manifest
    assert client.request("GET", "/v1/parts?limit=1", org="maker").status_code == 401  # the old key went with the old devnet


def test_stale_pid_files_a_taken_port_and_a_damaged_chain_each_get_one_line(devnet: Devnet) -> None:
    assert devnet.up() == "started a new devnet"
    devnet.cli("down")

    finished = subprocess.Popen(["true"])
    finished.wait()
    for name in PROCESSES:
        (devnet.run / f"{name}.pid").write_text(f"{finished.pid}\n")  # a pid that no longer runs anything of ours
    out = devnet.cli("up", "--anvil-port", str(devnet.anvil_port), "--api-port", str(devnet.api_port)).stdout
    assert "removed the stale pid file of an Anvil that no longer runs" in out and "resumed the devnet at block" in out, out
    devnet.cli("down")

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", devnet.anvil_port))
        squatter.listen()
        taken = devnet.cli("up", "--anvil-port", str(devnet.anvil_port), "--api-port", str(devnet.api_port), check=False)
    assert taken.returncode == 1 and len(taken.stderr.strip().splitlines()) == 1, taken.stderr
    assert f"port {devnet.anvil_port} for Anvil is taken by a process this stack did not start" in taken.stderr

    saved = devnet.run / "chain-state.json.gz"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    damaged = devnet.cli("up", "--anvil-port", str(devnet.anvil_port), "--api-port", str(devnet.api_port), check=False)
    assert damaged.returncode == 1 and len(damaged.stderr.strip().splitlines()) == 1 and "Traceback" not in damaged.stderr, damaged.stderr
    assert "is damaged" in damaged.stderr and "partledger up --fresh" in damaged.stderr, damaged.stderr
    assert not any(running(pid) for pid in devnet.pids().values())
