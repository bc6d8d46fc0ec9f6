"""The manufacturer's pages of the member console: register a lot (form or CSV upload), print its labels (A4 and
thermal PDFs), the organisation's lots with counts by status, recall a lot with its notice (written in Chinese and
English, kept by the service and shown to whoever scans a part; or a PDF, of which only the hash is kept), and
recall impact.

Where it sits: one area of the console (ledger_service.console.web). Every write goes through
ledger_service.write_service, so the API's validation, authorisation and outbox apply; reads go through
ledger_service.read and the read functions below (one aggregate query for the lots page). Labels are signed as
`partledger labels make` signs them, by a site key of the organisation that this service holds, in a background
thread (LabelPress: one job at a time, a bounded queue) while the page polls its progress.

Only organisations with the MANUFACTURER role use these pages; a viewer reads them, and every POST refuses a viewer
(403 read_only_role). A lot of another organisation is refused (403 not_lot_manufacturer).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Path as PathParam, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from indexer.tables import Lot, Organisation, Part
from labels.lot import LabelPart, make_labels
from labels.sheets import LAYOUTS, write_pdf
from labels.signature import label_domain
from ledger_service import read, recall_notices, write_service
from ledger_service.accounts import SessionUser
from ledger_service.auth import Principal
from ledger_service.console.i18n import lazy
from ledger_service.console.web import (
    ConsoleUser, Operator, PageParams, checked_form, error_message, form_digest, form_key, form_text, new_form_key, next_page_url,
    read_upload, render, router_for, see_other, status_of, upload_name, url_with,
)
from ledger_service.deps import IndexReadDep, Services, ServicesDep
from ledger_service.errors import ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge, TooManyRequests
from partledger.errors import ValidationError
from partledger.model import PartStatus, Role
from wallets.signer import Signer

log = logging.getLogger("partledger.console.maker")
router = router_for("maker")

T_LOT, T_PART, T_ORG = Lot.__table__, Part.__table__, Organisation.__table__
STATUSES = [status for status in PartStatus if status is not PartStatus.NONE]
STATUS_NAMES = [status.name.lower() for status in STATUSES]
MAX_NOTICE_BYTES = 20 * 1024 * 1024
LABEL_JOBS_RUNNING = 1  # labels are CPU work (a signature and a QR symbol each): one lot at a time per process
LABEL_JOBS_WAITING = 4  # queued behind it, all organisations together; more: 429
LABEL_JOBS_PER_ORG = 2  # running or queued, per organisation
LABEL_KEEP_SECONDS = 3600.0  # a finished PDF stays downloadable this long
# The words for the row-level codes of a registration's refusal (the API's per-row errors); another code shows the
# API's own message.
ROW_REASONS = {
    "invalid_gtin": lazy("maker.row.invalid_gtin"), "invalid_serial": lazy("maker.row.invalid_serial"),
    "invalid_lot": lazy("maker.row.invalid_lot"), "invalid_row": lazy("maker.row.invalid_row"),
    "mixed_batch": lazy("maker.row.mixed_batch"),
}  # fmt: skip
# The words for the refusals a form shows next to a field; another code shows the error's message and the page the code.
ERROR_TEXTS = {
    "invalid_gtin": lazy("maker.error.invalid_gtin"), "invalid_lot": lazy("maker.error.invalid_lot"),
    "invalid_rows": lazy("maker.error.invalid_rows"), "invalid_serial": lazy("maker.error.invalid_serial"),
    "duplicate_parts": lazy("maker.error.duplicate_parts"), "already_registered": lazy("maker.error.already_registered"),
    "payload_too_large": lazy("maker.error.payload_too_large"), "no_site_key": lazy("maker.error.no_site_key"),
    "invalid_csv": lazy("maker.error.invalid_csv"), "missing_role": lazy("maker.error.missing_role"),
    "read_only": lazy("maker.error.read_only"), "read_only_role": lazy("maker.error.read_only_role"),
    "idempotency_key_reused": lazy("maker.error.idempotency_key_reused"), "unknown_lot": lazy("maker.error.unknown_lot"),
    "not_lot_manufacturer": lazy("maker.error.not_lot_manufacturer"), "lot_recalled": lazy("maker.error.lot_recalled"),
}  # fmt: skip
# --- who may use these pages -----------------------------------------------------------------------------------


def _require_maker(user: SessionUser) -> SessionUser:
    if not user.principal.roles & Role.MANUFACTURER:
        raise Forbidden("these pages are for manufacturers", code="missing_role")
    return user


def maker_reader(user: ConsoleUser) -> SessionUser:
    """A signed-in user of a manufacturer (any role: a viewer reads)."""
    return _require_maker(user)


def maker_operator(user: Operator) -> SessionUser:
    """A signed-in admin or operator of a manufacturer (viewer: 403 read_only_role)."""
    return _require_maker(user)


Maker = Annotated[SessionUser, Depends(maker_reader)]
LotNumber = Annotated[int, PathParam(ge=1, lt=2**63, description="the lot number")]
JobId = Annotated[str, PathParam(max_length=64, pattern=r"^[0-9a-f-]+$")]
MakerOperator = Annotated[SessionUser, Depends(maker_operator)]


# --- reads over the mirror -------------------------------------------------------------------------------------


def _counted(lot: dict[str, Any], counts: dict[int, int]) -> dict[str, Any]:
    """A lot with its parts counted by status (every status named, zero included) and in all."""
    return lot | {"total": sum(counts.values()), "counts": {status.name.lower(): int(counts.get(int(status), 0)) for status in STATUSES}}


def lot_summaries(conn: Connection, org_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the organisation's lots (read.organisation_lots), newest first, each with its parts counted by
    status in one pass over ix_parts_lot_status (the index alone: no part row is read), pivoted here."""
    page = read.organisation_lots(conn, org_id, limit=limit, cursor=cursor)
    counts: dict[int, dict[int, int]] = {}
    if page["items"]:
        by_status = select(T_PART.c.lot, T_PART.c.status, func.count()).where(T_PART.c.lot.in_([lot["number"] for lot in page["items"]])).group_by(T_PART.c.lot, T_PART.c.status)
        for lot, status, count in conn.execute(by_status):
            counts.setdefault(lot, {})[status] = count
    return page | {"items": [_counted(lot, counts.get(lot["number"], {})) for lot in page["items"]]}


