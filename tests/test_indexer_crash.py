"""The indexer as a real process (`python -m partledger_cli index`), SIGKILLed at random points 50 times while it
catches up with 50,000 part events, and restarted each time.

After every kill the cursor may not stand past a row it has not written, nor behind one it has: each table's rows
per block up to the cursor equal the reference rebuilt from the chain's logs (tests/test_indexer_equality.py), and
no row, nor any state change, lies above it; every 25th kill the whole mirror must equal the chain at the cursor.
The last run catches up to the head, and every table then equals the chain row by row, without a duplicate. The
same holds on SQLite and on PostgreSQL. A second indexer on a database one already writes to refuses to start.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from indexer.tables import INDEX_METADATA, IndexerState
from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from partledger.manifest import save_manifest
from tests.chainkit import Ledger
from tests.forkserver import ForkedProcess, ForkServer
from tests.pgcluster import PostgresCluster, unique_name
from tests.test_indexer_equality import ChainRecord, Reference, assert_mirror_equals, read_chain, rebuild
from tests.workload import Workload, start_chain

pytestmark = [pytest.mark.chain, pytest.mark.heavy]

SEED = int(os.environ.get("PARTLEDGER_WORKLOAD_SEED", "50"))
PART_EVENTS = 50_000
KILLS = int(os.environ.get("PARTLEDGER_CRASH_KILLS", "50"))  # per backend
BATCH_BLOCKS = 1  # ~500 writes to catch up, a few per run: every kill lands mid-catch-up
FULL_CHECK_EVERY = 25

# Table -> the column holding the block that created the row; and the columns holding later changes.
CREATED_IN = {
    "organisations": "registered_block", "site_keys": "added_block", "lots": "opened_block", "parts": "registered_block",
    "part_events": "block_number", "shipments": "shipped_block", "installations": "installed_block",
    "recalls": "block_number", "documents": "block_number", "batches": "block_number", "cancelled_nonces": "block_number",
}  # fmt: skip
CHANGED_IN = {
    "organisations": ("updated_block",), "site_keys": ("revoked_block",), "parts": ("updated_block",),
    "shipments": ("closed_block",), "installations": ("removed_block",),
}  # fmt: skip


@dataclass
class CrashChain:
    ledger: Ledger
    url: str
    manifest: Path
    record: ChainRecord
    reference: Reference
    created: dict[str, Counter[int]] = field(default_factory=dict)  # table -> rows created per block

    def __repr__(self) -> str:
        return f"CrashChain({self.url}, {self.reference!r})"


@pytest.fixture(scope="session")
def crash_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashChain]:
    """A dedicated Anvil holding 50,000 part events in bulk transactions, a few per block, and its manifest. Only read
    by the tests (indexers follow it): built once per worker, even when the worker runs another module's tests between
    this module's (a module fixture was rebuilt then, 15 s each time)."""
    with start_chain() as (node, ledger):
        workload = Workload(ledger, seed=SEED, txs_per_block=(1, 6), small_share=0.0)
        workload.run(PART_EVENTS + 1_000)  # operations also count lots opened and non-part events
        while len((reference := rebuild(record := read_chain(ledger))).tables["part_events"]) < PART_EVENTS:
            workload.run(1_000)
        manifest = tmp_path_factory.mktemp("crash") / "manifest.json"
        save_manifest(dataclasses.replace(ledger.manifest, rpc_url=node.url), manifest)
        created = {table: Counter(row[column] for row in reference.tables[table]) for table, column in CREATED_IN.items()}
        yield CrashChain(ledger, node.url, manifest, record, reference, created)


# --- the indexer process ----------------------------------------------------------------------------------------------


