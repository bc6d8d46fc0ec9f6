"""The site pages of the member console: a part and what this user may do with it now, bulk actions on a scanned
list, shipping (a list or a lot selection, to a consortium member, with a delivery note's hash), inbound shipments
and their receipt, inventory by site and status (with its CSV), and a workshop's installation with a VIN.

Where it sits: one area of the console (ledger_service.console.web). Every write goes through
ledger_service.write_service (the API's authorisation, validation, part references and outbox) and answers with the
command it wrote, linked to /console/commands/{id}; reads go through ledger_service.console.custody_read, which sees
only what the API shows the same principal: the parts an organisation holds, is shipped, or made.
A viewer reads; every POST refuses a viewer (403 read_only_role). Nothing is half-done: a write names all its parts
or none, and a refusal shows each refused row next to it with the service's code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from labels.digital_link import DigitalLink
from ledger_service import part_refs, read, write_service
from ledger_service.accounts import SessionUser
from ledger_service.console.i18n import lazy
from ledger_service.console.web import (
    ConsoleUser, Operator, PageParams, checked_form, error_message, form_digest, form_key, form_text, new_form_key, next_page_url, page_error,
    read_upload, render, router_for, services_of, status_of, translator, upload_name,
)  # fmt: skip
from ledger_service.console.custody_read import (
    ACTIONS, STATUS_NAMES, ListedPart, consignment, consignment_part_ids, held_lots, held_parts, inbound_shipments,
    inventory_csv, item_of, link_of_text, listed_parts, parse_item, part_view, pid_of, recipients, site_names,
)  # fmt: skip
from ledger_service.deps import IndexReadDep
from ledger_service.errors import ApiError, BadRequest, Forbidden, NotFound, PayloadTooLarge
from partledger.documents import salted_document_hash
from partledger.errors import ValidationError
from partledger.ids import checked_vin, normalize_gtin, part_id_unchecked, ascii32, validate_serial
from partledger.model import CUSTODY_ROLES, PartStatus, Role

router = router_for("custody")

BULK_KINDS = frozenset({"receive", "sell", "remove", "quarantine", "release", "scrap", "recycle", "cancel"})
TERMINAL_KINDS = frozenset({"scrap", "recycle"})  # cannot be undone: the form asks for a tick first
MAX_LIST = 500  # parts on a scanned list (hidden fields): more is a lot selection's job
MAX_DOC_BYTES = 20 * 1024 * 1024
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_SALT = re.compile(r"0x[0-9a-fA-F]{64}")

# The words for the refusals shown next to a field or a row (custody.error.<code>); another code shows the
# catalogue's error.<code> or the service's own message. Keys written out, for the catalogue test to find.
ERROR_KEYS = {
    "unreadable": lazy("custody.error.unreadable"),
    "unknown_part": lazy("custody.error.unknown_part"),
    "not_yours": lazy("custody.error.not_yours"),
    "empty_selection": lazy("custody.error.empty_selection"),
    "duplicate_part": lazy("custody.error.duplicate_part"),
    "invalid_state": lazy("custody.error.invalid_state"),
    "duplicate_parts": lazy("custody.error.duplicate_parts"),
    "unknown_recipient": lazy("custody.error.unknown_recipient"),
    "shipment_to_self": lazy("custody.error.shipment_to_self"),
    "recipient_cannot_hold_parts": lazy("custody.error.recipient_cannot_hold_parts"),
    "too_many_parts": lazy("custody.error.too_many_parts"),
    "invalid_vin": lazy("custody.error.invalid_vin"),
    "vin_check_digit": lazy("custody.error.vin_check_digit"),
    "required": lazy("custody.error.required"),
    "not_pdf": lazy("custody.error.not_pdf"),
    "too_large": lazy("custody.error.too_large"),
    "confirm": lazy("custody.error.confirm"),
    "list_too_long": lazy("custody.error.list_too_long"),
    "invalid_salt": lazy("custody.error.invalid_salt"),
    "invalid_quantity": lazy("custody.error.invalid_quantity"),
    "no_vin_found": lazy("custody.error.no_vin_found"),
    "invalid_kind": lazy("custody.error.invalid_kind"),
    "missing_role": lazy("custody.error.missing_role"),
    "unknown_shipment": lazy("custody.error.unknown_shipment"),
}
# Keys the templates build from a value: written out for the catalogue test.
ACTION_KEYS = {kind: key for kind, key in zip(ACTIONS, (
    lazy("custody.action.receive"), lazy("custody.action.ship"), lazy("custody.action.sell"), lazy("custody.action.install"), lazy("custody.action.remove"),
    lazy("custody.action.quarantine"), lazy("custody.action.release"), lazy("custody.action.scrap"), lazy("custody.action.recycle"), lazy("custody.action.cancel"),
))}
EVENT_KEYS = (
    lazy("custody.event.registered"), lazy("custody.event.shipped"), lazy("custody.event.received"), lazy("custody.event.cancelled"), lazy("custody.event.sold"), lazy("custody.event.installed"),
    lazy("custody.event.removed"), lazy("custody.event.quarantined"), lazy("custody.event.released"), lazy("custody.event.scrapped"), lazy("custody.event.recycled"),
)
ORG_ROLE_KEYS = (
    lazy("custody.orgrole.manufacturer"), lazy("custody.orgrole.logistics"), lazy("custody.orgrole.distributor"), lazy("custody.orgrole.workshop"),
    lazy("custody.orgrole.recycler"), lazy("custody.orgrole.auditor"), lazy("custody.orgrole.regulator"),
)
SIGNATURE_KEYS = (lazy("scan.signature.valid"), lazy("scan.signature.invalid"), lazy("scan.signature.revoked"), lazy("scan.signature.missing"), lazy("scan.signature.unchecked"))


# --- who may use these pages -----------------------------------------------------------------------------------


def _require_roles(user: SessionUser, roles: Role) -> SessionUser:
    if not user.principal.roles & roles:
        raise Forbidden("these pages are for organisations that hold parts", code="missing_role")
    return user


def site_reader(user: ConsoleUser) -> SessionUser:
    """A signed-in user of an organisation that holds parts (any user role: a viewer reads)."""
    return _require_roles(user, CUSTODY_ROLES)


def site_operator(user: Operator) -> SessionUser:
    """A signed-in admin or operator of an organisation that holds parts (a viewer: 403 read_only_role)."""
    return _require_roles(user, CUSTODY_ROLES)


SiteUser = Annotated[SessionUser, Depends(site_reader)]
SiteOperator = Annotated[SessionUser, Depends(site_operator)]


# --- forms: reading them, refusals in words ----------------------------------------------------------------------


def form_texts(form: FormData, name: str, *, limit: int = 2048, count: int = MAX_LIST + 1) -> list[str]:
    return [value.strip()[:limit] for value in form.getlist(name)[:count] if isinstance(value, str) and value.strip()]


def idempotency(key: str, path: str, payload: dict[str, Any]) -> dict[str, str]:
    """The Idempotency-Key and request digest of a form's write: the form's key and what it asks for, so that the
    same form sent twice (a double tap, a resend) answers its first command, while another action from the same page
    (another button, another consignment) is a write of its own."""
    request_sha256 = form_digest(path, payload)
    return {"idempotency_key": f"{key}:{request_sha256[:16]}", "request_sha256": request_sha256}


def words(request: Request, exc: Exception) -> str:
    """A refusal in the user's language: custody.error.<code>, else error.<code>, else the service's message."""
    code = getattr(exc, "code", "error")
    if code in ERROR_KEYS:
        return ERROR_KEYS[code]
    return error_message(request, code, getattr(exc, "message", None) or str(exc))


def row_errors(request: Request, exc: Exception, part_ids: Sequence[str]) -> dict[int, str]:
    """The rows (0-based, in `part_ids` order) a refusal names, each with its reason in words: part_refs' per-row
    refusals (1-based rows) and the pre-check's per-part ones (by part id)."""
    details = getattr(exc, "details", None)
    if not isinstance(details, list):
        return {}
    by_id = {pid: index for index, pid in enumerate(part_ids)}
    found: dict[int, str] = {}
    for detail in details:
        if not isinstance(detail, dict):
            continue
        index = detail["row"] - 1 if isinstance(detail.get("row"), int) else by_id.get(str(detail.get("part_id", "")).lower())
        if index is None or not 0 <= index < len(part_ids):
            continue
        code = detail.get("code") or getattr(exc, "code", "")
        # In the user's words when the catalogue has them (the row shows the part's state itself); else the service's.
        found[index] = _words_for_code(request, code) if code in ERROR_KEYS else (detail.get("reason") or detail.get("message") or _words_for_code(request, code))
    return found


