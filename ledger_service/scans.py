"""Scan records: written behind the answer, judged for clones, anchored on chain in Merkle batches.

Every verification of a label is a scan. The answer does not wait for its row: scans queue in memory and a keeper
thread writes them every FLUSH_SECONDS in one transaction (a crash loses at most that much of the scan log, never a
verdict), while clone checks read both the table and the queue. The keeper also
- anchors each manufacturer's unanchored scans as one Merkle tree (partledger.merkle, OpenZeppelin's
  StandardMerkleTree form) whose root goes on chain through the outbox (command kind anchor_batch, batch kind
  "scans", signed with a site key of that manufacturer held by this service); every scan keeps its inclusion proof,
  written in the same transaction as the outbox command, so a root is never anchored without its proofs or twice;
- clears raw client addresses older than IP_RETENTION_SECONDS.

A scan's leaf is abi.encode of LEAF_TYPES: (scan id, part id, time in ms, client fingerprint, coarse location
"lat,lon" or "", verdict, flags "a,b"), so that an auditor holding a scan record and its proof checks it against the
anchored root with OpenZeppelin's MerkleProof, on chain or off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from indexer.tables import Batch, Organisation
from ledger_service.auth import Principal
from ledger_service.clones import Flag, PriorScan
from ledger_service.errors import Forbidden, NotFound
from ledger_service.metrics import count_scan
from ledger_service.outbox import Draft, Outbox, request_digest
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.scan_tables import Scan, ScanBatch, ScanFlag
from partledger.errors import ConfigError
from partledger.merkle import build_tree
from partledger.model import Role

log = logging.getLogger("partledger.service.scans")

T_SCAN, T_FLAG, T_BATCH = Scan.__table__, ScanFlag.__table__, ScanBatch.__table__
T_ORG, T_CHAIN_BATCH = Organisation.__table__, Batch.__table__
LEAF_TYPES = ("bytes16", "bytes32", "uint64", "bytes16", "string", "string", "string")
BATCH_KIND = "scans"
FLUSH_SECONDS = 0.2
ANCHOR_SECONDS = 60.0
PURGE_SECONDS = 600.0
IP_RETENTION_SECONDS = 24 * 3600.0
HISTORY_LIMIT = 50
MAX_BATCH = 10_000
ROWS_PER_INSERT = 500  # scans per INSERT statement (8,000 bound values: under PostgreSQL's 65,535 and SQLite's limit)
MAX_QUEUE = 50_000  # scans waiting for their write; beyond this the oldest are dropped (and logged)
ANCHOR_API_KEY = "scan-anchor"  # the api_key_id recorded on the outbox commands the keeper makes


@dataclass
class ScanRecord:
    scan_id: bytes
    part_id: bytes
    gtin: str
    serial: str
    manufacturer: Optional[int]
    scanned_at: float
    verdict: str
    source: str
    fingerprint: bytes
    client_ip: Optional[str]
    context: Optional[str] = None
    lat: Optional[float] = None
    lon: Optional[float] = None
    flags: list[Flag] = field(default_factory=list)

    def values(self) -> tuple[Any, ...]:
        """The row's values in ROW_COLUMNS order."""
        return (
            self.scan_id, self.part_id, self.gtin, self.serial, self.manufacturer, self.scanned_at, self.verdict,
            ",".join(flag.kind for flag in self.flags), self.source, self.context, self.lat, self.lon, self.fingerprint,
            self.client_ip, None, None,
        )  # fmt: skip


ROW_COLUMNS = (
    "scan_id", "part_id", "gtin", "serial", "manufacturer", "scanned_at", "verdict", "flags", "source", "context", "lat", "lon",
    "fingerprint", "client_ip", "batch_root", "proof",
)  # fmt: skip


def scan_leaf(row: Any) -> tuple[Any, ...]:
    """The Merkle leaf value of a scan row (see LEAF_TYPES)."""
    location = "" if row.lat is None or row.lon is None else f"{row.lat:.1f},{row.lon:.1f}"
    return (bytes(row.scan_id), bytes(row.part_id), int(round(row.scanned_at * 1000)), bytes(row.fingerprint), location, row.verdict, row.flags)


