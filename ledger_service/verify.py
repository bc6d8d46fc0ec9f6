"""The verdict on a scanned label, from the label's signature and the ledger's state (the indexer's mirror).

Read side of the flow: it reads the mirror's parts, lots, recalls and site keys (with their validity intervals) and,
for a VIN check, the service's encrypted private_vins, and for a recall the notice's text the service keeps
(ledger_service.recall_notices). The verdict, in order of precedence:

    unknown            no part with this GTIN and serial: "not registered, possibly counterfeit" (HTTP 404)
    recalled           the part's lot is recalled (with the notice, its hash, block and who recalled it). Safety first:
                       whatever else is wrong with the scan (unsigned, forged signature, revoked key, destroyed), the
                       headline says do not use it; what is wrong with the label comes second (label_warning)
    contains_recalled  an assembly (or what else holds parts) with a part of a recalled lot inside it at any depth,
                       naming that part and its recall; as safety-first as recalled, which its own recall comes before
    unsigned           the label carries no signature (PartLedger labels always do)
    signature_invalid  the signature is malformed, or not by a site key of the part's manufacturer
    key_revoked        by such a key, but one revoked at or before the part's registration block: the label cannot
                       have been made while the key was valid (a label is made for a registered part; a key revoked
                       later leaves the labels it made valid, which is what lets a site rotate its key)
    scrapped           scrapped or recycled: a label on a part in use is a copy
    quarantined        held back (QC failure or suspected counterfeit)
    installed          in a vehicle; with the scanner's VIN, whether it is that vehicle's
    sold               sold over the counter
    genuine            in stock or in transit between consortium members

Only public data leaves this module in `Verification.public()`: existence, manufacturer, lifecycle status, recall
status and notice. Custodians, lots, site keys, VIN hashes never do.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from indexer.tables import Containment, IndexerState, Lineage, Organisation, Part, Recall, SiteKey
from labels.digital_link import DigitalLink
from labels.signature import recover_signer
from ledger_service.clones import Flag
from ledger_service.containment import recalled_inside
from ledger_service.recall_notices import Notice, notice_of
from ledger_service.replica import ReadReplica
from ledger_service.tables import PrivateVin
from ledger_service.vault import Vault
from partledger.eip712 import Eip712Domain
from partledger.ids import ascii32, normalize_vin, part_id_unchecked, vin_hash
from partledger.model import PartStatus

T_PART, T_KEY, T_ORG, T_RECALL, T_STATE = Part.__table__, SiteKey.__table__, Organisation.__table__, Recall.__table__, IndexerState.__table__
T_VIN, T_CONTAIN, T_LINEAGE = PrivateVin.__table__, Containment.__table__, Lineage.__table__
log = logging.getLogger("partledger.service.verify")
KEY_CACHE_SECONDS = 2.0  # how stale a site key's revocation may be seen (a revocation is an operator's act, not a race)
NAME_CACHE_SECONDS = 30.0


class Verdict(str, enum.Enum):
    GENUINE = "genuine"
    SOLD = "sold"
    INSTALLED = "installed"
    RECALLED = "recalled"
    CONTAINS_RECALLED = "contains_recalled"
    QUARANTINED = "quarantined"
    SCRAPPED = "scrapped"
    SIGNATURE_INVALID = "signature_invalid"
    KEY_REVOKED = "key_revoked"
    UNSIGNED = "unsigned"
    UNKNOWN = "unknown"


SEVERITY = {
    Verdict.GENUINE: "ok",
    Verdict.SOLD: "ok",
    Verdict.INSTALLED: "ok",
    Verdict.QUARANTINED: "warning",
    Verdict.UNSIGNED: "warning",
    Verdict.RECALLED: "danger",
    Verdict.CONTAINS_RECALLED: "danger",
    Verdict.SCRAPPED: "danger",
    Verdict.SIGNATURE_INVALID: "danger",
    Verdict.KEY_REVOKED: "danger",
    Verdict.UNKNOWN: "danger",
}


@dataclass(frozen=True)
class RecallNotice:
    notice_hash: bytes
    block: int
    by: Optional[str]
    notice: Optional[Notice] = None  # its text (zh, en), when the service holds it


@dataclass(frozen=True)
class ContainedRecall:
    """A part of a recalled lot inside the scanned part (the one nearest its top), and its recall."""

    part_id: bytes
    gtin: Optional[str]
    serial: Optional[str]
    depth: int  # 1: directly inside
    count: int  # parts of recalled lots inside, in all
    recall: Optional[RecallNotice]


@dataclass
class Verification:
    verdict: Verdict
    link: DigitalLink
    part_id: bytes
    block: int
    registered: bool
    manufacturer_id: Optional[int] = None  # the part's, or for an unknown serial the GTIN's (never shown then)
    manufacturer: Optional[str] = None
    status: Optional[PartStatus] = None
    recalled: bool = False
    recall: Optional[RecallNotice] = None
    contained_recall: Optional[ContainedRecall] = None
    remanufactured_from: Optional[tuple[bytes, Optional[str], Optional[str]]] = None  # the original's id, GTIN, serial
    signature: str = "missing"  # valid | invalid | revoked | missing | unchecked (an unknown serial: no key to check it against)
    vin_match: Optional[bool] = None  # None: no VIN given, or nothing to compare it with
    vin_checked: bool = False
    flags: list[Flag] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 404 if self.verdict is Verdict.UNKNOWN else 200

    @property
    def public_flags(self) -> list[Flag]:
        """The flags the scanner is told of: none on an unknown serial (what is flagged to the GTIN's manufacturer
        there would only tell the public which GTINs are in use)."""
        return self.flags if self.registered else []

    @property
    def label_warning(self) -> Optional[Verdict]:
        """What is wrong with the label of a registered part when the verdict headlines something else first (a
        recall): the label's own verdict, shown second."""
        label = _label_verdict(self.signature)
        return label if self.registered and label is not None and label is not self.verdict else None

    @property
    def suspicious(self) -> bool:
        return bool(self.public_flags) or SEVERITY[self.verdict] == "danger"

    @property
    def severity(self) -> str:
        return "danger" if self.public_flags else SEVERITY[self.verdict]

    def public(self) -> dict[str, Any]:
        """The verdict as the public JSON answer: public-class data only."""
        answer: dict[str, Any] = {
            "verdict": self.verdict.value,
            "severity": self.severity,
            "suspicious": self.suspicious,
            "flags": [flag.kind for flag in self.public_flags],
            "gtin": self.link.gtin,
            "serial": self.link.serial,
            "signature": self.signature,
            "block": self.block,
        }
        if self.registered:
            answer["part"] = {
                "part_id": "0x" + self.part_id.hex(),
                "manufacturer": {"id": self.manufacturer_id, "name": self.manufacturer},
                "status": self.status.name.lower() if self.status is not None else None,
                "recalled": self.recalled,
            }
        if self.recall is not None:
            recall = self.recall
            answer["recall"] = {"notice_hash": "0x" + recall.notice_hash.hex(), "block": recall.block, "by": recall.by, "notice": recall.notice}
        if self.remanufactured_from is not None:
            original, gtin, serial = self.remanufactured_from
            answer["remanufactured_from"] = {"part_id": "0x" + original.hex(), "gtin": gtin, "serial": serial}
        inside = self.contained_recall
        if inside is not None:
            recall = inside.recall
            answer["contains_recalled"] = {
                "part": {"part_id": "0x" + inside.part_id.hex(), "gtin": inside.gtin, "serial": inside.serial},
                "depth": inside.depth,
                "count": inside.count,
                "recall": None if recall is None else {"notice_hash": "0x" + recall.notice_hash.hex(), "block": recall.block, "by": recall.by, "notice": recall.notice},
            }  # fmt: skip
        warning = self.label_warning
        if warning is not None:
            answer["label_warning"] = warning.value
        if self.vin_checked:
            answer["vin_match"] = self.vin_match
        return answer


