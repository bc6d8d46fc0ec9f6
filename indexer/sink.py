"""The indexer's sink: applies decoded logs to the SQL mirror and moves the cursor, in ONE transaction.

Writes are batched per call (executemany), and every history row has a natural key, so a replayed range cannot
duplicate anything. A reorganisation is undone block by block (`rollback`): history rows of orphaned blocks are
deleted, shipments and installations reopened, and each affected part's state recomputed from the events that
remain — a part's state is a function of its last event. Organisations, changed in place by registry events, are
restored from the undo log, written only for blocks still inside the reorg window.

Containment (issue 15): the chain moves a container in O(1) (its events name the container only); the mirror expands.
A contained part's row holds its effective state, its outermost container's, as PartLedger.part(id) does: a log that
changes a container's state writes, after the rows of the ids it names, one part_events row per part (or unit) inside
it at any depth, of the same kind, with `related_id` the named container, and sets their state (and, for an
installation or removal, their installation rows; shipments stay the named ids'). A part's state thus stays a function
of its last event, recomputed after a reorganisation as before; a part's container is that of its last remaining
packing or assembly unless an unpacking or disassembly follows it. Logistic units have a table of their own, with the
state the chain keeps for them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from indexer.decoder import DecodedLog
from indexer.source import BlockHeader
from indexer.tables import (
    Batch,
    BlockTime,
    CancelledNonce,
    Containment,
    Document,
    IndexedBlock,
    IndexerState,
    Installation,
    Lineage,
    LogisticUnit,
    Lot,
    Organisation,
    Part,
    PartEvent,
    Recall,
    Shipment,
    SiteKey,
    UndoEntry,
)
from partledger.db import BulkWriter
from partledger.ids import part_id_unchecked
from partledger.model import PartStatus

T_ORG, T_KEY, T_LOT, T_PART = Organisation.__table__, SiteKey.__table__, Lot.__table__, Part.__table__
T_EVENT, T_SHIP, T_INSTALL, T_RECALL = PartEvent.__table__, Shipment.__table__, Installation.__table__, Recall.__table__
T_DOC, T_BATCH, T_NONCE = Document.__table__, Batch.__table__, CancelledNonce.__table__
T_BLOCK, T_UNDO, T_STATE, T_BTIME = IndexedBlock.__table__, UndoEntry.__table__, IndexerState.__table__, BlockTime.__table__
T_UNIT, T_CONTAIN, T_LINEAGE = LogisticUnit.__table__, Containment.__table__, Lineage.__table__

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
# Event name -> (part_events.kind, the container's kind, the argument naming the container, the one naming the contents)
CONTAINMENT_EVENTS: dict[str, tuple[str, str, str, str]] = {
    "PartsPacked": ("packed", "unit", "unitId", "partIds"),
    "PartsUnpacked": ("unpacked", "unit", "unitId", "partIds"),
    "PartsAssembled": ("assembled", "assembly", "parentId", "childIds"),
    "PartsDisassembled": ("disassembled", "assembly", "parentId", "childIds"),
}
LINKING_KINDS = {"packed": "unit", "assembled": "assembly"}  # the kinds that put a part into a container
CONTAINMENT_KINDS = ("packed", "unpacked", "assembled", "disassembled")
ORGANISATION_EVENTS = frozenset({"OrganisationRegistered", "OrganisationRolesChanged", "OrganisationSuspended", "OrganisationReinstated"})
EVENT_BLOCK = 1  # block_number's place in EVENT_COLUMNS
EVENT_COLUMNS = (
    "chain_id", "block_number", "tx_hash", "log_index", "position", "part_id", "kind", "org_id", "site_key", "counterparty", "doc_hash",
    "vin_hash", "related_id",
)  # fmt: skip
PART_STATE_COLUMNS = ("status", "custodian", "recipient", "vin_hash", "site_key", "updated_block")
# Packing, assembling and their reverses leave a part in stock at the organisation (loose, or inside a container that
# it holds in stock: the effective state is the same); a remanufactured original is consumed.
KIND_STATUS = (
    {kind: status for kind, status in PART_EVENTS.values()}
    | {"registered": PartStatus.IN_STOCK, "remanufactured": PartStatus.REMANUFACTURED}
    | {kind: PartStatus.IN_STOCK for kind in CONTAINMENT_KINDS}
)
SQL_CHUNK = 500  # ids per IN (...) list
CONTAIN_COLUMNS = ("part_id", "container_id", "kind", "lot", "path", "block_number", "tx_hash", "log_index")
PATH_KIND = {"assembly": b"a", "unit": b"u"}  # a container's entry in a containment path: this byte, then its id


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
    new_units: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    unit_updates: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    lineage: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Containers:
    """What the sink must know before it applies a log, kept from one write to the next: which ids are logistic units
    (their state goes to logistic_units) and how many ids each container holds directly (a log that changes one of
    them is expanded). Loaded from the mirror by the first write; dropped when a write fails or blocks are undone."""

    units: set[bytes]
    contents: dict[bytes, int]

    @classmethod
    def load(cls, conn: Connection) -> _Containers:
        units = {bytes(row[0]) for row in conn.execute(select(T_UNIT.c.unit_id))}
        counts = conn.execute(select(T_CONTAIN.c.container_id, func.count()).group_by(T_CONTAIN.c.container_id))
        return cls(units, {bytes(container): count for container, count in counts})


class Sink:
    """Writes the mirror of one chain into one database."""

    def __init__(self, engine: Engine, chain_id: int) -> None:
        self.engine = engine
        self.chain_id = chain_id
        self._known: _Containers | None = None

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
        try:
            with self.engine.begin() as conn:
                previous, written = conn.execute(select(T_STATE.c.block_number, T_STATE.c.written_block).where(T_STATE.c.chain_id == self.chain_id)).one()
                if written > previous:
                    # The cursor was moved back over rows already written (a replay): undo them first, so that the
                    # range is re-applied exactly once and every state is what the chain says at the new cursor.
                    self._undo_above(conn, previous)
                if self._known is None:
                    self._known = _Containers.load(conn)
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
        except BaseException:
            self._known = None  # it learnt from logs whose rows were rolled back
            raise

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
            part_ids = args["partIds"]
            for position, part_id in enumerate(part_ids):
                vin_hash = vin_hashes[position] if vin_hashes is not None else None
                self._part_event(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash)
            contents = self._known.contents if self._known is not None else {}
            if contents and any(part_id in contents for part_id in part_ids):
                self._expand(conn, batch, log, kind, org_id, counterparty, doc_hash, vin_hashes)
        elif name in CONTAINMENT_EVENTS:
            self._containment_event(conn, batch, log, *CONTAINMENT_EVENTS[name])
        elif name == "LogisticUnitCreated":
            unit_id = bytes(args["unitId"])
            batch.new_units[unit_id] = {
                "unit_id": unit_id, "sscc": str(args["sscc"]).zfill(18), "created_by": args["orgId"], "block_number": log.block_number,
                "tx_hash": log.tx_hash, "created_site_key": "", "status": int(PartStatus.IN_STOCK), "custodian": args["orgId"],
                "recipient": None, "vin_hash": None, "site_key": "", "updated_block": log.block_number,
            }  # fmt: skip, the site key comes with the packing that follows in the same transaction
            self._known_units().add(unit_id)
        elif name == "PartRemanufactured":
            original, new = bytes(args["originalId"]), bytes(args["partId"])
            self._part_event(batch, log, 0, original, "remanufactured", args["orgId"], None, None, None, related=new)
            batch.lineage.append({"part_id": new, "original_id": original, "block_number": log.block_number, "tx_hash": log.tx_hash})
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

    def _known_units(self) -> set[bytes]:
        assert self._known is not None  # loaded by write() before any log is applied
        return self._known.units

    def _part_event(self, batch: _Batch, log: DecodedLog, position: int, part_id: bytes, kind: str, org_id: int,
                    counterparty: int | None, doc_hash: bytes | None, vin_hash: bytes | None, *, related: bytes | None = None,
                    inside: bool = False) -> None:  # fmt: skip
        """One part (or unit) changed by a log: `inside` when it is inside a container the log names (no shipment rows
        of its own: the container is what was shipped)."""
        state = state_after(kind, org_id, counterparty, vin_hash, log.args["siteKey"]) | {"updated_block": log.block_number}
        if self._known is not None and part_id in self._known.units:
            target = batch.new_units.get(part_id)
            (target if target is not None else batch.unit_updates.setdefault(part_id, {})).update(state)
            if not inside and kind == "shipped":
                row = {"part_id": part_id, "from_org": org_id, "to_org": counterparty, "doc_hash": _none_if_zero(doc_hash), "shipped_block": log.block_number, "shipped_tx": log.tx_hash, "outcome": None, "closed_block": None}
                batch.shipments.append(row)
                batch.new_shipments[part_id] = row
            elif not inside and kind in ("received", "cancelled"):
                _close(batch.new_shipments, batch.shipment_closes, part_id, {"outcome": kind, "closed_block": log.block_number})
            self._event_row(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash, related)
            return
        target = batch.new_parts.get(part_id)
        (target if target is not None else batch.part_updates.setdefault(part_id, {})).update(state)
        if inside:
            if kind == "installed":
                row = {"part_id": part_id, "org_id": org_id, "vin_hash": vin_hash, "installed_block": log.block_number, "installed_tx": log.tx_hash, "removed_block": None}
                batch.installations.append(row)
                batch.new_installations[part_id] = row
            elif kind == "removed":
                _close(batch.new_installations, batch.installation_closes, part_id, {"removed_block": log.block_number})
        elif kind == "shipped":
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
        self._event_row(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash, related)

    def _event_row(self, batch: _Batch, log: DecodedLog, position: int, part_id: bytes, kind: str, org_id: int,
                   counterparty: int | None, doc_hash: bytes | None, vin_hash: bytes | None, related: bytes | None = None) -> None:  # fmt: skip
        batch.part_events.append((
            batch.chain_id, log.block_number, log.tx_hash, log.log_index, position, part_id, kind, org_id,
            log.args["siteKey"], counterparty, _none_if_zero(doc_hash), vin_hash, related,
        ))  # fmt: skip, in the order of EVENT_COLUMNS

    # --- containment ------------------------------------------------------------------------------------------

    def _expand(self, conn: Connection, batch: _Batch, log: DecodedLog, kind: str, org_id: int, counterparty: int | None,
                doc_hash: bytes | None, vin_hashes: list[bytes] | None) -> None:  # fmt: skip
        """The rows of everything inside the containers a part event names, at any depth: after the named ids, in the
        order of the named containers and, under each, of the contents' ids. The containment table is current at
        every log (links are written as their logs are applied), and the batch's later states win over earlier ones."""
        named = [bytes(part_id) for part_id in log.args["partIds"]]
        inside = self._descendants(conn, named)
        position = len(named)
        for index, container in enumerate(named):
            vin_hash = vin_hashes[index] if vin_hashes is not None else None
            for part_id in inside.get(container, ()):
                self._part_event(batch, log, position, part_id, kind, org_id, counterparty, doc_hash, vin_hash, related=container, inside=True)
                position += 1

    def _descendants(self, conn: Connection, roots: list[bytes]) -> dict[bytes, list[bytes]]:
        """Everything inside each of `roots` at any depth (sorted by id), from the containment table."""
        assert self._known is not None
        contents = self._known.contents
        owner = {root: root for root in roots}
        found: dict[bytes, list[bytes]] = {root: [] for root in roots}
        frontier = [root for root in roots if root in contents]
        while frontier:
            level = []
            for start in range(0, len(frontier), SQL_CHUNK):
                chunk = frontier[start : start + SQL_CHUNK]
                level += conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.container_id).where(T_CONTAIN.c.container_id.in_(chunk))).all()
            frontier = []
            for part_id, container_id in level:
                part_id = bytes(part_id)
                if part_id in owner:  # no cycle is possible on chain; never loop on a corrupt mirror
                    continue
                root = owner[part_id] = owner[bytes(container_id)]
                found[root].append(part_id)
                if part_id in contents:
                    frontier.append(part_id)
        return {root: sorted(ids) for root, ids in found.items()}

    def _reroot(self, conn: Connection, roots: list[bytes], change: Callable[[bytes, bytes], bytes]) -> None:
        """Rewrites the path of everything inside each of `roots` (given the path and the root it is under), after
        the roots were put into a container or taken out of one."""
        inside = {part_id: root for root, parts in self._descendants(conn, roots).items() for part_id in parts}
        if inside:
            paths = _paths(conn, list(inside))
            BulkWriter(conn).update(T_CONTAIN, "part_id", ("path",), [{"part_id": part_id, "path": change(paths[part_id], root)} for part_id, root in inside.items()])

    def _containment_event(self, conn: Connection, batch: _Batch, log: DecodedLog, kind: str, container_kind: str, container_arg: str, contents_arg: str) -> None:
        """A packing, unpacking, assembly or disassembly: the links written at once (a later log of this write may
        move the container, and its expansion reads them), each part's row and state (in stock at the organisation)."""
        args = log.args
        container = bytes(args[container_arg])
        part_ids = [bytes(part_id) for part_id in args[contents_arg]]
        unit = batch.new_units.get(container)
        if unit is not None and not unit["site_key"]:  # created by this packing's transaction
            unit["site_key"] = unit["created_site_key"] = args["siteKey"]
        assert self._known is not None
        contents = self._known.contents
        if kind in LINKING_KINDS:
            lots = self._lots_of(conn, batch, part_ids)
            above = PATH_KIND[container_kind] + container + _paths(conn, [container]).get(container, b"")
            BulkWriter(conn).insert_rows(
                T_CONTAIN, CONTAIN_COLUMNS,
                [(part_id, container, container_kind, lots.get(part_id, 0), above, log.block_number, log.tx_hash, log.log_index) for part_id in part_ids],
            )  # fmt: skip
            self._reroot(conn, part_ids, lambda path, _: path + above)  # what is inside them is now inside the container too
            contents[container] = contents.get(container, 0) + len(part_ids)
        else:
            before = _paths(conn, part_ids)
            for start in range(0, len(part_ids), SQL_CHUNK):
                conn.execute(delete(T_CONTAIN).where(T_CONTAIN.c.part_id.in_(part_ids[start : start + SQL_CHUNK])))
            self._reroot(conn, part_ids, lambda path, root: path[: len(path) - len(before.get(root, b""))])
            left = contents.get(container, 0) - len(part_ids)
            if left > 0:
                contents[container] = left
            else:
                contents.pop(container, None)
        for position, part_id in enumerate(part_ids):
            self._part_event(batch, log, position, part_id, kind, args["orgId"], None, None, None, related=container)

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

    def _lots_of(self, conn: Connection, batch: _Batch | None, part_ids: list[bytes]) -> dict[bytes, int]:
        """The lot of each part among `part_ids` (a logistic unit has none: 0), from the batch or the mirror."""
        lots: dict[bytes, int] = {}
        missing = []
        for part_id in part_ids:
            new = batch.new_parts.get(part_id) if batch is not None else None
            if new is not None:
                lots[part_id] = new["lot"]
            else:
                missing.append(part_id)
        for start in range(0, len(missing), SQL_CHUNK):
            lots.update({bytes(p): lot for p, lot in conn.execute(select(T_PART.c.part_id, T_PART.c.lot).where(T_PART.c.part_id.in_(missing[start : start + SQL_CHUNK])))})
        return lots

    # --- flushing -------------------------------------------------------------------------------------------

    def _flush(self, conn: Connection, batch: _Batch) -> None:
        """Writes what the batch holds so far, in an order that respects dependencies, and empties it."""
        writer = BulkWriter(conn)
        writer.insert(T_KEY, batch.site_keys)
        writer.update(T_KEY, "address", ("revoked_block", "revoked_by"), batch.revocations)
        writer.insert(T_LOT, batch.lots)
        writer.insert(T_PART, list(batch.new_parts.values()))
        writer.update(T_PART, "part_id", PART_STATE_COLUMNS, [{"part_id": part_id, **state} for part_id, state in batch.part_updates.items()])
        writer.insert(T_UNIT, list(batch.new_units.values()))
        writer.update(T_UNIT, "unit_id", PART_STATE_COLUMNS, [{"unit_id": unit_id, **state} for unit_id, state in batch.unit_updates.items()])
        writer.insert(T_LINEAGE, batch.lineage)
        writer.close_open(T_SHIP, "part_id", "outcome", ("outcome", "closed_block"), batch.shipment_closes)
        writer.insert(T_SHIP, batch.shipments)
        writer.close_open(T_INSTALL, "part_id", "removed_block", ("removed_block",), batch.installation_closes)
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
        self._known = None
        with self.engine.begin() as conn:
            changed = self._undo_above(conn, ancestor.number)
            conn.execute(
                update(T_STATE).where(T_STATE.c.chain_id == self.chain_id).values(
                    block_number=ancestor.number, block_hash=ancestor.hash, updated_at=time.time(),
                    reorgs=T_STATE.c.reorgs + 1, reorged_blocks=T_STATE.c.reorged_blocks + (T_STATE.c.block_number - ancestor.number),
                )
            )  # fmt: skip
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
        self._known = None
        affected = [row[0] for row in conn.execute(select(T_PART.c.part_id).where(T_PART.c.updated_block > above))]
        affected_units = [row[0] for row in conn.execute(select(T_UNIT.c.unit_id).where(T_UNIT.c.updated_block > above, T_UNIT.c.block_number <= above))]
        relinked = [row[0] for row in conn.execute(select(T_EVENT.c.part_id).where(T_EVENT.c.block_number > above, T_EVENT.c.kind.in_(CONTAINMENT_KINDS)).distinct())]
        for table in (T_EVENT, T_DOC, T_BATCH, T_NONCE, T_RECALL, T_LINEAGE):
            conn.execute(delete(table).where(table.c.block_number > above))
        conn.execute(delete(T_BTIME).where(T_BTIME.c.number > above))
        conn.execute(delete(T_SHIP).where(T_SHIP.c.shipped_block > above))
        conn.execute(update(T_SHIP).where(T_SHIP.c.closed_block > above).values(outcome=None, closed_block=None))
        conn.execute(delete(T_INSTALL).where(T_INSTALL.c.installed_block > above))
        conn.execute(update(T_INSTALL).where(T_INSTALL.c.removed_block > above).values(removed_block=None))
        conn.execute(delete(T_PART).where(T_PART.c.registered_block > above))
        conn.execute(delete(T_UNIT).where(T_UNIT.c.block_number > above))
        conn.execute(delete(T_LOT).where(T_LOT.c.opened_block > above))
        recalled = {row[0] for row in conn.execute(select(T_RECALL.c.lot))}
        conn.execute(update(T_LOT).values(recalled=T_LOT.c.lot.in_(recalled) if recalled else False))
        conn.execute(update(T_PART).values(recalled=T_PART.c.lot.in_(recalled) if recalled else False))
        self._recompute_parts(conn, affected)
        self._recompute_units(conn, affected_units)
        self._relink(conn, relinked)
        conn.execute(delete(T_BLOCK).where(T_BLOCK.c.number > above))
        conn.execute(update(T_STATE).where(T_STATE.c.chain_id == self.chain_id).values(written_block=above))
        return len(affected)

    def _recompute_parts(self, conn: Connection, part_ids: list[bytes]) -> None:
        """Each part's state from its last remaining event (parts whose registration was undone are gone)."""
        for chunk, last in _last_events(conn, part_ids):
            BulkWriter(conn).update(T_PART, "part_id", PART_STATE_COLUMNS, [
                {"part_id": part_id, **state_after(row.kind, row.org_id, row.counterparty, row.vin_hash, row.site_key), "updated_block": row.block_number}
                for part_id, row in last.items()
            ])  # fmt: skip

    def _recompute_units(self, conn: Connection, unit_ids: list[bytes]) -> None:
        """Each unit's state from its last remaining event, else as its packing created it."""
        for chunk, last in _last_events(conn, unit_ids):
            created = conn.execute(select(T_UNIT.c.unit_id, T_UNIT.c.created_by, T_UNIT.c.created_site_key, T_UNIT.c.block_number).where(T_UNIT.c.unit_id.in_(chunk))).all()
            rows = []
            for unit_id, created_by, site_key, block in created:
                row = last.get(bytes(unit_id))
                state = (
                    state_after("registered", created_by, None, None, site_key) | {"updated_block": block}
                    if row is None
                    else state_after(row.kind, row.org_id, row.counterparty, row.vin_hash, row.site_key) | {"updated_block": row.block_number}
                )
                rows.append({"unit_id": unit_id, **state})
            BulkWriter(conn).update(T_UNIT, "unit_id", PART_STATE_COLUMNS, rows)

    def _relink(self, conn: Connection, part_ids: list[bytes]) -> None:
        """The containment links of parts whose packings or unpackings were undone: the last remaining one decides."""
        for chunk, last in _last_events(conn, part_ids, T_EVENT.c.kind.in_(CONTAINMENT_KINDS)):
            conn.execute(delete(T_CONTAIN).where(T_CONTAIN.c.part_id.in_(chunk)))
            linked = {part_id: row for part_id, row in last.items() if row.kind in LINKING_KINDS}
            lots = self._lots_of(conn, None, list(linked))
            BulkWriter(conn).insert_rows(
                T_CONTAIN, CONTAIN_COLUMNS,
                [(part_id, bytes(row.related_id), LINKING_KINDS[row.kind], lots.get(part_id, 0), b"", row.block_number, bytes(row.tx_hash), row.log_index)
                 for part_id, row in linked.items()],
            )  # fmt: skip
        _repath(conn, part_ids)