def fingerprint_key(*, scan_key_file: Optional[Path], vin_key_file: Optional[Path]) -> bytes:
    """The key of client fingerprints: its own key file, else derived (HKDF) from the VIN key, both kept outside
    the database; without either, a random key for this process (fingerprints then differ between workers)."""
    if scan_key_file is not None:
        try:
            key = base64.b64decode(scan_key_file.read_text().strip(), validate=True)
        except (OSError, ValueError):
            raise ConfigError(f"unreadable scan fingerprint key file {scan_key_file}") from None
        if len(key) < 16:
            raise ConfigError("the scan fingerprint key must be at least 16 bytes (base64 in its key file)")
        return key
    if vin_key_file is not None:
        try:
            material = base64.b64decode(vin_key_file.read_text().strip(), validate=True)
        except (OSError, ValueError):
            raise ConfigError(f"unreadable VIN encryption key file {vin_key_file}") from None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"partledger scan fingerprint v1").derive(material)
    log.warning("no scan_key_file or vin_key_file: client fingerprints use a per-process random key")
    return secrets.token_bytes(32)


def client_fingerprint(key: bytes, *, address: str, user_agent: str) -> bytes:
    """A pseudonym of a client: HMAC-SHA256 over its address and user agent, 16 bytes. Without the key (outside the
    database) it cannot be turned back into an address, even by trying all 2^32 IPv4 addresses."""
    return hmac.new(key, f"{address}\n{user_agent[:256]}".encode(), hashlib.sha256).digest()[:16]


