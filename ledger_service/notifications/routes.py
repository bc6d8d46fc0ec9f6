"""The quality notifications API (/v1/notifications), over ledger_service.notifications.service.

    POST /v1/notifications                         raise an investigation or an alert: recipients computed from the
                                                   mirror, "created" for each (and "sent" with send: true); 201
    GET  /v1/notifications?box=inbox|sent|all      the inbox (with the caller's state), the notifications it sent
                                                   (recipients per state), every one (auditors and regulators)
    GET  /v1/notifications/{id}                    one notification: content, recipients, transitions and where
                                                   each one's anchoring stands, the caller's next actions
    POST /v1/notifications/{id}/actions            send | close (the initiator), receive | acknowledge | accept |
                                                   decline (a recipient); 200 with the notification
    GET  /v1/notifications/{id}/transitions/{tid}/proof   a transition's proof bundle (docs/proof-bundle.md)

Every state change is recorded with the outbox command that anchors it (kind "notification"); an Idempotency-Key
makes a retry answer the first request.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ledger_service.deps import CurrentPrincipal, ServicesDep
from ledger_service.notifications import service
from ledger_service.routes.proofs import ChainTo, proof_builder
from ledger_service.routes.writes import IdempotencyKey, _BodyLimitedRoute, _digest
from ledger_service.schemas import BatchRecordProofBundle, Exact, Hex32, Omittable, OrganisationRef, Page
from partledger import quality_notifications as qn

router = APIRouter(prefix="/v1/notifications", tags=["notifications"], route_class=_BodyLimitedRoute)
HEX32 = r"^0x[0-9a-fA-F]{64}$"
Kind = Literal["investigation", "alert"]
Severity = Literal["minor", "major", "critical", "life_threatening"]
State = Literal["created", "sent", "received", "acknowledged", "accepted", "declined", "closed"]
Action = Literal["send", "receive", "acknowledge", "accept", "decline", "close"]
NotificationId = Annotated[str, Path(min_length=1, max_length=36)]
TransitionId = Annotated[str, Path(min_length=1, max_length=36)]


# --- bodies -----------------------------------------------------------------------------------------------------


class AttachmentBody(Exact):
    name: str = Field(min_length=1, max_length=service.MAX_ATTACHMENT_NAME, description="the file's name")
    hash: str = Field(pattern=HEX32, description="keccak-256 of the file: only this hash is anchored, the file stays with you")


class NotificationBody(Exact):
    kind: Kind = Field(description="investigation: upstream, to the suppliers; alert: downstream, to the customers")
    severity: Severity = "major"
    title: str = Field(min_length=1, max_length=service.MAX_TITLE)
    description: str = Field(default="", max_length=service.MAX_DESCRIPTION)
    lots: list[Annotated[int, Field(ge=1, lt=2**63)]] = Field(default_factory=list, max_length=service.MAX_LOTS, description="every part of these lots")
    part_ids: list[Annotated[str, Field(pattern=HEX32)]] = Field(default_factory=list, max_length=service.MAX_PARTS, description="parts named one by one")
    send: bool = Field(default=False, description="send at once; otherwise the recipients stay 'created' until POST .../actions {action: send}")
    message: str = Field(default="", max_length=service.MAX_MESSAGE, description="the message of the first transitions")
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=service.MAX_ATTACHMENTS)
    site: Optional[str] = Field(default=None, max_length=64, description="site key address or site name to sign with (default: the first)")


class ActionBody(Exact):
    action: Action
    recipients: Optional[list[Annotated[int, Field(ge=1, lt=2**32)]]] = Field(
        default=None, max_length=10_000, description="send and close: the recipients (default: every recipient the action applies to)"
    )
    message: str = Field(default="", max_length=service.MAX_MESSAGE)
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=service.MAX_ATTACHMENTS)
    site: Optional[str] = Field(default=None, max_length=64)


# --- answers ----------------------------------------------------------------------------------------------------


class AttachmentView(Exact):
    name: str
    hash: Hex32


class AckPart(Exact):
    part: Hex32
    gtin: str
    serial: str
    container: Omittable[Hex32] = Field(default=None, description="the outermost assembly or logistic unit it is in, when contained")
    vinHash: Omittable[Optional[Hex32]] = Field(default=None, description="installed parts: the salted VIN hash of the vehicle")  # noqa: N815


class AckParts(Exact):
    """What an alert's acknowledgement lists, as the mirror had it then (each list at most 10,000 long)."""

    heldCount: int  # noqa: N815
    installedCount: int  # noqa: N815
    held: list[AckPart]
    installed: list[AckPart]


class AnchorView(Exact):
    status: Literal["pending", "anchored", "failed"]
    root: Optional[Hex32]
    command_id: Optional[str]
    block: Optional[int]