def _words_for_code(request: Request, code: str) -> str:
    return translator(request)(ERROR_KEYS[code]) if code in ERROR_KEYS else error_message(request, code, code)


async def document_hash(form: FormData, errors: dict[str, str]) -> tuple[bytes | None, dict[str, str] | None]:
    """The delivery note (or QC report) a form attaches: its salted hash as the EvidenceLedger anchors documents,
    keccak256(salt ‖ keccak256(file)) (partledger.documents), with the salt given (the note is anchored already)
    or a new one the page shows once; None without a file. Errors go next to the fields `doc` and `doc_salt`.
    A new salt is drawn from the form's own random key and the file, so that the same form sent twice names the
    same document (and its Idempotency-Key answers the first command, with the salt it used)."""
    try:
        content = await read_upload(form, "doc", limit=MAX_DOC_BYTES) or None  # an empty file is no file
    except PayloadTooLarge:
        errors["doc"] = ERROR_KEYS["too_large"]
        return None, None
    salt_text = form_text(form, "doc_salt", 80)
    if content is None:
        if salt_text:
            errors["doc"] = ERROR_KEYS["required"]
        return None, None
    if not content.startswith(b"%PDF-"):
        errors["doc"] = ERROR_KEYS["not_pdf"]
        return None, None
    if salt_text and not _SALT.fullmatch(salt_text):
        errors["doc_salt"] = ERROR_KEYS["invalid_salt"]
        return None, None
    salt = bytes.fromhex(salt_text[2:]) if salt_text else hashlib.sha256(b"partledger console document salt\n" + form_key(form).encode() + b"\n" + content).digest()
    hashed = salted_document_hash(content, salt)
    return hashed, {"name": upload_name(form, "doc"), "doc_hash": "0x" + hashed.hex(), "salt": "0x" + salt.hex(), "salt_given": bool(salt_text), "bytes": len(content)}


