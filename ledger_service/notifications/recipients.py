"""Who a quality notification reaches, and what an acknowledging recipient holds, read from the indexer's mirror.

Where it sits: the read side of ledger_service.notifications (it reads the mirror, writes nothing).

- An alert goes downstream: to every organisation that holds, is receiving, held, received or installed an affected
  part, loose or inside an assembly or a logistic unit at any depth (the chain's events name only the outermost
  container; the mirror writes each part inside a history row of its own, and keeps its effective state).
- An investigation goes upstream: to the suppliers of the affected parts and of everything inside them now, at any
  depth (their manufacturers, and whoever shipped them to the initiator).

What is inside what comes from the mirror's `containment` table (its current links). The initiator is never its
own recipient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.engine import Connection

from indexer.tables import Containment, Installation, Lot, Part, PartEvent, Shipment
from partledger.model import PartStatus

T_PART, T_LOT, T_EVENT = Part.__table__, Lot.__table__, PartEvent.__table__
T_SHIP, T_INSTALL, T_CONTAIN = Shipment.__table__, Installation.__table__, Containment.__table__
CHUNK = 900  # bound parameters per IN (...), under SQLite's old limit
MAX_DEPTH = 16  # containment is at most 8 levels deep on chain; the bound only guards the recursion
HELD_STATUSES = (int(PartStatus.IN_STOCK), int(PartStatus.QUARANTINED))
EVENT_REASONS = {"received": "received", "installed": "installed"}  # a part event kind -> why its organisation is a recipient
ACK_LIST_LIMIT = 10_000  # parts an acknowledgement lists in each of held and installed


def chunks(values: list[bytes], size: int = CHUNK) -> Iterator[list[bytes]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- the affected parts ----------------------------------------------------------------------------------------


def lot_parts(conn: Connection, lots: Iterable[int]) -> list[bytes]:
    ids: list[bytes] = []
    for lot in sorted(set(lots)):
        ids += [bytes(row[0]) for row in conn.execute(select(T_PART.c.part_id).where(T_PART.c.lot == lot))]
    return ids


def known_lots(conn: Connection, lots: Iterable[int]) -> dict[int, Any]:
    """The lots the mirror knows, by number: (manufacturer, lot_code, recalled)."""
    wanted = sorted(set(lots))
    if not wanted:
        return {}
    rows = conn.execute(select(T_LOT.c.lot, T_LOT.c.manufacturer, T_LOT.c.lot_code, T_LOT.c.recalled).where(T_LOT.c.lot.in_(wanted)))
    return {row.lot: row for row in rows}


def known_parts(conn: Connection, part_ids: list[bytes]) -> dict[bytes, Any]:
    """The parts the mirror knows, by id: their current (effective) state."""
    found: dict[bytes, Any] = {}
    for chunk in chunks(part_ids):
        for row in conn.execute(select(T_PART).where(T_PART.c.part_id.in_(chunk))):
            found[bytes(row.part_id)] = row
    return found


def _walk(conn: Connection, seeds: list[bytes], *, up: bool) -> list[tuple[bytes, bytes, int]]:
    """The containers of `seeds` (up) or their contents (down) at any depth, as (seed, found id, depth) rows."""
    if not seeds:
        return []
    table = T_CONTAIN
    near, far = (table.c.part_id, table.c.container_id) if up else (table.c.container_id, table.c.part_id)
    rows: list[tuple[bytes, bytes, int]] = []
    for chunk in chunks(seeds):
        start = select(near.label("seed"), far.label("node"), literal(1).label("depth")).where(near.in_(chunk)).cte("walk", recursive=True)
        step = select(start.c.seed, far, start.c.depth + 1).where(near == start.c.node, start.c.depth < MAX_DEPTH)
        tree = start.union_all(step)
        rows += [(bytes(seed), bytes(node), depth) for seed, node, depth in conn.execute(select(tree.c.seed, tree.c.node, tree.c.depth))]
    return rows


def contents_of(conn: Connection, part_ids: list[bytes]) -> list[bytes]:
    """Every part inside one of `part_ids` (assemblies, logistic units), at any depth."""
    return list(dict.fromkeys(node for _, node, _ in _walk(conn, part_ids, up=False)))


def outermost_containers(conn: Connection, part_ids: list[bytes]) -> dict[bytes, bytes]:
    """{part: its outermost container} for the parts of `part_ids` that are contained."""
    best: dict[bytes, tuple[int, bytes]] = {}
    for seed, node, depth in _walk(conn, part_ids, up=True):
        if seed not in best or best[seed][0] < depth:
            best[seed] = (depth, node)
    return {seed: node for seed, (_, node) in best.items()}


# --- recipients ------------------------------------------------------------------------------------------------


def downstream(conn: Connection, part_ids: list[bytes]) -> dict[int, set[str]]:
    """Every organisation that holds, is receiving, held, received or installed one of `part_ids`, with the reasons:
    {org: {"holds", "incoming", "held", "received", "installed"}}. A part's history in the mirror includes the moves
    of the containers it was in (their contents' rows), and its row holds its outermost container's state, so an
    assembly's or a pallet's holders count as its contents' (and a container's history before the part went in
    does not)."""
    reasons: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(part_ids):
        for custodian, recipient in conn.execute(select(T_PART.c.custodian, T_PART.c.recipient).where(T_PART.c.part_id.in_(chunk)).distinct()):
            reasons[custodian].add("holds")
            if recipient is not None:
                reasons[recipient].add("incoming")
        for org, kind in conn.execute(select(T_EVENT.c.org_id, T_EVENT.c.kind).where(T_EVENT.c.part_id.in_(chunk)).distinct()):
            reasons[org].add(EVENT_REASONS.get(kind, "held"))
        for (org,) in conn.execute(select(T_SHIP.c.to_org).where(T_SHIP.c.part_id.in_(chunk), T_SHIP.c.outcome == "received").distinct()):
            reasons[org].add("received")
        for (org,) in conn.execute(select(T_INSTALL.c.org_id).where(T_INSTALL.c.part_id.in_(chunk)).distinct()):
            reasons[org].add("installed")
    return dict(reasons)


def upstream(conn: Connection, part_ids: list[bytes], *, initiator: int) -> dict[int, set[str]]:
    """The suppliers of `part_ids` and of what is inside them now (any depth): {org: {"supplier" (made it), "shipper"
    (shipped it to the initiator, loose or inside a container)}}."""
    ids = list(dict.fromkeys(part_ids + contents_of(conn, part_ids)))
    reasons: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(ids):
        for (org,) in conn.execute(select(T_PART.c.manufacturer).where(T_PART.c.part_id.in_(chunk)).distinct()):
            reasons[org].add("supplier")
        shipped = select(T_EVENT.c.org_id).where(T_EVENT.c.part_id.in_(chunk), T_EVENT.c.kind == "shipped", T_EVENT.c.counterparty == initiator).distinct()
        for (org,) in conn.execute(shipped):
            reasons[org].add("shipper")
    return dict(reasons)


def recipients_of(conn: Connection, *, kind: str, part_ids: list[bytes], initiator: int) -> tuple[dict[int, set[str]], bool]:
    """The recipients of a notification of `kind` about `part_ids` (the initiator left out), and whether the initiator
    is involved with the parts: made, holds, held, received or installed one (its registration is a part event too),
    so that it may raise a notification about them."""
    down = downstream(conn, part_ids)
    involved = initiator in down
    found = down if kind == "alert" else upstream(conn, part_ids, initiator=initiator)
    found.pop(initiator, None)
    return found, involved


# --- what an acknowledging recipient has of the affected parts -------------------------------------------------


def held_and_installed(conn: Connection, org_id: int, part_ids: list[bytes]) -> dict[str, Any]:
    """The affected parts an organisation still holds (in stock or quarantined, loose or inside a container it
    holds) and those it installed (in a vehicle, by salted VIN hash), as an alert's acknowledgement lists them."""
    held: list[dict[str, Any]] = []
    installed: list[dict[str, Any]] = []
    for chunk in chunks(part_ids):
        rows = conn.execute(
            select(T_PART.c.part_id, T_PART.c.gtin, T_PART.c.serial, T_PART.c.status, T_PART.c.vin_hash)
            .where(T_PART.c.part_id.in_(chunk), T_PART.c.custodian == org_id, T_PART.c.status.in_((*HELD_STATUSES, int(PartStatus.INSTALLED))))
        ).all()  # fmt: skip
        for row in rows:
            entry: dict[str, Any] = {"part": "0x" + bytes(row.part_id).hex(), "gtin": row.gtin, "serial": row.serial}
            if row.status == PartStatus.INSTALLED:
                installed.append(entry | {"vinHash": "0x" + bytes(row.vin_hash).hex() if row.vin_hash is not None else None})
            else:
                held.append(entry)
    held.sort(key=lambda e: e["part"])
    installed.sort(key=lambda e: e["part"])
    outer = outermost_containers(conn, [bytes.fromhex(e["part"][2:]) for e in held + installed])
    for entry in held + installed:
        container = outer.get(bytes.fromhex(entry["part"][2:]))
        if container is not None:
            entry["container"] = "0x" + container.hex()
    return {
        "heldCount": len(held), "installedCount": len(installed),
        "held": held[:ACK_LIST_LIMIT], "installed": installed[:ACK_LIST_LIMIT],
    }  # fmt: skip
