"""SQL engines for every stage: SQLite in WAL mode (the embedded default) or PostgreSQL 15 (the scale target).

URLs: ``sqlite:///path/to/file.db`` or ``postgresql+psycopg://user@host:port/dbname``. Nothing here creates tables:
each stage owns its tables and their Alembic migrations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import orjson
from sqlalchemy import ARRAY, LargeBinary, Text, and_, any_, bindparam, cast, event, func, literal_column, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import create_engine

from partledger.errors import ConfigError

# Each SQLite connection reads the file through a shared memory map of up to this much (the OS's page cache, mapped;
# not a copy per connection). A read then costs a memory access instead of a read() into the connection's own 2 MiB
# page cache, which a lot's history (15,000 rows and as many part lookups over a 120 MB mirror) overflowed: that
# query's SQL went from 142 to 109 ms (benchmarks/epcis_bench.py's lot). Writes still go through the WAL.
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
SQLITE_BUSY_TIMEOUT_MS = 30_000
POLL_SECONDS = 0.001  # how often a polled writer (write_transaction(polled=True)) tries SQLite's write lock


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def one_of(conn: Connection, column: Any, values: list[Any]) -> Any:
    """`column IN values` for a query on `conn`: on PostgreSQL `column = ANY(:values)`, one bound array. psycopg
    rewrites the placeholders of a statement with more than 50 parameters on every execution (it caches only smaller
    ones), and a 900-id IN list made that 36-44 % of an API worker's Python time during bulk shipments (py-spy --gil,
    benchmarks.e2e --postgres). Byte strings (part ids) go as the array's text, hex-escaped here and cast by the
    server: psycopg escapes a list of bytes element by element with regular expressions, and for 900 ids that was a
    third of the worker's Python time again. The client's CPU for a 900-id lookup of 900 rows, over several runs: IN
    list 5.4-7.5 ms, an array of bytes 4.7-6.7 ms, its text 1.1-1.4 ms (reading the 900 rows alone 0.7-0.8 ms).

    SQLite has no arrays: the values go as one JSON array read by json_each (byte strings as hex, turned back by
    partledger_unhex, which make_engine's connections have). SQLAlchemy expands an IN list into a parameter per
    value at every execution, and during a large EPCIS capture that was 7.7 % of the service's Python time
    (py-spy --gil). 20,000 ids looked up by text: 36 ms in 900-id IN lists, 20.7 ms through json_each; by 32-byte
    id 54 ms and 34 ms. Values of mixed types, or text UTF-8 cannot carry, stay an IN list (which the driver
    refuses as before); callers keep lists under 999 for that."""
    if conn.dialect.name != "postgresql":
        values = list(values)
        source = _json_values(values)
        if source is None:
            return column.in_(values)
        return column.in_(select(source[0]).select_from(func.json_each(bindparam(None, source[1], type_=Text()))))
    if isinstance(column.type, LargeBinary):
        text = "{" + ",".join("\\\\x" + bytes(value).hex() for value in values) + "}"
        return column == any_(cast(bindparam(None, text, type_=Text()), ARRAY(column.type)))
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def _json_values(values: list[Any]) -> tuple[Any, str] | None:
    """For SQLite: what json_each's `value` is taken as, and the JSON array; None when the values are not all text,
    all integers or all byte strings."""
    if not values:
        return None
    kind = type(values[0])
    if kind not in (str, int, bytes) or any(type(value) is not kind for value in values):
        return None
    if kind is bytes:
        return func.partledger_unhex(literal_column("value")), "[" + ",".join('"' + value.hex() + '"' for value in values) + "]"
    try:
        return literal_column("value"), orjson.dumps(values).decode()
    except TypeError:  # a lone surrogate, which UTF-8 cannot carry
        return None


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
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()
    dbapi_connection.create_function("partledger_unhex", 1, _unhex, deterministic=True)  # one_of's byte strings


def _unhex(value: Any) -> bytes | None:
    return bytes.fromhex(value) if isinstance(value, str) else None


def _begin_sqlite(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get("sqlite_polled"):
        _begin_polled(connection)
        return
    if options.get("sqlite_immediate"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # may fail ("database is locked"): as SQLAlchemy's error
        return
    # A deferred BEGIN takes no lock and cannot fail for one: sent to the driver directly, as SQLAlchemy's way costs
    # 40 us, about what a read by primary key costs, and every read transaction of the service begins with one.
    connection.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]


def _begin_polled(connection: Connection) -> None:
    """BEGIN IMMEDIATE, tried every POLL_SECONDS up to the busy timeout, instead of waiting in SQLite's busy handler.
    That handler sleeps longer each try, up to 100 ms (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms), so under a
    stream of short transactions from other connections a writer in it finds the lock free only by chance at one of
    its few wake-ups. Gives up as the busy handler does: OperationalError "database is locked"."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(POLL_SECONDS)
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


@contextmanager
def write_transaction(engine: Engine, *, polled: bool = False) -> Iterator[Connection]:
    """A transaction that reads, then writes what it read decided. On SQLite it takes the write lock at BEGIN (BEGIN
    IMMEDIATE, waiting up to the busy timeout): a deferred transaction whose snapshot another connection's commit has
    passed cannot become a writer, and SQLite fails it at once ("database is locked") instead of waiting. Elsewhere
    it is engine.begin(). `polled`: the lock is polled for every millisecond (_begin_polled), for a writer on the
    critical path that shares the file with a stream of other writers (the relayer beside the API's posts)."""
    with engine.connect().execution_options(sqlite_immediate=True, sqlite_polled=polled) as conn, conn.begin():
        yield conn


COPY_UPDATE_ROWS = 64  # on PostgreSQL, an update of this many rows or more goes through a COPYed temporary table


class BulkWriter:
    """executemany straight through the driver, skipping SQLAlchemy's per-parameter processing (the hot path of
    catching up); on PostgreSQL, `bulk` inserts go through COPY."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._mark = "%s" if self._postgres else "?"
        self._temporary = 0

    def insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        if rows:
            columns = tuple(rows[0])
            self.insert_rows(table, columns, [tuple(row[column] for column in columns) for row in rows])

    def insert_rows(self, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Inserts tuples in `columns` order: COPY on PostgreSQL, executemany on SQLite."""
        if not rows:
            return
        if self._postgres:
            cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join([self._mark] * len(columns))
        self._conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", rows)

    def update(self, table: Any, key: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """Sets `columns` of each row found by `key` (one row per key: a later one wins). On PostgreSQL a large
        update is one statement joined to the rows COPYed into a temporary table: an UPDATE per row cost 0.11 ms of
        the server's time each (59,000 of them in 25 s of the bulk benchmark: PostgreSQL's largest consumer)."""
        if not rows:
            return
        if self._postgres and len(rows) >= COPY_UPDATE_ROWS:
            self._update_joined(table, key, columns, list({row[key]: row for row in rows}.values()))
            return
        assignments = ", ".join(f"{column} = {self._mark}" for column in columns)
        values = [tuple(row[column] for column in columns) + (row[key],) for row in rows]
        self._conn.exec_driver_sql(f"UPDATE {table.name} SET {assignments} WHERE {key} = {self._mark}", values)

    def close_open(self, table: Any, key: str, open_column: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """Sets `columns` on the open row (`open_column` NULL) of each `key` (rows name it as "key_<key>"): a part's one
        shipment in transit, or its one installation not removed. A key named twice: the first row closes it, as one
        UPDATE per row in order would. On PostgreSQL a large one is joined to a COPYed temporary table, as in `update`
        (closing a shipment by an UPDATE per part took 0.42 ms of the server's time each, a third of it, in the bulk
        benchmark: it walks the part's past shipments)."""
        if not rows:
            return
        if self._postgres and len(rows) >= COPY_UPDATE_ROWS:
            first: dict[Any, dict[str, Any]] = {}
            for row in rows:
                first.setdefault(row[f"key_{key}"], {key: row[f"key_{key}"], **{column: row[column] for column in columns}})
            self._update_joined(table, key, columns, list(first.values()), open_column=open_column)
            return
        self._conn.execute(
            update(table).where(and_(table.c[key] == bindparam(f"key_{key}"), table.c[open_column].is_(None))).values(**{column: bindparam(column) for column in columns}),
            rows,
        )

    def _update_joined(self, table: Any, key: str, columns: tuple[str, ...], rows: list[dict[str, Any]], *, open_column: str | None = None) -> None:
        self._temporary += 1
        staged = f"_staged_{table.name}_{self._temporary}"
        listed = ", ".join((key, *columns))
        cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(f"CREATE TEMPORARY TABLE {staged} ON COMMIT DROP AS SELECT {listed} FROM {table.name} WITH NO DATA")
        with cursor.copy(f"COPY {staged} ({listed}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[column] for column in (key, *columns)))
        assignments = ", ".join(f"{column} = staged.{column}" for column in columns)
        still_open = f" AND {table.name}.{open_column} IS NULL" if open_column else ""
        cursor.execute(f"UPDATE {table.name} SET {assignments} FROM {staged} AS staged WHERE {table.name}.{key} = staged.{key}{still_open}")
        cursor.execute(f"DROP TABLE {staged}")