def accepted(request: Request, user: SessionUser, answer: dict[str, Any], *, kind: str, document: dict[str, str] | None = None, **extra: Any) -> HTMLResponse:
    """The command a form wrote (202, as the API answers), with the link to follow it."""
    context = {"answer": answer, "kind": kind, "document": document, "command_url": f"/console/commands/{answer['command_id']}", **extra}
    return render(request, user, "console/custody/accepted.html", context, status=202)


# --- the custody home, and a part -------------------------------------------------------------------------------


@router.get("/custody", response_class=HTMLResponse)
def custody_home(request: Request, user: SiteUser, snapshot: IndexReadDep) -> HTMLResponse:
    """What a site does here: scan, inbound, ship, inventory, install; with the counts that need it now."""
    stock = read.inventory(snapshot.conn, user.principal, None)
    held = sum(sum(site["counts"].values()) for site in stock["sites"])
    return render(request, user, "console/custody/home.html", {"inventory": stock, "held": held, "workshop": bool(user.principal.roles & Role.WORKSHOP), "block": snapshot.block})


@router.get("/parts/gs1", response_class=HTMLResponse)
def part_by_gs1(request: Request, user: ConsoleUser, gtin: str = "", serial: str = "") -> Response:
    """A part named by GTIN and serial (typed in): its page."""
    try:
        pid = part_id_unchecked(int(normalize_gtin(gtin)), ascii32(validate_serial(serial)))
    except ValidationError as exc:
        values = {"gtin": gtin[:20], "serial": serial[:40]}
        field_name = "gtin" if exc.code == "invalid_gtin" else "serial"
        return render(request, user, "console/scan/scan.html", {"values": values, "errors": {field_name: error_message(request, exc.code, str(exc))}, "list": []}, status=400, code=exc.code)
    return RedirectResponse(f"/console/parts/0x{pid.hex()}", status_code=303)


@router.get("/parts/{part_id}", response_class=HTMLResponse)
async def part_page(request: Request, part_id: str, user: ConsoleUser, sig: str | None = None) -> HTMLResponse:
    """A part: its status, GTIN, serial and lot, custodian and history as the API shows them to this user, and the
    actions this user may take on it now. `sig`: the signature of the label just scanned, checked here."""
    if not _HEX32.fullmatch(part_id):
        raise NotFound("a part is named by 0x and 64 hex digits", code="unknown_part")
    services = services_of(request)

    def load() -> dict[str, Any]:
        with services.index_engine.connect() as conn, conn.begin():
            return part_view(conn, user, bytes.fromhex(part_id[2:]))

    context = await run_in_threadpool(load)
    part = context["part"]
    link = DigitalLink(gtin=part["gtin"], serial=part["serial"], signature=sig if sig and len(sig) < 200 else None)
    signature = await label_signature(request, link) if link.signature is not None else None
    return render(request, user, "console/custody/part.html", context | {"item": item_of(link), "signature": signature, "form_key": new_form_key()})


