"""Containment and lineage as the mirror has them (issue 15): the read side of assemblies, logistic units and
remanufacturing, for the part API, recall impact, the verdict and the write path's pre-checks.

Where it sits: beside ledger_service.read, reading the indexer's tables only. `containment` holds what is directly
inside what, each row with its path of containers up to the outermost; a contained part's `parts` row already holds
its effective state (its outermost container's). Up, from parts to every container holding them (recall impact, the
part's containers), reads those paths: a lot's containers at every level are one range of an index. Down, from a
container to everything inside it (the part's tree, the verdict "contains a recalled part", the write pre-checks),
is a recursive CTE, one statement per walk (`walk` adapts it to PostgreSQL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from indexer.tables import Containment, Lineage, LogisticUnit, Part
from partledger.model import PartStatus

T_PART, T_UNIT, T_CONTAIN, T_LINEAGE = Part.__table__, LogisticUnit.__table__, Containment.__table__, Lineage.__table__
SQL_CHUNK = 500  # ids per IN (...) list
TREE_LIMIT = 1_000  # nodes of a contents tree in one answer
LINEAGE_LIMIT = 64  # remanufacturing generations followed back


def walk(conn: Connection, sql: str) -> Any:
    """A recursive walk's statement for this connection's database. Its steps are written `FROM up JOIN containment c
    ON c.part_id = up.id` (or `c.container_id = down.id`); on PostgreSQL each becomes a lookup in the index per row of
    the level (a LATERAL subquery the planner may not flatten), where the planner, unable to size a recursive step,
    would otherwise hash the whole containment table for every walk."""
    if conn.dialect.name == "postgresql":
        sql = _STEP.sub(lambda m: f"FROM {m[1]} CROSS JOIN LATERAL (SELECT * FROM containment c0 WHERE c0.{m[2]} = {m[1]}.{m[3]} OFFSET 0) c", sql)
        # The estimate of a recursive walk is far above what it reads, enough for PostgreSQL to compile it (JIT): a
        # third of a second, for a walk of milliseconds. Off for the rest of this read's transaction.
        conn.exec_driver_sql("SET LOCAL jit = off")
    return text(sql)


_STEP = re.compile(r"FROM (\w+) JOIN containment c ON c\.(\w+) = \1\.(\w+)")


def hex0x(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


def _chunks(ids: Sequence[bytes]) -> Iterable[list[bytes]]:
    for start in range(0, len(ids), SQL_CHUNK):
        yield [bytes(pid) for pid in ids[start : start + SQL_CHUNK]]


# --- naming ids ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A part or a logistic unit, as containment answers name it."""

    id: bytes
    kind: str  # part | unit
    gtin: Optional[str] = None
    serial: Optional[str] = None
    sscc: Optional[str] = None
    status: Optional[int] = None
    recalled: bool = False
    lot: Optional[int] = None

    def view(self) -> dict[str, Any]:
        return {
            "id": hex0x(self.id), "kind": self.kind, "gtin": self.gtin, "serial": self.serial, "sscc": self.sscc,
            "status": None if self.status is None else PartStatus(self.status).name.lower(), "recalled": self.recalled,
        }  # fmt: skip


def nodes(conn: Connection, ids: Iterable[bytes]) -> dict[bytes, Node]:
    """The parts and units among `ids`, by id (an id the mirror does not know is left out)."""
    wanted = sorted({bytes(pid) for pid in ids})
    found: dict[bytes, Node] = {}
    for chunk in _chunks(wanted):
        for row in conn.execute(select(T_PART.c.part_id, T_PART.c.gtin, T_PART.c.serial, T_PART.c.status, T_PART.c.recalled, T_PART.c.lot).where(T_PART.c.part_id.in_(chunk))):
            found[bytes(row.part_id)] = Node(bytes(row.part_id), "part", gtin=row.gtin, serial=row.serial, status=row.status, recalled=bool(row.recalled), lot=row.lot)
        missing = [pid for pid in chunk if pid not in found]
        if missing:
            for row in conn.execute(select(T_UNIT.c.unit_id, T_UNIT.c.sscc, T_UNIT.c.status).where(T_UNIT.c.unit_id.in_(missing))):
                found[bytes(row.unit_id)] = Node(bytes(row.unit_id), "unit", sscc=row.sscc, status=row.status)
    return found


def container_view(node: Node, link_kind: str) -> dict[str, Any]:
    """A container as GET /v1/parts/{id} names it: its id, kind (assembly or unit), GTIN and serial or SSCC."""
    return {"id": hex0x(node.id), "kind": link_kind, "gtin": node.gtin, "serial": node.serial, "sscc": node.sscc}


# --- up: containers -------------------------------------------------------------------------------------------------


KINDS = {b"a"[0]: "assembly", b"u"[0]: "unit"}  # the first byte of a containment path's entry (indexer.sink.PATH_KIND)
ENTRY = 33  # bytes per container in a containment path: its kind, its id


