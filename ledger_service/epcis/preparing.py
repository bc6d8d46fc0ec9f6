"""A capture job's first pass over its document, the part that needs no ledger state: the GS1 schema, each event's
canonical hash, its EPCs, parties and the operation it maps to (capture.prepare_event). It is most of a job's time
in Python (about 60 us an event), and the service's threads share one interpreter: the submitter signing, the
batches being hashed and the next job storing its events all waited on it. So a large document is prepared in a
process of its own (`epcis_prepare_processes`), on a core the service's interpreter does not use, and only the
results come back (pickled: 8 us an event to read).

The process starts once the service is used for EPCIS (its first capture job, or the capture worker's warm-up
after an EPCIS read; after it died, with the next large document), not with the service: it takes 1.3-2 s of CPU to
import what it needs, which an API worker with no EPCIS client would pay for nothing. A document whose job starts
meanwhile is prepared in the job's thread, as small documents always are (`epcis_prepare_in_process_below` events):
waiting for the process cost the first job more than it saved.
A worker that dies (killed, out of memory) is replaced at the next large document; the job it was preparing falls
back to its own thread. Nothing is lost either way: what a job stores is decided after this pass, in the service.

With more than one process, a large document is cut into a slice for each, and the job's thread only reads them back
(before, a document went to one worker however many there were). On this 2-core machine two processes did not make
benchmarks/epcis_bench.py's capture faster (3,384-3,476 events/s against about 3,400 with one; the cores were
already busy with the service, the node and the indexer): the default stays one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import time
import zlib
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import orjson

from ledger_service.epcis.capture import EventError, Prepared, prepare_event
from ledger_service.epcis.identities import Directory
from partledger.collector import collector_paused
from partledger.epcis.schema import validate_document

log = logging.getLogger("partledger.service.epcis")


@dataclass
class PreparedDocument:
    """A document's events prepared: those that passed (in document order), the errors of the others by event index,
    each event's eventID as given (None when it had none: the error list shows it), and the process that did it."""

    todo: list[Prepared]
    errors: dict[int, tuple[str, str]]
    event_ids: list[str | None]
    pid: int


def prepare_document(compressed: bytes, directory: Directory, start: int = 0, stop: int | None = None) -> PreparedDocument:
    """The whole pass over a stored capture document (zlib-compressed JSON, as the job row keeps it); or over its
    events[start:stop] only, validated as a document of their own, with indexes and error paths as in the whole."""
    document = orjson.loads(zlib.decompress(compressed))
    events = document["epcisBody"]["eventList"]
    if start or stop is not None:
        events = events[start:stop]
        document = {**document, "epcisBody": {**document["epcisBody"], "eventList": events}}
    context = document.get("@context")
    errors: dict[int, tuple[str, str]] = {}
    for problem in validate_document(document):
        if problem.event_index is not None:
            path = _in_whole(problem.path, problem.event_index, start)
            errors.setdefault(start + problem.event_index, ("invalid_event", f"{path}: {problem.message}"))
    todo: list[Prepared] = []
    for index, raw in enumerate(events, start):
        if index in errors:
            continue
        try:
            todo.append(prepare_event(index, raw, context=context, directory=directory))
        except EventError as exc:
            errors[index] = (exc.code, str(exc))
    event_ids = [raw.get("eventID") if isinstance(raw, dict) and isinstance(raw.get("eventID"), str) else None for raw in events]
    return PreparedDocument(todo=todo, errors=errors, event_ids=event_ids, pid=os.getpid())


def prepare_pickled(compressed: bytes, directory: Directory, start: int = 0, stop: int | None = None) -> bytes:
    """prepare_document in the worker process, its result pickled there: the service reads it back with the
    collector paused (read_prepared), not in the pool's own thread with the collector running. Measured apart, in a
    process of a small heap, for 20,000 events: reading back 0.69 s with the collector running, 0.18 s paused;
    preparing and pickling 2.62 s, 2.06 s paused. (A service whose collector waits for 50,000 allocations a young
    collection pays less than the first figure; end to end the change was inside the benchmark's noise.)"""
    with collector_paused():
        return pickle.dumps(prepare_document(compressed, directory, start, stop), protocol=pickle.HIGHEST_PROTOCOL)


def read_prepared(pickled: bytes) -> PreparedDocument:
    with collector_paused():
        return pickle.loads(pickled)


def _in_whole(path: str, index: int, start: int) -> str:
    """A problem's JSON Pointer into events[start:] as a document, pointing into the whole document."""
    marker = f"/eventList/{index}"
    at = path.find(marker)
    rest = path[at + len(marker) :]
    if not start or at < 0 or (rest and not rest.startswith("/")):
        return path
    return f"{path[:at]}/eventList/{index + start}{rest}"


