"""The SQL mirror of the chain: SQLModel tables written only by the indexer and read by the service.

Current-state tables (organisations, site_keys, lots, parts, logistic_units, containment, shipments, installations)
are kept by applying events in chain order; history tables (part_events, documents, batches, recalls, lineage,
cancelled_nonces) hold one row per event. A contained part's row holds its effective state (its outermost
container's), as PartLedger.part(id) answers it: a container's move changes every part inside it, at any depth.
Every row carries the block it came from, so that a reorganisation can be undone block by block (see `undo_log`).
Ids and hashes are raw bytes; addresses are checksummed text.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, MetaData, UniqueConstraint, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class IndexTable(SQLModel, registry=registry(metadata=MetaData())):
    """Base of the indexer's tables: their own metadata, so that the indexer's migrations cover them alone."""


INDEX_METADATA = IndexTable.metadata

# Autoincrement keys: INTEGER on SQLite (a rowid alias), BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _block(index: bool = False, nullable: bool = False) -> Field:  # type: ignore[valid-type]
    return Field(default=None if nullable else ..., sa_type=BigInteger, index=index, nullable=nullable)


class Organisation(IndexTable, table=True):
    __tablename__ = "organisations"

    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str
    roles: int
    suspended: bool = False
    registered_block: int = _block()
    updated_block: int = _block()


class SiteKey(IndexTable, table=True):
    """A site key and its validity interval: valid from added_block until revoked_block (exclusive) if set."""

    __tablename__ = "site_keys"

    address: str = Field(primary_key=True, max_length=42)
    org_id: int = Field(index=True)
    site: str
    added_block: int = _block()
    revoked_block: Optional[int] = _block(nullable=True)
    revoked_by: Optional[str] = Field(default=None, max_length=42)


class Lot(IndexTable, table=True):
    __tablename__ = "lots"

    lot: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    manufacturer: int = Field(index=True)
    lot_code: str = Field(index=True)
    opened_block: int = _block()
    recalled: bool = False


class Part(IndexTable, table=True):
    """A part's current state, as PartLedger.part(id) would answer it at the indexed block."""

    __tablename__ = "parts"
    __table_args__ = (
        Index("ix_parts_custodian_status", "custodian", "status", "part_id"),
        Index("ix_parts_lot", "lot", "part_id"),
        Index("ix_parts_site_key_status", "site_key", "status"),
        Index("ix_parts_recipient", "recipient"),  # in transit to an organisation
        Index("ix_parts_custodian_site", "custodian", "site_key", "status"),  # covers stock per site and status
        Index("ix_parts_lot_status", "lot", "status", "custodian"),  # covers a lot's counts by status, held recalled parts
    )

    part_id: bytes = Field(sa_type=LargeBinary, primary_key=True)
    gtin: str = Field(max_length=14, index=True)
    serial: str = Field(max_length=66)  # GS1 serials are 20 characters; anything else the chain holds shows as 0x-hex
    lot: int = Field(sa_type=BigInteger)
    manufacturer: int = Field(index=True)
    status: int = Field(index=True)
    custodian: int
    recipient: Optional[int] = None
    recalled: bool = False
    vin_hash: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    site_key: str = Field(max_length=42)  # the site key of the last event: where in the custodian the part is
    registered_block: int = _block()
    updated_block: int = _block()


class PartEvent(IndexTable, table=True):
    """One lifecycle event of one part: a bulk log of n parts gives n rows, told apart by `position`."""

    __tablename__ = "part_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", "position", name="uq_part_events_natural_key"),
        Index("ix_part_events_part", "part_id", "block_number"),
        # the rows naming a container or a new part (a minority): EPCIS MATCH_parentID / MATCH_outputEPC, and whether
        # the mirror holds any containment at all
        Index("ix_part_events_related", "related_id", sqlite_where=text("related_id IS NOT NULL"), postgresql_where=text("related_id IS NOT NULL")),
    )

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    chain_id: int
    block_number: int = _block(index=True)
    tx_hash: bytes = Field(sa_type=LargeBinary)
    log_index: int
    position: int
    part_id: bytes = Field(sa_type=LargeBinary)
    kind: str = Field(max_length=16)
    org_id: int
    site_key: str = Field(max_length=42)
    counterparty: Optional[int] = None
    doc_hash: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    vin_hash: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    # packed, unpacked, assembled, disassembled: the container; remanufactured: the new part; any other kind: None for
    # a part the log names, and for a part that moved inside a container (its position after the named ones) the
    # container the log names.
    related_id: Optional[bytes] = Field(default=None, sa_type=LargeBinary)


