"""Group commit: the writes of concurrent requests in one SQL transaction.

The first request to arrive writes (the leader); requests that arrive meanwhile queue, and the leader writes each
queued group in turn until none is left, waking every request of a group once it commits. Requests of one process
thus never wait for SQLite's write lock in its busy handler (which sleeps up to 100 ms a try, holding a pooled
connection), nor hand the lock to one another through the GIL, and a durable commit (synchronous=FULL) is paid once a
group. A group is written by one call of `flush` with every request's payload (the relay desk's: one INSERT of all
their rows). A group that breaks a unique constraint (the same Idempotency-Key or request twice at once) is written
again request by request, each in a transaction of its own, so that only the request in conflict fails. A failure of
anything else fails every request of the group. Used by the command outbox (POST /v1/parts/...) and the relay desk
(POST /v1/relay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

P = TypeVar("P")


class GroupCommit(Generic[P]):
    def __init__(self, engine: Engine, flush: Callable[[Connection, list[P]], None]) -> None:
        """`flush(conn, payloads)` writes the payloads of a group (or of one request) in the transaction `conn`."""
        self.engine = engine
        self.flush = flush
        self._lock = threading.Lock()  # guards _queue and _writing
        self._queue: list[_Ticket[P]] = []
        self._writing = False

    def write(self, payload: P) -> None:
        """Returns once `payload` is committed; raises what its write raised."""
        ticket = _Ticket(payload)
        with self._lock:
            self._queue.append(ticket)
            leader = not self._writing
            self._writing = True
        if leader:
            while True:
                with self._lock:
                    group, self._queue = self._queue, []
                    if not group:
                        self._writing = False
                        break
                self._write(group)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    def _write(self, group: list[_Ticket[P]]) -> None:
        try:
            try:
                self._commit([ticket.payload for ticket in group])
            except IntegrityError:
                if len(group) == 1:
                    raise
                for ticket in group:
                    try:
                        self._commit([ticket.payload])
                    except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
                        ticket.error = exc
        except Exception as exc:  # noqa: BLE001 - every request of the group fails with it (the leader's too), and the leader goes on
            for ticket in group:
                ticket.error = ticket.error or exc
        finally:
            for ticket in group:
                ticket.done.set()

    def _commit(self, payloads: list[P]) -> None:
        with self.engine.begin() as conn:
            self.flush(conn, payloads)


@dataclass
class _Ticket(Generic[P]):
    payload: Any
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
