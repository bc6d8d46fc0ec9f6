"""EPCIS 2.0 data the service keeps (service-private tables; migration 0006_epcis): the GS1 identities of members and
their sites, capture jobs, captured events with the EPCs they name, the commands capture handed to the outbox, and the
batches in which captured events' canonical hashes are anchored on chain.

Ledger events (registration to recall) are not stored here: they are derived from the indexer's mirror when read
(ledger_service.epcis.derive)."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field

from ledger_service.tables import BigId, ServiceTable


class Gs1Party(ServiceTable, table=True):
    """An organisation's GS1 company prefix (which renders its GTINs as urn:epc:id:sgtin EPC URIs), when it gave one."""

    __tablename__ = "gs1_parties"

    org_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    company_prefix: Optional[str] = Field(default=None, max_length=12)
    updated_at: float


class Gs1PartyGln(ServiceTable, table=True):
    """A party GLN (AI 417, urn:epc:id:pgln) of an organisation; a company may have several (its legal entities or
    functions). Position 0 is the one derived events name it by."""

    __tablename__ = "gs1_party_glns"

    gln: str = Field(primary_key=True, max_length=13)
    org_id: int = Field(index=True)
    position: int = 0


class Gs1Location(ServiceTable, table=True):
    """A physical location (AI 414 GLN with an optional AI 254 extension; urn:epc:id:sgln) of a member: a site of it
    (a site name as the registry lists it) or the organisation as a whole (site None)."""

    __tablename__ = "gs1_locations"

    gln: str = Field(primary_key=True, max_length=13)
    extension: str = Field(primary_key=True, max_length=20, default="")  # "" when the location has none (SGLN ".0")
    org_id: int = Field(index=True)
    site: Optional[str] = Field(default=None, max_length=64)
    updated_at: float


class EpcisCapture(ServiceTable, table=True):
    """A capture job (POST /capture or POST /events): the document as received (zlib-compressed JSON), durable before
    the 202 answer, then its progress, and per-event errors."""

    __tablename__ = "epcis_captures"
    __table_args__ = (Index("ix_epcis_captures_org_received", "org_id", "received_at"),)

    id: str = Field(primary_key=True, max_length=36)
    org_id: int
    api_key_id: str = Field(max_length=16)
    actor: str = Field(max_length=80)
    roles: int  # the capturing organisation's roles when the job was accepted
    sites: Optional[str] = None  # JSON list of the site keys the principal may use; None: all
    behaviour: str = Field(max_length=12)  # captureErrorBehaviour: rollback | proceed
    state: str = Field(max_length=10, index=True)  # queued | running | done
    success: Optional[bool] = None
    event_count: int
    captured_count: int = 0
    error_count: int = 0
    errors: str = "[]"  # JSON list: {"eventIndex", "eventID", "code", "message"}
    document: bytes = Field(sa_type=LargeBinary)  # zlib(the request body)
    received_at: float
    finished_at: Optional[float] = None


class EpcisEvent(ServiceTable, table=True):
    """One captured event: its identifiers (eventID as given, or its canonical hash when it had none), the fields the
    standard's queries filter on, the event as captured (private fields taken out and sealed), and what became of it:
    a ledger command (`command_id`), or consortium data only, anchored in an EPCIS batch (`batch_id`)."""

    __tablename__ = "epcis_events"
    __table_args__ = (
        Index("ix_epcis_events_time", "event_time_ms"),
        Index("ix_epcis_events_step", "biz_step", "event_time_ms"),
    )

    seq: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    event_id: str = Field(unique=True)
    event_hash: bytes = Field(sa_type=LargeBinary, index=True)  # the 32-byte SHA-256 of the canonical hash
    capture_id: str = Field(max_length=36, index=True)
    org_id: int = Field(index=True)
    event_type: str = Field(max_length=24)
    action: Optional[str] = Field(default=None, max_length=8)
    biz_step: Optional[str] = Field(default=None)  # bare CBV word for a standard step, else the URI
    disposition: Optional[str] = Field(default=None)
    biz_location: Optional[str] = Field(default=None)
    read_point: Optional[str] = Field(default=None)
    event_time_ms: int = Field(sa_type=BigInteger)
    record_time_ms: int = Field(sa_type=BigInteger)
    body: str  # JSON of the event as captured, without its private fields
    private: Optional[bytes] = Field(default=None, sa_type=LargeBinary)  # Vault-sealed JSON of the private fields
    operation: Optional[str] = Field(default=None, max_length=24)  # the ledger operation it maps to, if any
    command_id: Optional[str] = Field(default=None, max_length=36, index=True)
    state: str = Field(max_length=10)  # pending (its command not final yet) | applied | kept (consortium data only)
    batch_id: Optional[int] = Field(default=None, index=True)


class EpcisEventEpc(ServiceTable, table=True):
    """An EPC an event names, under its canonical key (partledger.epcis.identifiers.epc_key), in one of its roles:
    epc (epcList), parent, child, input, output, quantity (a class in a quantity list). `part_id`: an SGTIN's part id,
    an SSCC's logistic unit id."""

    __tablename__ = "epcis_event_epcs"
    __table_args__ = (Index("ix_epcis_event_epcs_part", "part_id"),)

    seq: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    epc: str = Field(primary_key=True, index=True)
    role: str = Field(primary_key=True, max_length=8)
    part_id: Optional[bytes] = Field(default=None, sa_type=LargeBinary)


class EpcisCommand(ServiceTable, table=True):
    """A ledger command that a capture job handed to the outbox. Its transactions carry only this job's items, so a
    ledger event derived from one of them is the captured event already: queries answer the captured one."""

    __tablename__ = "epcis_commands"

    command_id: str = Field(primary_key=True, max_length=36)
    capture_id: str = Field(max_length=36, index=True)


class EpcisBatch(ServiceTable, table=True):
    """Captured events of one organisation whose StandardMerkleTree root is anchored (anchor_batch, kind "epcis")
    with that organisation's site key. Leaf values: (bytes32 event hash, string eventID, uint32 organisation,
    uint64 seq)."""

    __tablename__ = "epcis_batches"
    __table_args__ = (UniqueConstraint("root", name="uq_epcis_batches_root"),)

    id: Optional[int] = Field(default=None, sa_type=BigId, primary_key=True)
    org_id: int = Field(index=True)
    root: bytes = Field(sa_type=LargeBinary)
    event_count: int
    command_id: Optional[str] = Field(default=None, max_length=36)  # None until handed to the outbox
    created_at: float
