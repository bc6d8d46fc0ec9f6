"""Quality notifications' tables (service-private; migration 0008_notifications): the notifications, the parts and
lots they are about, each recipient's state, every transition as recorded and hashed, and the batches in which the
transitions are anchored on chain by the acting organisation's site key."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Index, LargeBinary
from sqlmodel import Field

from ledger_service.tables import BigId, ServiceTable


class Notification(ServiceTable, table=True):
    """An investigation (upstream, to suppliers) or an alert (downstream, to customers) of one organisation, about
    some parts (given one by one, or as whole lots). `content` is its canonical JSON (partledger.quality_notifications,
    CONTENT_FORMAT), whose keccak-256 `content_hash` every transition names."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_initiator_created", "initiator", "created_at"),)

    id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=16)  # investigation | alert
    initiator: int
    severity: str = Field(max_length=20)
    title: str = Field(max_length=200)
    description: str = ""
    lots: str = "[]"  # JSON list of the lot numbers it is about (every part of each)
    part_count: int  # the affected parts: the lots' and the parts named one by one
    recalled: bool = False  # an alert about a lot recalled on chain when it was created: a recall alert
    content: bytes = Field(sa_type=LargeBinary)
    content_hash: bytes = Field(sa_type=LargeBinary)
    actor: str = Field(max_length=80)  # who created it: "user:<username>" or "key:<key id>"
    created_at: float


class NotificationPart(ServiceTable, table=True):
    """A part a notification names one by one (the parts of its lots are not listed here)."""

    __tablename__ = "notification_parts"

    notification_id: str = Field(primary_key=True, max_length=36)
    part_id: bytes = Field(sa_type=LargeBinary, primary_key=True)


class NotificationRecipient(ServiceTable, table=True):
    """One recipient organisation of a notification, its state, and why the mirror made it a recipient (JSON list
    of reasons: holds, incoming, held, received, installed, supplier, shipper)."""

    __tablename__ = "notification_recipients"
    __table_args__ = (Index("ix_notification_recipients_org", "org_id", "updated_at"),)

    notification_id: str = Field(primary_key=True, max_length=36)
    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    state: str = Field(max_length=16)
    reasons: str = "[]"
    updated_at: float


class NotificationTransition(ServiceTable, table=True):
    """One transition of one recipient's state: `record` is its canonical JSON (TRANSITION_FORMAT), `record_hash`
    the keccak-256 that its batch's leaf holds. `message`, `attachments` and `parts` are copies of the record's for
    reading; `actor_name` (the person or API key) is the acting organisation's private detail, never in the record."""

    __tablename__ = "notification_transitions"
    __table_args__ = (Index("ix_notification_transitions_notification", "notification_id", "seq"),)

    seq: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    id: str = Field(unique=True, max_length=36)
    notification_id: str = Field(max_length=36)
    recipient: int
    actor: int  # the acting organisation
    actor_name: str = Field(max_length=80)
    action: str = Field(max_length=16)
    from_state: Optional[str] = Field(default=None, max_length=16)
    state: str = Field(max_length=16)
    at_ms: int = Field(sa_type=BigInteger)
    message: str = ""
    attachments: str = "[]"  # JSON list of {"name", "hash"}
    parts: Optional[str] = None  # JSON {"held": [...], "installed": [...]} of an alert's acknowledgement
    record: bytes = Field(sa_type=LargeBinary)
    record_hash: bytes = Field(sa_type=LargeBinary)
    batch_id: int = Field(index=True)


class NotificationBatch(ServiceTable, table=True):
    """The transitions one request recorded, as a StandardMerkleTree (leaf values RECORD_TYPES) whose root the acting
    organisation's site key `signer` anchors (anchor_batch, kind "notification"); written in the transaction of that
    command, so that a transition is never recorded without its anchoring on its way."""

    __tablename__ = "notification_batches"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    org_id: int = Field(index=True)
    signer: str = Field(max_length=42)
    root: bytes = Field(sa_type=LargeBinary, unique=True)
    record_count: int
    command_id: str = Field(max_length=36, index=True)
    created_at: float