def spawn_indexer(
    chain: CrashChain, db_url: str, logs: Path, *, once: bool = False, batch_blocks: int = BATCH_BLOCKS, forkserver: ForkServer | None = None
) -> subprocess.Popen[bytes] | ForkedProcess:
    """`partledger index` as a fresh process, or forked from the preloaded fork server."""
    arguments = ["index", "--manifest", str(chain.manifest), "--db", db_url, "--batch-blocks", str(batch_blocks)] + (["--once"] if once else [])
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "stderr").write_bytes(b"")
    if forkserver is not None:
        return forkserver.spawn(arguments, env=dict(os.environ), stdout=logs / "stdout", stderr=logs / "stderr")
    with open(logs / "stdout", "ab") as out, open(logs / "stderr", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "partledger_cli", *arguments], cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def read_cursor(engine: Engine) -> int | None:
    """The indexer's cursor; None before its tables or its state row exist."""
    try:
        with engine.connect() as conn:
            return conn.execute(select(IndexerState.__table__.c.block_number)).scalar_one_or_none()
    except DBAPIError:
        return None


def wait_sessions_ended(engine: Engine) -> None:
    """On PostgreSQL, until the killed indexer's sessions are gone: the server may still commit a transaction whose
    COMMIT the client sent just before it died, and the checks must see the mirror as it stays (SQLite commits in
    the process itself: nothing lingers)."""
    if engine.dialect.name != "postgresql":
        return
    others = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    engine.dispose()  # our own idle connections aside
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            if conn.execute(others).scalar() == 0:
                return
        assert time.monotonic() < deadline, "the killed indexer's PostgreSQL sessions did not end within 60 s"
        time.sleep(0.01)


def check_cursor_matches_rows(engine: Engine, chain: CrashChain, cursor: int | None) -> None:
    """Every row the chain gives for blocks up to the cursor is there, once; nothing from a block above it."""
    with engine.connect() as conn:
        for table, column in CREATED_IN.items():
            t = INDEX_METADATA.tables[table]
            try:
                per_block = dict(conn.execute(select(t.c[column], func.count()).group_by(t.c[column])).all())
            except DBAPIError:  # killed before the migration committed: no table, hence no row
                conn.rollback()
                assert cursor is None
                continue
            limit = -1 if cursor is None else cursor
            expected = {block: count for block, count in chain.created[table].items() if block <= limit}
            if per_block != expected:
                above = sorted(block for block in per_block if block > limit)
                wrong = sorted(block for block in set(per_block) | set(expected) if block <= limit and per_block.get(block) != expected.get(block))  # fmt: skip
                pytest.fail(f"{table} after a kill with the cursor at {cursor}: rows from blocks above it {above[:5]}, blocks below it with the wrong number of rows {[(b, per_block.get(b, 0), expected.get(b, 0)) for b in wrong[:5]]}", pytrace=False)  # fmt: skip
            for changed in CHANGED_IN.get(table, ()):
                latest = conn.execute(select(func.max(t.c[changed]))).scalar()
                assert latest is None or latest <= limit, f"{table}.{changed} = {latest} above the cursor {cursor}"


@dataclass
class KillLog:
    backend: str
    kills: list[tuple[str, int | None, int | None]] = field(default_factory=list)  # (moment, cursor before, after)
    refusals: int = 0  # restarts refused because the killed process's lock was not yet released
    seconds: float = 0.0