def _paths(conn: Connection, part_ids: list[bytes]) -> dict[bytes, bytes]:
    """The containment path of each contained part among `part_ids`."""
    found: dict[bytes, bytes] = {}
    for start in range(0, len(part_ids), SQL_CHUNK):
        chunk = part_ids[start : start + SQL_CHUNK]
        found.update({bytes(p): bytes(path) for p, path in conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.path).where(T_CONTAIN.c.part_id.in_(chunk)))})
    return found


def _repath(conn: Connection, part_ids: list[bytes]) -> None:
    """Recomputes from the links as they stand the paths of `part_ids` and of everything inside them (after an undo
    relinked them): down to everything inside, then up from each to its outermost container."""
    nodes = {bytes(part_id) for part_id in part_ids}
    frontier = list(nodes)
    while frontier:
        found = []
        for start in range(0, len(frontier), SQL_CHUNK):
            found += [bytes(row[0]) for row in conn.execute(select(T_CONTAIN.c.part_id).where(T_CONTAIN.c.container_id.in_(frontier[start : start + SQL_CHUNK])))]
        frontier = [part_id for part_id in found if part_id not in nodes]
        nodes.update(frontier)
    parent: dict[bytes, tuple[bytes, str] | None] = {}
    pending = sorted(nodes)
    while pending:
        for start in range(0, len(pending), SQL_CHUNK):
            chunk = pending[start : start + SQL_CHUNK]
            links = {bytes(p): (bytes(c), k) for p, c, k in conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.container_id, T_CONTAIN.c.kind).where(T_CONTAIN.c.part_id.in_(chunk)))}
            parent.update({part_id: links.get(part_id) for part_id in chunk})
        pending = sorted({link[0] for link in parent.values() if link is not None and link[0] not in parent})

    def path_of(part_id: bytes) -> bytes:
        path, seen, link = b"", {part_id}, parent.get(part_id)
        while link is not None and link[0] not in seen:  # no cycle on chain; never loop on a corrupt mirror
            path += PATH_KIND[link[1]] + link[0]
            seen.add(link[0])
            link = parent.get(link[0])
        return path

    BulkWriter(conn).update(T_CONTAIN, "part_id", ("path",), [{"part_id": part_id, "path": path_of(part_id)} for part_id in sorted(nodes) if parent.get(part_id) is not None])


def _last_events(conn: Connection, part_ids: list[bytes], condition: Any = None) -> Iterable[tuple[list[bytes], dict[bytes, Any]]]:
    """Per chunk of `part_ids`: the chunk and, by part id, the last part_events row (meeting `condition`, if given)."""
    for start in range(0, len(part_ids), SQL_CHUNK):
        chunk = [bytes(part_id) for part_id in part_ids[start : start + SQL_CHUNK]]
        rows = conn.execute(
            select(
                T_EVENT.c.part_id, T_EVENT.c.kind, T_EVENT.c.org_id, T_EVENT.c.counterparty, T_EVENT.c.vin_hash, T_EVENT.c.site_key,
                T_EVENT.c.block_number, T_EVENT.c.tx_hash, T_EVENT.c.log_index, T_EVENT.c.related_id,
            )
            .where(T_EVENT.c.part_id.in_(chunk), *([] if condition is None else [condition]))
            .order_by(T_EVENT.c.part_id, T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position)
        ).all()  # fmt: skip
        yield chunk, {bytes(row.part_id): row for row in rows}


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
