"""Site keys shared out between submitter processes through PostgreSQL advisory locks (ledger_service/signer_leases.py),
and `partledger submit` on SQLite.

Each SignerLeases here is a real PostgreSQL session of its own, as in a process of its own; the keys are only
addresses (nothing is signed). `look_seconds=0` shares the keys out at every refresh, so that the tests step the
submitters' looks one by one instead of waiting for them. The crash test with real processes is
tests/test_scale_out.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ledger_service.signer_leases import SignerLeases, signer_holders, signer_lock_key
from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from tests.chainkit import GTIN_A, Ledger
from tests.pgcluster import PostgresCluster, unique_name
from tests.servicekit import prepare_stack, running_service, wait_command

KEYS = [f"0x{index:040x}" for index in range(1, 9)]


@pytest.fixture
def url(postgres: PostgresCluster) -> str:
    return postgres.create_database(unique_name("leases"))


class Submitters:
    """Submitters' leases on one database, each on a session of its own, as in processes of their own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[SignerLeases] = []

    def new(self) -> SignerLeases:
        leases = SignerLeases(self.url, look_seconds=0)
        leases.name += f" #{len(self.made)}"  # one test process: its sessions told apart
        self.made.append(leases)
        return leases

    def release_all(self) -> None:
        for leases in self.made:
            leases.release()


@pytest.fixture
def submitters(url: str) -> Iterator[Submitters]:
    group = Submitters(url)
    yield group
    group.release_all()


def test_two_submitters_hold_half_the_keys_each_and_never_the_same(submitters: Submitters) -> None:
    first, second = submitters.new(), submitters.new()
    assert first.refresh(KEYS) == set(KEYS)  # alone: every key
    assert second.refresh(KEYS) == set()  # none free; it counts two submitters now
    assert len(first.refresh(KEYS)) == 4  # lets go of the keys above its share
    assert len(second.refresh(KEYS)) == 4  # takes them
    assert first.owned | second.owned == set(KEYS) and not first.owned & second.owned
    for _ in range(3):  # stable: nobody lets go of a key within its share
        assert (first.refresh(KEYS), second.refresh(KEYS)) == (first.owned, second.owned)


def test_a_dead_submitters_keys_go_to_the_survivor_at_its_next_look(submitters: Submitters, url: str) -> None:
    first, second = submitters.new(), submitters.new()
    for _ in range(2):
        first.refresh(KEYS), second.refresh(KEYS)
    gone = set(first.owned)
    first.release()  # its session ends, as a killed process's does
    # The server ends the session's backend (and its locks) once it sees the connection closed: a moment later, not
    # at once. A look before then still counts two submitters (seen once, on a loaded machine: 4 keys taken, not 8).
    engine = make_engine(url)
    deadline = time.monotonic() + 30
    while _sessions_named(engine, first.name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _sessions_named(engine, first.name), "the server did not end the released session within 30 s"
    assert second.refresh(KEYS) == set(KEYS), f"the survivor took {len(second.owned)} keys"
    holders = signer_holders(make_engine(url), KEYS)
    assert set(holders) == set(KEYS) and set(holders.values()) == {second.name}
    assert gone <= second.owned


def _sessions_named(engine: Any, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"), {"name": name}).scalar_one()


def test_three_submitters_share_eight_keys_three_three_two(submitters: Submitters) -> None:
    group = [submitters.new() for _ in range(3)]
    for _ in range(3):
        for leases in group:
            leases.refresh(KEYS)
    assert sorted(len(leases.owned) for leases in group) == [2, 3, 3]
    assert Counter(key for leases in group for key in leases.owned) == Counter(KEYS)


def test_a_lost_session_loses_every_key_and_takes_them_again(submitters: Submitters, url: str) -> None:
    leases = submitters.new()
    leases.refresh(KEYS)
    engine = make_engine(url)
    with engine.connect() as conn:  # the server ends the session (a restart, a failover, an administrator)
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"), {"name": leases.name})
        conn.commit()
    deadline = time.monotonic() + 10
    while signer_holders(engine, KEYS) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leases.refresh(KEYS) == set(KEYS)  # noticed, on a new session, and every key taken again
    assert set(signer_holders(engine, KEYS).values()) == {leases.name}


def test_a_key_no_longer_held_in_a_keystore_is_let_go(submitters: Submitters, url: str) -> None:
    leases = submitters.new()
    leases.refresh(KEYS)
    assert leases.refresh(KEYS[:6]) == set(KEYS[:6])
    assert set(signer_holders(make_engine(url), KEYS)) == set(KEYS[:6])


def test_signer_lock_keys_ignore_letter_case_and_differ_between_keys() -> None:
    assert signer_lock_key(KEYS[0].upper().replace("0X", "0x")) == signer_lock_key(KEYS[0])
    assert len({signer_lock_key(key) for key in KEYS}) == len(KEYS)


@pytest.mark.chain
def test_partledger_submit_on_sqlite_signs_what_an_api_without_submitter_accepted(ledger: Ledger, tmp_path: Path) -> None:
    """`partledger submit` as a process beside an API that only accepts (PARTLEDGER_SUBMITTER=false), on SQLite:
    the single leader, as the service's own submitter thread was."""
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    log = tmp_path / "submit.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "partledger_cli", "submit"], cwd=REPO_ROOT, env={**os.environ, **stack.env()},
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with running_service(stack, submitter=False) as client:
            reply = client.post("/v1/parts/register", json={"gtin": GTIN_A, "lot": "SUBMIT", "serials": ["Q1", "Q2"]}, headers=stack.headers("maker"))
            assert reply.status_code == 202, reply.text
            view = wait_command(stack, "maker", reply.json()["command_id"], timeout=120)
            assert view["status"] == "confirmed", view
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, log.read_text()
    assert "this process runs the submitter" in log.read_text()
