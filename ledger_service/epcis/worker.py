"""The capture worker: runs capture jobs (ledger_service.epcis.capture) and anchors captured events in batches.

A thread of the service that holds site keys (beside the submitter). Jobs run one at a time per organisation (two
organisations' jobs run side by side), oldest first; a job left running by a crash starts again at the next start,
and its events captured before the crash are skipped as repeats (idempotency by eventID), while the commands they
made are waited for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from indexer.tables import Organisation
from ledger_service.auth import Principal
from ledger_service.deps import Services
from ledger_service.epcis.capture import (
    BATCH_KIND, BATCH_SIZE, BATCH_TYPES, INSERT_CHUNK, UNIT_KEY, EventError, Overlay, Prepared, check_ledger,
)  # fmt: skip
from ledger_service.epcis import query
from ledger_service.epcis.identities import load_directory
from ledger_service.epcis.preparing import Preparer, prepare_document, preparer_for
from ledger_service.epcis.tables import EpcisBatch, EpcisCapture, EpcisCommand, EpcisEvent, EpcisEventEpc
from ledger_service.errors import ApiError
from ledger_service.outbox import Draft, read_command
from ledger_service.read import indexed_block
from ledger_service.tables import ChainTransaction, CommandItem, PrivateVin
from partledger.db import BulkWriter, one_of
from partledger.ids import vin_hash
from partledger.merkle import build_tree
from partledger.model import Role

log = logging.getLogger("partledger.service.epcis")

T_JOB, T_EVENT, T_EPC = EpcisCapture.__table__, EpcisEvent.__table__, EpcisEventEpc.__table__
T_ECMD, T_EBATCH, T_ORG = EpcisCommand.__table__, EpcisBatch.__table__, Organisation.__table__
T_VIN = PrivateVin.__table__
T_ITEM, T_TX = CommandItem.__table__, ChainTransaction.__table__
MAX_ERRORS = 1_000  # per-event errors a job keeps (the count is exact)
SETTLE_POLL = 0.2
# close_batches at most this often: its first query reads every unbatched event's row, the 40,000 of two capture jobs
# on their way to the chain among them, and the loop wakes many times a second (5% of the service's samples in
# benchmarks/epcis_bench.py's capture). A batch then waits at most this much longer for its anchor.
BATCH_CHECK_SECONDS = 1.0
MAX_JOBS = 6  # capture jobs running at once (checking, or waiting for the chain)
WARM_SECONDS = 2.0


class JobStopped(Exception):
    """The service is stopping: the job stays running and starts again at the next start."""


def job_principal(services: Services, row: Any) -> Principal:
    """Who captures: the job's organisation with its roles as the mirror has them now."""
    with services.index_engine.connect() as conn:
        org = conn.execute(select(T_ORG.c.roles, T_ORG.c.suspended).where(T_ORG.c.org_id == row.org_id)).first()
    roles = Role(org.roles) if org is not None and not org.suspended else Role(0)
    username = row.actor[5:] if row.actor.startswith("user:") else None
    sites = tuple(json.loads(row.sites)) if row.sites else None
    return Principal(org_id=row.org_id, roles=roles, key_id=row.api_key_id, sites=sites, username=username)