def path_entries(path: bytes) -> list[tuple[bytes, str]]:
    """The containers a containment path names, the direct one first: (id, kind)."""
    path = bytes(path)
    return [(path[start + 1 : start + ENTRY], KINDS[path[start]]) for start in range(0, len(path) - ENTRY + 1, ENTRY)]


def container_path(conn: Connection, part_id: bytes) -> list[tuple[bytes, str]]:
    """The containers of `part_id`, the direct one first and the outermost last, with each one's kind."""
    path = conn.execute(select(T_CONTAIN.c.path).where(T_CONTAIN.c.part_id == bytes(part_id))).scalar()
    return [] if path is None else path_entries(path)


def outermost_containers(conn: Connection, part_ids: Sequence[bytes]) -> dict[bytes, tuple[bytes, str]]:
    """For each of `part_ids` that is contained: its outermost container and that container's kind."""
    result: dict[bytes, tuple[bytes, str]] = {}
    for chunk in _chunks(part_ids):
        for part_id, path in conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.path).where(T_CONTAIN.c.part_id.in_(chunk))):
            entries = path_entries(path)
            if entries:
                result[bytes(part_id)] = entries[-1]
    return result


def _lot_paths(conn: Connection, lot: int) -> list[bytes]:
    """The containment paths of a lot's contained parts, through the driver: ten thousand blobs, where SQLAlchemy's
    row processing would cost more than the index read."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return [bytes(row[0]) for row in conn.exec_driver_sql(f"SELECT path FROM {T_CONTAIN.name} WHERE lot = {mark}", (lot,)).fetchall()]


@dataclass(frozen=True)
class Holder:
    """A container holding parts of a lot: how far above the nearest of them, how many it holds at any depth."""

    id: bytes
    kind: str  # assembly | unit
    depth: int
    parts: int


def lot_holders(conn: Connection, lot: int) -> dict[bytes, list[Any]]:
    """Every assembly and logistic unit holding parts of `lot` at any depth, as id -> [kind byte, depth above the
    nearest of the lot's parts, how many it holds]: one range of an index (a contained part's row names every
    container it is in), whatever the depth."""
    found: dict[bytes, list[Any]] = {}
    get = found.get
    for path in _lot_paths(conn, lot):
        depth = 0
        for start in range(0, len(path) - ENTRY + 1, ENTRY):
            depth += 1
            container = path[start + 1 : start + ENTRY]
            entry = get(container)
            if entry is None:
                found[container] = [path[start], depth, 1]
            else:
                if depth < entry[1]:
                    entry[1] = depth
                entry[2] += 1
    return found


@dataclass(frozen=True)
class LotContainers:
    """How many assemblies and logistic units hold parts of a lot at any depth, how many levels up they reach, and
    how many of the lot's parts are in one."""

    assemblies: int
    units: int
    levels: int
    contained_parts: int


