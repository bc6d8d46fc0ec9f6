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
from sqlalchemy.exc import OperationalError

from partledger.errors import PartLedgerError


class LockHeld(PartLedgerError):
    """Another process holds this lock."""


class ExclusiveLock:
    """Held from construction until release() or process exit; raises `error` (a LockHeld) when taken."""

    def __init__(self, engine: Engine, name: str, *, error: type[LockHeld] = LockHeld) -> None:
        self._file: int | None = None
        self._connection: Connection | None = None
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

    def release(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._connection is not None:
            # The advisory lock belongs to the server session: unlock it, or the pooled connection keeps it.
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            self._connection.commit()
            self._connection.close()
            self._connection = None