class CaptureWorker:
    def __init__(self, services: Services, *, batch_seconds: float) -> None:
        self.services = services
        self.batch_seconds = batch_seconds
        self.preparer = preparer_for(services.settings)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: dict[str, threading.Thread] = {}  # job -> its thread
        self._checking: dict[int, str] = {}  # org -> its job that checks and submits (one at a time, in order)
        self._ahead: dict[int, str] = {}  # org -> its next job, preparing its document meanwhile (one at most)
        self._lock = threading.Lock()
        self._turns = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._warm_thread: threading.Thread | None = None
        self._next_warm = 0.0
        self._next_batches = 0.0

    # -- the loop ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        with self.services.service_engine.begin() as conn:  # jobs a crash left running start again
            conn.execute(update(T_JOB).where(T_JOB.c.state == "running").values(state="queued"))
        self._thread = threading.Thread(target=self._loop, name="epcis-capture", daemon=True)
        self._thread.start()
        self._warm_thread = threading.Thread(target=self._warm_loop, name="epcis-warm", daemon=True)
        self._warm_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for loop in (self._thread, self._warm_thread):
            if loop is not None:
                loop.join(timeout=10)
        for thread in list(self._threads.values()):
            thread.join(timeout=10)
        self.preparer.close()  # after the jobs: one waiting on a worker gets its answer

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._start_jobs()
                if time.monotonic() >= self._next_batches:  # its count of unbatched events reads every pending row
                    self.close_batches()
                    self._next_batches = time.monotonic() + min(BATCH_CHECK_SECONDS, self.batch_seconds / 4)
                self.submit_batches()
            except Exception:  # a database or node hiccup: log, then try again on the next round
                log.exception("the EPCIS capture worker's round failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def _warm_loop(self) -> None:
        """The warm-up in a thread of its own: its first pass in a process derives every ledger event so far (the
        10,425 of benchmarks/epcis_bench.py's set-up and floor: 6.5 s), and in the loop above it kept the next queued
        job from starting to prepare its document meanwhile."""
        while not self._stop.wait(WARM_SECONDS / 4):
            try:
                self.warm()
            except Exception:  # as the loop above
                log.exception("the EPCIS query warm-up failed")

    def warm(self) -> bool:
        """Ledger events' hashes made off the request path, every WARM_SECONDS while this process serves EPCIS
        (query.used_recently); True if it warmed."""
        if time.monotonic() < self._next_warm or not query.used_recently():
            return False
        # A process that serves EPCIS has its preparing process up before its next large capture, not while that
        # capture's first job prepares the whole document in its own thread (the service's interpreter).
        self.preparer.start()
        query.warm_derived(self.services)
        self._next_warm = time.monotonic() + WARM_SECONDS
        return True

    def _start_jobs(self) -> None:
        """Oldest first. An organisation's jobs check and submit one at a time, in the order they came: a job waiting
        for the chain to settle its commands lets the organisation's next job start (pipelining), and a job whose
        parts that job's commands touch waits for them (wait_for_other_jobs). While one checks, the next one may
        prepare its document (in a worker process when it is large) and then waits for its turn (_take_turn)."""
        self._threads = {job: thread for job, thread in self._threads.items() if thread.is_alive()}
        if len(self._threads) >= MAX_JOBS:
            return
        with self.services.service_engine.connect() as conn:
            queued = conn.execute(select(T_JOB.c.id, T_JOB.c.org_id).where(T_JOB.c.state == "queued").order_by(T_JOB.c.received_at)).all()
        blocked: set[int] = set()
        for job in queued:
            with self._lock:
                if job.org_id in self._ahead or job.org_id in blocked or len(self._threads) >= MAX_JOBS:
                    blocked.add(job.org_id)  # a later job of the organisation waits for this one
                    continue
            with self.services.service_engine.begin() as conn:
                claimed = conn.execute(update(T_JOB).where(T_JOB.c.id == job.id, T_JOB.c.state == "queued").values(state="running")).rowcount
            if not claimed:
                continue
            with self._lock:
                if job.org_id in self._checking:
                    self._ahead[job.org_id] = job.id
                else:
                    self._checking[job.org_id] = job.id
            query.note_use()
            # EPCIS is in use: the preparing process starts now (not with the service: 2 s of CPU and a process for
            # every API worker, EPCIS client or not). A large document meanwhile is prepared in its job's thread.
            self.preparer.start()
            thread = threading.Thread(target=self._run_job, args=(job.id, job.org_id), name=f"epcis-job-{job.id[:8]}", daemon=True)
            self._threads[job.id] = thread
            thread.start()
            blocked.add(job.org_id)

    def _take_turn(self, org_id: int, job_id: str) -> None:
        """Waits until the organisation's job before this one has submitted everything, then checks (JobStopped when
        the service stops meanwhile: the job stays running and starts again at the next start)."""
        with self._turns:
            while self._checking.get(org_id) not in (None, job_id):
                if self._stop.is_set():
                    raise JobStopped()
                self._turns.wait(0.5)
            self._checking[org_id] = job_id
            if self._ahead.get(org_id) == job_id:
                del self._ahead[org_id]
        self._wake.set()  # the organisation's next job may prepare meanwhile

    def _checked(self, org_id: int, job_id: str) -> None:
        """A job has submitted everything (or ended): its organisation's next job may start checking."""
        with self._turns:
            if self._checking.get(org_id) == job_id:
                del self._checking[org_id]
            if self._ahead.get(org_id) == job_id:
                del self._ahead[org_id]
            self._turns.notify_all()
        self._wake.set()

    def _run_job(self, job_id: str, org_id: int) -> None:
        try:
            run_job(
                self.services, job_id, stop=self._stop, submitted=lambda: self._checked(org_id, job_id), preparer=self.preparer,
                turn=lambda: self._take_turn(org_id, job_id), first=lambda: self._checking.get(org_id) == job_id,
            )  # fmt: skip
        except JobStopped:
            pass
        except Exception:
            log.exception("capture job %s failed", job_id)
            finish_job(self.services, job_id, errors=[{"eventIndex": None, "eventID": None, "code": "internal_error", "message": "the job failed; see the service log"}], captured=0)
        self._checked(org_id, job_id)

    # -- batches -------------------------------------------------------------------------------------------------

    def close_batches(self) -> None:
        """Per organisation: captured events not in a batch yet become one when BATCH_SIZE wait or the oldest has
        waited batch_seconds (and more batches while BATCH_SIZE still wait)."""
        engine = self.services.service_engine
        now_ms = int(time.time() * 1000)
        with engine.connect() as conn:
            waiting = conn.execute(
                select(T_EVENT.c.org_id, func.count(), func.min(T_EVENT.c.record_time_ms))
                .where(T_EVENT.c.batch_id.is_(None), T_EVENT.c.state.in_(("applied", "kept"))).group_by(T_EVENT.c.org_id)
            ).all()  # fmt: skip
        for org_id, count, oldest in waiting:
            if count < BATCH_SIZE and oldest > now_ms - self.batch_seconds * 1000:
                continue
            while True:
                closed = self._close_batch(org_id)
                count -= closed
                if not closed or count < BATCH_SIZE:
                    break

    def _close_batch(self, org_id: int) -> int:
        """The organisation's oldest unbatched events (BATCH_SIZE at most) made one batch; how many."""
        engine = self.services.service_engine
        with engine.connect() as conn:
            rows = conn.execute(
                select(T_EVENT.c.seq, T_EVENT.c.event_hash, T_EVENT.c.event_id)
                .where(T_EVENT.c.org_id == org_id, T_EVENT.c.batch_id.is_(None), T_EVENT.c.state.in_(("applied", "kept")))
                .order_by(T_EVENT.c.seq).limit(BATCH_SIZE)
            ).all()  # fmt: skip
        if not rows:
            return 0
        tree = build_tree([batch_values(org_id, row) for row in rows], types=BATCH_TYPES)  # outside the write lock
        seqs = [row.seq for row in rows]
        with engine.begin() as conn:  # this thread alone batches events: claimed only while still unbatched
            batch_id = conn.execute(insert(T_EBATCH).values(org_id=org_id, root=tree.root, event_count=len(rows), created_at=time.time())).inserted_primary_key[0]
            claimed = 0
            for start in range(0, len(seqs), 900):
                claimed += conn.execute(
                    update(T_EVENT).where(one_of(conn, T_EVENT.c.seq, seqs[start : start + 900]), T_EVENT.c.batch_id.is_(None)).values(batch_id=batch_id)
                ).rowcount  # fmt: skip
            if claimed != len(seqs):
                raise RuntimeError("EPCIS events were batched concurrently")  # rolls this batch back
        return len(rows)

    def submit_batches(self) -> None:
        outbox = self.services.outbox
        if outbox is None:
            return
        with self.services.service_engine.connect() as conn:
            waiting = conn.execute(select(T_EBATCH).where(T_EBATCH.c.command_id.is_(None)).order_by(T_EBATCH.c.id)).all()
        for batch in waiting:
            principal = Principal(org_id=batch.org_id, roles=_roles(self.services, batch.org_id), key_id="epcis-batches", sites=None)
            try:
                signer = outbox.signer_for(principal, None)
            except ApiError as exc:
                log.warning("EPCIS batch %d of organisation %d waits: %s", batch.id, batch.org_id, exc)
                continue
            payload = {"root": "0x" + bytes(batch.root).hex(), "record_count": batch.event_count, "batch_kind": BATCH_KIND}
            draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0)
            answer = outbox.accept(principal, draft, signer=signer, idempotency_key=f"epcis-batch-{batch.id}", request_sha256=hashlib.sha256(bytes(batch.root)).hexdigest())
            with self.services.service_engine.begin() as conn:
                conn.execute(update(T_EBATCH).where(T_EBATCH.c.id == batch.id).values(command_id=answer["command_id"]))


