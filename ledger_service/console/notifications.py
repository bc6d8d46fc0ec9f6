"""The console's quality notifications (/console/notifications): the inbox of what other members sent the user's
organisation, what it sent, raising an investigation or an alert, and one notification with its recipients, its
history and the next step to take (send, receive, acknowledge, accept or decline, close), each step's proof bundle.

Where it sits: one area of the console (ledger_service.console.web), on the same service functions as the API
(ledger_service.notifications.service). An attachment's file is hashed here (keccak-256) and neither stored nor
sent: only its hash goes into the anchored transition. An auditor's or regulator's reads are written to the audit log.
"""

from __future__ import annotations

import re
from typing import Any

from eth_utils import keccak
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from ledger_service.accounts import SessionUser
from ledger_service.console.audit import bundle_download, decimal, logged
from ledger_service.console.web import (
    ConsoleUser, Operator, PageParams, checked_form, form_digest, form_key, form_text, new_form_key, next_page_url, page_error, read_upload,
    render, router_for, see_other, services_of, status_of, upload_name,
)  # fmt: skip
from ledger_service.errors import ApiError, PayloadTooLarge
from ledger_service.notifications import service
from ledger_service.part_refs import parse_part_ref
from ledger_service.routes.proofs import proof_builder
from partledger import quality_notifications as qn
from partledger.errors import ValidationError

router = router_for("notifications")
BOXES = ("inbox", "sent")
AUDIT_BOXES = ("inbox", "sent", "all")
# Where a refusal of the service belongs on the new-notification form.
NEW_FIELDS = {
    "invalid_notification_kind": "kind", "invalid_severity": "severity", "invalid_title": "title", "invalid_description": "description",
    "no_parts": "lots", "unknown_lot": "lots", "invalid_lot": "lots", "unknown_part": "parts", "unreadable": "parts",
    "too_many_parts": "parts", "invalid_message": "message", "invalid_attachment": "attachment", "payload_too_large": "attachment",
}  # fmt: skip
MAX_LINES = service.MAX_PARTS


def attachment_of(form: FormData, content: bytes | None) -> list[service.Attachment]:
    """The form's attached file as the transition names it (its name and keccak-256); the bytes go no further."""
    if content is None:
        return []
    return [service.Attachment(name=(upload_name(form, "attachment") or "attachment")[: service.MAX_ATTACHMENT_NAME], hash="0x" + keccak(content).hex())]


async def attachment_field(request: Request, form: FormData, codes: dict[str, str]) -> bytes | None:
    try:
        return await read_upload(form, "attachment", limit=services_of(request).settings.max_body_bytes)
    except PayloadTooLarge:
        codes["attachment"] = "payload_too_large"
        return None


# --- the inbox ------------------------------------------------------------------------------------------------


@router.get("/notifications")
def inbox(request: Request, user: ConsoleUser, paging: PageParams, box: str = "inbox", state: str = "") -> Response:
    """The notifications sent to the user's organisation (with its state), or those it sent (recipients per state);
    auditors and regulators also every organisation's. `state` narrows the list to one state."""
    boxes = AUDIT_BOXES if user.principal.sees_everything else BOXES
    box = box if box in boxes else "inbox"
    wanted = state if state in qn.STATES else None
    services = services_of(request)
    try:
        page = service.list_notifications(services, user.principal, box=box, state=wanted, limit=paging.limit, cursor=paging.cursor)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    context = {
        "box": box, "boxes": boxes, "state": wanted or "", "states": qn.STATES, "items": page["items"],
        "next_url": next_page_url(request, page["next_cursor"]), "waiting": service.unanswered_count(services, user.principal),
    }  # fmt: skip
    return logged(request, user, render(request, user, "console/notifications/list.html", context))


# --- raising one ----------------------------------------------------------------------------------------------


def new_form(request: Request, user: SessionUser, *, values: dict[str, Any], codes: dict[str, str], status: int = 200, code: str | None = None) -> Response:
    context = {
        "values": values, "errors": {field: f"error.{reason}" for field, reason in codes.items()}, "kinds": qn.KINDS, "severities": qn.SEVERITIES,
        "form_key": values.get("form_key") or new_form_key(),
    }  # fmt: skip
    return render(request, user, "console/notifications/new.html", context, status=status, code=code)


@router.get("/notifications/new")
def new_page(request: Request, user: Operator, kind: str = "alert", lot: str = "", part: str = "") -> Response:
    """The form, filled in from ?kind=, ?lot= (a lot number) and ?part= (a part id) when given."""
    values = {"kind": kind if kind in qn.KINDS else "alert", "severity": "major", "lots": lot[:20] if decimal(lot, 19) else "", "parts": part[:66], "send": "on"}
    return new_form(request, user, values=values, codes={})


def parse_lots(text: str, codes: dict[str, str]) -> list[int]:
    lots = []
    for word in re.split(r"[\s,;]+", text.strip()):
        if not word:
            continue
        if not decimal(word, 19) or not 1 <= int(word) < 2**63:
            codes["lots"] = "invalid_lot"
            return []
        lots.append(int(word))
    return lots


