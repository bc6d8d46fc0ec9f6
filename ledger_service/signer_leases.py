"""Which site keys a submitter process signs with, when several submitters share one PostgreSQL outbox.

Each site key (the outbox's signer column) belongs to the process that holds a PostgreSQL session advisory lock on a
key derived from its address, taken with pg_try_advisory_lock on a connection the process keeps for nothing else.
Every submitter also holds a member lock, so that each can count the live submitters in pg_locks. At every look
(LOOK_SECONDS) a submitter takes free keys up to its fair share, ceil(keys / submitters), and lets go of keys above
it, so that a newcomer gets its share. When a process dies, its server session ends and its locks with it: the
others take its keys at their next look. The session's TCP keepalives are short, so that the server also ends the
session of a submitter whose host or network is gone, not only of one whose process died.

Nothing here signs. A key taken over is resumed from the outbox as a single submitter resumes after a restart: the
recorded transactions are followed and their recorded bytes sent again, and a nonce is signed again only once its
transaction can no longer land (the submitter's rules). The outbox itself fences two processes that both believe
they hold a key for a moment: an item is claimed by one SQL update, and a signer's nonce is unique in it.

SQLite has no such locks: there a single leader process runs the submitter (app.run_as_leader).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Collection

from eth_utils import keccak
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from partledger.db import make_engine

log = logging.getLogger("partledger.submitter")
LOOK_SECONDS = 1.0  # how often the keys are shared out again (a dead submitter's keys are taken within this)
MEMBER_CLASS = 0x504C5355  # the first half of the two-int advisory lock that marks a live submitter ("PLSU")
KEEPALIVE = {"tcp_keepalives_idle": 3, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 3}  # the server's side
CLIENT_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 3, "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": 6_000}
HELD_LOCKS = """
    SELECT l.classid, l.objid, l.objsubid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def signer_lock_key(signer: str) -> int:
    """The bigint advisory lock key of a site key's address (any letter case)."""
    return int.from_bytes(keccak(b"partledger.signer:" + signer.lower().encode())[:8], "big", signed=True)


def _lock_parts(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: (classid, objid), its high and low 32 bits, unsigned."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def signer_holders(engine: Engine, signers: Collection[str]) -> dict[str, str]:
    """For each of `signers` held by a submitter now, the holder's application name ("partledger-submitter
    HOST:PID"); keys nobody holds are left out."""
    wanted = {_lock_parts(signer_lock_key(signer)): signer for signer in signers}
    with engine.connect() as conn:
        rows = conn.execute(text(HELD_LOCKS)).all()
    return {wanted[(row.classid, row.objid)]: row.application_name for row in rows if row.objsubid == 1 and (row.classid, row.objid) in wanted}


class SignerLeases:
    """The site keys this process holds, on a PostgreSQL session of its own (opened at the first refresh)."""

    def __init__(self, url: str, *, look_seconds: float = LOOK_SECONDS) -> None:
        self.name = f"partledger-submitter {socket.gethostname()}:{os.getpid()}"
        self._url = url
        self._look_seconds = look_seconds
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._owned: set[str] = set()
        self._next_look = 0.0

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._owned)

    def refresh(self, signers: Collection[str]) -> frozenset[str]:
        """Checks that the session (and so every lock) is still there, and every LOOK_SECONDS shares the keys out
        again; returns the keys this process may sign with now. A lost session loses every key at once; a new
        one is opened and the keys are shared out again, or OperationalError is raised (the database is down)."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1")).scalar()
                self._connection.commit()
            except (OperationalError, InterfaceError):
                log.warning("the submitter's lock session was lost: it signs with none of its %d key(s) until it holds them again", len(self._owned))
                self._drop_session()
        if self._connection is None:
            self._open_session()
            self._next_look = 0.0
        if time.monotonic() >= self._next_look:
            self._share_out(set(signers))
            self._next_look = time.monotonic() + self._look_seconds
        return self.owned

    def release(self) -> None:
        """Lets go of every key (the session ends: its locks with it)."""
        if self._owned:
            log.info("letting go of %d site key(s)", len(self._owned))
        self._drop_session()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # --- the session ----------------------------------------------------------------------------------------------

    def _open_session(self) -> None:
        if self._engine is None:
            connect_args = {"application_name": self.name, "connect_timeout": 5, **CLIENT_KEEPALIVE}
            self._engine = make_engine(self._url, pool_size=1, max_overflow=0, connect_args=connect_args)
        connection = self._engine.connect()
        try:
            for setting, value in KEEPALIVE.items():  # no effect over a Unix socket, where the kernel tells the server at once
                connection.execute(text(f"SET {setting} = {int(value)}"))
            joined = connection.execute(text("SELECT pg_try_advisory_lock(:class, pg_backend_pid())"), {"class": MEMBER_CLASS}).scalar()
            connection.commit()
        except (OperationalError, InterfaceError):
            connection.invalidate()
            connection.close()
            raise
        assert joined, "a backend pid is unique among live sessions"
        self._connection = connection

    def _drop_session(self) -> None:
        """Ends the session: the server releases its locks. The connection is not pooled again (it carries them)."""
        self._owned.clear()
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None

    # --- sharing out ----------------------------------------------------------------------------------------------

    def _share_out(self, signers: set[str]) -> None:
        """Lets go of keys above the fair share (and of keys no longer among `signers`), then takes free keys up to
        it, in an order of its own so that submitters looking at the same time try different keys first."""
        assert self._connection is not None
        conn = self._connection
        rows = conn.execute(text(HELD_LOCKS)).all()
        conn.commit()
        members = max(1, sum(1 for row in rows if row.objsubid == 2 and row.classid == MEMBER_CLASS))
        share = math.ceil(len(signers) / members)
        for signer in sorted(self._owned - signers) + sorted(self._owned & signers)[share:]:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": signer_lock_key(signer)})
            conn.commit()
            self._owned.discard(signer)
            log.info("let go of site key %s (%d held, fair share %d of %d keys among %d submitters)", signer, len(self._owned), share, len(signers), members)
        held = {(row.classid, row.objid) for row in rows if row.objsubid == 1}
        free = [signer for signer in signers - self._owned if _lock_parts(signer_lock_key(signer)) not in held]
        free.sort(key=lambda signer: keccak((self.name + signer).encode()))
        for signer in free:
            if len(self._owned) >= share:
                break
            taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": signer_lock_key(signer)}).scalar()
            conn.commit()
            if taken:
                self._owned.add(signer)
                log.info("took site key %s (%d held, fair share %d of %d keys among %d submitters)", signer, len(self._owned), share, len(signers), members)