def lot_container_counts(conn: Connection, lot: int) -> LotContainers:
    counts = {"assembly": 0, "unit": 0}
    levels = contained = 0
    seen: set[bytes] = set()
    for path in _lot_paths(conn, lot):
        contained += 1
        levels = max(levels, len(path) // ENTRY)
        for start in range(0, len(path) - ENTRY + 1, ENTRY):
            container = path[start + 1 : start + ENTRY]
            if container not in seen:
                seen.add(container)
                counts[KINDS[path[start]]] += 1
    return LotContainers(counts["assembly"], counts["unit"], levels, contained)


def lot_containers_page(conn: Connection, lot: int, *, after: Optional[bytes], limit: int) -> tuple[list[Holder], int, bool]:
    """A page of the containers holding parts of `lot` at any depth, in id order after `after`; how many there are
    from `after` on; whether more follow the page."""
    holders = lot_holders(conn, lot)
    ids = sorted(holders if after is None else (container for container in holders if container > after))
    page = [Holder(container, KINDS[holders[container][0]], holders[container][1], holders[container][2]) for container in ids[:limit]]
    return page, len(ids), len(ids) > limit


# --- down: contents ---------------------------------------------------------------------------------------------------


def contents_tree(conn: Connection, container_id: bytes, *, limit: int = TREE_LIMIT) -> tuple[list[dict[str, Any]], bool]:
    """What is inside `container_id`, as a tree (each node with its `children`), breadth first up to `limit` nodes;
    and whether the tree was cut there."""
    rows = conn.execute(
        walk(
            conn,
            "WITH RECURSIVE down(id, parent, depth) AS ("
            " SELECT c.part_id, c.container_id, 1 FROM containment c WHERE c.container_id = :root"
            " UNION ALL SELECT c.part_id, c.container_id, down.depth + 1 FROM down JOIN containment c ON c.container_id = down.id)"
            " SELECT id, parent, depth FROM down ORDER BY depth, parent, id LIMIT :limit"
        ),
        {"root": bytes(container_id), "limit": limit + 1},
    ).all()
    truncated = len(rows) > limit
    rows = rows[:limit]
    named = nodes(conn, (row[0] for row in rows))
    children: dict[bytes, list[dict[str, Any]]] = {bytes(container_id): []}
    for pid, parent, _ in rows:
        pid, parent = bytes(pid), bytes(parent)
        node = named.get(pid, Node(pid, "part"))
        entry = node.view() | {"children": []}
        children[pid] = entry["children"]
        if parent in children:
            children[parent].append(entry)
    return children[bytes(container_id)], truncated


@dataclass(frozen=True)
class RecalledInside:
    """The part of a recalled lot nearest the top of a container (the first by id at that depth), and how many
    parts of recalled lots the container holds in all."""

    part: Node
    depth: int
    count: int


def recalled_inside(conn: Connection, container_id: bytes) -> Optional[RecalledInside]:
    """A part of a recalled lot inside `container_id` at any depth, or None."""
    rows = conn.execute(
        walk(
            conn,
            "WITH RECURSIVE down(id, depth) AS ("
            " SELECT c.part_id, 1 FROM containment c WHERE c.container_id = :root"
            " UNION ALL SELECT c.part_id, down.depth + 1 FROM down JOIN containment c ON c.container_id = down.id)"
            " SELECT p.part_id, down.depth FROM down JOIN parts p ON p.part_id = down.id WHERE p.recalled = :yes ORDER BY down.depth, p.part_id"
        ),
        {"root": bytes(container_id), "yes": True},
    ).all()
    if not rows:
        return None
    first, depth = bytes(rows[0][0]), rows[0][1]
    return RecalledInside(nodes(conn, [first])[first], depth, len(rows))


def recalled_inside_many(conn: Connection, container_ids: Sequence[bytes]) -> dict[bytes, RecalledInside]:
    """recalled_inside for each of `container_ids` that holds something (the others cost one index probe)."""
    holding = set()
    for chunk in _chunks(container_ids):
        holding |= {bytes(row[0]) for row in conn.execute(select(T_CONTAIN.c.container_id).where(T_CONTAIN.c.container_id.in_(chunk)).distinct())}
    found = {}
    for container in sorted(holding):
        inside = recalled_inside(conn, container)
        if inside is not None:
            found[container] = inside
    return found


# --- lineage ------------------------------------------------------------------------------------------------------------


def lineage(conn: Connection, part_id: bytes) -> dict[str, Any]:
    """What a part was remanufactured from (the nearest first, back to the original) and what it was remanufactured
    into (None while it is not)."""
    back: list[bytes] = []
    current = bytes(part_id)
    while len(back) < LINEAGE_LIMIT:
        origin = conn.execute(select(T_LINEAGE.c.original_id).where(T_LINEAGE.c.part_id == current)).scalar()
        if origin is None or bytes(origin) in back:
            break
        current = bytes(origin)
        back.append(current)
    into = conn.execute(select(T_LINEAGE.c.part_id, T_LINEAGE.c.block_number).where(T_LINEAGE.c.original_id == bytes(part_id))).first()
    named = nodes(conn, back + ([bytes(into.part_id)] if into is not None else []))

    def brief(pid: bytes) -> dict[str, Any]:
        node = named.get(pid)
        return {"part_id": hex0x(pid), "gtin": node.gtin if node else None, "serial": node.serial if node else None}

    return {
        "remanufactured_from": [brief(pid) for pid in back],
        "remanufactured_into": None if into is None else brief(bytes(into.part_id)) | {"block": into.block_number},
    }


# --- the part's containment, for GET /v1/parts/{id} and /v1/units/{sscc} ------------------------------------------------


def containment_view(conn: Connection, part_id: bytes) -> dict[str, Any]:
    """The direct container, the outermost one, and the contents tree of a part or unit."""
    path = container_path(conn, part_id)
    named = nodes(conn, [container for container, _ in path])
    containers = [container_view(named.get(container, Node(container, "part")), kind) for container, kind in path]
    children, truncated = contents_tree(conn, part_id)
    return {
        "container": containers[0] if containers else None,
        "outermost_container": containers[-1] if containers else None,
        "children": children,
        "children_truncated": truncated,
    }


def count_parts_inside(conn: Connection, container_id: bytes) -> int:
    return conn.execute(
        walk(
            conn,
            "WITH RECURSIVE down(id) AS (SELECT c.part_id FROM containment c WHERE c.container_id = :root"
            " UNION ALL SELECT c.part_id FROM down JOIN containment c ON c.container_id = down.id) SELECT count(*) FROM down"
        ),
        {"root": bytes(container_id)},
    ).scalar_one()


__all__ = [
    "Holder", "LotContainers", "Node", "RecalledInside", "container_path", "containment_view", "contents_tree", "count_parts_inside",
    "lineage", "lot_container_counts", "lot_containers_page", "lot_holders", "nodes", "outermost_containers", "path_entries",
    "recalled_inside", "recalled_inside_many",
]  # fmt: skip