def kill_repeatedly(chain: CrashChain, backend: str, db_url: str, workdir: Path, rng: random.Random, forkserver: ForkServer) -> KillLog:
    """Starts the indexer, SIGKILLs it at a random point, checks the mirror, and again, KILLS times; then lets it
    catch up and compares the whole mirror with the chain. The first run is a fresh process, the later ones are
    forked from the fork server (the imports paid once); the last catch-up is a fresh process again."""
    log, started = KillLog(backend), time.monotonic()
    engine = make_engine(db_url)
    head = chain.reference.head
    while len(log.kills) < KILLS:
        before = read_cursor(engine)
        runs = len(log.kills) + log.refusals
        process = spawn_indexer(chain, db_url, workdir / f"run-{runs}", forkserver=forkserver if runs else None)
        remaining = head - (before or 0)
        if remaining <= 0 or rng.random() < 0.1:
            moment = "anywhere"  # in the start-up, the migration, the lock, or a write
            # A forked run starts in milliseconds (a fresh interpreter took seconds of imports): a short window, or
            # the run would catch up far and leave too few blocks for the kills still to come.
            deadline = time.monotonic() + rng.uniform(0.0, 0.4 if runs else 2.5)
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.01)
        else:
            moment = "mid-catch-up"  # after at least one write, at a random point of a later iteration
            deadline = time.monotonic() + 60
            while process.poll() is None and (read_cursor(engine) or 0) <= (before or 0) and time.monotonic() < deadline:
                time.sleep(0.015)  # polling faster steals the CPU the indexer needs
            # Leave room for the kills still to come: no jitter when few blocks remain per kill.
            if remaining > (KILLS - len(log.kills)) * BATCH_BLOCKS * 3:
                time.sleep(rng.uniform(0, 0.12))
        if process.poll() is not None:
            err = (workdir / f"run-{len(log.kills) + log.refusals}" / "stderr").read_text()
            if process.returncode == 1 and "another indexer" in err:
                log.refusals += 1
                time.sleep(0.05)
                continue
            pytest.fail(f"{backend}: the indexer exited by itself with {process.returncode}: {err[-2000:]}", pytrace=False)
        process.send_signal(signal.SIGKILL)
        process.wait()
        wait_sessions_ended(engine)
        after = read_cursor(engine)
        assert before is None or (after is not None and after >= before), f"{backend}: the cursor went back from {before} to {after}"
        check_cursor_matches_rows(engine, chain, after)
        if len(log.kills) % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 and after is not None:
            assert_mirror_equals(engine, rebuild(chain.record, up_to=after))
        log.kills.append((moment, before, after))
    process = spawn_indexer(chain, db_url, workdir / "final", once=True, batch_blocks=1_000)
    assert process.wait(timeout=120) == 0, (workdir / "final" / "stderr").read_text()[-2000:]
    assert read_cursor(engine) == head
    check_cursor_matches_rows(engine, chain, head)
    assert_mirror_equals(engine, chain.reference)
    engine.dispose()
    log.seconds = time.monotonic() - started
    return log


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(1200)  # ~2.5 min on an idle 2-core machine, far longer when other suites share it
def test_sigkilled_indexer_converges_to_the_chain_on_sqlite_and_postgresql(crash_chain: CrashChain, postgres: PostgresCluster, tmp_path: Path, forkserver: ForkServer, test_rng: random.Random) -> None:  # fmt: skip
    """Both backends at once, one thread each."""
    urls = {"sqlite": f"sqlite:///{tmp_path / 'crash.db'}", "postgresql": postgres.create_database(unique_name("crash"))}
    kill_seed = test_rng.randrange(2**32)  # from the run's seed: where each kill lands
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        futures = {
            backend: pool.submit(kill_repeatedly, crash_chain, backend, url, tmp_path / backend, random.Random(f"{kill_seed}-{backend}"), forkserver)
            for backend, url in urls.items()
        }
        logs = {backend: future.result() for backend, future in futures.items()}
    for log in logs.values():
        mid_catch_up = [after for _moment, _before, after in log.kills if after is not None and after < crash_chain.reference.head]
        assert len(mid_catch_up) >= KILLS - 5, f"{log.backend}: only {len(mid_catch_up)} of {KILLS} kills landed before the cursor reached the head"
        print(f"{log.backend}: {KILLS} kills {dict(Counter(m for m, _, _ in log.kills))}, the last at block {log.kills[-1][2]} of {crash_chain.reference.head}, {log.refusals} restarts refused by the lock, {log.seconds:.0f}s")  # fmt: skip


def test_second_indexer_on_the_same_database_refuses_to_start(crash_chain: CrashChain, db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    first = spawn_indexer(crash_chain, db_url, tmp_path / "first", batch_blocks=50)
    try:
        deadline = time.monotonic() + 60
        while read_cursor(engine) is None:  # its state row exists: it holds the lock and has migrated
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first" / "stderr").read_text()
            time.sleep(0.01)
        second = spawn_indexer(crash_chain, db_url, tmp_path / "second")
        assert second.wait(timeout=60) == 1
        err = (tmp_path / "second" / "stderr").read_text()
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("partledger: error: another indexer holds"), err
        assert first.poll() is None, "the first indexer must keep running"
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=60)
    assert code == 0, (tmp_path / "first" / "stderr").read_text()[-2000:]
    assert "indexed chain" in (tmp_path / "first" / "stdout").read_text()
    engine.dispose()
