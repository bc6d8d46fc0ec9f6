"""The console's auditor and regulator area (/console/audit): any organisation's consortium data (its parts, lots
and trade documents), a part's history, a lot's recall impact, proof bundles of any event or document, and the
anchored log of the user's own reads. Only organisations with the AUDITOR or REGULATOR role enter (403 not_auditor).

Signing in replaces the API key the /auditor page asks for. Every page an auditor or regulator reads here (and in the
documents area) is written to the audit log before it leaves, as the API's middleware does for /v1 reads: a read that
cannot be logged is refused (503 audit_log_unavailable). The data comes from the read functions of the API
(ledger_service.read, which also lists an organisation's lots for this area and the maker's) and the proof service
(ledger_service.routes.proofs); the user's own log entries, which the API has no function for, are read here, read only.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Optional

from fastapi import Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool

from indexer.tables import Batch
from ledger_service.accounts import SessionUser
from ledger_service.audit import AUDITED_ROLES, audit_log_of, entry_view
from ledger_service.audit_tables import AuditBatch, AuditLogEntry
from ledger_service.console.web import ConsoleUser, PageParams, checked_form, next_page_url, page_error, render, router_for
from ledger_service.deps import IndexReadDep, ServicesDep
from ledger_service.errors import ApiError, BadRequest, Forbidden, NotFound, Unavailable
from ledger_service.recall_notices import notice_of
from ledger_service.read import hex0x, inventory, list_documents, list_parts, organisation_lots, organisations, part_detail, recall_impact
from ledger_service.routes.proofs import audit_entry_bundle, event_bundle, proof_builder
from partledger.errors import ValidationError
from partledger.ids import part_id
from partledger.model import PartStatus
from partledger.proofs.builder import dump_bundle

log = logging.getLogger("partledger.console.audit")
router = router_for("audit")
T_CHAIN_BATCH = Batch.__table__
T_LOG, T_AUDIT_BATCH = AuditLogEntry.__table__, AuditBatch.__table__
HEX32_LENGTH = 66
ORG_TABS = ("parts", "lots", "documents")
Int63 = Annotated[int, Path(ge=0, lt=2**63)]


# --- who may enter, and the log of what they read ---------------------------------------------------------------


def audits(user: SessionUser) -> bool:
    """Whether the user's organisation is an auditor or regulator (and so reads every organisation's data)."""
    return bool(user.principal.roles & AUDITED_ROLES)


def require_auditor(user: ConsoleUser) -> SessionUser:
    if not audits(user):
        raise Forbidden("the audit area is for auditors and regulators", code="not_auditor")
    return user


Auditor = Annotated[SessionUser, Depends(require_auditor)]


def logged(request: Request, user: SessionUser, response: Response) -> Response:
    """Records an auditor's or regulator's read in the audit log before its answer leaves (blocking; others pass).
    When the entry cannot be written, the answer is dropped and a 503 page goes out instead."""
    if not audits(user):
        return response
    audit = audit_log_of(request.app)
    url = request.url
    target = url.path + (f"?{url.query}" if url.query else "")
    try:
        audit.record(user.principal, method=request.method, target=target, status=response.status_code)
    except Exception:  # noqa: BLE001 - an unlogged auditor read must not leave
        log.exception("could not write the audit log")
        refused = Unavailable("the audit log could not record this read; it was refused", code="audit_log_unavailable")
        return page_error(request, user, refused)
    try:
        if audit.batch_due():
            audit.anchor_pending()
    except Exception:  # noqa: BLE001 - anchoring is retried on the next read; the read itself is logged
        log.exception("could not anchor the audit log")
    return response


async def logged_async(request: Request, user: SessionUser, response: Response) -> Response:
    return await run_in_threadpool(logged, request, user, response)


def bundle_download(bundle: dict[str, Any], filename: str) -> Response:
    """A proof bundle as a JSON file to save (the same bytes `partledger proof get` writes)."""
    return Response(dump_bundle(bundle), media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def decimal(text: str, digits: int) -> bool:
    """Whether `text` is a number of at most `digits` ASCII digits (str.isdigit alone lets "²" through)."""
    value = text.strip()
    return 0 < len(value) <= digits and value.isascii() and value.isdigit()


def hex32(text: str) -> bytes | None:
    """0x + 64 hex digits as bytes; None for anything else."""
    value = text.strip()
    if len(value) != HEX32_LENGTH or not value.lower().startswith("0x"):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None


# --- the read the API has no function for -------------------------------------------------------------------------


def own_reads(service_engine: Engine, index_conn: Connection, user: SessionUser, *, everyone: bool, before: int | None, limit: int) -> dict[str, Any]:
    """The audit-log entries of the user (or, with `everyone`, of the whole organisation), newest first, each with
    its batch and whether that batch's root is anchored on chain yet (then it has a proof bundle)."""
    principal = user.principal
    query = select(T_LOG).where(T_LOG.c.org_id == principal.org_id)
    if not everyone:
        query = query.where(T_LOG.c.actor == principal.actor)
    if before is not None:
        query = query.where(T_LOG.c.id < before)
    with service_engine.connect() as conn:
        rows = conn.execute(query.order_by(T_LOG.c.id.desc()).limit(limit + 1)).all()
        batch_ids = {row.batch_id for row in rows[:limit] if row.batch_id is not None}
        batches = {b.id: b for b in conn.execute(select(T_AUDIT_BATCH).where(T_AUDIT_BATCH.c.id.in_(batch_ids)))} if batch_ids else {}
    roots = [bytes(batch.root) for batch in batches.values()]
    anchored = {bytes(r.root): r for r in index_conn.execute(select(T_CHAIN_BATCH).where(T_CHAIN_BATCH.c.root.in_(roots)))} if roots else {}
    items = []
    for row in rows[:limit]:
        view = entry_view(row)
        view["mine"] = row.actor == principal.actor
        batch = batches.get(row.batch_id)
        chain = anchored.get(bytes(batch.root)) if batch is not None else None
        view["batch"] = None if batch is None else {
            "id": batch.id, "root": hex0x(batch.root), "command_id": batch.command_id,
            "block": None if chain is None else chain.block_number, "tx_hash": None if chain is None else hex0x(chain.tx_hash),
        }  # fmt: skip
        items.append(view)
    return {"items": items, "next_before": rows[limit - 1].id if len(rows) > limit else None}