async def label_signature(request: Request, link: DigitalLink) -> str:
    """Whether a scanned label's signature is its manufacturer's, as the resolver's verifier judges it (on the
    thread the resolver runs its verifications on; nothing is recorded as a scan)."""
    from ledger_service.routes.resolver import desk_of

    desk = desk_of(request.app)
    return (await desk.run(desk.verifier.verify, link)).signature


# --- bulk actions on a list ------------------------------------------------------------------------------------


def _links(values: Sequence[str]) -> tuple[list[DigitalLink], list[str]]:
    links, bad = [], []
    for value in values:
        try:
            links.append(parse_item(value))
        except ValidationError:
            bad.append(value)
    return links, bad


async def render_list(
    request: Request, user: SessionUser, links: Sequence[DigitalLink], *, status: int = 200, code: str | None = None,
    errors: dict[str, str] | None = None, rows: dict[int, str] | None = None, notes: Sequence[dict[str, str]] = (), values: dict[str, Any] | None = None,
) -> HTMLResponse:  # fmt: skip
    """The scanned list: each part with its state and actions, the bulk actions every part allows, the inbound
    consignments its parts belong to ("receive all"), and the scan form to add more."""
    services = services_of(request)

    def load() -> list[ListedPart]:
        with services.index_engine.connect() as conn:
            return listed_parts(conn, user, links)

    listed = await run_in_threadpool(load)
    for index, reason in (rows or {}).items():
        if 0 <= index < len(listed):
            listed[index].error = reason
    if any(link.signature is not None for link in links):
        for entry, link in zip(listed, links):
            entry.signature = await label_signature(request, link) if link.signature is not None else "missing"
    common = [kind for kind in ACTIONS if listed and all(kind in entry.actions for entry in listed)]
    shipments: dict[str, int] = {}
    for entry in listed:
        if entry.shipment is not None:
            shipments[entry.shipment] = shipments.get(entry.shipment, 0) + 1

    def load_consignments() -> list[dict[str, Any]]:
        found = []
        with services.index_engine.connect() as conn:
            for key, count in shipments.items():
                try:
                    found.append(consignment(conn, user.org_id, key, limit=1, cursor=None) | {"scanned": count})
                except NotFound:  # received or cancelled since the list was read
                    continue
        return found

    consignments = await run_in_threadpool(load_consignments) if shipments else []
    context = {
        "list": listed, "common": [kind for kind in common if kind in BULK_KINDS or kind == "ship" or (kind == "install" and len(listed) == 1)],
        "consignments": consignments, "notes": list(notes), "errors": errors or {}, "values": values or {}, "form_key": new_form_key(),
        "terminal": sorted(TERMINAL_KINDS), "max_list": MAX_LIST,
    }  # fmt: skip
    return render(request, user, "console/scan/list.html", context, status=status, code=code)


