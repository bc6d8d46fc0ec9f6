"""The service's private tables (never on chain, never in the indexer's mirror): API keys, idempotency records,
the durable outbox (commands, their items, signed transactions), encrypted clear VINs, and the console's people
(users, their sessions, sign-in failures, organisation settings; see ledger_service/accounts.py)."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, MetaData, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class ServiceTable(SQLModel, registry=registry(metadata=MetaData())):
    """Base of the service's tables, with their own metadata and migrations."""


SERVICE_METADATA = ServiceTable.metadata
BigId = BigInteger().with_variant(Integer(), "sqlite")


class ApiKey(ServiceTable, table=True):
    """An organisation's API key. Only a SHA-256 of the secret is kept: keys are 256-bit random, so a slow hash
    would add nothing but latency."""

    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=16)
    org_id: int = Field(index=True)
    secret_sha256: str = Field(max_length=64)
    label: str = ""
    sites: Optional[str] = None  # JSON list of site key addresses it may act through; None: every site of the org
    created_at: float
    revoked_at: Optional[float] = None


class IdempotencyRecord(ServiceTable, table=True):
    """The first answer to a request carrying an Idempotency-Key, replayed for every repeat of it."""

    __tablename__ = "idempotency_records"

    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    key: str = Field(primary_key=True, max_length=255)
    request_sha256: str = Field(max_length=64)
    state: str = Field(max_length=10)  # processing | done
    status_code: Optional[int] = None
    response: Optional[str] = None  # JSON body of the first answer
    created_at: float