class LogisticUnit(IndexTable, table=True):
    """A logistic unit (a carton, a pallet) by its SSCC. On chain a pseudo-part with lot 0; here a table of its own, so
    that inventories, lots and counts never take it for a part. Its state is PartLedger.part(unitId)'s."""

    __tablename__ = "logistic_units"
    __table_args__ = (Index("ix_logistic_units_custodian_status", "custodian", "status"),)

    unit_id: bytes = Field(sa_type=LargeBinary, primary_key=True)
    sscc: str = Field(max_length=18, unique=True)
    created_by: int
    block_number: int = _block(index=True)  # created (by its first packing)
    tx_hash: bytes = Field(sa_type=LargeBinary)
    created_site_key: str = Field(max_length=42)
    status: int
    custodian: int
    recipient: Optional[int] = None
    vin_hash: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    site_key: str = Field(max_length=42)
    updated_block: int = _block()


class Containment(IndexTable, table=True):
    """What is directly inside what, now (PartLedger.containerOf): one row per contained part or unit, written by the
    packing or assembly that put it there. `path` names every container it is in, the direct one first and the
    outermost last: per container, its kind's first letter (a, u) and its 32-byte id. A link, an unlink or their undo
    rewrites the paths of what is inside the part linked; a container's move changes none."""

    __tablename__ = "containment"
    __table_args__ = (Index("ix_containment_lot_path", "lot", "path"),)  # a lot's containers at every level, from the index alone

    part_id: bytes = Field(sa_type=LargeBinary, primary_key=True)
    container_id: bytes = Field(sa_type=LargeBinary, index=True)
    kind: str = Field(max_length=8)  # unit | assembly
    lot: int = Field(sa_type=BigInteger)  # the contained part's (0 for a logistic unit): where recall impact starts
    path: bytes = Field(sa_type=LargeBinary)
    block_number: int = _block(index=True)
    tx_hash: bytes = Field(sa_type=LargeBinary)
    log_index: int


class Lineage(IndexTable, table=True):
    """A remanufactured part and the part it was made from (PartLedger.remanufacturedFrom)."""

    __tablename__ = "lineage"

    part_id: bytes = Field(sa_type=LargeBinary, primary_key=True)
    original_id: bytes = Field(sa_type=LargeBinary, index=True)
    block_number: int = _block(index=True)
    tx_hash: bytes = Field(sa_type=LargeBinary)


class Shipment(IndexTable, table=True):
    __tablename__ = "shipments"
    __table_args__ = (Index("ix_shipments_part", "part_id", "shipped_block"), Index("ix_shipments_to_open", "to_org", "outcome"))

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    part_id: bytes = Field(sa_type=LargeBinary)
    from_org: int = Field(index=True)
    to_org: int
    doc_hash: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    shipped_block: int = _block(index=True)
    shipped_tx: bytes = Field(sa_type=LargeBinary)
    outcome: Optional[str] = Field(default=None, max_length=9)  # None while in transit; received | cancelled
    closed_block: Optional[int] = _block(nullable=True)


class Installation(IndexTable, table=True):
    """A part fitted to a vehicle, known only by its salted VIN hash (the clear VIN stays with the workshop)."""

    __tablename__ = "installations"
    __table_args__ = (Index("ix_installations_part", "part_id", "installed_block"),)

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    part_id: bytes = Field(sa_type=LargeBinary)
    org_id: int = Field(index=True)
    vin_hash: bytes = Field(sa_type=LargeBinary, index=True)
    installed_block: int = _block(index=True)
    installed_tx: bytes = Field(sa_type=LargeBinary)
    removed_block: Optional[int] = _block(nullable=True)