@router.post("/custody/act", response_class=HTMLResponse)
async def act(request: Request, user: SiteOperator) -> Response:
    """One transition (receive, sell, remove, quarantine, release, scrap, recycle, cancel) of the parts a form
    names: the list's entries (`item`, Digital Link paths), part ids (`part`, an inbound page's ticks) or a whole
    inbound consignment (`shipment`: "receive all"), with an optional document's hash. All or nothing."""
    form = await checked_form(request, user)
    kind = form_text(form, "kind", 20)
    items, part_ids, shipment = form_texts(form, "item"), form_texts(form, "part", limit=66), form_text(form, "shipment", 80)
    links, unreadable = _links(items)
    origin = form_text(form, "from_shipment", 80)  # the inbound consignment page the ticks come from
    errors: dict[str, str] = {}
    if kind not in BULK_KINDS:
        return page_error(request, user, BadRequest(f"not an action: {kind!r}", code="invalid_kind"))
    if len(items) > MAX_LIST or len(part_ids) > MAX_LIST:
        return await render_list(request, user, links[:MAX_LIST], status=413, code="list_too_long", errors={"list": ERROR_KEYS["list_too_long"]})
    if unreadable:
        errors["list"] = ERROR_KEYS["unreadable"]
    if kind in TERMINAL_KINDS and form_text(form, "confirm") != "yes":
        errors["confirm"] = ERROR_KEYS["confirm"]
    doc_hash, document = await document_hash(form, errors)
    if not (items or part_ids or shipment):
        errors["part" if origin else "list"] = ERROR_KEYS["required"]
    if errors:
        if origin and not items:
            return await render_consignment(request, user, origin, status=400, code="invalid_form", errors=errors)
        return await render_list(request, user, links, status=400, code="invalid_form", errors=errors, values={"kind": kind})
    services = services_of(request)
    key = form_key(form)
    try:
        if shipment:

            def load() -> list[bytes]:
                with services.index_engine.connect() as conn:
                    return consignment_part_ids(conn, user.org_id, shipment)

            refs: list[Any] = await run_in_threadpool(load)
            named: list[str] = ["0x" + pid.hex() for pid in refs]
        elif part_ids:
            refs = named = part_ids
        else:
            refs = [{"gtin": link.gtin, "serial": link.serial} for link in links]
            named = ["0x" + pid_of(link).hex() for link in links]
        payload = {"kind": kind, "parts": named if not shipment else {"shipment": shipment, "parts": named}, "doc_hash": document and document["doc_hash"]}
        answer = await run_in_threadpool(
            lambda: write_service.submit_transition(
                services, user.principal, kind=kind, parts=refs, doc_hash=doc_hash, **idempotency(key, request.url.path, payload),
            )
        )
    except (ApiError, ValidationError) as exc:
        if items and not shipment:
            return await render_list(
                request, user, links, status=status_of(exc), code=getattr(exc, "code", "error"),
                errors={"list": words(request, exc)}, rows=row_errors(request, exc, [entry_id(link) for link in links]), values={"kind": kind},
            )  # fmt: skip
        return page_error(request, user, exc)
    return accepted(request, user, answer, kind=kind, document=document)


def entry_id(link: DigitalLink) -> str:
    return "0x" + pid_of(link).hex()


# --- shipping --------------------------------------------------------------------------------------------------


def _ship_context(conn: Connection, user: SessionUser, links: Sequence[DigitalLink], **extra: Any) -> dict[str, Any]:
    return {
        "list": listed_parts(conn, user, links), "lots": held_lots(conn, user.org_id), "recipients": recipients(conn, user.org_id),
        "form_key": new_form_key(), **extra,
    }  # fmt: skip


@router.get("/custody/ship", response_class=HTMLResponse)
def ship_page(request: Request, user: SiteUser, snapshot: IndexReadDep) -> HTMLResponse:
    """The ship form: the parts named by `item` (a part page's "Ship"), or a lot selection; the recipient from the
    consortium's members; an optional delivery note."""
    links, _ = _links(request.query_params.getlist("item")[:MAX_LIST])
    source = "list" if links else "lot"
    return render(request, user, "console/custody/ship.html", _ship_context(snapshot.conn, user, links, values={"source": source}))


RECIPIENT_CODES = frozenset({"unknown_recipient", "shipment_to_self", "recipient_cannot_hold_parts"})  # shown next to the recipient
PART_CODES = frozenset({"invalid_parts", "invalid_state", "unknown_part", "duplicate_parts", "too_many_parts", "payload_too_large"})  # next to the parts