def owned_lot(conn: Connection, org_id: int, lot: int) -> dict[str, Any]:
    """The lot with its parts counted by status, if `org_id` made it: 404 unknown_lot, 403 not_lot_manufacturer."""
    row = conn.execute(select(T_LOT).where(T_LOT.c.lot == lot)).first()
    if row is None:
        raise NotFound(f"no lot {lot}", code="unknown_lot")
    if row.manufacturer != org_id:
        raise Forbidden("this lot was made by another organisation", code="not_lot_manufacturer")
    counts = dict(conn.execute(select(T_PART.c.status, func.count()).where(T_PART.c.lot == lot).group_by(T_PART.c.status)).all())
    return _counted({"number": row.lot, "code": row.lot_code, "recalled": bool(row.recalled), "opened_block": row.opened_block}, counts)


def lot_number_of(conn: Connection, org_id: int, lot_code: str | None) -> int | None:
    """The number of the organisation's lot `lot_code` once indexed (None before)."""
    if not lot_code:
        return None
    return conn.execute(select(T_LOT.c.lot).where(T_LOT.c.manufacturer == org_id, T_LOT.c.lot_code == lot_code)).scalar()


def label_parts(conn: Connection, org_id: int, lot: int) -> tuple[str, str, list[LabelPart]]:
    """What goes on the labels of a lot of `org_id`: its code, the manufacturer's name and every part, in the order
    `partledger labels make` prints them (GTIN, then serial)."""
    lot_row = owned_lot(conn, org_id, lot)
    # Sorted here, as the CLI sorts them: a database's collation may order serials otherwise.
    rows = sorted(conn.execute(select(T_PART.c.gtin, T_PART.c.serial).where(T_PART.c.lot == lot)).all(), key=lambda row: (row.gtin, row.serial))
    maker = conn.execute(select(T_ORG.c.name).where(T_ORG.c.org_id == org_id)).scalar() or f"organisation {org_id}"
    return lot_row["code"], maker, [LabelPart(row.gtin, row.serial, lot_row["code"]) for row in rows]


# --- helpers ---------------------------------------------------------------------------------------------------


def _accepted(answer: dict[str, Any]) -> Response:
    """After a command is accepted: to its page (post/redirect/get, so that a reload sends nothing again)."""
    return see_other(f"/console/maker/commands/{answer['command_id']}")


# --- lots ----------------------------------------------------------------------------------------------------------


@router.get("/maker")
def maker_home(_: Maker) -> RedirectResponse:
    return see_other("/console/maker/lots")


@router.get("/maker/lots", response_class=HTMLResponse)
def lots_page(request: Request, user: Maker, snapshot: IndexReadDep, paging: PageParams) -> HTMLResponse:
    """The organisation's lots, newest first, with their parts counted by status."""
    page = lot_summaries(snapshot.conn, user.org_id, limit=paging.limit, cursor=paging.cursor)
    context = {"lots": page["items"], "next_url": next_page_url(request, page["next_cursor"]), "first_url": url_with(request, cursor=None) if paging.cursor else None,
               "statuses": STATUS_NAMES, "block": snapshot.block}  # fmt: skip
    return render(request, user, "console/maker/lots.html", context)