def batch_values(org_id: int, row: Any) -> tuple[Any, ...]:
    """A captured event's leaf in its batch (types BATCH_TYPES)."""
    return (bytes(row.event_hash), row.event_id, org_id, row.seq)


def _roles(services: Services, org_id: int) -> Role:
    with services.index_engine.connect() as conn:
        roles = conn.execute(select(T_ORG.c.roles).where(T_ORG.c.org_id == org_id)).scalar()
    return Role(roles or 0)


# --- one job -----------------------------------------------------------------------------------------------------


def run_job(
    services: Services, job_id: str, *, stop: threading.Event, submitted: Callable[[], None] = lambda: None, preparer: Preparer | None = None,
    turn: Callable[[], None] = lambda: None, first: Callable[[], bool] = lambda: False,
) -> None:  # fmt: skip
    """Runs a capture job to its end: prepares its document, waits for its `turn` to check and submit, and calls
    `submitted` once everything it will submit is in the outbox (then it only waits for the chain), so that its
    organisation's next job may take its turn. `first`: whether no job of its organisation is before it (it then
    prepares half of a large document in its own thread, beside the worker process: Preparer.prepare's `share`)."""
    engine = services.service_engine
    with engine.connect() as conn:
        row = conn.execute(select(T_JOB).where(T_JOB.c.id == job_id)).first()
    if row is None or row.state == "done":
        return
    principal = job_principal(services, row)
    directory = load_directory(engine, services.index_engine)
    ahead = preparer is not None and preparer.worker_up_for(row.event_count)  # else the thread it would prepare in is the service's
    if not ahead:
        turn()
    prepared = preparer.prepare(row.document, row.event_count, directory, share=first()) if preparer is not None else prepare_document(row.document, directory)
    todo, errors, events = prepared.todo, prepared.errors, prepared.event_ids
    if ahead:
        turn()
    index_by_id = {p.event_id: p.index for p in todo}
    # a job started again: what it submitted before the crash, final first
    errors.update(settle(services, principal, job_id, index_by_id=index_by_id, stop=stop))
    todo, repeats = _drop_repeats(engine, job_id, todo, errors)
    wait_for_other_jobs(services, job_id, _parts_named(todo), stop=stop)
    with services.index_engine.connect() as conn:
        named = [(key, pid) for p in todo if p.operation for key, _, pid in p.epcs if pid is not None]
        overlay = Overlay(
            conn, [pid for key, pid in named if not key.startswith(UNIT_KEY)] + _registering(todo), unit_ids=[pid for key, pid in named if key.startswith(UNIT_KEY)],
        )  # fmt: skip
        for prepared in todo:
            try:
                check_ledger(prepared, org_id=principal.org_id, roles=principal.roles, overlay=overlay, conn=conn, directory=directory)
            except EventError as exc:
                errors[prepared.index] = (exc.code, str(exc))
    todo = [p for p in todo if p.index not in errors]
    if errors and row.behaviour == "rollback":
        submitted()
        finish_job(services, job_id, errors=_error_list(errors, events), captured=0)
        return
    if todo and services.outbox is None and any(p.operation for p in todo):
        raise RuntimeError("a read-only service cannot capture events that move parts")
    kept = [p for p in todo if p.operation is None]
    for start in range(0, len(kept), INSERT_CHUNK):
        with engine.begin() as conn:
            store_events(conn, services, principal.org_id, job_id, kept[start : start + INSERT_CHUNK], command_id=None)
    stage: list[Prepared] = []
    touched: set[bytes] = set()
    for prepared in (p for p in todo if p.operation):
        alone = prepared.operation == "recall"
        touches = prepared.touches or set(prepared.parts)  # a containment's container and those above it too
        if stage and (alone or touched & touches or stage[-1].operation == "recall"):
            _submit_stage(services, principal, job_id, stage, errors)
            errors.update(settle(services, principal, job_id, index_by_id=index_by_id, stop=stop))
            stage, touched = [], set()
        stage.append(prepared)
        touched |= touches
    if stage:
        _submit_stage(services, principal, job_id, stage, errors)
    submitted()
    errors.update(settle(services, principal, job_id, index_by_id=index_by_id, stop=stop))
    with engine.connect() as conn:
        captured = conn.execute(select(func.count()).select_from(T_EVENT).where(T_EVENT.c.capture_id == job_id)).scalar() or 0
    finish_job(services, job_id, errors=_error_list(errors, events), captured=int(captured) + repeats)