@router.post("/custody/ship", response_class=HTMLResponse)
async def ship_submit(request: Request, user: SiteOperator) -> Response:
    """Step "prepare" (from a scanned list): the form with the list. Step "submit": the shipment, of the list or of
    a lot selection ("the parts of lot L I hold in stock", optionally only the first N), to the chosen member."""
    form = await checked_form(request, user)
    services = services_of(request)
    items = form_texts(form, "item")
    links, _ = _links(items[:MAX_LIST])
    source = "list" if form_text(form, "source") != "lot" and links else "lot"
    values = {"source": source, "lot": form_text(form, "lot", 40), "quantity": form_text(form, "quantity", 10), "to_org": form_text(form, "to_org", 12), "doc_salt": form_text(form, "doc_salt", 80)}

    async def again(status: int, code: str, errors: dict[str, str], rows: dict[int, str] | None = None) -> HTMLResponse:
        def load() -> dict[str, Any]:
            with services.index_engine.connect() as conn:
                return _ship_context(conn, user, links, values=values, errors=errors)

        context = await run_in_threadpool(load)
        for index, reason in (rows or {}).items():
            if 0 <= index < len(context["list"]):
                context["list"][index].error = reason
        context["form_key"] = form_key(form)
        return render(request, user, "console/custody/ship.html", context, status=status, code=code)

    if form_text(form, "step") == "prepare":
        values["source"] = "list" if links else "lot"
        return await again(200, None, {})  # type: ignore[arg-type]
    errors: dict[str, str] = {}
    if len(items) > MAX_LIST:
        errors["list"] = ERROR_KEYS["list_too_long"]
    to_org = int(values["to_org"]) if values["to_org"].isascii() and values["to_org"].isdigit() and len(values["to_org"]) < 11 else None
    if to_org is None:
        errors["to_org"] = ERROR_KEYS["required"]
    refs: list[Any] = []
    quantity = None
    if source == "list":
        refs = [{"gtin": link.gtin, "serial": link.serial} for link in links]
    else:
        lot_text, _, gtin = values["lot"].partition(":")
        if not (lot_text.isascii() and lot_text.isdigit()) or len(lot_text) > 19 or not (gtin.isascii() and gtin.isdigit()):
            errors["lot"] = ERROR_KEYS["required"]
        else:
            refs = [{"lot": int(lot_text), "gtin": gtin, "status": "in_stock"}]
        if values["quantity"]:
            quantity = int(values["quantity"]) if values["quantity"].isascii() and values["quantity"].isdigit() and 0 < int(values["quantity"]) <= services.settings.max_rows_per_request else None
            if quantity is None:
                errors["quantity"] = ERROR_KEYS["invalid_quantity"]
    doc_hash, document = await document_hash(form, errors)
    if errors:
        return await again(400, "invalid_form", errors)
    key = form_key(form)

    def submit() -> dict[str, Any]:
        parts: list[Any] = refs
        if quantity is not None:  # the first N of the selection, in part id order; the write checks them again
            with services.index_engine.connect() as conn:
                parts = part_refs.resolve_parts(conn, user.principal, refs, kind="ship", max_parts=services.settings.max_rows_per_request)[:quantity]
        payload = {"parts": refs, "quantity": quantity, "to": to_org, "doc_hash": document and document["doc_hash"]}
        return write_service.submit_transition(
            services, user.principal, kind="ship", parts=parts, to_org=to_org, doc_hash=doc_hash, **idempotency(key, request.url.path, payload),
        )  # fmt: skip

    try:
        answer = await run_in_threadpool(submit)
    except (ApiError, ValidationError) as exc:
        code = getattr(exc, "code", "error")
        details = getattr(exc, "details", None)
        row_code = details[0].get("code") if code == "invalid_parts" and isinstance(details, list) and details and isinstance(details[0], dict) else None
        target = "to_org" if code in RECIPIENT_CODES else ((source if source == "lot" else "list") if code in PART_CODES else "form")
        message = ERROR_KEYS[row_code] if source == "lot" and row_code in ERROR_KEYS else words(request, exc)
        rows_map = row_errors(request, exc, [entry_id(link) for link in links]) if source == "list" else {}
        return await again(status_of(exc), code, {target: message}, rows_map)
    recipient = next((org["name"] for org in await run_in_threadpool(_recipients_of, services, user) if org["id"] == to_org), None)
    return accepted(request, user, answer, kind="ship", document=document, recipient=recipient)


def _recipients_of(services: Any, user: SessionUser) -> list[dict[str, Any]]:
    with services.index_engine.connect() as conn:
        return recipients(conn, user.org_id)


# --- inbound ---------------------------------------------------------------------------------------------------


@router.get("/custody/inbound", response_class=HTMLResponse)
def inbound_page(request: Request, user: SiteUser, snapshot: IndexReadDep, page: PageParams) -> HTMLResponse:
    """Shipments to this organisation in transit, by sender and delivery note, each with "receive all"."""
    found = inbound_shipments(snapshot.conn, user.org_id, limit=page.limit, cursor=page.cursor)
    context = {"shipments": found["items"], "next_url": next_page_url(request, found["next_cursor"]), "form_key": new_form_key(), "block": snapshot.block}
    return render(request, user, "console/custody/inbound.html", context)


@router.get("/custody/inbound/{key}", response_class=HTMLResponse)
async def consignment_page(request: Request, key: str, user: SiteUser, page: PageParams) -> HTMLResponse:
    """One inbound consignment's parts, a page at a time, to receive all of them or those ticked."""
    return await render_consignment(request, user, key, limit=page.limit, cursor=page.cursor)