class TransitionView(Exact):
    id: str
    recipient: OrganisationRef
    actor: OrganisationRef
    action: Literal["create", "send", "receive", "acknowledge", "accept", "decline", "close"]
    from_state: Optional[State]
    state: State
    at: float
    message: str
    attachments: list[AttachmentView]
    parts: Optional[AckParts]
    record_hash: Hex32 = Field(description="keccak-256 of the transition's canonical JSON: the first value of its batch leaf")
    anchor: AnchorView


class RecipientView(Exact):
    org: OrganisationRef
    state: State
    reasons: list[Literal["holds", "incoming", "held", "received", "installed", "supplier", "shipper"]]
    updated_at: float


class NotificationDetail(Exact):
    id: str
    kind: Kind
    severity: Severity
    title: str
    description: str
    initiator: OrganisationRef
    lots: list[int]
    parts: list[Hex32]
    part_count: int
    recalled: bool = Field(description="an alert about a lot recalled on chain when it was raised")
    content_hash: Hex32
    created_at: float
    role: Literal["initiator", "recipient", "observer"]
    next_actions: list[Action]
    recipients: list[RecipientView]
    transitions: list[TransitionView]
    command_id: Omittable[str] = Field(default=None, description="after a write: the outbox command that anchors its transitions")


class NotificationSummary(Exact):
    id: str
    kind: Kind
    severity: Severity
    title: str
    initiator: OrganisationRef
    recalled: bool
    part_count: int
    created_at: float
    state: Optional[State] = Field(description="inbox: the caller's state")
    updated_at: Optional[float]
    states: Optional[dict[str, int]] = Field(description="sent and all: how many recipients are in each state")


class NotificationPage(Page[NotificationSummary]):
    """Notifications, newest first."""


class NotificationProofSection(Exact):
    transition: dict[str, Any] = Field(description=f"the transition ({qn.TRANSITION_FORMAT}): keccak-256 of its canonical JSON is the leaf's first value")
    content: dict[str, Any] = Field(description=f"the notification ({qn.CONTENT_FORMAT}): keccak-256 of its canonical JSON is the transition's contentHash")


class NotificationProofBundle(BatchRecordProofBundle):
    """Proof bundle of one transition of a quality notification: the acting organisation's batch (kind
    "notification"), the transition's leaf and inclusion proof, and the transition and notification themselves."""

    notification: NotificationProofSection


# --- routes -----------------------------------------------------------------------------------------------------


def _attachments(items: list[AttachmentBody]) -> list[service.Attachment]:
    return [service.Attachment(name=item.name, hash=item.hash) for item in items]


@router.post("", status_code=201, responses={201: {"model": NotificationDetail, "description": "the notification, as its initiator sees it"}}, summary="Raise an investigation (upstream) or an alert (downstream)")
async def create(request: Request, body: NotificationBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(partial(
        service.create_notification, services, principal, kind=body.kind, severity=body.severity, title=body.title, description=body.description,
        lots=body.lots, part_ids=[bytes.fromhex(value[2:]) for value in body.part_ids], send=body.send, message=body.message,
        attachments=_attachments(body.attachments), site=body.site, idempotency_key=idempotency_key, request_sha256=digest,
    ))  # fmt: skip


@router.get("", responses={200: {"model": NotificationPage, "description": "newest first"}}, summary="The inbox, the notifications sent, or all of them (auditors, regulators)")
def list_all(
    principal: CurrentPrincipal, services: ServicesDep, box: Literal["inbox", "sent", "all"] = "inbox", state: Optional[State] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[Optional[str], Query(max_length=400)] = None,
) -> dict[str, Any]:  # fmt: skip
    return service.list_notifications(services, principal, box=box, state=state, limit=limit, cursor=cursor)


@router.get("/{notification_id}", responses={200: {"model": NotificationDetail, "description": "the notification as the caller may see it"}}, summary="One notification")
def get_one(notification_id: NotificationId, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return service.notification_view(services, principal, notification_id)


@router.post("/{notification_id}/actions", responses={200: {"model": NotificationDetail, "description": "the notification after the action"}}, summary="Move recipients' states: send, close (initiator); receive, acknowledge, accept, decline (recipient)")
async def take_action(request: Request, notification_id: NotificationId, body: ActionBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(partial(
        service.act, services, principal, notification_id, action=body.action, recipients=body.recipients, message=body.message,
        attachments=_attachments(body.attachments), site=body.site, idempotency_key=idempotency_key, request_sha256=digest,
    ))  # fmt: skip


@router.get(
    "/{notification_id}/transitions/{transition_id}/proof", tags=["proofs"],
    responses={200: {"model": NotificationProofBundle, "description": "the bundle (docs/proof-bundle.md)"}}, summary="Proof bundle of one transition",
)  # fmt: skip
def transition_proof(notification_id: NotificationId, transition_id: TransitionId, principal: CurrentPrincipal, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> dict[str, Any]:
    return service.transition_bundle(services, proof_builder(request.app, services), principal, notification_id, transition_id, chain_to=chain_to)