def _parts_named(todo: list[Prepared]) -> list[bytes]:
    return list({pid for p in todo for _, _, pid in p.epcs if pid is not None})


def wait_for_other_jobs(services: Services, job_id: str, part_ids: list[bytes], *, stop: threading.Event) -> None:
    """Waits until no other capture job's command that names one of these parts is still on its way to the chain
    (its events pending): the mirror then shows what that job did, and this job's checks see it."""
    engine = services.service_engine
    while part_ids:
        waiting = False
        with engine.connect() as conn:
            for start in range(0, len(part_ids), 900):
                chunk = part_ids[start : start + 900]
                found = conn.execute(
                    select(T_EVENT.c.seq).select_from(T_EPC.join(T_EVENT, T_EVENT.c.seq == T_EPC.c.seq))
                    .where(one_of(conn, T_EPC.c.part_id, chunk), T_EVENT.c.state == "pending", T_EVENT.c.capture_id != job_id).limit(1)
                ).first()  # fmt: skip
                if found is not None:
                    waiting = True
                    break
        if not waiting:
            return
        if stop.wait(SETTLE_POLL):
            raise JobStopped()


def _registering(todo: list[Prepared]) -> list[bytes]:
    return [pid for p in todo if p.operation == "register" for _, _, pid in p.epcs if pid is not None]


