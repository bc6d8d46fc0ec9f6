"""SQL engines for every stage: SQLite in WAL mode (the embedded default) or PostgreSQL 15 (the scale target).

URLs: ``sqlite:///path/to/file.db`` or ``postgresql+psycopg://user@host:port/dbname``. Nothing here creates tables:
each stage owns its tables and their Alembic migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import create_engine

from partledger.errors import ConfigError


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, sqlite_cache_mib: Optional[int] = None, durable: bool = False, **options: Any) -> Engine:
    """An engine for `url`; SQLite connections get WAL, a busy timeout and foreign keys, PostgreSQL a pool.
    sqlite_cache_mib: each SQLite connection's page cache (SQLite's default is 2 MiB), for a writer that updates
    B-trees all over the file (the indexer's random 32-byte part ids).
    durable: SQLite's synchronous=FULL, every commit on disk before it returns, for what cannot be rebuilt (the
    service's outbox: a 202 must survive a power cut). Without it, synchronous=NORMAL: in WAL mode a commit survives
    the process's crash, and a power cut may lose the last commits, which the mirror rebuilds from the chain."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and ValueError for bad URLs
        raise ConfigError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            # A connection is a file opened and four PRAGMAs: SQLAlchemy's default pool (5, and 10 more closed on
            # return) reopened them all the time under the API's 40 worker threads.
            options = {"pool_size": 20, "max_overflow": 20, **options}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **options)
        event.listen(engine, "connect", _configure_sqlite)
        if durable:
            event.listen(engine, "connect", lambda connection, _record: connection.execute("PRAGMA synchronous=FULL"))
        if sqlite_cache_mib is not None:
            event.listen(engine, "connect", lambda connection, _record: connection.execute(f"PRAGMA cache_size=-{int(sqlite_cache_mib) * 1024}"))
        # pysqlite's own transaction handling defers BEGIN; take control so that BEGIN IMMEDIATE works.
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, **{"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10, **options})
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql+psycopg://...")


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver: SQLAlchemy's "begin" hook issues BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("sqlite_immediate") else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads, then writes what it read decided. On SQLite it takes the write lock at BEGIN (BEGIN
    IMMEDIATE, waiting up to the busy timeout): a deferred transaction whose snapshot another connection's commit has
    passed cannot become a writer, and SQLite fails it at once ("database is locked") instead of waiting. Elsewhere
    it is engine.begin()."""
    with engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
        yield conn