class Recall(IndexTable, table=True):
    __tablename__ = "recalls"

    lot: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    org_id: int
    site_key: str = Field(max_length=42)
    notice_hash: bytes = Field(sa_type=LargeBinary)
    block_number: int = _block(index=True)
    tx_hash: bytes = Field(sa_type=LargeBinary)


class Document(IndexTable, table=True):
    """An anchored trade document with both parties' EIP-712 signatures."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_issuer", "issuer", "block_number"), Index("ix_documents_counterparty", "counterparty", "block_number"))

    doc_hash: bytes = Field(sa_type=LargeBinary, primary_key=True)
    doc_type: int = Field(index=True)
    issuer: int
    counterparty: int
    previous: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    parts_root: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    nonce: bytes = Field(sa_type=LargeBinary)
    deadline: str = Field(max_length=20)  # a uint64 in decimal: past BIGINT's range, and "never" is 2**64 - 1
    issuer_signer: str = Field(max_length=42)
    counterparty_signer: str = Field(max_length=42)
    issuer_signature: bytes = Field(sa_type=LargeBinary)
    counterparty_signature: bytes = Field(sa_type=LargeBinary)
    block_number: int = _block(index=True)
    block_time: int = Field(sa_type=BigInteger)
    tx_hash: bytes = Field(sa_type=LargeBinary)
    log_index: int


class Batch(IndexTable, table=True):
    __tablename__ = "batches"

    root: bytes = Field(sa_type=LargeBinary, primary_key=True)
    org_id: int = Field(index=True)
    site_key: str = Field(max_length=42)
    kind: str
    record_count: int
    block_number: int = _block(index=True)
    tx_hash: bytes = Field(sa_type=LargeBinary)
    log_index: int


class CancelledNonce(IndexTable, table=True):
    __tablename__ = "cancelled_nonces"

    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    nonce: bytes = Field(sa_type=LargeBinary, primary_key=True)
    site_key: str = Field(max_length=42)
    block_number: int = _block(index=True)


class IndexedBlock(IndexTable, table=True):
    """Hashes of recently indexed blocks (the reorg window), to find the common ancestor after a reorganisation."""

    __tablename__ = "indexed_blocks"

    number: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_type=LargeBinary)
    parent_hash: bytes = Field(sa_type=LargeBinary)
    timestamp: int = Field(sa_type=BigInteger)


class BlockTime(IndexTable, table=True):
    """The time of every block that holds a part event or a recall (indexed_blocks keeps only the reorg window):
    what a ledger event derived as EPCIS gives as its eventTime. Removed with the rows of its block on a
    reorganisation."""

    __tablename__ = "block_times"

    number: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    timestamp: int = Field(sa_type=BigInteger, index=True)


class UndoEntry(IndexTable, table=True):
    """The row image before a change made in a block still inside the reorg window (None: the row did not exist)."""

    __tablename__ = "undo_log"

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    block_number: int = _block(index=True)
    table_name: str
    key: str  # JSON of the primary key
    before: Optional[str] = None  # JSON of the row, None when the change created it


class IndexerState(IndexTable, table=True):
    """The cursor (last block fully written), the highest block whose rows are in the mirror (above the cursor
    only when the cursor was moved back to replay a range), and the indexer's health, one row per chain."""

    __tablename__ = "indexer_state"

    chain_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    block_number: int = Field(sa_type=BigInteger)
    block_hash: bytes = Field(sa_type=LargeBinary)
    written_block: int = Field(sa_type=BigInteger, default=0, sa_column_kwargs={"server_default": "0"})
    reorgs: int = Field(sa_type=BigInteger, default=0, sa_column_kwargs={"server_default": "0"})  # reorganisations rolled back
    reorged_blocks: int = Field(sa_type=BigInteger, default=0, sa_column_kwargs={"server_default": "0"})  # blocks they took away
    head_seen: int = Field(sa_type=BigInteger, default=0)
    healthy: bool = True
    message: str = ""
    updated_at: float = 0.0


STATE_TABLES = ("organisations", "site_keys", "lots", "parts", "logistic_units", "containment", "shipments", "installations")
HISTORY_TABLES = ("part_events", "recalls", "documents", "batches", "lineage", "cancelled_nonces")
