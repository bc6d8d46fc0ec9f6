"""Quality notifications between members: investigations upstream to suppliers, alerts downstream to customers, each
recipient's state moved one provable transition at a time (partledger.quality_notifications has the state machine).

Where it sits: the API (ledger_service.notifications.routes) and the console's inbox (ledger_service.console.
notifications) call these functions. Recipients come from the indexer's mirror (.recipients). Every request that
moves states records its transitions and an EvidenceLedger batch of them (kind "notification") in ONE transaction
with the outbox command that anchors the batch's root (anchor_batch, signed by a site key of the acting
organisation): a transition is never recorded without its anchoring on its way, and "we told you on day X, you
acknowledged on day Y" has, once the batch is mined, a proof bundle the offline verifier accepts (transition_bundle).

Who sees what: the initiator sees every recipient; a recipient sees the notification and its own state and
transitions only; auditors and regulators see everything; anyone else gets 404 unknown_notification.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from indexer.tables import Batch
from ledger_service.auth import Principal, require_may_act
from ledger_service.deps import Services
from ledger_service.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from ledger_service.notifications import recipients as mirror
from ledger_service.notifications.tables import Notification, NotificationBatch, NotificationPart, NotificationRecipient, NotificationTransition
from ledger_service.outbox import Draft
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.read import organisation_names
from ledger_service.routes.proofs import _provable
from ledger_service.tables import CommandItem
from ledger_service.write_service import outbox_of
from partledger import quality_notifications as qn
from partledger.merkle import build_tree
from partledger.model import CUSTODY_ROLES, Role
from partledger.proofs.builder import BatchRecord, ProofBuilder

T_NOTE, T_PART, T_RCPT = Notification.__table__, NotificationPart.__table__, NotificationRecipient.__table__
T_TRANS, T_BATCH = NotificationTransition.__table__, NotificationBatch.__table__
T_CHAIN_BATCH, T_ITEM = Batch.__table__, CommandItem.__table__
MAX_TITLE, MAX_DESCRIPTION, MAX_MESSAGE = 200, 4_000, 2_000
MAX_ATTACHMENTS, MAX_ATTACHMENT_NAME = 20, 200
MAX_LOTS, MAX_PARTS = 50, 1_000
BOXES = ("inbox", "sent", "all")
INITIATOR_ROLES = CUSTODY_ROLES | Role.REGULATOR


@dataclass(frozen=True)
class Attachment:
    """A file that goes with a transition: its name and keccak-256 (0x + 64 hex digits); the file stays with its owner."""

    name: str
    hash: str


@dataclass(frozen=True)
class Step:
    """One transition to record: a recipient's state from `from_state` to `state` by `action`."""

    recipient: int
    action: str
    from_state: str | None
    state: str
    reasons: tuple[str, ...] = ()
    parts: dict[str, Any] | None = None


# --- checks on what people send ---------------------------------------------------------------------------------


def clean_text(value: str, *, limit: int, code: str, what: str, required: bool = False) -> str:
    """Text as recorded: stripped, within `limit`, UTF-8 (no lone surrogate) and without NUL (which PostgreSQL's
    text refuses)."""
    text = value.strip()
    if required and not text:
        raise Unprocessable(f"{what} is required", code=code)
    if len(text) > limit:
        raise Unprocessable(f"{what} is at most {limit} characters", code=code)
    if "\x00" in text or not _utf8(text):
        raise Unprocessable(f"{what} holds a character that cannot be stored (NUL or a lone surrogate)", code=code)
    return text


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_attachments(attachments: Sequence[Attachment]) -> list[dict[str, str]]:
    if len(attachments) > MAX_ATTACHMENTS:
        raise Unprocessable(f"at most {MAX_ATTACHMENTS} attachments", code="invalid_attachment")
    out = []
    for attachment in attachments:
        name = attachment.name.strip()
        digest = attachment.hash.strip().lower()
        if not name or len(name) > MAX_ATTACHMENT_NAME or "\x00" in name or not _utf8(name):
            raise Unprocessable(f"an attachment's name is 1 to {MAX_ATTACHMENT_NAME} characters", code="invalid_attachment")
        if len(digest) != 66 or not digest.startswith("0x") or any(c not in "0123456789abcdef" for c in digest[2:]):
            raise Unprocessable("an attachment's hash is its keccak-256: 0x and 64 hex digits", code="invalid_attachment")
        out.append({"name": name, "hash": digest})
    return out