class _TtlCache:
    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self._seconds, self._size = seconds, size
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self._seconds:
            return entry[1]
        value = load()
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value


class Verifier:
    """Verdicts against one deployment (its label domain) and its mirror."""

    def __init__(
        self, *, index_engine: Engine, service_engine: Engine, vault: Optional[Vault], domain: Eip712Domain, pin_connection: bool = False,
        replica: Optional[ReadReplica] = None,
    ) -> None:
        """pin_connection: every verification runs on one thread (the event loop's, SQLite read inline), which may
        then keep one connection of the mirror for its hot reads instead of taking one from the pool each time.
        replica: the mirror's read replica, read instead of index_engine while it is usable (ledger_service.replica)."""
        self.index_engine = index_engine
        self.service_engine = service_engine
        self.vault = vault
        self.domain = domain
        self._keys = _TtlCache(KEY_CACHE_SECONDS)
        self._names = _TtlCache(NAME_CACHE_SECONDS)
        self._gtins = _TtlCache(NAME_CACHE_SECONDS)
        self._recalls = _TtlCache(NAME_CACHE_SECONDS)
        self._originals = _TtlCache(NAME_CACHE_SECONDS)  # a remanufactured part's original: its GTIN and serial never change
        self._reads = _HotReads(index_engine, pin=pin_connection)
        self._replica = replica
        self._replica_reads = None if replica is None else _HotReads(replica.engine, pin=False)

    def close(self) -> None:
        self._reads.close()
        if self._replica_reads is not None:
            self._replica_reads.close()

    def verify(self, link: DigitalLink, *, vin: Optional[str] = None) -> Verification:
        """The verdict on `link`. A VIN (in clear, from the scanner) is checked against an installed part's
        salted hash; ValidationError when it is no VIN."""
        vin = normalize_vin(vin) if vin else None
        if self._replica is None:
            return self._verify(self._reads, link, vin)
        return self._replica.read(lambda engine: self._verify(self._reads_on(engine), link, vin))

    def _reads_on(self, engine: Engine) -> _HotReads:
        return self._reads if engine is self.index_engine or self._replica_reads is None else self._replica_reads

    def _verify(self, reads: _HotReads, link: DigitalLink, vin: Optional[str]) -> Verification:
        pid = part_id_unchecked(int(link.gtin), ascii32(link.serial))  # the link's identifiers are validated already
        with reads.reader() as conn:
            row = reads.part(conn, pid, self.domain.chainId)
            if row is None:
                block = reads.block(conn, self.domain.chainId)
                maker = self._gtins.get(link.gtin, lambda: conn.execute(select(T_PART.c.manufacturer).where(T_PART.c.gtin == link.gtin).limit(1)).scalar())
                return Verification(Verdict.UNKNOWN, link, pid, block, registered=False, manufacturer_id=maker, signature=self._signature_shape(link))
            manufacturer, status_number, recalled, on_chain_vin, registered_block, lot, block, holds_parts, original = row
            status = PartStatus(status_number)
            found = Verification(
                Verdict.GENUINE, link, pid, -1 if block is None else int(block), registered=True, manufacturer_id=manufacturer,
                manufacturer=self._org_name(conn, manufacturer), status=status, recalled=bool(recalled),
            )  # fmt: skip
            found.signature = self._signature(conn, link, manufacturer=manufacturer, registered_block=registered_block)
            if recalled:
                found.recall = self._recalls.get(lot, lambda: self._recall(conn, lot))
            if original is not None:
                found.remanufactured_from = self._originals.get(bytes(original), lambda: self._original(conn, bytes(original)))
            if holds_parts:
                found.contained_recall = self._contained_recall(conn, pid)
        if vin is not None and status is PartStatus.INSTALLED:
            found.vin_checked = True
            found.vin_match = self._vin_matches(vin, on_chain_vin)
        found.verdict = _verdict(found)
        return found

    def _signature_shape(self, link: DigitalLink) -> str:
        if link.signature is None:
            return "missing"
        return "invalid" if recover_signer(self.domain, link.gtin, link.serial, link.signature) is None else "unchecked"

    def _signature(self, conn: Any, link: DigitalLink, *, manufacturer: int, registered_block: int) -> str:
        if link.signature is None:
            return "missing"
        signer = recover_signer(self.domain, link.gtin, link.serial, link.signature)
        if signer is None:
            return "invalid"
        key = self._keys.get(signer, lambda: conn.execute(select(T_KEY.c.org_id, T_KEY.c.revoked_block).where(T_KEY.c.address == signer)).first())
        if key is None or key.org_id != manufacturer:
            return "invalid"
        if key.revoked_block is not None and key.revoked_block <= registered_block:
            return "revoked"
        return "valid"

    def _recall(self, conn: Any, lot: int) -> Optional[RecallNotice]:
        row = conn.execute(select(T_RECALL.c.notice_hash, T_RECALL.c.block_number, T_RECALL.c.org_id).where(T_RECALL.c.lot == lot)).first()
        if row is None:
            return None
        digest = bytes(row.notice_hash)
        return RecallNotice(digest, row.block_number, self._org_name(conn, row.org_id), notice_of(self.service_engine, digest))

    def _original(self, conn: Any, original: bytes) -> tuple[bytes, Optional[str], Optional[str]]:
        row = conn.execute(select(T_PART.c.gtin, T_PART.c.serial).where(T_PART.c.part_id == original)).first()
        return (original, row.gtin if row else None, row.serial if row else None)

    def _contained_recall(self, conn: Any, pid: bytes) -> Optional[ContainedRecall]:
        inside = recalled_inside(conn.connection(), pid)  # a walk: through SQLAlchemy, not the hot reads' cursor
        if inside is None:
            return None
        part, lot = inside.part, inside.part.lot
        recall = None if lot is None else self._recalls.get(lot, lambda: self._recall(conn, lot))
        return ContainedRecall(part.id, part.gtin, part.serial, inside.depth, inside.count, recall)

    def _org_name(self, conn: Any, org_id: Optional[int]) -> Optional[str]:
        if org_id is None:
            return None
        return self._names.get(org_id, lambda: conn.execute(select(T_ORG.c.name).where(T_ORG.c.org_id == org_id)).scalar())

    def _vin_matches(self, vin: str, on_chain: Optional[bytes]) -> Optional[bool]:
        """Whether `vin` is the vehicle's: the salt is read from the workshop's encrypted record and the salted
        hash recomputed. None when the service holds no record (installed through another service) or no key."""
        if on_chain is None or self.vault is None:
            return None
        on_chain = bytes(on_chain)
        with self.service_engine.connect() as conn:
            sealed = conn.execute(select(T_VIN.c.ciphertext).where(T_VIN.c.vin_hash == on_chain)).scalar()
        if sealed is None:
            return None
        salt = self.vault.open(bytes(sealed), on_chain)[-32:]
        return vin_hash(vin, salt) == on_chain


