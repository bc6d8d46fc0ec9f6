"""`partledger backup | restore`: the service's private tables to one portable file, and back into any database.

The service keeps what the chain cannot give back: API keys, idempotency records, the outbox (commands, their items,
signed transactions), encrypted clear VINs with their salts, document proposals, consumer scans with their flags and
batches, and the audit log. The indexer's mirror is not in a backup: `partledger index --rebuild` restores it from the
chain alone. Neither are the keys kept outside the database (the VIN key file, the site keystores): back them up
apart, as the dump holds VINs only encrypted under the VIN key.

The file is gzip'd JSON lines. The first line is a header: format and version, the source's Alembic revision of the
service tables, each table's columns (binary ones written as hex) and row count, and the SHA-256 of the body.
Every other line is one row, `[table, [values in the header's column order]]`, tables in dependency order, rows in
primary-key order. A backup is read in one snapshot (one transaction; REPEATABLE READ on PostgreSQL), so it is
consistent while the service runs.

`restore` checks the whole file first (gzip stream, header, every line, row counts, checksum), so a truncated or
corrupted file is refused before anything is written. It then migrates the target to the backup's revision, writes
every row in one transaction, moves PostgreSQL's id sequences past the restored ids, and migrates to the current
revision. A target whose service tables hold rows is refused unless --force (which empties them first). SQLite and
PostgreSQL restore into each other.

SQLAlchemy, Alembic and the service's tables are imported inside the functions that use them, so that
`partledger --help` starts without them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from partledger.errors import PartLedgerError

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection, Engine

FORMAT = "partledger-service-backup"
VERSION = 1
INSERT_CHUNK = 500


class BackupError(PartLedgerError):
    """A backup that cannot be written, or a file that cannot be restored (corrupted, truncated, wrong target)."""


def register_backup_commands(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)


def backup_command(
    db: Annotated[str, typer.Option(help="the service's database URL (PARTLEDGER_SERVICE_DB_URL)")],
    out: Annotated[Path, typer.Option(help="the backup file to write (gzip'd JSON lines)")],
) -> None:
    """Write the service's private tables (API keys, outbox, encrypted VINs, scans, audit log, ...) to one file."""
    from partledger.db import make_engine

    header = backup(make_engine(db), out)
    rows = sum(entry["rows"] for entry in header["tables"])
    typer.echo(f"backed up {rows} rows of {len(header['tables'])} tables (revision {header['alembic_revision']}) to {out}, body sha256 {header['body_sha256']}")


def restore_command(
    db: Annotated[str, typer.Option(help="the database URL to restore into (empty, or --force)")],
    source: Annotated[Path, typer.Option("--from", help="a file written by `partledger backup`")],
    force: Annotated[bool, typer.Option("--force", help="empty the service tables of a non-empty database first")] = False,
) -> None:
    """Restore the service's private tables from a backup file, into a fresh SQLite or PostgreSQL database."""
    from partledger.db import make_engine

    header = restore(make_engine(db), source, force=force)
    rows = sum(entry["rows"] for entry in header["tables"])
    typer.echo(f"restored {rows} rows of {len(header['tables'])} tables (revision {header['alembic_revision']}) from {source}")


# --- backup ---------------------------------------------------------------------------------------------------


def _service_metadata() -> MetaData:
    from ledger_service import audit_tables, link_tables, notice_tables, scan_tables  # noqa: F401 - their tables join SERVICE_METADATA
    from ledger_service.epcis import tables as epcis_tables  # noqa: F401
    from ledger_service.notifications import tables as notification_tables  # noqa: F401
    from ledger_service.tables import SERVICE_METADATA

    return SERVICE_METADATA