@router.get("/maker/lots/{lot}", response_class=HTMLResponse)
def lot_page(request: Request, lot: LotNumber, user: Maker, snapshot: IndexReadDep, paging: PageParams, status: str | None = None) -> HTMLResponse:
    """One lot: its counts, its actions (labels, recall, impact) and a page of its parts (read.list_parts)."""
    status_filter = PartStatus[status.upper()] if status in STATUS_NAMES else None
    lot_row = owned_lot(snapshot.conn, user.org_id, lot)
    parts = read.list_parts(snapshot.conn, user.principal, lot=lot, custodian=None, status=status_filter, gtin=None, limit=paging.limit, cursor=paging.cursor)
    context = {
        "lot": lot_row, "parts": parts["items"], "next_url": next_page_url(request, parts["next_cursor"]),
        "first_url": url_with(request, cursor=None) if paging.cursor else None, "status": status_filter.name.lower() if status_filter else None,
        "statuses": STATUS_NAMES, "layouts": list(LAYOUTS), "block": snapshot.block, "jobs": label_press(request).jobs_for(user.org_id, lot),
    }  # fmt: skip
    return render(request, user, "console/maker/lot.html", context)


@router.get("/maker/lots/{lot}/impact", response_class=HTMLResponse)
def impact_page(request: Request, lot: LotNumber, user: Maker, snapshot: IndexReadDep, paging: PageParams, services: ServicesDep) -> HTMLResponse:
    """read.recall_impact of one of the organisation's lots: where each part is, the vehicles it is in, and the
    recall's notice."""
    owned_lot(snapshot.conn, user.org_id, lot)  # the maker's pages show the organisation's own lots only
    impact = read.recall_impact(snapshot.conn, user.principal, lot, limit=paging.limit, cursor=paging.cursor)
    if impact["recall"] is not None:
        impact["recall"]["notice"] = recall_notices.notice_of(services.service_engine, impact["recall"]["notice_hash"])
    context = {"impact": impact, "lot_number": lot, "next_url": next_page_url(request, impact["next_cursor"]),
               "first_url": url_with(request, cursor=None) if paging.cursor else None, "statuses": STATUS_NAMES, "block": snapshot.block}  # fmt: skip
    return render(request, user, "console/maker/impact.html", context)


# --- registering a lot --------------------------------------------------------------------------------------------

REGISTER_FIELDS = ("gtin", "lot", "mode", "serials", "prefix", "first", "last", "site")
# Which field an error the write service raises belongs to; the rest are shown above the form.
REGISTER_ERROR_FIELDS = {
    "invalid_gtin": "gtin", "invalid_lot": "lot", "invalid_rows": "serials", "invalid_serial": "serials",
    "duplicate_parts": "serials", "already_registered": "serials", "payload_too_large": "serials", "no_site_key": "site",
    "invalid_site": "site",
}  # fmt: skip


def _register_context(values: dict[str, str] | None = None) -> dict[str, Any]:
    """The registration page: the form (a list of serials or a range) and the CSV upload, each with its own
    Idempotency-Key (a double click sends one command), `rows` and `csv_rows` the refused rows of each."""
    values = values or {"mode": "list"}
    values.setdefault("idempotency_key", new_form_key())
    values.setdefault("csv_key", new_form_key())
    return {"values": values, "errors": {}, "rows": [], "csv_rows": [], "row_reasons": ROW_REASONS}


@router.get("/maker/register", response_class=HTMLResponse)
def register_page(request: Request, user: Maker) -> HTMLResponse:
    return render(request, user, "console/maker/register.html", _register_context())


def serials_from_form(values: dict[str, str], max_rows: int) -> tuple[list[str] | None, dict[str, str]]:
    """The serials a registration form names, one per line or as a range prefix + first..last (zero-padded to the
    width of `first`), and the field errors (message keys) when it names none or too many."""
    if values.get("mode") == "range":
        errors: dict[str, str] = {}
        first_text, last_text = values.get("first", ""), values.get("last", "")
        if not re.fullmatch(r"[0-9]{1,12}", first_text):
            errors["first"] = lazy("maker.register.error.range_number")
        if not re.fullmatch(r"[0-9]{1,12}", last_text):
            errors["last"] = lazy("maker.register.error.range_number")
        if errors:
            return None, errors
        first, last = int(first_text), int(last_text)
        if last < first:
            return None, {"last": lazy("maker.register.error.range_order")}
        if last - first + 1 > max_rows:
            return None, {"last": lazy("maker.register.error.too_many")}
        width = len(first_text)
        prefix = values.get("prefix", "")
        return [f"{prefix}{number:0{width}d}" for number in range(first, last + 1)], {}
    lines = [line.strip() for line in values.get("serials", "").splitlines()]
    serials = [line for line in lines if line]
    if not serials:
        return None, {"serials": lazy("maker.register.error.no_serials")}
    if len(serials) > max_rows:
        return None, {"serials": lazy("maker.register.error.too_many")}
    return serials, {}