class ScanBook:
    """The scan log: queue, history for clone checks, flushing, anchoring, purging."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._queue: list[ScanRecord] = []
        self._writing: list[ScanRecord] = []  # taken by a flush, not yet committed: still history until they are
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # The flush's INSERT as the driver's own SQL, values as tuples: insert() would build a dict and run bind
        # processors per row. Many rows per statement: executemany steps SQLite once per row, releasing the GIL and
        # taking it back from the event loop each time, and those hand-overs cost more CPU than the rows themselves.
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._row_marks = "(" + ", ".join(mark for _ in ROW_COLUMNS) + ")"
        self._insert_head = f"INSERT INTO {T_SCAN.name} ({', '.join(ROW_COLUMNS)}) VALUES "
        self._insert_full = self._insert_sql(ROWS_PER_INSERT)

    def _insert_sql(self, rows: int) -> str:
        return self._insert_head + ", ".join([self._row_marks] * rows)

    # --- recording ------------------------------------------------------------------------------------------

    def record(self, record: ScanRecord) -> None:
        count_scan(source=record.source, verdict=record.verdict, flags=[flag.kind for flag in record.flags])
        with self._lock:
            self._queue.append(record)
            if len(self._queue) > MAX_QUEUE:
                dropped = len(self._queue) - MAX_QUEUE
                del self._queue[:dropped]
                log.error("scan queue full: dropped %d scans (the database is not keeping up)", dropped)

    def history(self, part_id: bytes, *, since: float) -> list[PriorScan]:
        """Earlier located scans of a part since `since`, newest first: written ones and queued ones."""
        with self._lock:
            queued = [
                PriorScan(r.scan_id, r.scanned_at, r.lat, r.lon)
                for r in (*self._writing, *self._queue)
                if r.part_id == part_id and r.lat is not None and r.scanned_at >= since
            ]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T_SCAN.c.scan_id, T_SCAN.c.scanned_at, T_SCAN.c.lat, T_SCAN.c.lon)
                .where(T_SCAN.c.part_id == part_id, T_SCAN.c.scanned_at >= since, T_SCAN.c.lat.is_not(None))
                .order_by(T_SCAN.c.scanned_at.desc())
                .limit(HISTORY_LIMIT)
            ).all()
        seen = {p.scan_id for p in queued}  # a flush may commit between the two reads
        written = [PriorScan(bytes(r.scan_id), r.scanned_at, r.lat, r.lon) for r in rows if bytes(r.scan_id) not in seen]
        return sorted(queued + written, key=lambda p: -p.at)

    def flush(self) -> int:
        """Writes the queued scans and their flags in one transaction; returns how many."""
        with self._flush_lock:
            with self._lock:
                batch, self._queue = self._queue, []
                self._writing = batch
            if not batch:
                return 0
            try:
                with self.engine.begin() as conn:
                    for start in range(0, len(batch), ROWS_PER_INSERT):
                        chunk = batch[start : start + ROWS_PER_INSERT]
                        sql = self._insert_full if len(chunk) == ROWS_PER_INSERT else self._insert_sql(len(chunk))
                        conn.exec_driver_sql(sql, tuple(value for record in chunk for value in record.values()))
                    flags = [
                        {"scan_id": r.scan_id, "part_id": r.part_id, "manufacturer": r.manufacturer, "kind": flag.kind,
                         "detail": json.dumps(flag.detail), "created_at": r.scanned_at}
                        for r in batch for flag in r.flags
                    ]  # fmt: skip
                    if flags:
                        conn.execute(insert(T_FLAG), flags)
            except Exception:
                with self._lock:
                    self._queue[:0] = batch  # keep them for the next try
                    self._writing = []
                raise
            with self._lock:
                self._writing = []
            return len(batch)

    # --- anchoring ------------------------------------------------------------------------------------------

    def anchor(self, outbox: Outbox, index_engine: Engine) -> list[dict[str, Any]]:
        """Anchors each manufacturer's unanchored scans (that this service holds a key of) as one Merkle batch;
        returns the batches accepted into the outbox."""
        self.flush()
        with self.engine.connect() as conn:
            orgs = conn.execute(select(T_SCAN.c.manufacturer).where(T_SCAN.c.batch_root.is_(None), T_SCAN.c.manufacturer.is_not(None)).distinct()).scalars().all()
        accepted = []
        for org_id in orgs:
            try:
                batch = self._anchor_org(outbox, index_engine, org_id)
            except Forbidden:
                log.debug("no site key of organisation %s here: its scans stay unanchored", org_id)
                continue
            except _LostRace:
                continue
            if batch is not None:
                accepted.append(batch)
        return accepted

    def _anchor_org(self, outbox: Outbox, index_engine: Engine, org_id: int) -> Optional[dict[str, Any]]:
        with index_engine.connect() as conn:
            org = conn.execute(select(T_ORG.c.roles, T_ORG.c.suspended).where(T_ORG.c.org_id == org_id)).first()
        if org is None or org.suspended:
            return None
        principal = Principal(org_id=org_id, roles=Role(org.roles), key_id=ANCHOR_API_KEY, sites=None)
        signer = outbox.signer_for(principal, None)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(T_SCAN).where(T_SCAN.c.manufacturer == org_id, T_SCAN.c.batch_root.is_(None)).order_by(T_SCAN.c.scanned_at, T_SCAN.c.scan_id).limit(MAX_BATCH)
            ).all()
        if not rows:
            return None
        tree = build_tree([scan_leaf(row) for row in rows], types=LEAF_TYPES)
        root = tree.root
        payload = {"root": "0x" + root.hex(), "record_count": len(rows), "batch_kind": BATCH_KIND}

        def write_proofs(conn: Connection, command_id: str) -> None:
            conn.execute(insert(T_BATCH).values(root=root, org_id=org_id, scan_count=len(rows), command_id=command_id, created_at=self.clock()))
            claimed = 0
            for index, row in enumerate(rows):
                proof = json.dumps(["0x" + node.hex() for node in tree.proof_at(index)])
                result = conn.execute(update(T_SCAN).where(T_SCAN.c.scan_id == row.scan_id, T_SCAN.c.batch_root.is_(None)).values(batch_root=root, proof=proof))
                claimed += result.rowcount
            if claimed != len(rows):
                raise _LostRace()  # another worker anchored some of them first: roll back, try again later

        draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0, after_write=write_proofs)
        answer = outbox.accept(principal, draft, signer=signer, idempotency_key=None, request_sha256=request_digest("ANCHOR", "/scans", root))
        log.info("anchoring %d scans of organisation %s as root 0x%s (command %s)", len(rows), org_id, root.hex(), answer["command_id"])
        return {"root": payload["root"], "org_id": org_id, "scans": len(rows), "command_id": answer["command_id"]}

    # --- privacy --------------------------------------------------------------------------------------------

    def purge_addresses(self) -> int:
        """Clears raw client addresses older than a day."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(T_SCAN).where(T_SCAN.c.client_ip.is_not(None), T_SCAN.c.scanned_at < self.clock() - IP_RETENTION_SECONDS).values(client_ip=None)
            )
        return result.rowcount

    # --- the keeper thread ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, outbox: Optional[Outbox], index_engine: Engine, anchor_seconds: float = ANCHOR_SECONDS) -> None:
        """Flushes, anchors and purges until `stop` is set; flushes once more on the way out."""
        next_anchor = time.monotonic() + anchor_seconds
        next_purge = time.monotonic()
        while not stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
                now = time.monotonic()
                if now >= next_purge:
                    self.purge_addresses()
                    next_purge = now + PURGE_SECONDS
                if outbox is not None and now >= next_anchor:
                    self.anchor(outbox, index_engine)
                    next_anchor = now + anchor_seconds
            except Exception:  # noqa: BLE001 - the keeper must outlive a bad moment of the database
                log.exception("scan keeper: will retry")
        try:
            self.flush()
        except Exception:  # noqa: BLE001
            log.exception("scan keeper: last flush failed")


