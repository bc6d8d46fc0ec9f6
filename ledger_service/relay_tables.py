"""The relay's outbox (migration 0009): ForwardRequests that sites signed themselves, accepted by POST /v1/relay (202)
before anything reaches the chain, and the executeBatch transactions the relayer packed them into.

A request row is written once, in the transaction that answers 202, and keyed by its EIP-712 digest: the same signed
request posted twice is one row. A batch row holds the signed bytes and the relayer's nonce, chosen in the SQL
transaction that stores them (unique on relayer + nonce), so a restart sends exactly those bytes again, as the
submitter does with commands (ledger_service.tables.ChainTransaction).
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field

from ledger_service.tables import BigId, ServiceTable


class RelayRequest(ServiceTable, table=True):
    """A signed ForwardRequest: accepted → relayed (in a batch, its transaction hash known) → mined → confirmed, or
    failed with the forwarder's or the target's error."""

    __tablename__ = "relay_requests"
    __table_args__ = (Index("ix_relay_requests_signer_nonce", "signer", "nonce"),)

    id: str = Field(primary_key=True, max_length=36)
    digest: bytes = Field(sa_type=LargeBinary, unique=True)  # EIP-712 digest of the request (nonce included)
    org_id: int = Field(index=True)  # the signer's organisation when accepted
    submitted_by: int  # the organisation whose API key posted it
    actor: str = Field(max_length=80)  # "key:<key id>" or "user:<username>"
    signer: str = Field(max_length=42)
    nonce: int = Field(sa_type=BigInteger)
    target: str = Field(max_length=42)
    function: str = Field(max_length=40)
    gas: int = Field(sa_type=BigInteger)
    deadline: int = Field(sa_type=BigInteger)
    data: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    state: str = Field(max_length=10, index=True)  # accepted | relayed | mined | confirmed | failed
    batch_id: Optional[int] = Field(default=None, sa_type=BigId, index=True)
    attempts: int = 0  # batches that reverted as a whole with it inside
    error_name: Optional[str] = None
    error_args: Optional[str] = None  # JSON
    error_message: Optional[str] = None
    created_at: float
    updated_at: float


class RelayBatch(ServiceTable, table=True):
    """An executeBatch transaction signed by one of the relayer's keys."""

    __tablename__ = "relay_batches"
    __table_args__ = (UniqueConstraint("relayer", "nonce", name="uq_relay_batches_relayer_nonce"),)

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    relayer: str = Field(max_length=42)
    nonce: int = Field(sa_type=BigInteger)
    tx_hash: bytes = Field(sa_type=LargeBinary, index=True)
    raw: bytes = Field(sa_type=LargeBinary)
    request_count: int
    state: str = Field(max_length=10, index=True)  # signed | sent | mined | confirmed | reverted | void
    block_number: Optional[int] = Field(default=None, sa_type=BigInteger)
    gas_used: Optional[int] = None
    error_name: Optional[str] = None
    created_at: float
    sent_at: Optional[float] = None