def _drop_repeats(engine: Any, job_id: str, todo: list[Prepared], errors: dict[int, tuple[str, str]]) -> tuple[list[Prepared], int]:
    """Events captured before (by eventID) are skipped when their hash is the same, errors when it differs; so are
    repeats inside the document. Returns the events to capture and how many were captured by other jobs (this job's
    own, stored before a crash, are counted with its rows)."""
    known: dict[str, tuple[bytes, str | None]] = {}
    ids = [p.event_id for p in todo]
    with engine.connect() as conn:
        for start in range(0, len(ids), 900):
            rows = conn.execute(select(T_EVENT.c.event_id, T_EVENT.c.event_hash, T_EVENT.c.capture_id).where(one_of(conn, T_EVENT.c.event_id, ids[start : start + 900])))
            for row in rows:
                known[row.event_id] = (bytes(row.event_hash), row.capture_id)
    fresh, repeats = [], 0
    for prepared in todo:
        digest, owner = known.get(prepared.event_id, (None, None))
        if digest is None:
            known[prepared.event_id] = (prepared.digest, None)
            fresh.append(prepared)
        elif digest == prepared.digest:
            repeats += owner != job_id
        else:
            errors[prepared.index] = ("event_id_reused", f"eventID {prepared.event_id} was captured before with other content")
    return fresh, repeats