def _form_values(form: FormData, names: tuple[str, ...]) -> dict[str, str]:
    values = {name: form_text(form, name, 8_000_000 if name == "serials" else 200) for name in names}
    values["idempotency_key"] = form_key(form, "idempotency_key")
    return values


def _refusal(exc: Exception, field_of: dict[str, str], *, default: str = "form") -> tuple[dict[str, str], list[dict[str, Any]], int, str]:
    """A write service's refusal as field errors (catalogue keys: maker.error.<code>), the per-row table, the status
    and the code."""
    code = getattr(exc, "code", "error")
    details = getattr(exc, "details", None)
    rows = [row for row in details if isinstance(row, dict) and "row" in row] if isinstance(details, list) else []
    field_name = field_of.get(code, default)
    return {field_name: ERROR_TEXTS.get(code, str(exc))}, rows, status_of(exc), code


@router.post("/maker/register", response_class=HTMLResponse)
async def register_submit(request: Request, user: MakerOperator, services: ServicesDep) -> Response:
    form = await checked_form(request, user)
    values = _form_values(form, REGISTER_FIELDS)
    errors: dict[str, str] = {}
    if not values["gtin"]:
        errors["gtin"] = lazy("maker.register.error.required")
    if not values["lot"]:
        errors["lot"] = lazy("maker.register.error.required")
    serials, serial_errors = serials_from_form(values, services.settings.max_rows_per_request)
    errors |= serial_errors
    if errors or serials is None:
        context = _register_context(values) | {"errors": errors}
        return render(request, user, "console/maker/register.html", context, status=400, code="invalid_form")
    site = values["site"] or None
    digest = form_digest(request.url.path, {"gtin": values["gtin"], "lot": values["lot"], "serials": serials, "site": site})
    try:
        answer = await run_in_threadpool(
            write_service.submit_register, services, user.principal, gtin=values["gtin"], lot=values["lot"], serials=serials, site=site,
            idempotency_key=values["idempotency_key"], request_sha256=digest,
        )  # fmt: skip
    except (ApiError, ValidationError) as exc:
        errors, rows, status, code = _refusal(exc, REGISTER_ERROR_FIELDS)
        context = _register_context(values) | {"errors": errors, "rows": _with_serials(rows, serials)}
        return render(request, user, "console/maker/register.html", context, status=status, code=code)
    return _accepted(answer)


def _with_serials(rows: list[dict[str, Any]], serials: list[str]) -> list[dict[str, Any]]:
    """The row table of a form registration: each row with the serial it names (row n is the n-th serial)."""
    out = []
    for row in rows[:1000]:
        number = row.get("row")
        serial = row.get("serial") or (serials[number - 1] if isinstance(number, int) and 0 < number <= len(serials) else None)
        out.append(row | {"serial": serial})
    return out


@router.post("/maker/register.csv", response_class=HTMLResponse)
async def register_csv_submit(request: Request, user: MakerOperator, services: ServicesDep) -> Response:
    """The API's CSV registration (header gtin,serial,lot; one GTIN and lot per upload) from an uploaded file; when
    any row is refused nothing is registered and the page lists every refused row."""
    form = await checked_form(request, user)
    site = form_text(form, "site_csv") or None
    values = {"mode": "list", "site_csv": site or "", "idempotency_key": new_form_key(), "csv_key": form_key(form, "idempotency_key")}
    try:
        raw = await read_upload(form, "file", limit=services.settings.max_body_bytes)
        if raw is None:
            context = _register_context(values) | {"errors": {"file": lazy("maker.register.error.no_file")}}
            return render(request, user, "console/maker/register.html", context, status=400, code="invalid_form")
        digest = form_digest(request.url.path, {"csv_sha256": hashlib.sha256(raw).hexdigest(), "site": site})
        answer = await run_in_threadpool(
            functools.partial(
                write_service.submit_register_csv, services, user.principal, csv_bytes=raw, site=site, idempotency_key=values["csv_key"], request_sha256=digest,
            )
        )  # fmt: skip
    except (ApiError, ValidationError) as exc:
        errors, rows, status, code = _refusal(exc, {"no_site_key": "site_csv", "invalid_site": "site_csv"}, default="file")
        context = _register_context(values) | {"errors": errors, "csv_rows": rows[:1000]}
        return render(request, user, "console/maker/register.html", context, status=status, code=code)
    return _accepted(answer)


# --- labels ----------------------------------------------------------------------------------------------------


