"""The indexer's sink: applies decoded logs to the SQL mirror and moves the cursor, in ONE transaction.

Writes are batched per call (executemany), and every history row has a natural key, so a replayed range cannot
duplicate anything. A reorganisation is undone block by block (`rollback`): history rows of orphaned blocks are
deleted, shipments and installations reopened, and each affected part's state recomputed from the events that
remain — a part's state is a function of its last event. Organisations, changed in place by registry events, are
restored from the undo log, written only for blocks still inside the reorg window.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from indexer.decoder import DecodedLog
from indexer.source import BlockHeader
from indexer.tables import (
    Batch,
    BlockTime,
    CancelledNonce,
    Document,
    IndexedBlock,
    IndexerState,
    Installation,
    Lot,
    Organisation,
    Part,
    PartEvent,
    Recall,
    Shipment,
    SiteKey,
    UndoEntry,
)
from partledger.ids import part_id_unchecked
from partledger.model import PartStatus

T_ORG, T_KEY, T_LOT, T_PART = Organisation.__table__, SiteKey.__table__, Lot.__table__, Part.__table__
T_EVENT, T_SHIP, T_INSTALL, T_RECALL = PartEvent.__table__, Shipment.__table__, Installation.__table__, Recall.__table__
T_DOC, T_BATCH, T_NONCE = Document.__table__, Batch.__table__, CancelledNonce.__table__
T_BLOCK, T_UNDO, T_STATE, T_BTIME = IndexedBlock.__table__, UndoEntry.__table__, IndexerState.__table__, BlockTime.__table__

# Event name -> (part_events.kind, resulting status). Every part event sets the part's state absolutely.
PART_EVENTS: dict[str, tuple[str, PartStatus]] = {
    "PartsShipped": ("shipped", PartStatus.IN_TRANSIT),
    "PartsReceived": ("received", PartStatus.IN_STOCK),
    "ShipmentsCancelled": ("cancelled", PartStatus.IN_STOCK),
    "PartsSold": ("sold", PartStatus.SOLD),
    "PartsInstalled": ("installed", PartStatus.INSTALLED),
    "PartsRemoved": ("removed", PartStatus.IN_STOCK),
    "PartsQuarantined": ("quarantined", PartStatus.QUARANTINED),
    "PartsReleased": ("released", PartStatus.IN_STOCK),
    "PartsScrapped": ("scrapped", PartStatus.SCRAPPED),
    "PartsRecycled": ("recycled", PartStatus.RECYCLED),
}
ORGANISATION_EVENTS = frozenset({"OrganisationRegistered", "OrganisationRolesChanged", "OrganisationSuspended", "OrganisationReinstated"})
EVENT_BLOCK = 1  # block_number's place in EVENT_COLUMNS
EVENT_COLUMNS = ("chain_id", "block_number", "tx_hash", "log_index", "position", "part_id", "kind", "org_id", "site_key", "counterparty", "doc_hash", "vin_hash")
PART_STATE_COLUMNS = ("status", "custodian", "recipient", "vin_hash", "site_key", "updated_block")
KIND_STATUS = {kind: status for kind, status in PART_EVENTS.values()} | {"registered": PartStatus.IN_STOCK}


def state_after(kind: str, org_id: int, counterparty: int | None, vin_hash: bytes | None, site_key: str) -> dict[str, Any]:
    """A part's state columns after an event of `kind` made by `org_id` through `site_key` (the custodian it
    leaves behind)."""
    return {
        "status": int(KIND_STATUS[kind]),
        "custodian": org_id,
        "site_key": site_key,
        "recipient": counterparty if kind == "shipped" else None,
        "vin_hash": vin_hash if kind == "installed" else None,
    }


@dataclass
class _Batch:
    """What one write() call will flush, built in memory in chain order."""

    chain_id: int
    journal_from: int
    part_events: list[tuple[Any, ...]] = field(default_factory=list)  # EVENT_COLUMNS
    new_parts: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    part_updates: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    new_shipments: dict[bytes, dict[str, Any]] = field(default_factory=dict)  # open in this batch, by part
    shipments: list[dict[str, Any]] = field(default_factory=list)
    shipment_closes: list[dict[str, Any]] = field(default_factory=list)  # of shipments opened before this batch
    new_installations: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    installations: list[dict[str, Any]] = field(default_factory=list)
    installation_closes: list[dict[str, Any]] = field(default_factory=list)
    lots: list[dict[str, Any]] = field(default_factory=list)
    recalls: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    nonces: list[dict[str, Any]] = field(default_factory=list)
    site_keys: list[dict[str, Any]] = field(default_factory=list)
    revocations: list[dict[str, Any]] = field(default_factory=list)
    block_times: dict[int, int] = field(default_factory=dict)


class Sink:
    """Writes the mirror of one chain into one database."""

    def __init__(self, engine: Engine, chain_id: int) -> None:
        self.engine = engine
        self.chain_id = chain_id

    def state(self) -> IndexerState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T_STATE).where(T_STATE.c.chain_id == self.chain_id)).mappings().first()
        return IndexerState(**row) if row else None

    def start(self, block: BlockHeader) -> None:
        """Sets the cursor just before the first block to index (the deployment block's parent)."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(T_STATE).values(
                    chain_id=self.chain_id, block_number=block.number, block_hash=block.hash, written_block=block.number, head_seen=block.number,
                    healthy=True, message="", updated_at=time.time(),
                )
            )
            conn.execute(insert(T_BLOCK).values(number=block.number, hash=block.hash, parent_hash=block.parent_hash, timestamp=block.timestamp))

    def write(
        self,
        logs: Iterable[DecodedLog],
        *,
        cursor: BlockHeader,
        headers: list[BlockHeader],
        head: int,
        journal_from: int,
        prune_below: int,
    ) -> None:
        """Applies `logs` (in chain order, all in blocks up to `cursor`), stores `headers` for the reorg window,
        moves the cursor to `cursor` — all in one transaction. Blocks >= `journal_from` get undo entries."""
        batch = _Batch(self.chain_id, journal_from)
        batch.block_times = {header.number: header.timestamp for header in headers}
        with self.engine.begin() as conn:
            previous, written = conn.execute(select(T_STATE.c.block_number, T_STATE.c.written_block).where(T_STATE.c.chain_id == self.chain_id)).one()
            if written > previous:
                # The cursor was moved back over rows already written (a replay): undo them first, so that the
                # range is re-applied exactly once and every state is what the chain says at the new cursor.
                self._undo_above(conn, previous)
            for log in logs:
                self._apply(conn, batch, log)
            self._flush(conn, batch)
            if headers:
                numbers = [header.number for header in headers]
                conn.execute(delete(T_BLOCK).where(T_BLOCK.c.number.in_(numbers)))
                conn.execute(insert(T_BLOCK), [vars_of(header) for header in headers])
            conn.execute(delete(T_BLOCK).where(T_BLOCK.c.number < prune_below))
            conn.execute(delete(T_UNDO).where(T_UNDO.c.block_number < prune_below))
            conn.execute(
                update(T_STATE)
                .where(T_STATE.c.chain_id == self.chain_id)
                .values(
                    block_number=cursor.number, block_hash=cursor.hash, written_block=cursor.number, head_seen=head,
                    healthy=True, message="", updated_at=time.time(),
                )
            )

    def set_health(self, *, healthy: bool, message: str, head: int | None = None) -> None:
        values: dict[str, Any] = {"healthy": healthy, "message": message, "updated_at": time.time()}
        if head is not None:
            values["head_seen"] = head
        with self.engine.begin() as conn:
            conn.execute(update(T_STATE).where(T_STATE.c.chain_id == self.chain_id).values(**values))

    def stored_blocks(self) -> dict[int, bytes]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(T_BLOCK.c.number, T_BLOCK.c.hash)).all())

    # --- applying events ------------------------------------------------------------------------------------

    def _apply(self, conn: Connection, batch: _Batch, log: DecodedLog) -> None:
        args, name = log.args, log.event
        if name in PART_EVENTS:
            kind, _ = PART_EVENTS[name]
            org_id = args["orgId"] if "orgId" in args else args["from"]
            counterparty = args.get("to")
            doc_hash = args.get("docHash", args.get("reasonHash"))
            vin_hashes = args.get("vinHashes")
            for position, part_id in enumerate(args["partIds"]):
                vin_hash = vin_hashes[position] if vin_hashes is not None else None
                self._part_event(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash)
        elif name == "PartsRegistered":
            gtin, lot, org_id = args["gtin"], args["lot"], args["manufacturer"]
            for position, serial in enumerate(args["serials"]):
                part_id = part_id_unchecked(gtin, serial)
                batch.new_parts[part_id] = {
                    "part_id": part_id, "gtin": str(gtin).zfill(14), "serial": _text(serial), "lot": lot,
                    "manufacturer": org_id, "recalled": False, "registered_block": log.block_number,
                    **state_after("registered", org_id, None, None, args["siteKey"]), "updated_block": log.block_number,
                }
                self._event_row(batch, log, position, part_id, "registered", org_id, None, None, None)
        elif name == "LotOpened":
            batch.lots.append({"lot": args["lot"], "manufacturer": args["manufacturer"], "lot_code": _text(args["lotCode"]), "opened_block": log.block_number, "recalled": False})
        elif name == "LotRecalled":
            batch.recalls.append({"lot": args["lot"], "org_id": args["orgId"], "site_key": args["siteKey"], "notice_hash": args["noticeHash"], "block_number": log.block_number, "tx_hash": log.tx_hash})
        elif name == "DocumentAnchored":
            a = args["attestation"]
            batch.documents.append({
                "doc_hash": a[0], "doc_type": a[1], "issuer": a[2], "counterparty": a[3],
                "previous": a[4] if any(a[4]) else None, "parts_root": a[5] if any(a[5]) else None,
                "nonce": a[6], "deadline": str(a[7]), "issuer_signer": args["issuerSigner"],
                "counterparty_signer": args["counterpartySigner"], "issuer_signature": args["issuerSignature"],
                "counterparty_signature": args["counterpartySignature"], "block_number": log.block_number,
                "block_time": batch.block_times.get(log.block_number, 0), "tx_hash": log.tx_hash, "log_index": log.log_index,
            })  # fmt: skip
        elif name == "BatchAnchored":
            batch.batches.append({"root": args["root"], "org_id": args["orgId"], "site_key": args["siteKey"], "kind": _text(args["kind"]), "record_count": args["recordCount"], "block_number": log.block_number, "tx_hash": log.tx_hash, "log_index": log.log_index})
        elif name == "NonceCancelled":
            batch.nonces.append({"org_id": args["orgId"], "nonce": args["nonce"], "site_key": args["siteKey"], "block_number": log.block_number})
        elif name == "SiteKeyAdded":
            batch.site_keys.append({"address": args["key"], "org_id": args["orgId"], "site": _text(args["site"]), "added_block": log.block_number})
        elif name == "SiteKeyRevoked":
            batch.revocations.append({"address": args["key"], "revoked_block": log.block_number, "revoked_by": args["revokedBy"]})
        elif log.event in ORGANISATION_EVENTS:
            self._flush(conn, batch)  # organisations change in place: keep every earlier write before this one
            self._organisation_event(conn, batch, log)

    def _part_event(self, batch: _Batch, log: DecodedLog, position: int, part_id: bytes, kind: str, org_id: int,
                    counterparty: int | None, doc_hash: bytes | None, vin_hash: bytes | None) -> None:  # fmt: skip
        state = state_after(kind, org_id, counterparty, vin_hash, log.args["siteKey"]) | {"updated_block": log.block_number}
        target = batch.new_parts.get(part_id)
        (target if target is not None else batch.part_updates.setdefault(part_id, {})).update(state)
        if kind == "shipped":
            row = {"part_id": part_id, "from_org": org_id, "to_org": counterparty, "doc_hash": _none_if_zero(doc_hash), "shipped_block": log.block_number, "shipped_tx": log.tx_hash, "outcome": None, "closed_block": None}
            batch.shipments.append(row)
            batch.new_shipments[part_id] = row
        elif kind in ("received", "cancelled"):
            _close(batch.new_shipments, batch.shipment_closes, part_id, {"outcome": kind, "closed_block": log.block_number})
        elif kind == "installed":
            row = {"part_id": part_id, "org_id": org_id, "vin_hash": vin_hash, "installed_block": log.block_number, "installed_tx": log.tx_hash, "removed_block": None}
            batch.installations.append(row)
            batch.new_installations[part_id] = row
        elif kind == "removed":
            _close(batch.new_installations, batch.installation_closes, part_id, {"removed_block": log.block_number})
        self._event_row(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash)

    def _event_row(self, batch: _Batch, log: DecodedLog, position: int, part_id: bytes, kind: str, org_id: int,
                   counterparty: int | None, doc_hash: bytes | None, vin_hash: bytes | None) -> None:  # fmt: skip
        batch.part_events.append((
            batch.chain_id, log.block_number, log.tx_hash, log.log_index, position, part_id, kind, org_id,
            log.args["siteKey"], counterparty, _none_if_zero(doc_hash), vin_hash,
        ))  # fmt: skip, in the order of EVENT_COLUMNS

    def _organisation_event(self, conn: Connection, batch: _Batch, log: DecodedLog) -> None:
        args, org_id = log.args, log.args["orgId"]
        if log.event == "OrganisationRegistered":
            values = {"name": args["name"], "roles": args["roles"], "suspended": False, "registered_block": log.block_number}
        elif log.event == "OrganisationRolesChanged":
            values = {"roles": args["roles"]}
        elif log.event in ("OrganisationSuspended", "OrganisationReinstated"):
            values = {"suspended": log.event == "OrganisationSuspended"}
        else:
            return
        before = conn.execute(select(T_ORG).where(T_ORG.c.org_id == org_id)).mappings().first()
        if log.block_number >= batch.journal_from:
            conn.execute(insert(T_UNDO).values(
                block_number=log.block_number, table_name="organisations", key=json.dumps({"org_id": org_id}),
                before=json.dumps(dict(before)) if before else None,
            ))  # fmt: skip
        if before is None:
            conn.execute(insert(T_ORG).values(org_id=org_id, updated_block=log.block_number, **values))
        else:
            conn.execute(update(T_ORG).where(T_ORG.c.org_id == org_id).values(updated_block=log.block_number, **values))

    # --- flushing -------------------------------------------------------------------------------------------

    def _flush(self, conn: Connection, batch: _Batch) -> None:
        """Writes what the batch holds so far, in an order that respects dependencies, and empties it."""
        writer = BulkWriter(conn)
        writer.insert(T_KEY, batch.site_keys)
        writer.update(T_KEY, "address", ("revoked_block", "revoked_by"), batch.revocations)
        writer.insert(T_LOT, batch.lots)
        writer.insert(T_PART, list(batch.new_parts.values()))
        writer.update(T_PART, "part_id", PART_STATE_COLUMNS, [{"part_id": part_id, **state} for part_id, state in batch.part_updates.items()])
        if batch.shipment_closes:
            conn.execute(
                update(T_SHIP).where(and_(T_SHIP.c.part_id == bindparam("key_part_id"), T_SHIP.c.outcome.is_(None))).values(outcome=bindparam("outcome"), closed_block=bindparam("closed_block")),
                batch.shipment_closes,
            )
        writer.insert(T_SHIP, batch.shipments)
        if batch.installation_closes:
            conn.execute(
                update(T_INSTALL).where(and_(T_INSTALL.c.part_id == bindparam("key_part_id"), T_INSTALL.c.removed_block.is_(None))).values(removed_block=bindparam("removed_block")),
                batch.installation_closes,
            )
        writer.insert(T_INSTALL, batch.installations)
        if batch.recalls:
            writer.insert(T_RECALL, batch.recalls)
            lots = [{"key_lot": recall["lot"]} for recall in batch.recalls]
            conn.execute(update(T_LOT).where(T_LOT.c.lot == bindparam("key_lot")).values(recalled=True), lots)
            conn.execute(update(T_PART).where(T_PART.c.lot == bindparam("key_lot")).values(recalled=True), lots)
        writer.insert(T_DOC, batch.documents)
        writer.insert(T_BATCH, batch.batches)
        writer.insert(T_NONCE, batch.nonces)
        dated = sorted({row[EVENT_BLOCK] for row in batch.part_events} | {recall["block_number"] for recall in batch.recalls})
        if dated:  # each block is written by one range only (a replay undoes it first)
            conn.execute(delete(T_BTIME).where(T_BTIME.c.number.in_(dated)))
            conn.execute(insert(T_BTIME), [{"number": number, "timestamp": batch.block_times[number]} for number in dated])
        writer.insert_rows(T_EVENT, EVENT_COLUMNS, batch.part_events)
        journal_from, chain_id, times = batch.journal_from, batch.chain_id, batch.block_times
        batch.__init__(chain_id, journal_from)  # type: ignore[misc]
        batch.block_times = times

    def undated_blocks(self, *, limit: int) -> list[int]:
        """Blocks with part events or recalls whose time is not in block_times (a mirror older than the table)."""
        with self.engine.connect() as conn:
            used = select(T_EVENT.c.block_number.label("number")).union(select(T_RECALL.c.block_number)).subquery()
            rows = conn.execute(
                select(used.c.number).where(~used.c.number.in_(select(T_BTIME.c.number))).order_by(used.c.number).limit(limit)
            )  # fmt: skip
            return [row.number for row in rows]

    def date_blocks(self, headers: list[BlockHeader]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(T_BTIME).where(T_BTIME.c.number.in_([header.number for header in headers])))
            conn.execute(insert(T_BTIME), [{"number": header.number, "timestamp": header.timestamp} for header in headers])

    # --- reorganisations ------------------------------------------------------------------------------------

    def rollback(self, ancestor: BlockHeader) -> int:
        """Undoes every block above `ancestor` and puts the cursor on it; returns how many part states changed."""
        with self.engine.begin() as conn:
            changed = self._undo_above(conn, ancestor.number)
            conn.execute(
                update(T_STATE).where(T_STATE.c.chain_id == self.chain_id).values(block_number=ancestor.number, block_hash=ancestor.hash, updated_at=time.time())
            )
        return changed

    def _undo_above(self, conn: Connection, above: int) -> int:
        """Removes every row written for blocks above `above` and recomputes what they changed; returns how many
        part states changed. Organisations come back from the undo log, which covers the reorg window only: below
        it, a replay leaves an organisation as its later events made it until they are applied again."""
        for entry in conn.execute(select(T_UNDO).where(T_UNDO.c.block_number > above).order_by(T_UNDO.c.id.desc())).mappings().all():
            key = json.loads(entry["key"])
            conn.execute(delete(T_ORG).where(T_ORG.c.org_id == key["org_id"]))
            if entry["before"] is not None:
                conn.execute(insert(T_ORG).values(**json.loads(entry["before"])))
        conn.execute(delete(T_ORG).where(T_ORG.c.registered_block > above))
        conn.execute(delete(T_UNDO).where(T_UNDO.c.block_number > above))
        conn.execute(delete(T_KEY).where(T_KEY.c.added_block > above))
        conn.execute(update(T_KEY).where(T_KEY.c.revoked_block > above).values(revoked_block=None, revoked_by=None))
        affected = [row[0] for row in conn.execute(select(T_PART.c.part_id).where(T_PART.c.updated_block > above))]
        for table in (T_EVENT, T_DOC, T_BATCH, T_NONCE, T_RECALL):
            conn.execute(delete(table).where(table.c.block_number > above))
        conn.execute(delete(T_BTIME).where(T_BTIME.c.number > above))
        conn.execute(delete(T_SHIP).where(T_SHIP.c.shipped_block > above))
        conn.execute(update(T_SHIP).where(T_SHIP.c.closed_block > above).values(outcome=None, closed_block=None))
        conn.execute(delete(T_INSTALL).where(T_INSTALL.c.installed_block > above))
        conn.execute(update(T_INSTALL).where(T_INSTALL.c.removed_block > above).values(removed_block=None))
        conn.execute(delete(T_PART).where(T_PART.c.registered_block > above))
        conn.execute(delete(T_LOT).where(T_LOT.c.opened_block > above))
        recalled = {row[0] for row in conn.execute(select(T_RECALL.c.lot))}
        conn.execute(update(T_LOT).values(recalled=T_LOT.c.lot.in_(recalled) if recalled else False))
        conn.execute(update(T_PART).values(recalled=T_PART.c.lot.in_(recalled) if recalled else False))
        self._recompute_parts(conn, affected)
        conn.execute(delete(T_BLOCK).where(T_BLOCK.c.number > above))
        conn.execute(update(T_STATE).where(T_STATE.c.chain_id == self.chain_id).values(written_block=above))
        return len(affected)

    def _recompute_parts(self, conn: Connection, part_ids: list[bytes]) -> None:
        """Each part's state from its last remaining event (parts whose registration was undone are gone)."""
        for start in range(0, len(part_ids), 500):
            chunk = part_ids[start : start + 500]
            rows = conn.execute(
                select(T_EVENT.c.part_id, T_EVENT.c.kind, T_EVENT.c.org_id, T_EVENT.c.counterparty, T_EVENT.c.vin_hash, T_EVENT.c.site_key, T_EVENT.c.block_number)
                .where(T_EVENT.c.part_id.in_(chunk))
                .order_by(T_EVENT.c.part_id, T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position)
            ).all()
            last = {row.part_id: row for row in rows}
            BulkWriter(conn).update(T_PART, "part_id", PART_STATE_COLUMNS, [
                {"part_id": part_id, **state_after(row.kind, row.org_id, row.counterparty, row.vin_hash, row.site_key), "updated_block": row.block_number}
                for part_id, row in last.items()
            ])  # fmt: skip