class _LostRace(Exception):
    """Some scans of a batch were anchored by another worker in the meantime."""


# --- what members read ---------------------------------------------------------------------------------------


def _may_read_scans(principal: Principal) -> None:
    if not principal.roles & (Role.MANUFACTURER | Role.AUDITOR | Role.REGULATOR):
        raise Forbidden("scan flags are visible to manufacturers (of their parts), auditors and regulators", code="missing_role")


def list_flags(
    conn: Connection, principal: Principal, *, kind: Optional[str], since: Optional[float], part_id: Optional[bytes], limit: int, cursor: Optional[str]
) -> dict[str, Any]:
    """Clone-detection flags on the caller's parts (auditors, regulators: everyone's), newest first."""
    _may_read_scans(principal)
    query = select(T_FLAG, T_SCAN.c.gtin, T_SCAN.c.serial, T_SCAN.c.scanned_at, T_SCAN.c.verdict, T_SCAN.c.lat, T_SCAN.c.lon,
                   T_SCAN.c.fingerprint, T_SCAN.c.context, T_SCAN.c.batch_root).join(T_SCAN, T_SCAN.c.scan_id == T_FLAG.c.scan_id)  # fmt: skip
    if not principal.sees_everything:
        query = query.where(T_FLAG.c.manufacturer == principal.org_id)
    if kind is not None:
        query = query.where(T_FLAG.c.kind == kind)
    if since is not None:
        query = query.where(T_FLAG.c.created_at >= since)
    if part_id is not None:
        query = query.where(T_FLAG.c.part_id == part_id)
    after = decode_cursor(cursor, 1)
    if after is not None:
        query = query.where(T_FLAG.c.id < int(after[0]))
    rows = conn.execute(query.order_by(T_FLAG.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    items = [
        {
            "flag": row.kind,
            "detail": json.loads(row.detail),
            "scan_id": "0x" + bytes(row.scan_id).hex(),
            "part_id": "0x" + bytes(row.part_id).hex(),
            "gtin": row.gtin,
            "serial": row.serial,
            "scanned_at": row.scanned_at,
            "verdict": row.verdict,
            "location": None if row.lat is None else [row.lat, row.lon],
            "context": row.context,
            "client": "0x" + bytes(row.fingerprint).hex(),
            "anchored_root": None if row.batch_root is None else "0x" + bytes(row.batch_root).hex(),
        }
        for row in page
    ]
    return {"items": items, "next_cursor": encode_cursor([page[-1].id]) if len(rows) > limit else None}


def scan_proof(conn: Connection, index_conn: Connection, principal: Principal, scan_id: bytes) -> dict[str, Any]:
    """A scan record, its leaf, its inclusion proof and where its batch root is anchored."""
    _may_read_scans(principal)
    row = conn.execute(select(T_SCAN).where(T_SCAN.c.scan_id == scan_id)).first()
    if row is None or not (principal.sees_everything or row.manufacturer == principal.org_id):
        raise NotFound(f"no scan 0x{scan_id.hex()}", code="unknown_scan")
    leaf = scan_leaf(row)
    answer: dict[str, Any] = {
        "scan_id": "0x" + bytes(row.scan_id).hex(),
        "part_id": "0x" + bytes(row.part_id).hex(),
        "gtin": row.gtin,
        "serial": row.serial,
        "scanned_at": row.scanned_at,
        "verdict": row.verdict,
        "flags": [kind for kind in row.flags.split(",") if kind],
        "location": None if row.lat is None else [row.lat, row.lon],
        "client": "0x" + bytes(row.fingerprint).hex(),
        "leaf": {"types": list(LEAF_TYPES), "value": ["0x" + v.hex() if isinstance(v, bytes) else v for v in leaf]},
        "batch": None,
    }
    if row.batch_root is not None:
        root = bytes(row.batch_root)
        batch = conn.execute(select(T_BATCH.c.command_id, T_BATCH.c.scan_count).where(T_BATCH.c.root == root)).first()
        chain = index_conn.execute(select(T_CHAIN_BATCH.c.block_number, T_CHAIN_BATCH.c.tx_hash, T_CHAIN_BATCH.c.org_id).where(T_CHAIN_BATCH.c.root == root)).first()
        answer["batch"] = {
            "root": "0x" + root.hex(),
            "proof": json.loads(row.proof),
            "scans": batch.scan_count if batch else None,
            "command_id": batch.command_id if batch else None,
            "anchored": None if chain is None else {"block": chain.block_number, "tx_hash": "0x" + bytes(chain.tx_hash).hex(), "org_id": chain.org_id},
        }
    return answer