class _Reader:
    """The mirror as one verification reads it: the hot reads as plain SQL on a DBAPI cursor (the pinned one, else
    one of this reader's pooled connection), the cache misses through an SQLAlchemy connection opened on the first
    miss only."""

    def __init__(self, engine: Engine, pinned_cursor: Any) -> None:
        self._engine = engine
        self._pinned_cursor = pinned_cursor
        self._conn: Optional[Connection] = None

    def rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._pinned_cursor is not None:
            self._pinned_cursor.execute(sql, params)
            return self._pinned_cursor.fetchall()
        cursor = self._connection().connection.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            cursor.close()

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection().execute(statement, parameters)

    def connection(self) -> Connection:
        """This reader's SQLAlchemy connection (opened on first use), for the reads that are not hot."""
        return self._connection()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _HotReads:
    """The two reads every scan makes, as plain SQL through the driver: SQLAlchemy's statement machinery costs ten
    times the query itself on SQLite, and this is the service's hottest path (see benchmarks/verify_bench.py).
    A driver error is raised as SQLAlchemy raises it (an OperationalError is the resolver's 503)."""

    def __init__(self, engine: Engine, *, pin: bool) -> None:
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._engine = engine
        self._pin = pin
        self._pinned: Any = None  # a pooled connection kept checked out (pin=True), made on first use, and its cursor
        self._pinned_cursor: Any = None
        self._part = (
            "SELECT p.manufacturer, p.status, p.recalled, p.vin_hash, p.registered_block, p.lot, "
            f"(SELECT s.block_number FROM {T_STATE.name} s WHERE s.chain_id = {mark}), "
            f"(SELECT 1 FROM {T_CONTAIN.name} c WHERE c.container_id = p.part_id LIMIT 1), "
            f"(SELECT l.original_id FROM {T_LINEAGE.name} l WHERE l.part_id = p.part_id) FROM {T_PART.name} p WHERE p.part_id = {mark}"
        )
        self._block = f"SELECT block_number FROM {T_STATE.name} WHERE chain_id = {mark}"

    @contextmanager
    def reader(self) -> Iterator[_Reader]:
        if self._pin and self._pinned is None:
            self._pinned = self._engine.raw_connection()
            self._pinned_cursor = self._pinned.driver_connection.cursor()
        reader = _Reader(self._engine, self._pinned_cursor)
        try:
            yield reader
        finally:
            reader.close()

    def part(self, reader: _Reader, part_id: bytes, chain_id: int) -> Optional[tuple[Any, ...]]:
        rows = self._run(reader, self._part, (chain_id, part_id))
        return tuple(rows[0]) if rows else None

    def block(self, reader: _Reader, chain_id: int) -> int:
        rows = self._run(reader, self._block, (chain_id,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else -1

    def _run(self, reader: _Reader, sql: str, params: tuple[Any, ...]) -> list[Any]:
        dbapi = self._engine.dialect.loaded_dbapi
        try:
            return reader.rows(sql, params)
        except dbapi.Error as exc:
            self.close()  # the next read takes a fresh connection
            raise DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=self._engine.dialect) from exc

    def close(self) -> None:
        pinned, self._pinned, self._pinned_cursor = self._pinned, None, None
        if pinned is not None:
            try:
                pinned.invalidate()
            except Exception:  # noqa: BLE001 - a connection that is already gone
                log.debug("closing the pinned mirror connection failed", exc_info=True)


LABEL_VERDICTS = {"missing": Verdict.UNSIGNED, "invalid": Verdict.SIGNATURE_INVALID, "revoked": Verdict.KEY_REVOKED}


def _label_verdict(signature: str) -> Optional[Verdict]:
    """The verdict a label's signature alone gives (None: valid, or not checked)."""
    return LABEL_VERDICTS.get(signature)


def _verdict(found: Verification) -> Verdict:
    if found.recalled:  # safety first: recalled whatever else is wrong (the label's fault is Verification.label_warning)
        return Verdict.RECALLED
    if found.contained_recall is not None:  # as safety-first: a recalled part inside, at any depth
        return Verdict.CONTAINS_RECALLED
    label = _label_verdict(found.signature)
    if label is not None:
        return label
    status = found.status
    if status in (PartStatus.SCRAPPED, PartStatus.RECYCLED, PartStatus.REMANUFACTURED):  # consumed: a label on a part in use is a copy
        return Verdict.SCRAPPED
    if status is PartStatus.QUARANTINED:
        return Verdict.QUARANTINED
    if status is PartStatus.INSTALLED:
        return Verdict.INSTALLED
    if status is PartStatus.SOLD:
        return Verdict.SOLD
    return Verdict.GENUINE
