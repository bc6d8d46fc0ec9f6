"""One process at a time: an exclusive lock per database and role (the indexer, the submitter).

SQLite: an flock on a file beside the database; PostgreSQL: a session advisory lock on a dedicated connection.
Both are released by the operating system or the server when the holding process dies, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from partledger.errors import PartLedgerError


class LockHeld(PartLedgerError):
    """Another process holds this lock."""


class ExclusiveLock:
    """Held from construction until release() or process exit; raises `error` (a LockHeld) when taken."""

    def __init__(self, engine: Engine, name: str, *, error: type[LockHeld] = LockHeld) -> None:
        self._file: int | None = None
        self._connection: Connection | None = None
        self._engine, self._name, self._error = engine, name, error
        self._held = False
        url = make_url(str(engine.url))
        if url.get_backend_name() == "sqlite":
            path = Path(url.database or "")
            lock_path = path.with_name(f"{path.name}.{name}-lock")
            self._file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._file)
                self._file = None
                raise error(f"another {name} holds {lock_path}; one {name} per database") from None
        else:
            key = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "big", signed=True)
            self._key = key
            self._connection = engine.connect()
            try:
                held = self._connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
                self._connection.commit()
            except OperationalError:
                self._connection.close()
                raise
            if not held:
                self._connection.close()
                self._connection = None
                raise error(f"another {name} holds this database's advisory lock; one {name} per database")
            self._held = True

    def ensure(self) -> None:
        """Checks that the lock is still held, and takes it again when its PostgreSQL session was lost (a server
        restart ends the session and frees the lock): raises `error` if another process took it meanwhile."""
        if self._file is not None or not self._held:
            return  # an flock lives as long as this process; a released lock is not taken again
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1")).scalar()
                self._connection.commit()
                return
            except (OperationalError, InterfaceError):
                self._connection.invalidate()
                self._connection.close()
                self._connection = None
        connection = self._engine.connect()
        try:
            held = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            connection.commit()
        except OperationalError:
            connection.close()
            raise
        if not held:
            connection.close()
            raise self._error(f"another {self._name} took this database's advisory lock while the connection was lost; one {self._name} per database")
        self._connection = connection

    def release(self) -> None:
        self._held = False
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._connection is not None:
            # The advisory lock belongs to the server session: unlock it, or the pooled connection keeps it.
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                self._connection.commit()
            except (OperationalError, InterfaceError):
                self._connection.invalidate()  # the session is gone, and its lock with it
            self._connection.close()
            self._connection = None