# --- creating a notification ------------------------------------------------------------------------------------


def create_notification(
    services: Services, principal: Principal, *, kind: str, severity: str, title: str, description: str = "",
    lots: Sequence[int] = (), part_ids: Sequence[bytes] = (), send: bool = False, message: str = "",
    attachments: Sequence[Attachment] = (), site: str | None = None, idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """Computes the recipients from the mirror and records the notification with a "created" transition for each
    (and "sent" too when `send`), anchored in one batch. Answers the notification as its initiator sees it."""
    require_may_act(principal)
    outbox = outbox_of(services)
    if idempotency_key is not None:
        replay = outbox.replay(principal.org_id, idempotency_key, request_sha256)
        if replay is not None:
            return notification_view(services, principal, _notification_of_command(services, replay["command_id"])) | {"command_id": replay["command_id"]}
    if not principal.roles & INITIATOR_ROLES:
        raise Forbidden("a notification is raised by an organisation that holds parts, or a regulator", code="missing_role")
    if kind not in qn.KINDS:
        raise Unprocessable(f"kind is one of {', '.join(qn.KINDS)}", code="invalid_notification_kind")
    if severity not in qn.SEVERITIES:
        raise Unprocessable(f"severity is one of {', '.join(qn.SEVERITIES)}", code="invalid_severity")
    title = clean_text(title, limit=MAX_TITLE, code="invalid_title", what="the title", required=True)
    description = clean_text(description, limit=MAX_DESCRIPTION, code="invalid_description", what="the description")
    message = clean_text(message, limit=MAX_MESSAGE, code="invalid_message", what="the message")
    files = clean_attachments(attachments)
    lot_list = sorted(set(lots))
    named = list(dict.fromkeys(part_ids))
    if not lot_list and not named:
        raise Unprocessable("name the parts the notification is about: lots, parts, or both", code="no_parts")
    if len(lot_list) > MAX_LOTS or len(named) > MAX_PARTS:
        raise Unprocessable(f"a notification names at most {MAX_LOTS} lots and {MAX_PARTS} parts one by one", code="too_many_parts")
    signer = outbox.signer_for(principal, site)
    with services.index_engine.connect() as conn:
        found_lots = mirror.known_lots(conn, lot_list)
        unknown_lots = [lot for lot in lot_list if lot not in found_lots]
        if unknown_lots:
            raise Unprocessable(f"{len(unknown_lots)} lot(s) are unknown", code="unknown_lot", details=[{"lot": lot} for lot in unknown_lots])
        found_parts = mirror.known_parts(conn, named)
        unknown = [pid for pid in named if pid not in found_parts]
        if unknown:
            raise Unprocessable(f"{len(unknown)} part(s) are not registered", code="unknown_part", details=[{"part_id": "0x" + pid.hex()} for pid in unknown[:100]])
        affected = list(dict.fromkeys(mirror.lot_parts(conn, lot_list) + named))
        if not affected:
            raise Unprocessable("the lots named hold no parts", code="no_parts")
        found, involved = mirror.recipients_of(conn, kind=kind, part_ids=affected, initiator=principal.org_id)
        if not involved and not principal.roles & Role.REGULATOR:
            raise Forbidden("your organisation made, held or installed none of these parts", code="not_involved")
        recalled = kind == "alert" and (any(row.recalled for row in found_lots.values()) or any(row.recalled for row in found_parts.values()))
    if not found:
        raise Unprocessable(f"the mirror names no organisation to {'alert' if kind == 'alert' else 'ask'} about these parts", code="no_recipients")
    notification_id = str(uuid.uuid4())
    now = time.time()
    content = {
        "format": qn.CONTENT_FORMAT, "id": notification_id, "kind": kind, "initiator": principal.org_id, "severity": severity,
        "title": title, "description": description, "lots": lot_list, "parts": sorted("0x" + pid.hex() for pid in named),
        "partCount": len(affected), "recalled": recalled, "createdAtMillis": int(now * 1000),
    }  # fmt: skip
    raw = qn.canonical_json(content)
    row = {
        "id": notification_id, "kind": kind, "initiator": principal.org_id, "severity": severity, "title": title, "description": description,
        "lots": json.dumps(lot_list), "part_count": len(affected), "recalled": recalled, "content": raw, "content_hash": qn.record_hash(content),
        "actor": principal.actor[:80], "created_at": now,
    }  # fmt: skip

    def write_notification(conn: Connection) -> None:
        conn.execute(insert(T_NOTE).values(**row))
        if named:
            conn.execute(insert(T_PART), [{"notification_id": notification_id, "part_id": pid} for pid in named])

    steps = [Step(org, "create", None, "created", reasons=tuple(sorted(why))) for org, why in sorted(found.items())]
    if send:
        steps += [Step(org, "send", "created", "sent") for org in sorted(found)]
    answer = _record(
        services, principal, signer=signer, notification=row, steps=steps, message=message, attachments=files, first=write_notification,
        idempotency_key=idempotency_key, request_sha256=request_sha256,
    )  # fmt: skip
    return notification_view(services, principal, notification_id) | {"command_id": answer["command_id"]}


# --- moving states ----------------------------------------------------------------------------------------------


def act(
    services: Services, principal: Principal, notification_id: str, *, action: str, recipients: Sequence[int] | None = None,
    message: str = "", attachments: Sequence[Attachment] = (), site: str | None = None, idempotency_key: str | None = None,
    request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """One action on a notification: the initiator's (send, close) for the recipients named (default: every recipient
    the action applies to), a recipient's (receive, acknowledge, accept, decline) for its own state. An alert's
    acknowledgement lists the affected parts the recipient still holds and those it installed, as the mirror has them."""
    require_may_act(principal)
    outbox = outbox_of(services)
    if idempotency_key is not None:
        replay = outbox.replay(principal.org_id, idempotency_key, request_sha256)
        if replay is not None:
            return notification_view(services, principal, notification_id) | {"command_id": replay["command_id"]}
    row = _notification(services, principal, notification_id)
    if action not in qn.TRANSITIONS or action == "create":
        raise Unprocessable(f"action is one of {', '.join(a for a in qn.ACTIONS if a != 'create')}", code="invalid_action")
    message = clean_text(message, limit=MAX_MESSAGE, code="invalid_message", what="the message")
    files = clean_attachments(attachments)
    starts, reaches, who = qn.TRANSITIONS[action]
    with services.service_engine.connect() as conn:
        states = dict(conn.execute(select(T_RCPT.c.org_id, T_RCPT.c.state).where(T_RCPT.c.notification_id == notification_id)).all())
    steps: list[Step] = []
    if who == "initiator":
        if principal.org_id != row.initiator:
            raise Forbidden(f"only the initiator may {action} a notification", code="not_initiator")
        if recipients:
            unknown = sorted(set(recipients) - set(states))
            if unknown:
                raise Unprocessable(f"{len(unknown)} organisation(s) are not recipients", code="unknown_notification_recipient", details=[{"org": org} for org in unknown])
            wrong = [{"org": org, "state": states[org]} for org in sorted(set(recipients)) if states[org] not in starts]
            if wrong:
                raise Conflict(f"{len(wrong)} recipient(s) are in no state to {action}", code="invalid_transition", details=wrong)
            targets = sorted(set(recipients))
        else:
            targets = sorted(org for org, state in states.items() if state in starts)
            if not targets:
                raise Conflict(f"no recipient is in a state to {action} ({' or '.join(str(s) for s in starts)})", code="invalid_transition")
        steps = [Step(org, action, states[org], reaches) for org in targets]
    else:
        if principal.org_id not in states:
            raise Forbidden(f"only a recipient may {action} a notification", code="not_a_recipient")
        state = states[principal.org_id]
        if state not in starts:
            raise Conflict(f"your state is {state}: {action} goes from {' or '.join(str(s) for s in starts)}", code="invalid_transition", details={"state": state})
        parts = None
        if action == "acknowledge" and row.kind == "alert":
            with services.index_engine.connect() as conn:
                parts = mirror.held_and_installed(conn, principal.org_id, affected_parts(services, row))
        steps = [Step(principal.org_id, action, state, reaches, parts=parts)]
    signer = outbox.signer_for(principal, site)
    answer = _record(
        services, principal, signer=signer, notification=row._mapping, steps=steps, message=message, attachments=files,
        idempotency_key=idempotency_key, request_sha256=request_sha256,
    )  # fmt: skip
    return notification_view(services, principal, notification_id) | {"command_id": answer["command_id"]}


def affected_parts(services: Services, row: Any) -> list[bytes]:
    """Every part a notification is about: the parts of its lots, and those it names one by one."""
    with services.service_engine.connect() as conn:
        named = [bytes(pid) for (pid,) in conn.execute(select(T_PART.c.part_id).where(T_PART.c.notification_id == row.id))]
    with services.index_engine.connect() as conn:
        return list(dict.fromkeys(mirror.lot_parts(conn, json.loads(row.lots)) + named))


def transition_record(notification: Any, principal: Principal, step: Step, *, message: str, attachments: list[dict[str, str]], at_ms: int) -> dict[str, Any]:
    """A transition as its record (TRANSITION_FORMAT): what the acting organisation's site key anchors."""
    return {
        "format": qn.TRANSITION_FORMAT, "id": str(uuid.uuid4()), "notification": notification["id"], "kind": notification["kind"],
        "contentHash": "0x" + bytes(notification["content_hash"]).hex(), "initiator": notification["initiator"], "recipient": step.recipient,
        "actor": principal.org_id, "action": step.action, "from": step.from_state, "state": step.state, "atMillis": at_ms,
        "message": message, "attachments": attachments, "parts": step.parts,
    }  # fmt: skip


def leaf_values(record: dict[str, Any]) -> tuple[Any, ...]:
    """A transition's leaf as partledger.merkle takes it (RECORD_TYPES)."""
    digest, *rest = qn.record_values(record)
    return (bytes.fromhex(digest[2:]), *rest)


def _record(
    services: Services, principal: Principal, *, signer: str, notification: Any, steps: list[Step], message: str,
    attachments: list[dict[str, str]], idempotency_key: str | None, request_sha256: str, first: Callable[[Connection], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Records the steps' transitions, their batch and the states they reach in the transaction of the outbox command
    that anchors the batch; 409 state_changed (and nothing recorded) when a recipient's state moved meanwhile."""
    at_ms = int(time.time() * 1000)
    records = [transition_record(notification, principal, step, message=message, attachments=attachments, at_ms=at_ms) for step in steps]
    tree = build_tree([leaf_values(record) for record in records], types=qn.RECORD_TYPES)
    payload = {"root": "0x" + tree.root.hex(), "record_count": len(records), "batch_kind": qn.NOTIFICATION_BATCH_KIND}
    now = time.time()

    def write(conn: Connection, command_id: str) -> None:
        if first is not None:
            first(conn)
        batch_id = conn.execute(insert(T_BATCH).values(
            org_id=principal.org_id, signer=signer, root=tree.root, record_count=len(records), command_id=command_id, created_at=now,
        )).inserted_primary_key[0]  # fmt: skip
        for step, record in zip(steps, records, strict=True):
            key = (T_RCPT.c.notification_id == notification["id"], T_RCPT.c.org_id == step.recipient)
            if step.from_state is None:
                conn.execute(insert(T_RCPT).values(notification_id=notification["id"], org_id=step.recipient, state=step.state, reasons=json.dumps(list(step.reasons)), updated_at=now))
            elif conn.execute(update(T_RCPT).where(*key, T_RCPT.c.state == step.from_state).values(state=step.state, updated_at=now)).rowcount != 1:
                raise Conflict(f"organisation {step.recipient}'s state changed meanwhile: look again", code="state_changed")
            conn.execute(insert(T_TRANS).values(
                id=record["id"], notification_id=notification["id"], recipient=step.recipient, actor=principal.org_id, actor_name=principal.actor[:80],
                action=step.action, from_state=step.from_state, state=step.state, at_ms=at_ms, message=message, attachments=json.dumps(attachments),
                parts=json.dumps(step.parts) if step.parts is not None else None, record=qn.canonical_json(record), record_hash=qn.record_hash(record),
                batch_id=batch_id,
            ))  # fmt: skip

    draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0, after_write=write)
    return outbox_of(services).accept(principal, draft, signer=signer, idempotency_key=idempotency_key, request_sha256=request_sha256)


# --- reading ----------------------------------------------------------------------------------------------------


def _notification(services: Services, principal: Principal, notification_id: str) -> Any:
    """The notification if the principal may see it (its initiator, a recipient, auditors and regulators); 404 else."""
    with services.service_engine.connect() as conn:
        row = conn.execute(select(T_NOTE).where(T_NOTE.c.id == notification_id[:36])).first()
        if row is not None and row.initiator != principal.org_id and not principal.sees_everything:
            mine = conn.execute(select(T_RCPT.c.org_id).where(T_RCPT.c.notification_id == row.id, T_RCPT.c.org_id == principal.org_id)).first()
            row = row if mine is not None else None
    if row is None:
        raise NotFound(f"no notification {notification_id[:36]} that you may see", code="unknown_notification")
    return row


def _notification_of_command(services: Services, command_id: str) -> str:
    with services.service_engine.connect() as conn:
        found = conn.execute(
            select(T_TRANS.c.notification_id).select_from(T_TRANS.join(T_BATCH, T_BATCH.c.id == T_TRANS.c.batch_id)).where(T_BATCH.c.command_id == command_id).limit(1)
        ).scalar()  # fmt: skip
    if found is None:
        raise Conflict("this Idempotency-Key was used for another kind of request", code="idempotency_key_reused")
    return found


def next_actions(role: str, states: list[str]) -> list[str]:
    """The actions a caller in `role` may take now, given the states it sees."""
    allowed = []
    for action, (starts, _, who) in qn.TRANSITIONS.items():
        if action != "create" and who == ("initiator" if role == "initiator" else "recipient") and role != "observer" and any(s in starts for s in states):
            allowed.append(action)
    return allowed


def notification_view(services: Services, principal: Principal, notification_id: str) -> dict[str, Any]:
    """A notification as the principal may see it: its content, the recipients (the initiator and observers: every
    one; a recipient: itself), their transitions with where each one's anchoring stands, and the caller's next
    actions."""
    row = _notification(services, principal, notification_id)
    with services.service_engine.connect() as conn:
        recipients = conn.execute(select(T_RCPT).where(T_RCPT.c.notification_id == row.id).order_by(T_RCPT.c.org_id)).all()
        transitions = conn.execute(select(T_TRANS).where(T_TRANS.c.notification_id == row.id).order_by(T_TRANS.c.seq)).all()
        named = [bytes(pid) for (pid,) in conn.execute(select(T_PART.c.part_id).where(T_PART.c.notification_id == row.id).order_by(T_PART.c.part_id))]
    is_recipient = any(r.org_id == principal.org_id for r in recipients)
    role = "initiator" if row.initiator == principal.org_id else ("recipient" if is_recipient else "observer")
    if role == "recipient":
        recipients = [r for r in recipients if r.org_id == principal.org_id]
        transitions = [t for t in transitions if t.recipient == principal.org_id]
    anchors = _anchors(services, {t.batch_id for t in transitions})
    with services.index_engine.connect() as conn:
        names = organisation_names(conn)
    return {
        "id": row.id, "kind": row.kind, "severity": row.severity, "title": row.title, "description": row.description,
        "initiator": {"id": row.initiator, "name": names.get(row.initiator)}, "lots": json.loads(row.lots),
        "parts": ["0x" + pid.hex() for pid in named], "part_count": row.part_count, "recalled": row.recalled,
        "content_hash": "0x" + bytes(row.content_hash).hex(), "created_at": row.created_at, "role": role,
        "next_actions": next_actions(role, [r.state for r in recipients]),
        "recipients": [
            {"org": {"id": r.org_id, "name": names.get(r.org_id)}, "state": r.state, "reasons": json.loads(r.reasons), "updated_at": r.updated_at}
            for r in recipients
        ],
        "transitions": [transition_view(t, names, anchors.get(t.batch_id), own=t.actor == principal.org_id) for t in transitions],
    }  # fmt: skip


def transition_view(row: Any, names: dict[int, str], anchor: dict[str, Any] | None, *, own: bool) -> dict[str, Any]:
    """A transition as the API shows it; the anchoring command's id only to the organisation whose command it is."""
    anchor = dict(anchor or {"status": "pending", "root": None, "command_id": None, "block": None})
    if not own:
        anchor["command_id"] = None
    return {
        "id": row.id, "recipient": {"id": row.recipient, "name": names.get(row.recipient)}, "actor": {"id": row.actor, "name": names.get(row.actor)},
        "action": row.action, "from_state": row.from_state, "state": row.state, "at": row.at_ms / 1000, "message": row.message,
        "attachments": json.loads(row.attachments), "parts": json.loads(row.parts) if row.parts else None,
        "record_hash": "0x" + bytes(row.record_hash).hex(), "anchor": anchor,
    }  # fmt: skip


def _anchors(services: Services, batch_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Where each batch's anchoring stands: anchored (in block N, as the mirror has it), failed (the chain refused
    the command), or pending."""
    if not batch_ids:
        return {}
    with services.service_engine.connect() as conn:
        batches = conn.execute(select(T_BATCH).where(T_BATCH.c.id.in_(sorted(batch_ids)))).all()
        refused = {
            command for (command,) in conn.execute(
                select(T_ITEM.c.command_id).where(T_ITEM.c.command_id.in_([b.command_id for b in batches]), T_ITEM.c.state == "rejected")
            )
        }  # fmt: skip
    with services.index_engine.connect() as conn:
        mined = dict(conn.execute(select(T_CHAIN_BATCH.c.root, T_CHAIN_BATCH.c.block_number).where(T_CHAIN_BATCH.c.root.in_([bytes(b.root) for b in batches]))).all())
    out = {}
    for batch in batches:
        block = mined.get(bytes(batch.root))
        status = "anchored" if block is not None else ("failed" if batch.command_id in refused else "pending")
        out[batch.id] = {"status": status, "root": "0x" + bytes(batch.root).hex(), "command_id": batch.command_id, "block": block}
    return out


def list_notifications(services: Services, principal: Principal, *, box: str, state: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """The inbox (notifications to the principal's organisation, with its state), the notifications it sent (with
    how many recipients are in each state), or every notification (auditors and regulators); newest first."""
    if box not in BOXES:
        raise Unprocessable(f"box is one of {', '.join(BOXES)}", code="invalid_box")
    if state is not None and state not in qn.STATES:
        raise Unprocessable(f"state is one of {', '.join(qn.STATES)}", code="invalid_state_filter")
    if box == "all" and not principal.sees_everything:
        raise Forbidden("every organisation's notifications are for auditors and regulators", code="not_auditor")
    after = decode_cursor(cursor, 2)
    if after is not None and (not isinstance(after[0], (int, float)) or not isinstance(after[1], str)):
        raise BadRequest("malformed pagination cursor", code="invalid_cursor")
    if box == "inbox":
        query = select(T_NOTE, T_RCPT.c.state, T_RCPT.c.updated_at).select_from(T_NOTE.join(T_RCPT, T_RCPT.c.notification_id == T_NOTE.c.id)).where(T_RCPT.c.org_id == principal.org_id)
        order = T_RCPT.c.updated_at
        if state is not None:
            query = query.where(T_RCPT.c.state == state)
    else:
        query = select(T_NOTE)
        order = T_NOTE.c.created_at
        if box == "sent":
            query = query.where(T_NOTE.c.initiator == principal.org_id)
        if state is not None:
            query = query.where(T_NOTE.c.id.in_(select(T_RCPT.c.notification_id).where(T_RCPT.c.state == state)))
    if after is not None:
        query = query.where(or_(order < after[0], and_(order == after[0], T_NOTE.c.id < after[1])))
    with services.service_engine.connect() as conn:
        rows = conn.execute(query.order_by(order.desc(), T_NOTE.c.id.desc()).limit(limit + 1)).all()
        ids = [row.id for row in rows[:limit]]
        counts: dict[str, dict[str, int]] = {}
        if box != "inbox" and ids:
            for note, recipient_state, count in conn.execute(
                select(T_RCPT.c.notification_id, T_RCPT.c.state, func.count()).where(T_RCPT.c.notification_id.in_(ids)).group_by(T_RCPT.c.notification_id, T_RCPT.c.state)
            ):  # fmt: skip
                counts.setdefault(note, {})[recipient_state] = count
    with services.index_engine.connect() as conn:
        names = organisation_names(conn)
    items = []
    for row in rows[:limit]:
        item = {
            "id": row.id, "kind": row.kind, "severity": row.severity, "title": row.title, "initiator": {"id": row.initiator, "name": names.get(row.initiator)},
            "recalled": row.recalled, "part_count": row.part_count, "created_at": row.created_at,
            "state": row.state if box == "inbox" else None, "updated_at": row.updated_at if box == "inbox" else None,
            "states": counts.get(row.id, {}) if box != "inbox" else None,
        }  # fmt: skip
        items.append(item)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.updated_at if box == "inbox" else last.created_at, last.id])
    return {"items": items, "next_cursor": next_cursor}


def unanswered_count(services: Services, principal: Principal) -> int:
    """How many notifications wait for the principal's organisation to act (sent, received or acknowledged)."""
    with services.service_engine.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(T_RCPT).where(T_RCPT.c.org_id == principal.org_id, T_RCPT.c.state.in_(("sent", "received", "acknowledged")))
        ).scalar() or 0)  # fmt: skip


# --- proof bundles ----------------------------------------------------------------------------------------------


def transition_bundle(services: Services, builder: ProofBuilder, principal: Principal, notification_id: str, transition_id: str, *, chain_to: int | None = None) -> dict[str, Any]:
    """The proof bundle of one transition: its batch's anchoring (BatchAnchored, sent by the acting organisation's
    site key), the transition's leaf and inclusion proof, and the transition and the notification's content (section
    "notification"), which the offline verifier hashes back to the leaf. For the initiator, the transition's
    recipient, auditors and regulators; 409 not_anchored_yet until the batch is mined and mirrored."""
    note = _notification(services, principal, notification_id)
    with services.service_engine.connect() as conn:
        row = conn.execute(select(T_TRANS).where(T_TRANS.c.id == transition_id[:36], T_TRANS.c.notification_id == note.id)).first()
        if row is None or (note.initiator != principal.org_id and row.recipient != principal.org_id and not principal.sees_everything):
            raise NotFound(f"no transition {transition_id[:36]} of this notification that you may see", code="unknown_transition")
        batch = conn.execute(select(T_BATCH).where(T_BATCH.c.id == row.batch_id)).one()
        members = conn.execute(select(T_TRANS.c.record).where(T_TRANS.c.batch_id == batch.id).order_by(T_TRANS.c.seq)).all()
    with services.index_engine.connect() as conn:
        anchored = conn.execute(select(T_CHAIN_BATCH.c.tx_hash, T_CHAIN_BATCH.c.log_index).where(T_CHAIN_BATCH.c.root == bytes(batch.root))).first()
    if anchored is None:
        raise Conflict(f"the transition's batch is not anchored on chain yet (command {batch.command_id})", code="not_anchored_yet")
    tree = build_tree([leaf_values(json.loads(member.record)) for member in members], types=qn.RECORD_TYPES)
    record = json.loads(row.record)
    proof_record = BatchRecord(list(qn.RECORD_TYPES), qn.record_values(record), tree.proof(leaf_values(record)))
    bundle = _provable(builder.batch, bytes(batch.root), record=proof_record, chain_to=chain_to, located=(bytes(anchored.tx_hash), anchored.log_index))
    bundle["notification"] = {"transition": record, "content": json.loads(note.content)}
    return bundle