def _error_list(errors: dict[int, tuple[str, str]], event_ids: list[str | None]) -> list[dict[str, Any]]:
    """The job's errors in event order, each with the eventID its event gave (None when it gave none)."""
    out = []
    for index in sorted(errors):
        code, message = errors[index]
        event_id = event_ids[index] if 0 <= index < len(event_ids) else None
        out.append({"eventIndex": index, "eventID": event_id, "code": code, "message": message})
    return out


def finish_job(services: Services, job_id: str, *, errors: list[dict[str, Any]], captured: int) -> None:
    with services.service_engine.begin() as conn:
        conn.execute(update(T_JOB).where(T_JOB.c.id == job_id).values(
            state="done", success=not errors, captured_count=captured, error_count=len(errors), errors=json.dumps(errors[:MAX_ERRORS]),
            finished_at=time.time(),
        ))  # fmt: skip


# --- storing and submitting ----------------------------------------------------------------------------------


def store_events(conn: Connection, services: Services, org_id: int, job_id: str, prepared: list[Prepared], *, command_id: str | None) -> None:
    """The events' rows (and the EPCs they name), in the caller's transaction."""
    if not prepared:
        return
    now_ms = int(time.time() * 1000)
    vault = services.vault
    state = "pending" if command_id else "kept"
    rows = []
    for p in prepared:
        private = None
        if p.private:
            if vault is None:
                raise EventError("no_vault", "this service keeps no private data (no VIN key configured)")
            private = vault.seal(orjson.dumps(p.private), p.digest)
        rows.append((
            p.event_id, p.digest, job_id, org_id, p.event_type, p.action, p.biz_step, p.disposition, p.biz_location, p.read_point,
            p.event_time_ms, now_ms, p.body, private, p.operation, command_id, state,
        ))  # fmt: skip
    # Straight through the driver (COPY on PostgreSQL), their seqs read back by eventID (unique): SQLAlchemy's
    # INSERT ... RETURNING in parameter order sent SQLite one statement a row, and its per-parameter processing
    # was a third of the rest; storing a document's events took a third of a capture job's time.
    writer = BulkWriter(conn)
    writer.insert_rows(T_EVENT, EVENT_COLUMNS, rows)
    ids = [p.event_id for p in prepared]
    seq_of: dict[str, int] = {}
    for start in range(0, len(ids), 900):
        seq_of.update(conn.execute(select(T_EVENT.c.event_id, T_EVENT.c.seq).where(one_of(conn, T_EVENT.c.event_id, ids[start : start + 900]))).all())
    writer.insert_rows(T_EPC, ("seq", "epc", "role", "part_id"), [(seq_of[p.event_id], *epc) for p in prepared for epc in dict.fromkeys(p.epcs)])


EVENT_COLUMNS = (
    "event_id", "event_hash", "capture_id", "org_id", "event_type", "action", "biz_step", "disposition", "biz_location", "read_point",
    "event_time_ms", "record_time_ms", "body", "private", "operation", "command_id", "state",
)  # fmt: skip


def _group_key(p: Prepared, signer: str) -> tuple[Any, ...]:
    args = p.args
    if p.operation == "register":
        return ("register", signer, args["gtin"], args["lot"])
    if p.operation in ("recall", "remanufacture"):
        return (p.operation, signer, p.index)
    if p.operation in ("pack", "unpack"):
        return (p.operation, signer, args["sscc"])
    if p.operation in ("assemble", "disassemble"):
        return (p.operation, signer, args["parent"])
    return (p.operation, signer, args.get("to"), args.get("doc_hash"))