# --- pages --------------------------------------------------------------------------------------------------------


@router.get("/audit")
def audit_home(request: Request, user: Auditor, snapshot: IndexReadDep) -> Response:
    """Every organisation of the consortium, and the finders: a part, a lot, an event's or a document's proof."""
    orgs = organisations(snapshot.conn)
    return logged(request, user, render(request, user, "console/audit/home.html", {"orgs": orgs, "values": {}, "errors": {}}))


@router.get("/audit/orgs/{org_id}")
def audit_organisation(request: Request, user: Auditor, snapshot: IndexReadDep, paging: PageParams, org_id: Int63, tab: str = "parts",
                       status: Annotated[Optional[str], Query(max_length=20)] = None) -> Response:  # fmt: skip
    """One organisation: roles, site keys, stock per site, and a paginated tab of its parts, lots or documents."""
    found = next((org for org in organisations(snapshot.conn) if org["id"] == org_id), None)
    if found is None:
        return logged(request, user, page_error(request, user, NotFound(f"no organisation {org_id}", code="unknown_organisation")))
    if tab not in ORG_TABS:
        tab = "parts"
    context: dict[str, Any] = {"org": found, "org_tab": tab, "status": status, "statuses": [s.name.lower() for s in PartStatus]}
    try:
        context["stock"] = inventory(snapshot.conn, user.principal, org_id)
        if tab == "parts":
            wanted = PartStatus[status.upper()] if status else None
            context["page"] = list_parts(snapshot.conn, user.principal, lot=None, custodian=org_id, status=wanted, gtin=None, limit=paging.limit, cursor=paging.cursor)
        elif tab == "lots":
            context["page"] = organisation_lots(snapshot.conn, org_id, limit=paging.limit, cursor=paging.cursor)
        else:
            context["page"] = list_documents(snapshot.conn, user.principal, party=org_id, doc_type=None, from_time=None, to_time=None, doc_hash=None, limit=paging.limit, cursor=paging.cursor)
    except KeyError:
        return logged(request, user, page_error(request, user, BadRequest(f"unknown status {status!r}", code="invalid_status")))
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    context["next_url"] = next_page_url(request, context["page"]["next_cursor"])
    return logged(request, user, render(request, user, "console/audit/organisation.html", context))


@router.get("/audit/find")
def audit_find(request: Request, user: Auditor, snapshot: IndexReadDep, what: str = "part", part: str = "", gtin: str = "",
               serial: str = "", lot: str = "", tx_hash: str = "", log_index: str = "", doc_hash: str = "") -> Response:  # fmt: skip
    """The finders of the home page: a part (id, or GTIN and serial), a lot (number), an event (transaction and
    log index) or a document (hash). Found: 303 to its page or download; else the form again, the error by its field."""
    errors: dict[str, str] = {}
    target = None
    if what == "part":
        if part.strip():
            pid = hex32(part)
            if pid is None:
                errors["part"] = "audit.find.error.part_id"
            else:
                target = f"/console/audit/parts/0x{pid.hex()}"
        elif gtin.strip() or serial.strip():
            try:
                target = f"/console/audit/parts/0x{part_id(gtin.strip(), serial.strip()).hex()}"
            except (ValidationError, ValueError):
                errors["gtin"] = "audit.find.error.gtin_serial"
        else:
            errors["part"] = "audit.find.error.part_required"
    elif what == "lot":
        if not decimal(lot, 19):
            errors["lot"] = "audit.find.error.lot"
        else:
            target = f"/console/audit/lots/{int(lot.strip())}"
    elif what == "event":
        if hex32(tx_hash) is None:
            errors["tx_hash"] = "audit.find.error.tx_hash"
        if not decimal(log_index, 18):
            errors["log_index"] = "audit.find.error.log_index"
        if not errors:
            target = f"/console/audit/proofs/events/{tx_hash.strip().lower()}/{int(log_index.strip())}"
    elif what == "document":
        if hex32(doc_hash) is None:
            errors["doc_hash"] = "audit.find.error.doc_hash"
        else:
            target = f"/console/documents/proofs/{doc_hash.strip().lower()}"
    else:
        errors["what"] = "audit.find.error.what"
    if target is not None:
        return logged(request, user, RedirectResponse(target, status_code=303))
    values = {"part": part, "gtin": gtin, "serial": serial, "lot": lot, "tx_hash": tx_hash, "log_index": log_index, "doc_hash": doc_hash, "what": what}
    context = {"orgs": organisations(snapshot.conn), "values": values, "errors": errors}
    return logged(request, user, render(request, user, "console/audit/home.html", context, status=422, code="invalid_request"))