def parse_parts(text: str, codes: dict[str, str]) -> list[bytes]:
    """One part a line: its id (0x…) or the Digital Link URI on its label."""
    ids = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        codes["parts"] = "too_many_parts"
        return []
    for line in lines:
        try:
            found = parse_part_ref(line)
        except ValidationError as exc:
            codes["parts"] = exc.code
            return []
        if not isinstance(found, bytes):
            codes["parts"] = "unreadable"
            return []
        ids.append(found)
    return ids


@router.post("/notifications/new")
async def create(request: Request, user: Operator) -> Response:
    """Raises the notification: recipients from the mirror, each "created" (and "sent" when the box is ticked), the
    transitions anchored by a site key of the user's organisation. A refusal shows next to its field, with its code."""
    form = await checked_form(request, user)
    values = {name: form_text(form, name, limit) for name, limit in (
        ("kind", 20), ("severity", 20), ("title", service.MAX_TITLE + 1), ("description", service.MAX_DESCRIPTION + 1), ("lots", 2_000),
        ("parts", 80_000), ("message", service.MAX_MESSAGE + 1), ("send", 3),
    )}  # fmt: skip
    values["form_key"] = form_key(form)
    codes: dict[str, str] = {}
    content = await attachment_field(request, form, codes)
    lots = parse_lots(values["lots"], codes)
    parts = parse_parts(values["parts"], codes)
    if codes:
        status, code = (413, "payload_too_large") if codes.get("attachment") == "payload_too_large" else (422, "invalid_form")
        return await run_in_threadpool(lambda: new_form(request, user, values=values, codes=codes, status=status, code=code))
    files = attachment_of(form, content)
    meaning = {key: values[key] for key in ("kind", "severity", "title", "description", "message", "send")} | {
        "lots": lots, "parts": [pid.hex() for pid in parts], "attachments": [f.hash for f in files],
    }
    try:
        answer = await run_in_threadpool(
            lambda: service.create_notification(
                services_of(request), user.principal, kind=values["kind"], severity=values["severity"], title=values["title"],
                description=values["description"], lots=lots, part_ids=parts, send=values["send"] == "on", message=values["message"],
                attachments=files, idempotency_key=values["form_key"], request_sha256=form_digest(request.url.path, meaning),
            )
        )  # fmt: skip
    except ApiError as exc:
        field = NEW_FIELDS.get(exc.code)
        codes = {field: exc.code} if field else {}
        return await run_in_threadpool(lambda: new_form(request, user, values=values, codes=codes, status=status_of(exc), code=exc.code))
    return see_other_to(answer["id"])


def see_other_to(notification_id: str) -> Response:
    return see_other(f"/console/notifications/{notification_id}")


# --- one notification -----------------------------------------------------------------------------------------


def detail_context(request: Request, user: SessionUser, notification_id: str) -> dict[str, Any]:
    view = service.notification_view(services_of(request), user.principal, notification_id)
    mine = next((r for r in view["recipients"] if r["org"]["id"] == user.org_id), None)
    return {"view": view, "mine": mine, "form_key": new_form_key(), "may_act": user.principal.may_act, "values": {}}


@router.get("/notifications/{notification_id}")
def detail(request: Request, user: ConsoleUser, notification_id: str) -> Response:
    try:
        context = detail_context(request, user, notification_id[:36])
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, render(request, user, "console/notifications/detail.html", context))


@router.post("/notifications/{notification_id}/act")
async def act(request: Request, user: Operator, notification_id: str) -> Response:
    """One step: `action` (send, close for the initiator, for one `recipient` or every one it applies to; receive,
    acknowledge, accept, decline for a recipient), with a message and an attached file's hash."""
    form = await checked_form(request, user)
    notification_id = notification_id[:36]
    values = {"action": form_text(form, "action", 20), "recipient": form_text(form, "recipient", 12), "message": form_text(form, "message", service.MAX_MESSAGE + 1)}
    key = form_key(form)
    codes: dict[str, str] = {}
    content = await attachment_field(request, form, codes)
    recipients = [int(values["recipient"])] if decimal(values["recipient"], 10) else None
    files = attachment_of(form, content)
    meaning = {"action": values["action"], "recipients": recipients, "message": values["message"], "attachments": [f.hash for f in files]}
    try:
        if codes:
            raise PayloadTooLarge("the attached file is too large", code="payload_too_large")
        await run_in_threadpool(
            lambda: service.act(
                services_of(request), user.principal, notification_id, action=values["action"], recipients=recipients, message=values["message"],
                attachments=files, idempotency_key=key, request_sha256=form_digest(request.url.path, meaning),
            )
        )  # fmt: skip
    except ApiError as exc:
        try:
            context = await run_in_threadpool(detail_context, request, user, notification_id)
        except ApiError:
            return page_error(request, user, exc)
        page = context | {"values": values, "errors": {"act": f"error.{exc.code}"}}
        return render(request, user, "console/notifications/detail.html", page, status=status_of(exc), code=exc.code)
    return see_other_to(notification_id)


@router.get("/notifications/{notification_id}/transitions/{transition_id}/proof")
def transition_proof(request: Request, user: ConsoleUser, notification_id: str, transition_id: str) -> Response:
    """A transition's proof bundle, to check offline (`partledger proof verify`)."""
    services = services_of(request)
    try:
        bundle = service.transition_bundle(services, proof_builder(request.app, services), user.principal, notification_id[:36], transition_id[:36])
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, bundle_download(bundle, f"notification-{transition_id[:8]}.json"))