def _submit_stage(services: Services, principal: Principal, job_id: str, stage: list[Prepared], errors: dict[int, tuple[str, str]]) -> None:
    outbox = services.outbox
    assert outbox is not None
    groups: dict[tuple[Any, ...], list[Prepared]] = defaultdict(list)
    signers: dict[str | None, str | ApiError] = {}  # site -> its key (one lookup per site, not per event)

    def signer_for(site: str | None) -> str | ApiError:
        if site not in signers:
            try:
                signers[site] = outbox.signer_for(principal, site)
            except ApiError as exc:
                signers[site] = exc if site is None else signer_for(None)  # the site has no key here: the organisation's first
        return signers[site]

    for p in stage:
        signer = signer_for(p.place.site if p.place is not None and p.place.site else None)
        if isinstance(signer, ApiError):
            errors[p.index] = (signer.code, signer.message)
            continue
        groups[_group_key(p, signer)].append(p)
    for key, members in groups.items():
        try:
            draft = _draft(services, principal.org_id, job_id, members)
            with_rows = _with_event_rows(services, principal.org_id, job_id, members, draft.after_write)
            draft = Draft(kind=draft.kind, summary=draft.summary, part_ids=draft.part_ids, items=draft.items, part_count=draft.part_count, after_write=with_rows)
            outbox.accept(principal, draft, signer=key[1], idempotency_key=None, request_sha256=hashlib.sha256(f"epcis:{job_id}".encode()).hexdigest())
        except (EventError, ApiError) as exc:
            for p in members:
                errors[p.index] = (exc.code, exc.message if isinstance(exc, ApiError) else str(exc))


def _with_event_rows(
    services: Services, org_id: int, job_id: str, members: list[Prepared], then: Callable[[Connection, str], None] | None,
) -> Callable[[Connection, str], None]:  # fmt: skip
    def write(conn: Connection, command_id: str) -> None:
        if then is not None:
            then(conn, command_id)
        store_events(conn, services, org_id, job_id, members, command_id=command_id)
        conn.execute(insert(T_ECMD).values(command_id=command_id, capture_id=job_id))

    return write


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def _draft(services: Services, org_id: int, job_id: str, members: list[Prepared]) -> Draft:
    """One command for events of one operation that share a signer and their pack arguments. Its items carry the job
    ("capture"), so the submitter packs them only with each other."""
    kind = members[0].operation
    assert kind is not None
    size = services.settings.max_parts_per_tx
    first = members[0].args
    if kind == "register":
        serials = [serial for p in members for serial in p.args["serials"]]
        pids = [pid for p in members for pid in p.parts]
        ids = ["0x" + pid.hex() for pid in pids]
        items = [{"gtin": first["gtin"], "lot": first["lot"], "serials": s, "part_ids": i, "capture": job_id} for s, i in zip(_chunks(serials, size), _chunks(ids, size))]
        return Draft(kind="register", summary={"gtin": first["gtin"], "lot": first["lot"], "capture": job_id}, part_ids=pids, items=items, part_count=len(pids))
    if kind == "recall":
        payload = {"lot": first["lot"], "notice_hash": first["notice_hash"], "capture": job_id}
        return Draft(kind="recall", summary=payload, part_ids=[], items=[payload], part_count=0)
    if kind == "remanufacture":
        new = members[0].parts[0]
        payload = {key: first[key] for key in ("original", "gtin", "lot", "serial")} | {"capture": job_id}
        item = payload | {"part_ids": [first["original"], "0x" + new.hex()]}
        return Draft(kind="remanufacture", summary=payload, part_ids=[new], items=[item], part_count=1)
    pids = [pid for p in members for pid in p.parts]
    if kind in ("pack", "unpack", "assemble", "disassemble"):  # as write_service.submit_containment drafts them
        named = first["unit_id"] if kind in ("pack", "unpack") else first["parent"]
        shared = {"sscc": first["sscc"]} if kind in ("pack", "unpack") else {"parent": first["parent"]}
        summary = shared | ({"unit_id": named} if kind in ("pack", "unpack") else {}) | {"capture": job_id}
        items = [{"parts": chunk, **shared, "capture": job_id, "part_ids": [named]} for chunk in _chunks(["0x" + pid.hex() for pid in pids], size)]
        return Draft(kind=kind, summary=summary, part_ids=pids, items=items, part_count=len(pids))
    shared: dict[str, Any] = {"doc_hash": first.get("doc_hash"), "capture": job_id} | ({"to": first["to"]} if kind == "ship" else {})
    if kind != "install":
        items = [{"parts": chunk, **shared} for chunk in _chunks(["0x" + pid.hex() for pid in pids], size)]
        return Draft(kind=kind, summary=shared, part_ids=pids, items=items, part_count=len(pids))
    vault = services.vault
    sealed: list[dict[str, Any]] = []
    hashes: list[str] = []
    for p in members:
        for pid in p.parts:
            if "vin" in p.args:
                if vault is None:
                    raise EventError("read_only", "no VIN encryption key is configured on this service")
                salt = secrets.token_bytes(32)
                hashed = vin_hash(p.args["vin"], salt)
                sealed.append({"vin_hash": hashed, "part_id": pid, "ciphertext": vault.seal(p.args["vin"].encode() + salt, hashed)})
            else:
                hashed = p.args["vin_hash"]
            hashes.append("0x" + hashed.hex())
    part_hex = ["0x" + pid.hex() for pid in pids]
    items = [{"parts": c, "vin_hashes": h, **shared} for c, h in zip(_chunks(part_hex, size), _chunks(hashes, size))]

    def store_vins(conn: Connection, command_id: str) -> None:
        if sealed:
            now = time.time()
            conn.execute(insert(T_VIN), [row | {"org_id": org_id, "command_id": command_id, "created_at": now} for row in sealed])

    return Draft(kind="install", summary=shared, part_ids=pids, items=items, part_count=len(pids), after_write=store_vins)