@dataclass
class LabelJob:
    """One lot's label PDF being made: signing then drawing, `done` of 2 x `total` steps."""

    id: str
    org_id: int
    lot: int
    lot_code: str
    layout: str
    total: int
    created_at: float = field(default_factory=time.time)
    phase: str = "queued"  # queued | signing | drawing | ready | failed
    done: int = 0
    error: str | None = None
    path: Path | None = None
    finished_at: float | None = None

    @property
    def percent(self) -> int:
        return 100 if self.phase == "ready" else int(100 * self.done / max(1, 2 * self.total))

    @property
    def finished(self) -> bool:
        return self.phase in ("ready", "failed")

    @property
    def file_name(self) -> str:
        safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in self.lot_code)
        return f"labels-{safe}-{self.layout}.pdf"


class LabelPress:
    """Label PDFs of whole lots made in the background, one at a time, a few waiting; the files kept a while in a
    private temporary directory. Per process: a job is followed on the process that runs it."""

    def __init__(self, *, running: int = LABEL_JOBS_RUNNING, waiting: int = LABEL_JOBS_WAITING, per_org: int = LABEL_JOBS_PER_ORG) -> None:
        self._executor = ThreadPoolExecutor(max_workers=running, thread_name_prefix="console-labels")
        self._capacity = running + waiting
        self._per_org = per_org
        self._jobs: dict[str, LabelJob] = {}
        self._lock = threading.Lock()
        self._directory = tempfile.TemporaryDirectory(prefix="partledger-labels-")

    def submit(self, job: LabelJob, work: Callable[[LabelJob, Path], None]) -> LabelJob:
        """Queues `work(job, path)`; 429 label_queue_full when the press or the organisation has too many."""
        with self._lock:
            self._expire()
            active = [other for other in self._jobs.values() if not other.finished]
            if len(active) >= self._capacity or sum(other.org_id == job.org_id for other in active) >= self._per_org:
                raise TooManyRequests("label PDFs are being made for other lots; try again in a minute", retry_after=30, code="label_queue_full")
            self._jobs[job.id] = job
        self._executor.submit(self._run, job, work)
        return job

    def _run(self, job: LabelJob, work: Callable[[LabelJob, Path], None]) -> None:
        path = Path(self._directory.name) / f"{job.id}.pdf"
        try:
            work(job, path)
            job.path, job.phase = path, "ready"
        except Exception as exc:  # noqa: BLE001 - whatever failed, the page must say so instead of polling forever
            log.exception("label job %s for lot %s failed", job.id, job.lot)
            job.phase, job.error = "failed", getattr(exc, "code", None) or type(exc).__name__
            path.unlink(missing_ok=True)
        finally:
            job.finished_at = time.time()

    def get(self, org_id: int, job_id: str) -> LabelJob:
        """A job of `org_id`; 404 for another organisation's, as for one that never was."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None or job.org_id != org_id:
            raise NotFound("no such label job (finished PDFs are kept for an hour)", code="unknown_label_job")
        return job

    def jobs_for(self, org_id: int, lot: int) -> list[LabelJob]:
        with self._lock:
            return sorted((job for job in self._jobs.values() if job.org_id == org_id and job.lot == lot), key=lambda job: -job.created_at)

    def _expire(self) -> None:
        now = time.time()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > LABEL_KEEP_SECONDS:
                del self._jobs[job_id]
                if job.path is not None:
                    job.path.unlink(missing_ok=True)


_PRESS_LOCK = threading.Lock()


def label_press(request: Request) -> LabelPress:
    """The app's label press, made on first use (nothing is built at import time)."""
    state = request.app.state
    with _PRESS_LOCK:
        press = getattr(state, "console_label_press", None)
        if press is None:
            press = state.console_label_press = LabelPress()
    return press


def label_signer(services: Services, principal: Principal) -> Signer:
    """The key that signs a lot's labels: the site key the service would sign the organisation's commands with (an
    active key of the organisation that the service holds, within the user's sites), as `partledger labels make`
    signs with a site key of the lot's manufacturer."""
    if services.outbox is None or services.notary is None:
        raise BadRequest("this service instance only reads (no site keys configured)", code="read_only")
    return services.notary.signers[services.outbox.signer_for(principal, None)]


def label_work(services: Services, *, org_id: int, signer: Signer, lot: int, layout: str, resolver: str) -> Callable[[LabelJob, Path], None]:
    """The work of a label job: read the lot's parts, sign each label (labels.lot.make_labels, which checks each
    signature back) and draw the PDF (labels.sheets.write_pdf), counting progress as it goes."""
    domain = label_domain(chain_id=services.manifest.chain_id, part_ledger=services.manifest.address("PartLedger"))

    def work(job: LabelJob, path: Path) -> None:
        with services.index_engine.connect() as conn:
            lot_code, maker, parts = label_parts(conn, org_id, lot)
        job.total, job.phase = len(parts), "signing"

        def advance(step: int) -> None:
            job.done += step

        labels = make_labels(parts, signer=signer, domain=domain, resolver=resolver, manufacturer=maker, progress=advance)
        job.phase = "drawing"
        partial = path.with_suffix(".part")
        write_pdf(labels, partial, layout=layout, title=f"{maker} — lot {lot_code}", progress=advance, workers=1)
        partial.replace(path)  # a download never sees half a file

    return work


