"""partledger.db.write_transaction(polled=True) on a real SQLite file: its write lock is polled for, not waited for in
SQLite's busy handler. It gets the lock soon after another connection lets it go, writes as any transaction does
(rolled back on an error), gives up with SQLite's own "database is locked" after the busy timeout, and leaves the
connection's busy timeout as it found it. On PostgreSQL it is an ordinary transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from partledger import db
from partledger.db import make_engine, write_transaction


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'polled.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    yield engine
    engine.dispose()


def hold_write_lock(path: str, held: threading.Event, release: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    held.set()
    release.wait(30)
    other.execute("COMMIT")
    other.close()


def test_a_polled_writer_takes_the_lock_once_another_connection_lets_it_go(engine, tmp_path):
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(str(tmp_path / "polled.db"), held, release))
    holder.start()
    assert held.wait(10)
    written = threading.Event()

    def write() -> None:
        with write_transaction(engine, polled=True) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not written.wait(0.3)  # waiting for the lock, not past it
    release.set()
    holder.join(10)
    assert written.wait(10)
    writer.join(10)
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [1, 2]
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.SQLITE_BUSY_TIMEOUT_MS  # as it found it


def test_a_polled_writer_gives_up_with_sqlites_error_after_the_busy_timeout(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(str(tmp_path / "polled.db"), held, release))
    holder.start()
    assert held.wait(10)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            with write_transaction(engine, polled=True) as conn:
                conn.execute(text("INSERT INTO t VALUES (3)"))
        assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        holder.join(10)
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT v FROM t")).scalars()) == [1]


def test_a_polled_transaction_rolls_back_on_an_error_and_the_connection_is_usable_after(engine):
    with pytest.raises(RuntimeError):
        with write_transaction(engine, polled=True) as conn:
            conn.execute(text("INSERT INTO t VALUES (4)"))
            raise RuntimeError("the caller's own failure")
    with write_transaction(engine, polled=True) as conn:
        conn.execute(text("INSERT INTO t VALUES (5)"))
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT v FROM t")).scalars()) == [5]


def test_a_polled_transaction_writes_on_both_databases(db_url):
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE polled_t (v INTEGER)"))
        with write_transaction(engine, polled=True) as conn:
            conn.execute(text("INSERT INTO polled_t VALUES (6)"))
        with engine.connect() as conn:
            assert list(conn.execute(text("SELECT v FROM polled_t")).scalars()) == [6]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE polled_t"))
        engine.dispose()