# --- waiting for the chain -----------------------------------------------------------------------------------


def settle(
    services: Services, principal: Principal, job_id: str, *, index_by_id: dict[str, int], stop: threading.Event,
) -> dict[int, tuple[str, str]]:  # fmt: skip
    """Waits until every command the job made is final and mirrored; marks their events applied, and takes out the
    events of commands the chain refused, answering their errors (by event index)."""
    engine = services.service_engine
    chain_id = services.manifest.chain_id
    while True:
        # one aggregate read a round (the job's items still on their way, and the newest block of its transactions):
        # reading every command's view each round cost the submitter, in the same process, a seventh of its time
        with engine.connect() as conn:
            mine = select(T_ECMD.c.command_id).where(T_ECMD.c.capture_id == job_id)
            waiting, newest = conn.execute(
                select(func.count(T_ITEM.c.id).filter(T_ITEM.c.state.notin_(("confirmed", "rejected"))), func.max(T_TX.c.block_number))
                .select_from(T_ITEM.outerjoin(T_TX, T_TX.c.id == T_ITEM.c.tx_id))
                .where(T_ITEM.c.command_id.in_(mine))
            ).one()  # fmt: skip
        if not waiting:
            with services.index_engine.connect() as conn:
                if newest is None or indexed_block(conn, chain_id) >= newest:
                    break
        if stop.wait(SETTLE_POLL):
            raise JobStopped()
    with engine.connect() as conn:
        ids = [row.command_id for row in conn.execute(select(T_ECMD.c.command_id).where(T_ECMD.c.capture_id == job_id))]
    views = [read_command(engine, principal, command_id) for command_id in ids]
    failed: dict[int, tuple[str, str]] = {}
    confirmed = [v["command_id"] for v in views if v["status"] == "confirmed"]
    rejected = [v for v in views if v["status"] == "rejected"]
    with engine.begin() as conn:
        for start in range(0, len(confirmed), 900):
            conn.execute(update(T_EVENT).where(T_EVENT.c.command_id.in_(confirmed[start : start + 900]), T_EVENT.c.state == "pending").values(state="applied"))
        for view in rejected:
            rows = conn.execute(select(T_EVENT.c.seq, T_EVENT.c.event_id).where(T_EVENT.c.command_id == view["command_id"])).all()
            reason = "; ".join(f"{e['error']}{tuple(e['args'])}" if e.get("error") else str(e.get("message")) for e in view.get("errors", [])) or "the chain refused the command"
            for row in rows:
                failed[index_by_id.get(row.event_id, -1)] = ("chain_refused", reason)
            seqs = [row.seq for row in rows]
            if seqs:
                conn.execute(delete(T_EPC).where(T_EPC.c.seq.in_(seqs)))
                conn.execute(delete(T_EVENT).where(T_EVENT.c.seq.in_(seqs)))
            conn.execute(delete(T_ECMD).where(T_ECMD.c.command_id == view["command_id"]))
    return failed