@router.post("/maker/lots/{lot}/labels", response_class=HTMLResponse)
async def labels_submit(request: Request, lot: LotNumber, user: MakerOperator, services: ServicesDep) -> Response:
    """Starts the label PDF of a lot (layout a4 or thermal) and sends the browser to its progress page."""
    form = await checked_form(request, user)
    layout = form_text(form, "layout")
    if layout not in LAYOUTS:
        raise BadRequest(f"unknown label layout {layout!r}", code="invalid_layout")

    def prepare() -> tuple[dict[str, Any], Signer]:
        with services.index_engine.connect() as conn:
            lot_row = owned_lot(conn, user.org_id, lot)
        if lot_row["total"] == 0:
            raise NotFound("the lot has no parts", code="empty_lot")
        return lot_row, label_signer(services, user.principal)

    lot_row, signer = await run_in_threadpool(prepare)
    # The QR codes point at this service's resolver, as the browser reached it.
    work = label_work(services, org_id=user.org_id, signer=signer, lot=lot, layout=layout, resolver=str(request.base_url).rstrip("/"))
    job = LabelJob(id=uuid.uuid4().hex, org_id=user.org_id, lot=lot, lot_code=lot_row["code"], layout=layout, total=lot_row["total"])
    label_press(request).submit(job, work)
    return see_other(f"/console/maker/labels/{job.id}")


def _job(request: Request, user: SessionUser, job_id: str) -> LabelJob:
    return label_press(request).get(user.org_id, job_id)


@router.get("/maker/labels/{job_id}", response_class=HTMLResponse)
def label_job_page(request: Request, job_id: JobId, user: Maker) -> HTMLResponse:
    return render(request, user, "console/maker/labels.html", {"job": _job(request, user, job_id)})


@router.get("/maker/labels/{job_id}/progress", response_class=HTMLResponse)
def label_job_progress(request: Request, job_id: JobId, user: Maker) -> HTMLResponse:
    """The progress fragment the job page polls (htmx) until the PDF is ready or failed."""
    return render(request, user, "console/maker/_label_progress.html", {"job": _job(request, user, job_id)})


@router.get("/maker/labels/{job_id}/file")
def label_job_file(request: Request, job_id: JobId, user: Maker) -> Response:
    job = _job(request, user, job_id)
    if job.phase != "ready" or job.path is None or not job.path.exists():
        raise NotFound("the labels are not ready yet", code="labels_not_ready")
    return FileResponse(job.path, media_type="application/pdf", filename=job.file_name, headers={"Cache-Control": "private, no-store"})


# --- recall --------------------------------------------------------------------------------------------------------


def notice_hash(content: bytes) -> bytes:
    """The hash of a recall notice recorded on chain: SHA-256 of the PDF's bytes. The contract takes any bytes32 and
    the verify page shows it; a notice is public, so it is not salted, and anyone holding the PDF checks it with
    sha256sum."""
    return hashlib.sha256(content).digest()


