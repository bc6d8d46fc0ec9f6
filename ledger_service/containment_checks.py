"""What containment adds to the write path's pre-checks (issue 15), against the indexer's mirror.

HTTP request → write_service (its role and part-state pre-checks, then these) → outbox. The contract is the final
judge of every rule but one: it keeps no list of a container's contents, so it cannot see a recalled part inside a
container. Shipping, selling or installing a container that holds a part of a recalled lot at any depth is refused
here (409 contains_recalled), as the contract refuses it for a loose part: a shipment may still take it back to the
recalled parts' manufacturer or to a recycler. The other checks answer early what the contract would refuse:

    part_contained      409  a part inside a container named alone (PartLedgerPartContained), or packed twice
    logistic_unit       422  a logistic unit where a part is required (PartLedgerLogisticUnit)
    not_in_container    409  unpacking or disassembling a part not directly inside (PartLedgerNotInContainer)
    containment_cycle   409  a container put inside itself (PartLedgerContainmentCycle)
    container_not_empty 409  remanufacturing a part that still holds parts (PartLedgerContainerNotEmpty)
    invalid_state       409  the container (its outermost one) not in stock with the caller (PartLedgerWrongStatus)
    unknown_unit        404  unpacking a logistic unit that was never packed
    unknown_part        422  a container or original that is not registered
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from indexer.tables import Containment, LogisticUnit, Organisation, Part
from ledger_service import containment
from ledger_service.auth import Principal
from ledger_service.errors import Conflict, NotFound, Unprocessable
from partledger.db import one_of
from partledger.model import PartStatus, Role

T_PART, T_UNIT, T_CONTAIN, T_ORG = Part.__table__, LogisticUnit.__table__, Containment.__table__, Organisation.__table__
# Writes a logistic unit may take part in, as what they name (pack: the unit packed into another; unpack: its
# contents): the contract refuses a unit to every other part write.
UNIT_WRITES = frozenset({"ship", "receive", "cancel", "pack", "unpack"})
RECALL_BLOCKED = frozenset({"ship", "sell", "install"})
DETAILS = 100  # ids reported per refusal


def hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def check_write(engine: Engine, principal: Principal, kind: str, part_ids: Sequence[bytes], summary: dict[str, Any]) -> None:
    """The containment pre-checks of a write of `kind` naming `part_ids` (for a remanufacturing: the new part), with
    the request's shared arguments `summary` (sscc, parent, original, to)."""
    with engine.connect() as conn:
        if kind == "remanufacture":
            _check_original(conn, principal, bytes.fromhex(summary["original"][2:]))
            return
        ids = [bytes(pid) for pid in part_ids]
        if not ids:
            return
        links = _links(conn, ids)
        units = _units(conn, ids)
        if kind not in UNIT_WRITES or (kind == "assemble" or kind == "disassemble"):
            named = [pid for pid in ids if pid in units]
            if named:
                raise Unprocessable(f"{len(named)} of the ids are logistic units, which cannot be {_done(kind)}", code="logistic_unit", details=[{"part_id": hex0x(pid)} for pid in named[:DETAILS]])
        if kind in ("unpack", "disassemble"):
            container = _container_of(conn, kind, summary)
            outside = [pid for pid in ids if links.get(pid) != container]
            if outside:
                raise Conflict(f"{len(outside)} part(s) are not directly inside 0x{container.hex()}", code="not_in_container",
                               details=[{"part_id": hex0x(pid), "container": hex0x(links[pid]) if pid in links else None} for pid in outside[:DETAILS]])  # fmt: skip
            _require_container_held(conn, principal, container)
            return
        inside = [pid for pid in ids if pid in links]
        if inside:
            raise Conflict(f"{len(inside)} part(s) are inside a container and move only with it", code="part_contained",
                           details=[{"part_id": hex0x(pid), "container": hex0x(links[pid])} for pid in inside[:DETAILS]])  # fmt: skip
        if kind in ("pack", "assemble"):
            container = _container_of(conn, kind, summary)
            if kind == "assemble" and container in units:
                raise Unprocessable("an assembly's parent is a part, not a logistic unit", code="logistic_unit", details=[{"part_id": hex0x(container)}])
            if container in ids:
                raise Conflict("a container cannot be put inside itself", code="containment_cycle", details=[{"part_id": hex0x(container), "container": hex0x(container)}])
            path = containment.container_path(conn, container)
            outermost = path[-1][0] if path else container
            if outermost in ids:
                raise Conflict(f"0x{outermost.hex()} holds 0x{container.hex()}: it cannot go inside it", code="containment_cycle",
                               details=[{"part_id": hex0x(outermost), "container": hex0x(container)}])  # fmt: skip
            if kind == "assemble" or container in units or _exists(conn, container):
                _require_container_held(conn, principal, container)
        if kind in RECALL_BLOCKED:
            _check_recalled_inside(conn, kind, ids, summary.get("to"))


def _done(kind: str) -> str:
    return {"sell": "sold", "install": "installed", "remove": "removed", "quarantine": "quarantined", "release": "released",
            "scrap": "scrapped", "recycle": "recycled", "assemble": "assembled", "disassemble": "disassembled"}.get(kind, kind + "ed")  # fmt: skip


def _links(conn: Connection, ids: list[bytes]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update({bytes(p): bytes(c) for p, c in conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.container_id).where(one_of(conn, T_CONTAIN.c.part_id, chunk)))})
    return found


