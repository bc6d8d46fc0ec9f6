"""The audit log's tables (service-private): every read by an auditor or regulator, and the batches in which the
log is anchored on chain. Migration: ledger_service/migrations/versions/0003_audit_log.py."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, LargeBinary

from ledger_service.tables import BigId, ServiceTable
from sqlmodel import Field


class AuditLogEntry(ServiceTable, table=True):
    """One read: who (organisation, API key or console user), what (method, path and query, answer status), when (unix ms).
    Written before the answer leaves; never updated except to name the batch that anchors it."""

    __tablename__ = "audit_log"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    org_id: int = Field(index=True)
    key_id: str = Field(max_length=16)
    actor: Optional[str] = Field(default=None, max_length=80)  # "user:<username>" or "key:<key id>"; None before 0004
    method: str = Field(max_length=8)
    target: str  # path and query string
    status: int
    at_ms: int = Field(sa_type=BigInteger)
    batch_id: Optional[int] = Field(default=None, index=True)


class AuditBatch(ServiceTable, table=True):
    """Consecutive log entries whose StandardMerkleTree root is anchored by the outbox's anchor_batch command."""

    __tablename__ = "audit_batches"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    root: bytes = Field(sa_type=LargeBinary, unique=True)
    first_entry: int = Field(sa_type=BigInteger)
    last_entry: int = Field(sa_type=BigInteger)
    entry_count: int
    anchor_org: Optional[int] = None  # the organisation whose site key anchors it
    command_id: Optional[str] = Field(default=None, max_length=36)  # None until handed to the outbox
    created_at: float