def _recall_form(request: Request, user: SessionUser, lot_row: dict[str, Any], key: str, *, errors: dict[str, str] | None = None,
                 status: int = 200, code: str | None = None, values: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    context = {"lot": lot_row, "values": (values or {}) | {"idempotency_key": key}, "errors": errors or {}}
    return render(request, user, "console/maker/recall.html", context, status=status, code=code)


# The words of a written notice's refusals (recall_notices.checked_notice's detail codes), next to the field.
NOTICE_ERRORS = {
    "missing": lazy("maker.recall.error.text_required"), "blank": lazy("maker.recall.error.text_required"),
    "too_long": lazy("maker.recall.error.text_too_long"), "invalid_text": lazy("maker.recall.error.invalid_text"),
}  # fmt: skip
NOTICE_FORM_FIELDS = tuple(f"notice_{name}_{lang}" for name in recall_notices.FIELDS for lang in recall_notices.LANGUAGES)


def notice_from_form(form: FormData) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The notice a recall form carries (fields notice_<field>_<lang>: each stripped, its line breaks as \\n), and the
    same texts as the form's values."""
    values = {}
    for name in NOTICE_FORM_FIELDS:
        value = form.get(name)
        values[name] = value.replace("\r\n", "\n").replace("\r", "\n").strip() if isinstance(value, str) else ""
    notice = {name: {lang: values[f"notice_{name}_{lang}"] for lang in recall_notices.LANGUAGES} for name in recall_notices.FIELDS}
    return notice, values


def _checked_form_notice(notice: dict[str, dict[str, str]]) -> tuple[bytes | None, dict[str, str]]:
    """The canonical bytes of a written notice, or its refusals as field errors."""
    try:
        return recall_notices.canonical_bytes(recall_notices.checked_notice(notice)), {}
    except ApiError as exc:
        problems = exc.details if isinstance(exc.details, list) else []
        errors = {"notice_" + problem["field"].replace(".", "_"): NOTICE_ERRORS.get(problem["code"], problem["message"]) for problem in problems}
        return None, errors or {"form": lazy("maker.recall.error.text_required")}


def _written_notice(canonical: bytes, notice: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A written notice as the review shows it and sends it on (its texts in hidden fields)."""
    return {"hash": "0x" + recall_notices.notice_hash(canonical).hex(), "size": len(canonical), "text": notice,
            "fields": [(f"notice_{name}_{lang}", notice[name][lang]) for name in recall_notices.FIELDS for lang in recall_notices.LANGUAGES]}  # fmt: skip


def _owned_lot(services: Services, org_id: int, lot: int) -> dict[str, Any]:
    with services.index_engine.connect() as conn:
        return owned_lot(conn, org_id, lot)


@router.get("/maker/lots/{lot}/recall", response_class=HTMLResponse)
def recall_page(request: Request, lot: LotNumber, user: Maker, snapshot: IndexReadDep) -> HTMLResponse:
    return _recall_form(request, user, owned_lot(snapshot.conn, user.org_id, lot), new_form_key())


@router.post("/maker/lots/{lot}/recall", response_class=HTMLResponse)
async def recall_review(request: Request, lot: LotNumber, user: MakerOperator, services: ServicesDep) -> HTMLResponse:
    """Step one: the uploaded notice PDF is hashed (the file is neither kept nor put on chain) and the recall shown
    for confirmation, with what it will block. Nothing is sent yet."""
    form = await checked_form(request, user)
    key = form_key(form, "idempotency_key")
    lot_row = await run_in_threadpool(_owned_lot, services, user.org_id, lot)
    if form_text(form, "mode") == "text":
        return _review_written(request, user, lot_row, key, form)
    try:
        content = await read_upload(form, "notice", limit=MAX_NOTICE_BYTES)
    except PayloadTooLarge:
        return _recall_form(request, user, lot_row, key, errors={"notice": lazy("maker.recall.error.too_large")}, status=413, code="payload_too_large")
    if content is None:
        return _recall_form(request, user, lot_row, key, errors={"notice": lazy("maker.recall.error.required")}, status=400, code="invalid_notice")
    if not content.startswith(b"%PDF-"):
        return _recall_form(request, user, lot_row, key, errors={"notice": lazy("maker.recall.error.not_pdf")}, status=400, code="invalid_notice")
    if lot_row["recalled"]:
        return _recall_form(request, user, lot_row, key, errors={"form": lazy("maker.error.lot_recalled")}, status=409, code="lot_recalled")
    notice = {"hash": "0x" + notice_hash(content).hex(), "size": len(content), "file_name": upload_name(form, "notice")}
    return render(request, user, "console/maker/recall_confirm.html", {"lot": lot_row, "notice": notice, "values": {"idempotency_key": key}})


def _review_written(request: Request, user: SessionUser, lot_row: dict[str, Any], key: str, form: FormData) -> HTMLResponse:
    """Step one of a written notice: the notice checked as the API checks it, shown in both languages with the hash
    that will go on chain. Nothing is sent yet."""
    notice, values = notice_from_form(form)
    if lot_row["recalled"]:
        return _recall_form(request, user, lot_row, key, errors={"form": lazy("maker.error.lot_recalled")}, status=409, code="lot_recalled", values=values)
    canonical, errors = _checked_form_notice(notice)
    if canonical is None:
        return _recall_form(request, user, lot_row, key, errors=errors, status=422, code="invalid_notice", values=values)
    return render(request, user, "console/maker/recall_confirm.html", {"lot": lot_row, "notice": _written_notice(canonical, notice), "values": {"idempotency_key": key}})


@router.post("/maker/lots/{lot}/recall/confirm", response_class=HTMLResponse)
async def recall_confirm(request: Request, lot: LotNumber, user: MakerOperator, services: ServicesDep) -> Response:
    """Step two, once confirmed: the recall goes to write_service.submit_recall with the written notice (kept by
    the service, its hash on chain) or the PDF's hash."""
    form = await checked_form(request, user)
    key = form_key(form, "idempotency_key")
    if form_text(form, "mode") == "text":
        return await _confirm_written(request, lot, user, services, form, key)
    text = form_text(form, "notice_hash", 80).lower()
    notice = {"hash": text, "size": form_text(form, "notice_size", 20), "file_name": form_text(form, "notice_file_name", 200)}
    lot_row = await run_in_threadpool(_owned_lot, services, user.org_id, lot)
    if not re.fullmatch(r"0x[0-9a-f]{64}", text):
        return _recall_form(request, user, lot_row, key, errors={"notice": lazy("maker.recall.error.required")}, status=400, code="invalid_notice")
    if form_text(form, "confirm") != "yes":
        context = {"lot": lot_row, "notice": notice, "values": {"idempotency_key": key}, "errors": {"confirm": lazy("maker.recall.error.confirm")}}
        return render(request, user, "console/maker/recall_confirm.html", context, status=400, code="not_confirmed")
    digest = form_digest(request.url.path, {"lot": lot, "notice_hash": text})
    try:
        answer = await run_in_threadpool(
            functools.partial(write_service.submit_recall, services, user.principal, lot=lot, notice_hash=bytes.fromhex(text[2:]), idempotency_key=key, request_sha256=digest)
        )
    except (ApiError, ValidationError) as exc:
        errors, _, status, code = _refusal(exc, {})
        context = {"lot": lot_row, "notice": notice, "values": {"idempotency_key": key}, "errors": errors}
        return render(request, user, "console/maker/recall_confirm.html", context, status=status, code=code)
    return _accepted(answer)


async def _confirm_written(request: Request, lot: int, user: SessionUser, services: Services, form: FormData, key: str) -> Response:
    notice, values = notice_from_form(form)
    lot_row = await run_in_threadpool(_owned_lot, services, user.org_id, lot)
    canonical, errors = _checked_form_notice(notice)
    if canonical is None:
        return _recall_form(request, user, lot_row, key, errors=errors, status=422, code="invalid_notice", values=values)
    written = _written_notice(canonical, notice)
    if form_text(form, "confirm") != "yes":
        context = {"lot": lot_row, "notice": written, "values": {"idempotency_key": key}, "errors": {"confirm": lazy("maker.recall.error.confirm")}}
        return render(request, user, "console/maker/recall_confirm.html", context, status=400, code="not_confirmed")
    digest = form_digest(request.url.path, {"lot": lot, "notice_hash": written["hash"]})
    try:
        answer = await run_in_threadpool(
            functools.partial(write_service.submit_recall, services, user.principal, lot=lot, notice=notice, idempotency_key=key, request_sha256=digest)
        )
    except (ApiError, ValidationError) as exc:
        refused, _, status, code = _refusal(exc, {})
        context = {"lot": lot_row, "notice": written, "values": {"idempotency_key": key}, "errors": refused}
        return render(request, user, "console/maker/recall_confirm.html", context, status=status, code=code)
    return _accepted(answer)


# --- following a command -----------------------------------------------------------------------------------------


@router.get("/maker/commands/{command_id}", response_class=HTMLResponse)
def command_page(request: Request, command_id: JobId, user: Maker, services: ServicesDep, snapshot: IndexReadDep) -> HTMLResponse:
    """A command these pages sent (a registration, a recall): what it does and its live status; the Commands page
    (/console/commands/{id}) has its whole story."""
    return render(request, user, "console/maker/command.html", _command_context(request, services, snapshot.conn, user, command_id))


@router.get("/maker/commands/{command_id}/status", response_class=HTMLResponse)
def command_status(request: Request, command_id: JobId, user: Maker, services: ServicesDep, snapshot: IndexReadDep) -> HTMLResponse:
    """The status fragment the command page polls (htmx) until the command is rejected, or confirmed and indexed."""
    return render(request, user, "console/maker/_command_status.html", _command_context(request, services, snapshot.conn, user, command_id))


def _command_context(request: Request, services: Services, conn: Connection, user: SessionUser, command_id: str) -> dict[str, Any]:
    view = write_service.outbox_of(services).view(user.principal, command_id)
    lot = None
    if view["kind"] == "register" and view["status"] == "confirmed":
        lot = lot_number_of(conn, user.org_id, view["summary"].get("lot"))  # None until the mirror has the block
    elif view["kind"] == "recall":
        lot = view["summary"].get("lot")
    final = view["status"] == "rejected" or (view["status"] == "confirmed" and lot is not None)
    return {"command": _worded(request, view), "lot_number": lot, "final": final}


def _worded(request: Request, view: dict[str, Any]) -> dict[str, Any]:
    """A command's view with each contract error in the user's words (catalogue `error.<ErrorName>`)."""
    errors = [error | {"text": error_message(request, error["error"], error["message"] or "") if error["error"] else error["message"]} for error in view["errors"]]
    return view | {"errors": errors}