def _existing_service_tables(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    present = set(inspect(conn).get_table_names())
    return [t.name for t in _service_metadata().sorted_tables if t.name in present]


def _revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect, text

    from ledger_service import migrate as service_migrate

    if service_migrate.VERSION_TABLE not in inspect(conn).get_table_names():
        return None
    return conn.execute(text(f"SELECT version_num FROM {service_migrate.VERSION_TABLE}")).scalar()


def _kind(column_type: Any) -> str:
    """How a column's values are written: binary as hex; booleans as JSON booleans (SQLite hands out 0 and 1)."""
    from sqlalchemy.types import Boolean, LargeBinary

    if isinstance(column_type, LargeBinary):
        return "binary"
    return "boolean" if isinstance(column_type, Boolean) else "value"


def _encode(value: Any, kind: str) -> Any:
    if value is None or kind == "value":
        return value
    return bytes(value).hex() if kind == "binary" else bool(value)


def _decode(value: Any, kind: str) -> Any:
    return bytes.fromhex(value) if kind == "binary" and value is not None else value


def backup(engine: Engine, out: Path) -> dict[str, Any]:
    """Dumps every service table in one snapshot; returns the header written."""
    from sqlalchemy import column, inspect, select, table
    from sqlalchemy.exc import SQLAlchemyError

    from ledger_service import migrate as service_migrate

    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin(), tempfile.TemporaryFile() as body:
                revision = _revision(conn)
                if revision is None:
                    raise BackupError(f"{engine.url.render_as_string(hide_password=True)} holds no PartLedger service tables (no {service_migrate.VERSION_TABLE})")
                digest = hashlib.sha256()
                tables = []
                inspector = inspect(conn)
                for name in _existing_service_tables(conn):
                    reflected = inspector.get_columns(name)
                    columns = [{"name": c["name"], "kind": _kind(c["type"])} for c in reflected]
                    kinds = [c["kind"] for c in columns]
                    keys = inspector.get_pk_constraint(name)["constrained_columns"] or [columns[0]["name"]]
                    target = table(name, *(column(c["name"]) for c in columns))
                    rows = 0
                    result = conn.execution_options(yield_per=1000).execute(select(target).order_by(*(target.c[k] for k in keys)))
                    for row in result:
                        line = json.dumps([name, [_encode(v, k) for v, k in zip(row, kinds)]], separators=(",", ":")).encode() + b"\n"
                        digest.update(line)
                        body.write(line)
                        rows += 1
                    tables.append({"name": name, "columns": columns, "rows": rows})
                header = {
                    "format": FORMAT,
                    "version": VERSION,
                    "alembic_revision": revision,
                    "source_dialect": conn.dialect.name,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "tables": tables,
                    "body_sha256": digest.hexdigest(),
                }
                body.seek(0)
                _write_atomically(out, header, body)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the service database: {_first_line(exc)}") from None
    return header


def _write_atomically(out: Path, header: dict[str, Any], body: IO[bytes]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:
            packed.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            while chunk := body.read(1 << 20):
                packed.write(chunk)
        os.chmod(partial, 0o600)  # API key hashes, encrypted VINs: not for every user of the machine
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from None


# --- restore --------------------------------------------------------------------------------------------------


def _lines(source: Path) -> Iterator[bytes]:
    """The file's lines, uncompressed; a damaged gzip stream becomes a BackupError naming the file."""
    try:
        with gzip.open(source, "rb") as packed:
            yield from packed
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise BackupError(f"cannot read the backup file {source}: {exc.strerror}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise BackupError(f"{source} is truncated or corrupted ({_first_line(exc)}); nothing was restored") from None


def read_header(source: Path) -> dict[str, Any]:
    lines = _lines(source)
    first = next(lines, b"")
    lines.close()
    try:
        header = json.loads(first)
        assert header["format"] == FORMAT and isinstance(header["tables"], list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise BackupError(f"{source} is not a PartLedger service backup (its header is missing or damaged)") from None
    if header.get("version") != VERSION:
        raise BackupError(f"{source} is a backup of format version {header.get('version')}; this partledger reads version {VERSION}")
    return header


def check_file(source: Path) -> dict[str, Any]:
    """Reads the whole file: every line parses and belongs to a table of the header with the right arity, the row
    counts and the body's SHA-256 match the header. Returns the header."""
    header = read_header(source)
    arity = {entry["name"]: len(entry["columns"]) for entry in header["tables"]}
    counts = dict.fromkeys(arity, 0)
    digest = hashlib.sha256()
    lines = _lines(source)
    next(lines)
    for number, line in enumerate(lines, start=2):
        digest.update(line)
        try:
            name, values = json.loads(line)
            assert len(values) == arity[name]
        except (ValueError, KeyError, TypeError, AssertionError):
            raise BackupError(f"{source} is corrupted: line {number} is not a row of the backup; nothing was restored") from None
        counts[name] += 1
    if digest.hexdigest() != header["body_sha256"]:
        raise BackupError(f"{source} is corrupted: its SHA-256 does not match its header; nothing was restored")
    short = [f"{name} {counts[name]}/{entry_rows}" for name, entry_rows in ((e["name"], e["rows"]) for e in header["tables"]) if counts[name] != entry_rows]
    if short:
        raise BackupError(f"{source} is truncated: rows found/expected {', '.join(short)}; nothing was restored")
    return header


def _rows_present(conn: Connection) -> dict[str, int]:
    from sqlalchemy import func, select, table

    present = {}
    for name in _existing_service_tables(conn):
        count = conn.execute(select(func.count()).select_from(table(name))).scalar()
        if count:
            present[name] = count
    return present


def restore(engine: Engine, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Restores a checked backup into `engine`'s database; returns the file's header."""
    from alembic.util.exc import CommandError
    from sqlalchemy import delete, table
    from sqlalchemy.exc import SQLAlchemyError

    from ledger_service import migrate as service_migrate
    from partledger import migrations

    header = check_file(source)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            present = _rows_present(conn)
        if present and not force:
            listed = ", ".join(f"{name} {count}" for name, count in present.items())
            raise BackupError(f"{shown} is not empty (rows: {listed}); restore into a fresh database, or use --force to replace them")
        try:
            migrations.upgrade(engine, service_migrate.SCRIPTS, header["alembic_revision"])
        except CommandError:
            raise BackupError(f"{source} is of service schema revision {header['alembic_revision']!r}, unknown to this partledger") from None
        with engine.begin() as conn:
            existing = set(_existing_service_tables(conn))
            missing = [entry["name"] for entry in header["tables"] if entry["name"] not in existing]
            if missing:
                raise BackupError(f"{shown} lacks the tables {', '.join(missing)} after migrating to revision {header['alembic_revision']}")
            for name in reversed([t.name for t in _service_metadata().sorted_tables if t.name in existing]):
                conn.execute(delete(table(name)))
            _insert_rows(conn, source, header)
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn, header)
        service_migrate.upgrade(engine)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot restore into {shown}: {_first_line(exc)}") from None
    return header


def _insert_rows(conn: Connection, source: Path, header: dict[str, Any]) -> None:
    from sqlalchemy import column, table

    targets = {}
    kinds = {}
    for entry in header["tables"]:
        targets[entry["name"]] = table(entry["name"], *(column(c["name"]) for c in entry["columns"]))
        kinds[entry["name"]] = [(c["name"], c["kind"]) for c in entry["columns"]]
    pending: list[dict[str, Any]] = []
    pending_table: str | None = None

    def flush() -> None:
        if pending:
            conn.execute(targets[pending_table].insert(), pending)  # type: ignore[index]
            pending.clear()

    lines = _lines(source)
    next(lines)
    for line in lines:
        name, values = json.loads(line)
        if name != pending_table or len(pending) >= INSERT_CHUNK:
            flush()
            pending_table = name
        pending.append({key: _decode(value, kind) for (key, kind), value in zip(kinds[name], values)})
    flush()


def _advance_sequences(conn: Connection, header: dict[str, Any]) -> None:
    """Explicit ids do not move PostgreSQL's serial sequences: set each one past the largest restored id."""
    from sqlalchemy import text

    for entry in header["tables"]:
        for col in entry["columns"]:
            sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": entry["name"], "c": col["name"]}).scalar()
            if sequence is None:
                continue
            top = conn.execute(text(f'SELECT MAX("{col["name"]}") FROM "{entry["name"]}"')).scalar()
            conn.execute(text("SELECT setval(:s, :v, :called)"), {"s": sequence, "v": top or 1, "called": top is not None})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