def _close(opened: dict[bytes, dict[str, Any]], closes: list[dict[str, Any]], part_id: bytes, values: dict[str, Any]) -> None:
    """Closes the part's open row: in memory when this batch opened it, else by an UPDATE at flush."""
    row = opened.pop(part_id, None)
    if row is not None:
        row.update(values)
    else:
        closes.append({"key_part_id": part_id, **values})


def _none_if_zero(value: bytes | None) -> bytes | None:
    return value if value and any(value) else None


def _text(raw: bytes) -> str:
    """A padded bytes32 identifier as text when it is printable ASCII (what the service writes), else as 0x-hex:
    the contract accepts any 32 bytes, and no identifier a member sends may stop the mirror."""
    trimmed = bytes(raw).rstrip(b"\0")
    if trimmed and trimmed.isascii():
        text = trimmed.decode("ascii")
        if text.isprintable():  # for ASCII: 0x20..0x7E
            return text
    return "0x" + bytes(raw).hex()


def vars_of(header: BlockHeader) -> dict[str, Any]:
    return {"number": header.number, "hash": header.hash, "parent_hash": header.parent_hash, "timestamp": header.timestamp}


class BulkWriter:
    """executemany straight through the driver, skipping SQLAlchemy's per-parameter processing (the hot path of
    catching up); on PostgreSQL, `bulk` inserts go through COPY."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._mark = "%s" if self._postgres else "?"

    def insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        if rows:
            columns = tuple(rows[0])
            self.insert_rows(table, columns, [tuple(row[column] for column in columns) for row in rows])

    def insert_rows(self, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Inserts tuples in `columns` order: COPY on PostgreSQL, executemany on SQLite."""
        if not rows:
            return
        if self._postgres:
            cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join([self._mark] * len(columns))
        self._conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", rows)

    def update(self, table: Any, key: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        assignments = ", ".join(f"{column} = {self._mark}" for column in columns)
        values = [tuple(row[column] for column in columns) + (row[key],) for row in rows]
        self._conn.exec_driver_sql(f"UPDATE {table.name} SET {assignments} WHERE {key} = {self._mark}", values)