@router.get("/audit/parts/{part}")
def audit_part(request: Request, user: Auditor, snapshot: IndexReadDep, part: str) -> Response:
    """A part's consortium record and its whole history, each event with its proof bundle."""
    pid = hex32(part)
    if pid is None:
        return logged(request, user, page_error(request, user, BadRequest("a part id is 0x and 64 hex digits", code="invalid_part_id")))
    try:
        detail = part_detail(snapshot.conn, user.principal, pid)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, render(request, user, "console/audit/part.html", {"detail": detail, "part": detail["part"]}))


@router.get("/audit/lots/{lot}")
def audit_lot(request: Request, user: Auditor, snapshot: IndexReadDep, services: ServicesDep, paging: PageParams, lot: Int63) -> Response:
    """A lot's recall impact: counts by status, the recall if any with its notice, and every part with where it is."""
    try:
        impact = recall_impact(snapshot.conn, user.principal, lot, limit=paging.limit, cursor=paging.cursor)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    if impact["recall"] is not None:
        impact["recall"]["notice"] = notice_of(services.service_engine, impact["recall"]["notice_hash"])
    return logged(request, user, render(request, user, "console/audit/lot.html", {"impact": impact, "next_url": next_page_url(request, impact["next_cursor"])}))


@router.get("/audit/proofs/events/{tx_hash}/{log_index}")
def audit_event_proof(request: Request, user: Auditor, snapshot: IndexReadDep, services: ServicesDep, tx_hash: str, log_index: Int63) -> Response:
    """The proof bundle of any event (transaction hash, block-wide log index), to verify offline."""
    tx = hex32(tx_hash)
    if tx is None:
        return logged(request, user, page_error(request, user, BadRequest("a transaction hash is 0x and 64 hex digits", code="invalid_tx_hash")))
    try:
        bundle = event_bundle(snapshot.conn, user.principal, proof_builder(request.app, services), tx, log_index)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, bundle_download(bundle, f"proof-{tx.hex()[:12]}-{log_index}.json"))


@router.get("/audit/log")
def audit_log_page(request: Request, user: Auditor, snapshot: IndexReadDep, services: ServicesDep, everyone: bool = False,
                   before: Annotated[Optional[int], Query(ge=1, lt=2**63)] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50) -> Response:  # fmt: skip
    """The user's own reads as the audit log has them (newest first), each with its batch, its anchoring on chain and
    its proof bundle once anchored; `everyone`: the whole organisation's."""
    page = own_reads(services.service_engine, snapshot.conn, user, everyone=everyone, before=before, limit=limit)
    response = render(request, user, "console/audit/log.html", {"page": page, "everyone": everyone, "limit": limit})
    return logged(request, user, response)


@router.get("/audit/log/{entry_id}/proof")
def audit_log_proof(request: Request, user: Auditor, snapshot: IndexReadDep, services: ServicesDep, entry_id: Int63) -> Response:
    """The proof bundle of one of the organisation's own log entries: its batch's anchor and its inclusion proof."""
    with services.service_engine.connect() as conn:
        owner = conn.execute(select(T_LOG.c.org_id).where(T_LOG.c.id == entry_id)).scalar()
    if owner != user.principal.org_id:
        return logged(request, user, page_error(request, user, NotFound(f"no audit-log entry {entry_id} of yours", code="unknown_entry")))
    try:
        bundle = audit_entry_bundle(request.app, snapshot.conn, user.principal, proof_builder(request.app, services), entry_id)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, bundle_download(bundle, f"audit-entry-{entry_id}.json"))


@router.post("/audit/log/anchor")
async def audit_log_anchor(request: Request, user: Auditor) -> Response:
    """Closes a batch of the waiting entries and hands it to the outbox now (as POST /v1/audit/anchor)."""
    await checked_form(request, user)
    if not user.principal.may_act:
        return page_error(request, user, Forbidden(f"the role {user.principal.role!r} may read but not act", code="read_only_role"))
    try:
        await run_in_threadpool(audit_log_of(request.app).anchor_pending)
    except ApiError as exc:
        return page_error(request, user, exc)
    return RedirectResponse("/console/audit/log?anchored=1", status_code=303)