async def render_consignment(
    request: Request, user: SessionUser, key: str, *, limit: int = 50, cursor: str | None = None, status: int = 200, code: str | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:  # fmt: skip
    services = services_of(request)

    def load() -> dict[str, Any]:
        with services.index_engine.connect() as conn, conn.begin():
            return consignment(conn, user.org_id, key, limit=limit, cursor=cursor)

    found = await run_in_threadpool(load)
    context = {"shipment": found, "next_url": next_page_url(request, found["next_cursor"]), "form_key": new_form_key(), "errors": errors or {}}
    return render(request, user, "console/custody/consignment.html", context, status=status, code=code)


# --- inventory -------------------------------------------------------------------------------------------------


def _status_filter(value: str | None) -> PartStatus | None:
    if not value:
        return None
    if value not in STATUS_NAMES:
        raise BadRequest(f"unknown status {value!r}", code="invalid_status")
    return PartStatus[value.upper()]


def _site_filter(value: str | None) -> str | None:
    if not value:
        return None
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        raise BadRequest("a site is named by its site key address", code="invalid_site")
    return value


@router.get("/custody/inventory", response_class=HTMLResponse)
def inventory_page(request: Request, user: SiteUser, snapshot: IndexReadDep) -> HTMLResponse:
    """Parts held per site and status (read.inventory), each count a link to its parts; the CSV export."""
    stock = read.inventory(snapshot.conn, user.principal, None)
    return render(request, user, "console/custody/inventory.html", {"inventory": stock, "statuses": STATUS_NAMES, "block": snapshot.block})


@router.get("/custody/inventory/parts", response_class=HTMLResponse)
def inventory_parts(request: Request, user: SiteUser, snapshot: IndexReadDep, page: PageParams, site: str | None = None, status: str | None = None) -> HTMLResponse:
    """A page of the parts held, narrowed to a site and a status."""
    site_key, state = _site_filter(site), _status_filter(status)
    found = held_parts(snapshot.conn, user.org_id, site_key=site_key, status=state, limit=page.limit, cursor=page.cursor)
    sites = site_names(snapshot.conn, user.org_id)
    context = {
        "parts": found["items"], "next_url": next_page_url(request, found["next_cursor"]), "site": site_key, "site_name": sites.get(site_key or ""),
        "sites": sites, "status": status or None, "statuses": STATUS_NAMES, "block": snapshot.block,
        "csv_url": "/console/custody/inventory.csv" + (("?" + "&".join(f"{k}={quote(v)}" for k, v in (("site", site_key), ("status", status)) if v)) if site_key or status else ""),
    }  # fmt: skip
    return render(request, user, "console/custody/parts.html", context)


@router.get("/custody/inventory.csv")
def inventory_export(request: Request, user: SiteUser, site: str | None = None, status: str | None = None) -> StreamingResponse:
    """The parts held as CSV (columns: CSV_COLUMNS), streamed from one snapshot of the mirror."""
    site_key, state = _site_filter(site), _status_filter(status)
    engine = services_of(request).index_engine
    name = "inventory" + (f"-{status}" if status else "") + ".csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return StreamingResponse(inventory_csv(engine, user.org_id, site_key=site_key, status=state), media_type="text/csv; charset=utf-8", headers=headers)


# --- installation ----------------------------------------------------------------------------------------------


def workshop_reader(user: ConsoleUser) -> SessionUser:
    return _require_roles(user, Role.WORKSHOP)


def workshop_operator(user: Operator) -> SessionUser:
    return _require_roles(user, Role.WORKSHOP)


Workshop = Annotated[SessionUser, Depends(workshop_reader)]
WorkshopOperator = Annotated[SessionUser, Depends(workshop_operator)]
VIN_FORMATS = ("Code39", "Code128", "DataMatrix")  # what VIN labels carry (door pillar, windscreen, registration)


def vin_barcode_formats() -> tuple[Any, ...]:
    import zxingcpp

    return tuple(getattr(zxingcpp.BarcodeFormat, name) for name in VIN_FORMATS)


def vins_in(texts: Sequence[str]) -> list[str]:
    """The VINs among decoded barcode texts (a Code 39 VIN often carries a leading I for "import"; dropped)."""
    found = []
    for text in texts:
        candidate = text.strip().upper()
        if len(candidate) == 18 and candidate.startswith("I"):
            candidate = candidate[1:]
        if re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", candidate) and candidate not in found:
            found.append(candidate)
    return found


def _install_part(text: str) -> tuple[Any, DigitalLink | None]:
    """What the install form's part field names: a scanned Digital Link (URI or list entry), "GTIN serial", or a part
    id; as a part reference for write_service, and its link when it has one."""
    value = text.strip()
    if _HEX32.fullmatch(value):
        return value, None
    if value.startswith(("/", "http://", "https://")):
        link = link_of_text(value)
        return {"gtin": link.gtin, "serial": link.serial}, link
    gtin, _, serial = value.replace("/", " ", 1).partition(" ")
    link = DigitalLink(gtin=normalize_gtin(gtin.strip()), serial=validate_serial(serial.strip()))
    return {"gtin": link.gtin, "serial": link.serial}, link


@router.get("/custody/install", response_class=HTMLResponse)
def install_page(request: Request, user: Workshop, item: str = "", part: str = "") -> HTMLResponse:
    """The install form: the part (scanned, from a list or a part page, or typed) and the vehicle's VIN (typed, or
    read from the VIN barcode by the camera or a photo)."""
    values = {"part": (item or part)[:2048], "vin": ""}
    return render(request, user, "console/custody/install.html", {"values": values, "form_key": new_form_key()})


INSTALL_FIELDS = {"invalid_vin": "vin", "vin_check_digit": "vin", "invalid_parts": "part", "invalid_state": "part", "unknown_part": "part", "duplicate_parts": "part"}


@router.post("/custody/install", response_class=HTMLResponse)
async def install_submit(request: Request, user: WorkshopOperator) -> Response:
    """Step "prepare" (from a list or a part page): the form. Otherwise: a VIN photo without a typed VIN is read
    and the form shown again with it to confirm; a typed VIN is checked (ISO 3779 characters, the check digit of 49
    CFR 565 / GB 16735) before anything is sent, then the installation goes to write_service."""
    form = await checked_form(request, user)
    services = services_of(request)
    item = form_texts(form, "item")[:1]
    values = {"part": item[0] if item else form_text(form, "part", 2048), "vin": form_text(form, "vin", 40)}
    key = form_key(form)

    def again(status: int, code: str | None, errors: dict[str, str], notes: Sequence[str] = ()) -> HTMLResponse:
        return render(request, user, "console/custody/install.html", {"values": values, "errors": errors, "form_key": key, "notes": list(notes)}, status=status, code=code)

    if form_text(form, "step") == "prepare":
        return again(200, None, {})
    errors: dict[str, str] = {}
    try:
        photo = await read_upload(form, "vin_photo", limit=12 * 1024 * 1024) or None
    except PayloadTooLarge:
        return again(413, "too_large", {"vin_photo": ERROR_KEYS["too_large"]})
    if photo is not None and not values["vin"]:
        from ledger_service.routes.resolver import decode_barcodes

        try:
            found = vins_in(await run_in_threadpool(decode_barcodes, photo, vin_barcode_formats()))
        except ApiError as exc:
            return again(status_of(exc), exc.code, {"vin_photo": words(request, exc)})
        if not found:
            return again(422, "no_vin_found", {"vin_photo": ERROR_KEYS["no_vin_found"]})
        values["vin"] = found[0]
        return again(200, None, {}, notes=[lazy("custody.install.vin_read")])
    ref = None
    if not values["part"]:
        errors["part"] = ERROR_KEYS["required"]
    else:
        try:
            ref, _ = _install_part(values["part"])
        except ValidationError as exc:
            errors["part"] = error_message(request, exc.code, str(exc))
    vin, vin_code = None, None
    if not values["vin"]:
        errors["vin"] = ERROR_KEYS["required"]
    else:
        try:
            vin = checked_vin(values["vin"])  # before anything is sent: a wrong check digit is a typo
        except ValidationError as exc:
            errors["vin"] = ERROR_KEYS.get(exc.code, str(exc))
            vin_code = exc.code
    if errors:
        return again(400, vin_code or "invalid_form", errors)
    assert ref is not None and vin is not None
    values["vin"] = vin
    payload = {"part": ref, "vin": vin}  # as the API's body binds its Idempotency-Key
    try:
        answer = await run_in_threadpool(
            lambda: write_service.submit_install(services, user.principal, items=[(ref, vin)], **idempotency(key, request.url.path, payload))
        )
    except (ApiError, ValidationError) as exc:
        code = getattr(exc, "code", "error")
        target = INSTALL_FIELDS.get(code, "form")
        details = getattr(exc, "details", None)
        message = words(request, exc)
        if isinstance(details, list) and details and isinstance(details[0], dict) and details[0].get("code") in ERROR_KEYS:
            message = _words_for_code(request, details[0]["code"])
        return again(status_of(exc), code, {target: message})
    return accepted(request, user, answer, kind="install", vin=vin)
