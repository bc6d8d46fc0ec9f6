"""The service's tables of consumer scans (migration 0002): every verification of a label, the clone-detection flags
raised on them, and the Merkle batches that anchor them on chain.

Scans are personal data of whoever scanned: no raw IP outlives a day (scans.client_ip is cleared after 24 h), the
client is known only by a keyed hash (HMAC-SHA256 under a key kept outside the database), and a location only as
the coarse cell (0.1 degree, about 11 km) the client chose to send.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import Index, LargeBinary
from sqlmodel import Field

from ledger_service.tables import BigId, ServiceTable


class Scan(ServiceTable, table=True):
    """One verification of a label: what was scanned, when, roughly where, by which (pseudonymous) client, and the
    verdict given. Once anchored, the Merkle root of its batch and its inclusion proof."""

    __tablename__ = "scans"
    __table_args__ = (Index("ix_scans_part_time", "part_id", "scanned_at"), Index("ix_scans_unanchored", "manufacturer", "batch_root"))

    scan_id: bytes = Field(sa_type=LargeBinary, primary_key=True)  # 16 bytes: milliseconds (6), then random (10)
    part_id: bytes = Field(sa_type=LargeBinary)
    gtin: str = Field(max_length=14)
    serial: str = Field(max_length=20)
    manufacturer: Optional[int] = None  # whose scans these are (for an unknown serial: the GTIN's manufacturer, if any)
    scanned_at: float = Field(index=True)
    verdict: str = Field(max_length=24)
    flags: str = ""  # comma-separated flag kinds raised on this scan
    source: str = Field(max_length=8)  # page | json | linkset | api | image
    context: Optional[str] = Field(default=None, max_length=16)  # purchase | vehicle, when the scanner says
    lat: Optional[float] = None  # coarse: rounded to 0.1 degree
    lon: Optional[float] = None
    fingerprint: bytes = Field(sa_type=LargeBinary)  # HMAC-SHA256(key, client address | user agent)[:16]
    client_ip: Optional[str] = Field(default=None, max_length=45)  # cleared after a day
    batch_root: Optional[bytes] = Field(default=None, sa_type=LargeBinary)
    proof: Optional[str] = None  # JSON list of 0x-hex sibling hashes, leaf to root


class ScanFlag(ServiceTable, table=True):
    """A clone-detection flag on a scan, for the part's manufacturer (and auditors, regulators) to see."""

    __tablename__ = "scan_flags"
    __table_args__ = (
        Index("ix_scan_flags_manufacturer", "manufacturer", "id"),
        Index("ix_scan_flags_created_at", "created_at"),  # the operations dashboard's flags per day (migration 0010)
    )

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    scan_id: bytes = Field(sa_type=LargeBinary, index=True)
    part_id: bytes = Field(sa_type=LargeBinary, index=True)
    manufacturer: Optional[int] = None
    kind: str = Field(max_length=40)
    detail: str  # JSON
    created_at: float


class ScanBatch(ServiceTable, table=True):
    """A batch of one manufacturer's scans whose Merkle root is anchored on chain (EvidenceLedger.anchorBatch, kind
    "scans") through the outbox command `command_id`."""

    __tablename__ = "scan_batches"

    root: bytes = Field(sa_type=LargeBinary, primary_key=True)
    org_id: int = Field(index=True)
    scan_count: int
    command_id: str = Field(max_length=36)
    created_at: float
