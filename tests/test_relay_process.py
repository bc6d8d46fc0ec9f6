"""`partledger relay`: the relayer as a process of its own, beside an API process (`partledger serve` with
PARTLEDGER_RELAYER=false) that only accepts POST /v1/relay, with real processes, a dedicated Anvil and SQLite.

Three sites that keep their own keys post receipts and a second operation through the API; the relay process packs
and sends them, and the API process never relays: the log line of the leader ("this process runs the relayer") and
every batch's "mined" line are in the relay processes' logs, none in the API's. A second relay process started
beside the first waits on the database's "relayer" lock and relays nothing; when the first ends (SIGTERM) it takes
the lock at its next try (every LEADER_RETRY_SECONDS) and relays what was accepted meanwhile. In the end every
signed request is confirmed and executed exactly once on chain (the forwarder's ExecutedForwardRequest logs per
signer and nonce). Without PARTLEDGER_RELAYER_KEYS_DIR the command ends with one line naming the setting.

The API process is given PARTLEDGER_RELAYER_KEYS_DIR too: with PARTLEDGER_RELAYER=false it takes relayed requests
when a relayer's keys are configured (ledger_service.app.create_app), without opening them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from tests.crashkit import T_BATCH, T_REQ, Chain, Poster, Service, assert_relayed_exactly_once, dedicated_chain, prepare_relay_stack
from tests.relaykit import Relay, Site, shipped_to_sites
from tests.servicekit import PASSPHRASE, IndexerThread, Stack, wait_until
from wallets.keystore import load_keystore

pytestmark = [pytest.mark.chain]

SITES = ("warehouse", "distributor", "workshop")  # each keeps its own key: the service holds none of theirs
FIRST_ROUNDS = 4  # requests per site relayed by the first relay process: receipt, operation, receipt, operation
STANDBY_ROUNDS = 2  # more (a receipt, an operation), while the second relay process waits as a standby
TAKEN_OVER_ROUNDS = 2  # more, once the first is gone
PARTS_PER_SITE = FIRST_ROUNDS + STANDBY_ROUNDS + TAKEN_OVER_ROUNDS  # a receipt of two parts, then an operation on one
RELAYER_KEYS = 2
LEADS = "this process runs the relayer"  # run_as_leader's line once it holds the lock ...
WAITS = "another process runs the relayer: this one waits as a standby"  # ... and once it found the lock held
TIMEOUT = 120.0  # generous: a loaded machine twice as slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("relay-process")


@pytest.fixture(scope="module")
def chain(workdir: Path) -> Iterator[Chain]:
    with dedicated_chain(workdir) as chain:
        yield chain


@pytest.fixture(scope="module")
def stack(chain: Chain, workdir: Path) -> Stack:
    """The service's database and the mirror on SQLite; the sites' keys on their own side only; two relayer keys."""
    return prepare_relay_stack(chain.ledger, workdir, sites=SITES, relayer_keys=RELAYER_KEYS)


class RelayProcess:
    """`python -m partledger_cli relay` with the given environment, its output in a log file of its own."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "partledger_cli", "relay"], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, text: str, *, timeout: float = TIMEOUT) -> None:
        """Waits until the log holds `text`; fails at once, with the log, if the process ends first."""

        def logged() -> bool:
            assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}\n{self.log()[-3000:]}"
            return text in self.log()

        wait_until(logged, f"{self.name} to log {text!r}", timeout)

    def terminate(self) -> int:
        """SIGTERM, and its exit code once it ended."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not end within 30 s of SIGTERM\n{self.log()[-3000:]}") from None


def mined_batches(log: str) -> set[str]:
    """The transaction hashes of the batches a relayer followed to their receipt, from its log."""
    return set(re.findall(r"batch (0x[0-9a-f]{64}) mined in block", log))


def batch_hashes(stack: Stack, requests: list[str] | None = None) -> set[str]:
    """The transaction hashes of the batches recorded in relay_batches and not void; of those that carried
    `requests` (ids) when given."""
    query = select(T_BATCH.c.tx_hash).where(T_BATCH.c.state != "void")
    if requests is not None:
        query = query.join(T_REQ, T_REQ.c.batch_id == T_BATCH.c.id).where(T_REQ.c.id.in_(requests))
    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        hashes = conn.execute(query).scalars().all()
    engine.dispose()
    return {"0x" + bytes(tx_hash).hex() for tx_hash in hashes}


def post_rounds(poster: Poster, sites: list[Site], rounds: int) -> list[str]:
    """`rounds` posts, each with the next request of every site, posted by a different member each time."""
    ids = []
    for _ in range(rounds):
        turn = poster.posts % len(sites)
        ids += poster.post(sites[turn].name, [(site.name, site.next_request()) for site in sites])  # any member may post them
    return ids


@pytest.mark.timeout(600)
def test_relay_process_relays_and_a_standby_takes_over_while_the_api_only_accepts(chain: Chain, stack: Stack, workdir: Path) -> None:
    """The API (PARTLEDGER_RELAYER=false) accepts, the relay process relays, a second relay process waits and takes
    over when the first gets SIGTERM: every request confirmed, executed once; no batch relayed by the API process."""
    ledger = chain.ledger
    relay = Relay(ledger)
    parts = shipped_to_sites(ledger, SITES, PARTS_PER_SITE)
    sites = [Site(name, relay, parts[name]) for name in SITES]
    relayers = sorted(load_keystore(path, PASSPHRASE).address for path in (workdir / "relayer").glob("*.json"))
    settings = {
        "PARTLEDGER_RELAYER_KEYS_DIR": str(workdir / "relayer"),  # the API's desk needs them too, to accept requests
        "PARTLEDGER_RELAY_BATCH_SIZE": "2",  # a post of three requests fills two batches: both keys in use
        "PARTLEDGER_RELAY_MAX_IN_FLIGHT": "1",
    }
    service = Service(stack, workdir, env={**settings, "PARTLEDGER_RELAYER": "false"})
    relay_env = {**os.environ, **stack.env(), **settings}
    relay_env.pop("PARTLEDGER_FAILPOINTS", None)
    poster = Poster(service)
    standby: RelayProcess | None = None
    with IndexerThread(ledger, stack.index_db_url) as indexer:
        indexer.wait_for(ledger.w3.eth.block_number)  # the sites' keys and their parts in the mirror
        first = RelayProcess("relay-1", workdir, relay_env)
        try:
            service.start()
            first.wait_for_line(LEADS)
            standby = RelayProcess("relay-2", workdir, relay_env)  # it starts up while the first relays

            led_by_first = post_rounds(poster, sites, FIRST_ROUNDS)
            for request_id in led_by_first:
                poster.wait_confirmed(request_id, timeout=TIMEOUT)

            standby.wait_for_line(WAITS)
            while_standby = post_rounds(poster, sites, STANDBY_ROUNDS)
            for request_id in while_standby:
                poster.wait_confirmed(request_id, timeout=TIMEOUT)
            assert standby.process.poll() is None, standby.log()[-3000:]
            assert LEADS not in standby.log() and not mined_batches(standby.log()), "the standby relayed while the first held the lock"

            assert first.terminate() == 0, first.log()[-3000:]
            taken_over = post_rounds(poster, sites, TAKEN_OVER_ROUNDS)  # accepted meanwhile: relayed once the standby leads
            for request_id in taken_over:
                poster.wait_confirmed(request_id, timeout=TIMEOUT)
            standby.wait_for_line(LEADS)  # there already: only a leader relays

            report = assert_relayed_exactly_once(stack, relay, sites, poster, relayers)
            assert report["requests"] == len(SITES) * (FIRST_ROUNDS + STANDBY_ROUNDS + TAKEN_OVER_ROUNDS)
            service_log = service.log_path.read_text(errors="replace")
            assert "runs the relayer" not in service_log and not mined_batches(service_log), "the API process relayed, or tried to lead"
            assert first.log().count(LEADS) == 1 and standby.log().count(LEADS) == 1
            assert batch_hashes(stack) == mined_batches(first.log()) | mined_batches(standby.log()), "a batch no relay process followed"
            assert batch_hashes(stack, led_by_first + while_standby) <= mined_batches(first.log())
            assert batch_hashes(stack, taken_over) <= mined_batches(standby.log())
            assert standby.terminate() == 0, standby.log()[-3000:]
            print(f"\nrelay process test: {report}, batches followed by relay-1 {len(mined_batches(first.log()))}, by relay-2 {len(mined_batches(standby.log()))}")
        finally:
            for process in (first, standby):
                if process is not None and process.process.poll() is None:
                    process.terminate()
            service.stop()


def test_relay_without_relayer_keys_exits_with_one_line_naming_the_setting(stack: Stack) -> None:
    """No PARTLEDGER_RELAYER_KEYS_DIR: exit code 1 and one line on stderr that names it, no traceback."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PARTLEDGER_")} | stack.env()
    ended = subprocess.run(
        [sys.executable, "-m", "partledger_cli", "relay"], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert ended.returncode == 1, (ended.returncode, ended.stderr)
    lines = ended.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("partledger: error: ") and "PARTLEDGER_RELAYER_KEYS_DIR" in lines[0], ended.stderr
    assert "Traceback" not in ended.stdout + ended.stderr, ended.stdout