class Command(ServiceTable, table=True):
    """An accepted request (202): what an organisation asked, and how it ended. Split into items for packing."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_org_id_created_at", "org_id", "created_at"),  # the console's newest-first lists
        Index("ix_commands_created_at", "created_at"),  # the operations dashboard's commands per day
        Index("ix_commands_mirror_wait", "mirrored_at", "confirmed_block"),  # confirmed commands the mirror has not shown yet
    )

    id: str = Field(primary_key=True, max_length=36)
    org_id: int = Field(index=True)
    api_key_id: str = Field(max_length=16)
    kind: str = Field(max_length=24)
    site_key: str = Field(max_length=42)
    part_count: int
    summary: str  # JSON: the request's arguments that are not per part (to, doc hash, gtin, lot, ...)
    created_at: float
    actor: Optional[str] = Field(default=None, max_length=80, index=True)  # who sent it: "user:<username>" or "key:<key id>"
    # How it went (migration 0010; ledger_service.command_stages): the id of the HTTP request that sent it, which the
    # submitter's log lines about its transactions carry, and when it reached each stage (None: not yet, or never).
    request_id: Optional[str] = Field(default=None, max_length=128)
    submitted_at: Optional[float] = None  # its first transaction sent
    confirmed_at: Optional[float] = None  # every item confirmed
    confirmed_block: Optional[int] = Field(default=None, sa_type=BigInteger)  # the highest block holding one of its transactions
    rejected_at: Optional[float] = None  # an item rejected
    mirrored_at: Optional[float] = None  # the indexer's mirror reached confirmed_block


class CommandItem(ServiceTable, table=True):
    """Up to max_parts_per_tx parts of one command, the unit the submitter packs into transactions."""

    __tablename__ = "command_items"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    command_id: str = Field(index=True, max_length=36)
    signer: str = Field(max_length=42)
    kind: str = Field(max_length=24)
    pack_key: str  # items with equal signer, kind and pack key may share a transaction
    payload: str  # JSON: per-part lists and call arguments
    part_count: int
    state: str = Field(max_length=10, index=True)  # pending | signed | sent | mined | confirmed | rejected
    tx_id: Optional[int] = Field(default=None, index=True)
    # A custodial item relayed in a batch (ledger_service.custodial_relay): the relay request carrying it; its state
    # follows the request's (accepted: signed, relayed: sent, mined, confirmed), and tx_id stays empty.
    relay_request_id: Optional[str] = Field(default=None, index=True, max_length=36)
    relay_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # its requests refused unexecuted
    not_before: float = 0.0
    error_name: Optional[str] = None
    error_args: Optional[str] = None  # JSON
    error_message: Optional[str] = None
    created_at: float
    updated_at: float


class ChainTransaction(ServiceTable, table=True):
    """A signed transaction. The nonce is assigned in the same SQL transaction that stores the signed bytes, so
    a restart re-sends exactly these bytes and never signs this nonce again."""

    __tablename__ = "chain_transactions"
    __table_args__ = (UniqueConstraint("signer", "nonce", name="uq_chain_transactions_signer_nonce"),)

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    signer: str = Field(max_length=42)
    nonce: int = Field(sa_type=BigInteger)
    tx_hash: bytes = Field(sa_type=LargeBinary, index=True)
    raw: bytes = Field(sa_type=LargeBinary)
    kind: str = Field(max_length=24)
    part_count: int
    state: str = Field(max_length=10, index=True)  # signed | sent | mined | confirmed | reverted | void
    block_number: Optional[int] = Field(default=None, sa_type=BigInteger)
    gas_used: Optional[int] = None
    error_name: Optional[str] = None
    created_at: float
    sent_at: Optional[float] = None


class PrivateVin(ServiceTable, table=True):
    """A clear VIN and its salt, encrypted (AES-GCM, key outside the database), readable by its workshop only.
    Written with the install command; deleted when the outbox item carrying its part ends rejected (submitter)."""

    __tablename__ = "private_vins"

    vin_hash: bytes = Field(sa_type=LargeBinary, primary_key=True)
    org_id: int = Field(index=True)
    part_id: bytes = Field(sa_type=LargeBinary, index=True)
    command_id: str = Field(max_length=36)
    ciphertext: bytes = Field(sa_type=LargeBinary)  # nonce(12) || AES-GCM(VIN || salt)
    created_at: float


class DocumentProposal(ServiceTable, table=True):
    """A trade document one party proposed (and signed); anchored once the other party countersigns."""

    __tablename__ = "document_proposals"

    id: str = Field(primary_key=True, max_length=36)
    issuer: int = Field(index=True)
    counterparty: int = Field(index=True)
    attestation: str  # JSON of the EIP-712 Attestation message, hex for bytes
    issuer_signer: str = Field(max_length=42)
    issuer_signature: bytes = Field(sa_type=LargeBinary)
    counterparty_signer: Optional[str] = Field(default=None, max_length=42)
    counterparty_signature: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    command_id: Optional[str] = Field(default=None, max_length=36)
    created_at: float


class User(ServiceTable, table=True):
    """A person who signs in to the console for one organisation, with a role (admin | operator | viewer) and
    optionally narrowed to sites like an API key. The TOTP secret is sealed with the service's Vault key."""

    __tablename__ = "users"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    org_id: int = Field(index=True)
    username: str = Field(max_length=64, unique=True)
    display_name: str = ""
    password_hash: str  # Argon2id, PHC string
    role: str = Field(max_length=8)
    sites: Optional[str] = None  # JSON list like api_keys.sites; None: every site of the organisation
    totp_secret: Optional[bytes] = Field(default=None, sa_type=LargeBinary)  # Vault-sealed; None: no second factor
    totp_confirmed: bool = False
    totp_last_step: Optional[int] = Field(default=None, sa_type=BigInteger)  # a code's step is accepted once
    disabled_at: Optional[float] = None
    created_at: float
    updated_at: float


class WebSession(ServiceTable, table=True):
    """A console sign-in. Only a SHA-256 of the cookie's 256-bit token is kept."""

    __tablename__ = "web_sessions"

    token_sha256: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(index=True)
    csrf_token: str = Field(max_length=64)
    created_at: float
    last_seen_at: float
    expires_at: float = Field(index=True)  # absolute end; idleness is judged from last_seen_at
    revoked_at: Optional[float] = None
    client: str = Field(default="", max_length=255)


class SignInFailure(ServiceTable, table=True):
    """A failed sign-in, counted per account and per client over a window, in SQL so that every worker agrees."""

    __tablename__ = "sign_in_failures"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    scope: str = Field(max_length=8)  # account | client
    subject: str = Field(max_length=255, index=True)
    at: float = Field(index=True)


class OrgSetting(ServiceTable, table=True):
    """An organisation's console settings, set by its admin."""

    __tablename__ = "org_settings"

    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    require_totp: bool = False
    updated_at: float
