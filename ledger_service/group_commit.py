"""Group commit: the writes of concurrent requests in one SQL transaction, each in a savepoint of its own.

The first request to arrive writes (the leader); requests that arrive meanwhile queue, and the leader writes each
queued group in turn until none is left, waking every request of a group once it commits. Requests of one process
thus never wait for SQLite's write lock in its busy handler (which sleeps up to 100 ms a try, holding a pooled
connection), nor hand the lock to one another through the GIL, and a durable commit (synchronous=FULL) is paid once a
group. A request whose write fails (a unique constraint: the same Idempotency-Key or request twice at once) is rolled
back to its savepoint and fails alone; the others of its group commit. A failed commit fails every request of the
group. Used by the command outbox (POST /v1/parts/...) and the relay desk (POST /v1/relay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")


class GroupCommit:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()  # guards _queue and _writing
        self._queue: list[_Ticket[Any]] = []
        self._writing = False

    def run(self, write: Callable[[Connection], T]) -> T:
        """Returns what `write(conn)` returned once its transaction committed; raises what it, or the commit, raised."""
        ticket: _Ticket[T] = _Ticket(write)
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
                self._commit(group)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    def _commit(self, group: list[_Ticket[Any]]) -> None:
        try:
            with self.engine.begin() as conn:
                for ticket in group:
                    try:
                        with conn.begin_nested():
                            ticket.result = ticket.write(conn)
                    except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
                        ticket.error = exc
        except Exception as exc:  # noqa: BLE001 - every request of the group fails with it (the leader's too), and the leader goes on
            for ticket in group:
                ticket.error = ticket.error or exc
        finally:
            for ticket in group:
                ticket.done.set()


@dataclass
class _Ticket(Generic[T]):
    write: Callable[[Connection], T]
    result: T | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