def _units(conn: Connection, ids: list[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    for start in range(0, len(ids), 500):
        found |= {bytes(row[0]) for row in conn.execute(select(T_UNIT.c.unit_id).where(one_of(conn, T_UNIT.c.unit_id, ids[start : start + 500])))}
    return found


def _exists(conn: Connection, pid: bytes) -> bool:
    return conn.execute(select(T_PART.c.part_id).where(T_PART.c.part_id == pid)).first() is not None


def _container_of(conn: Connection, kind: str, summary: dict[str, Any]) -> bytes:
    """The container a packing (its unit, which it may create), an unpacking or an assembly names."""
    if kind in ("pack", "unpack"):
        unit = bytes.fromhex(summary["unit_id"][2:])
        if kind == "unpack" and conn.execute(select(T_UNIT.c.unit_id).where(T_UNIT.c.unit_id == unit)).first() is None:
            raise NotFound(f"no logistic unit with SSCC {summary['sscc']} was ever packed", code="unknown_unit")
        return unit
    parent = bytes.fromhex(summary["parent"][2:])
    if not _exists(conn, parent) and conn.execute(select(T_UNIT.c.unit_id).where(T_UNIT.c.unit_id == parent)).first() is None:
        raise Unprocessable(f"no part 0x{parent.hex()} is registered", code="unknown_part", details=[{"part_id": hex0x(parent)}])
    return parent


def _state(conn: Connection, pid: bytes) -> Any:
    row = conn.execute(select(T_PART.c.status, T_PART.c.custodian).where(T_PART.c.part_id == pid)).first()
    return row if row is not None else conn.execute(select(T_UNIT.c.status, T_UNIT.c.custodian).where(T_UNIT.c.unit_id == pid)).first()


def _require_container_held(conn: Connection, principal: Principal, container: bytes) -> None:
    """The container's state is its outermost container's: in stock, held by the caller."""
    state = _state(conn, container)
    if state is None:
        return  # a unit created by this packing
    if state.status != PartStatus.IN_STOCK or state.custodian != principal.org_id:
        reason = f"status is {PartStatus(state.status).name.lower()}" if state.status != PartStatus.IN_STOCK else f"custodian is organisation {state.custodian}"
        raise Conflict(f"the container 0x{container.hex()} is not in stock with your organisation ({reason})", code="invalid_state",
                       details=[{"part_id": hex0x(container), "reason": reason}])  # fmt: skip


def _check_original(conn: Connection, principal: Principal, original: bytes) -> None:
    row = conn.execute(select(T_PART.c.status, T_PART.c.custodian).where(T_PART.c.part_id == original)).first()
    if row is None:
        if conn.execute(select(T_UNIT.c.unit_id).where(T_UNIT.c.unit_id == original)).first() is not None:
            raise Unprocessable("a logistic unit cannot be remanufactured", code="logistic_unit", details=[{"part_id": hex0x(original)}])
        raise Unprocessable(f"no part 0x{original.hex()} is registered", code="unknown_part", details=[{"part_id": hex0x(original)}])
    container = _links(conn, [original]).get(original)
    if container is not None:
        raise Conflict("the part is inside a container: take it out first", code="part_contained", details=[{"part_id": hex0x(original), "container": hex0x(container)}])
    if row.status != PartStatus.IN_STOCK or row.custodian != principal.org_id:
        reason = f"status is {PartStatus(row.status).name.lower()}" if row.status != PartStatus.IN_STOCK else f"custodian is organisation {row.custodian}"
        raise Conflict(f"the part is not in stock with your organisation ({reason})", code="invalid_state", details=[{"part_id": hex0x(original), "reason": reason}])
    inside = conn.execute(select(T_CONTAIN.c.part_id).where(T_CONTAIN.c.container_id == original).limit(1)).first()
    if inside is not None:
        count = containment.count_parts_inside(conn, original)
        raise Conflict(f"the part still holds {count} part(s): disassemble it first", code="container_not_empty", details=[{"part_id": hex0x(original), "contents": count}])


def _check_recalled_inside(conn: Connection, kind: str, ids: list[bytes], to: int | None) -> None:
    """Containers holding a part of a recalled lot at any depth are not sold, installed or shipped; but a shipment
    to a recycler, or to the manufacturer of every recalled part inside, takes them out of use."""
    found = containment.recalled_inside_many(conn, ids)
    if not found:
        return
    if kind == "ship" and to is not None:
        roles = conn.execute(select(T_ORG.c.roles).where(T_ORG.c.org_id == to)).scalar()
        if roles is not None and Role(roles) & Role.RECYCLER:
            return
        makers = _manufacturers_of_recalled_inside(conn, list(found))
        found = {container: inside for container, inside in found.items() if makers.get(container) != {to}}
        if not found:
            return
    details = [
        {"part_id": hex0x(container), "recalled_part": hex0x(inside.part.id), "lot": inside.part.lot, "depth": inside.depth, "recalled_parts": inside.count}
        for container, inside in sorted(found.items())
    ][:DETAILS]  # fmt: skip
    allowed = " (it may go back to the recalled parts' manufacturer or to a recycler)" if kind == "ship" else ""
    raise Conflict(f"{len(found)} container(s) hold a part of a recalled lot and cannot be {_done(kind)}{allowed}", code="contains_recalled", details=details)


def _manufacturers_of_recalled_inside(conn: Connection, containers: list[bytes]) -> dict[bytes, set[int]]:
    makers: dict[bytes, set[int]] = {}
    for container in containers:
        rows = conn.execute(
            containment.walk(
                conn,
                "WITH RECURSIVE down(id) AS (SELECT c.part_id FROM containment c WHERE c.container_id = :root"
                " UNION ALL SELECT c.part_id FROM down JOIN containment c ON c.container_id = down.id)"
                " SELECT DISTINCT p.manufacturer FROM down JOIN parts p ON p.part_id = down.id WHERE p.recalled = :yes"
            ),
            {"root": container, "yes": True},
        )
        makers[container] = {row[0] for row in rows}
    return makers