def _joined(*parts: PreparedDocument) -> PreparedDocument:
    """Slices of one document prepared apart (in document order), as one; its pid is the last slice's."""
    return PreparedDocument(
        todo=[p for part in parts for p in part.todo], errors={k: v for part in parts for k, v in part.errors.items()},
        event_ids=[e for part in parts for e in part.event_ids], pid=parts[-1].pid,
    )  # fmt: skip


def _slices(count: int, pieces: int) -> list[tuple[int, int | None]]:
    """events[start:stop] bounds cutting `count` events into up to `pieces` slices of nearly equal size; the last
    one open-ended (stop None), so that it takes whatever the document holds past `count`."""
    pieces = max(1, min(pieces, count))
    cuts = [count * k // pieces for k in range(pieces + 1)]
    return [(cuts[k], cuts[k + 1] if k < pieces - 1 else None) for k in range(pieces)]


def _ready() -> int:
    """The worker's first task: nothing but proof that it has started and imported this module."""
    return os.getpid()


PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """The worker's initializer: it ends once the service process that started it is gone. A service killed
    (SIGKILL, out of memory) cannot close its pool, and its worker, orphaned, waited for work forever (112 MB each,
    found piling up after the relay benchmark's stopped services)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Preparer:
    """Prepares documents of at least `in_process_below` events in up to `processes` worker processes once they are
    up; everything else, and everything while they start, in the calling thread."""

    def __init__(self, *, processes: int, in_process_below: int) -> None:
        self.processes = processes
        self.in_process_below = in_process_below
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[int] | None = None  # the pool's first task: done once a worker is up
        self.by_workers = 0  # documents the workers prepared

    def prepare(self, compressed: bytes, event_count: int, directory: Directory, *, share: bool = False) -> PreparedDocument:
        """`share`: the calling thread has nothing else to do meanwhile (its job checks next, and no job before it
        is checking): it prepares the first half of the events while the worker prepares the rest."""
        if self._large(event_count):
            pool = self._pool_if_up()
            if pool is not None:
                try:
                    if self.processes > 1:  # a slice for each worker; the service's interpreter only reads them back
                        bounds = _slices(event_count, self.processes)
                        theirs = [pool.submit(prepare_pickled, compressed, directory, start, stop) for start, stop in bounds]
                        done = _joined(*(read_prepared(future.result()) for future in theirs))
                    elif share and event_count >= 2:
                        half = event_count // 2
                        theirs_rest = pool.submit(prepare_pickled, compressed, directory, half)
                        with collector_paused():
                            mine = prepare_document(compressed, directory, 0, half)
                        done = _joined(mine, read_prepared(theirs_rest.result()))
                    else:
                        done = read_prepared(pool.submit(prepare_pickled, compressed, directory).result())
                    self.by_workers += 1
                    return done
                except BrokenProcessPool:
                    log.warning("the EPCIS preparing process died: this document is prepared in the service, and a new process starts")
                    self._discard(pool)
                except (CancelledError, RuntimeError):  # closed meanwhile (the service stopping): prepared here, as before
                    pass
        with collector_paused():
            return prepare_document(compressed, directory)

    def start(self) -> None:
        """Starts the worker processes now, if there are to be any (a large document starts them otherwise)."""
        if self.processes > 0:
            self._pool_if_up()

    def worker_up_for(self, event_count: int) -> bool:
        """Whether a document of `event_count` events would be prepared by a worker that is up now."""
        if not self._large(event_count):
            return False
        with self._lock:
            started = self._started
        return started is not None and started.done() and started.exception() is None

    def _large(self, event_count: int) -> bool:
        return self.processes > 0 and event_count >= self.in_process_below

    def wait_until_up(self, timeout: float) -> bool:
        self.start()
        started = self._started
        if started is None:
            return False
        try:
            started.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - a worker that could not start: not up
            return False
        return True

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._started = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _pool_if_up(self) -> ProcessPoolExecutor | None:
        """The pool when a worker has started; else None, after starting one if none is starting."""
        with self._lock:
            if self._pool is None:
                # spawn: a fork of this multi-threaded process could copy a lock another thread holds
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),)
                )  # fmt: skip
                # One task a worker: the pool spawns a process for each task that finds no idle one, and a slice
                # handed to a worker that is still starting waits for its imports (1.3-2 s).
                self._started = self._pool.submit(_ready)
                for _ in range(self.processes - 1):
                    self._pool.submit(_ready)
            pool, started = self._pool, self._started
        assert started is not None
        try:
            started.result(timeout=0)
        except TimeoutError:
            return None  # still starting
        except Exception:  # noqa: BLE001 - it could not start: the next large document tries again
            self._discard(pool)
            return None
        return pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool, self._started = None, None
        pool.shutdown(wait=False, cancel_futures=True)


def preparer_for(settings: Any) -> Preparer:
    return Preparer(processes=settings.epcis_prepare_processes, in_process_below=settings.epcis_prepare_in_process_below)
