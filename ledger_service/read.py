"""Queries over the indexer's mirror, shaped by the data classification of the brief.

- public: whether a part exists, its manufacturer, lifecycle status, recall status;
- consortium: custody, shipments, trade parties — for the organisations involved, and auditors/regulators in full;
- private: never here (clear VINs and salts stay in the service's private tables of their owner).
Every answer carries the block it reflects.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.engine import Connection

from indexer.tables import Containment, Document, IndexerState, Installation, LogisticUnit, Lot, Organisation, Part, PartEvent, Recall, SiteKey
from ledger_service import containment
from ledger_service.auth import Principal
from ledger_service.errors import BadRequest, Forbidden, NotFound
from ledger_service.pagination import decode_cursor, encode_cursor
from partledger.ids import logistic_unit_id, normalize_sscc
from partledger.model import DocType, PartStatus, Role

T_PART, T_EVENT, T_ORG, T_LOT = Part.__table__, PartEvent.__table__, Organisation.__table__, Lot.__table__
T_STATE, T_INSTALL, T_RECALL, T_DOC, T_KEY = IndexerState.__table__, Installation.__table__, Recall.__table__, Document.__table__, SiteKey.__table__
T_CONTAIN, T_UNIT = Containment.__table__, LogisticUnit.__table__


def hex0x(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


def indexed_block(conn: Connection, chain_id: int) -> int:
    block = conn.execute(select(T_STATE.c.block_number).where(T_STATE.c.chain_id == chain_id)).scalar()
    return -1 if block is None else int(block)


def indexer_state(conn: Connection, chain_id: int) -> Any:
    return conn.execute(select(T_STATE).where(T_STATE.c.chain_id == chain_id)).first()


def organisation_names(conn: Connection) -> dict[int, str]:
    return dict(conn.execute(select(T_ORG.c.org_id, T_ORG.c.name)).all())


def _org(names: dict[int, str], org_id: int | None) -> dict[str, Any] | None:
    return None if org_id is None else {"id": org_id, "name": names.get(org_id)}


def public_part(row: Any, names: dict[int, str]) -> dict[str, Any]:
    return {
        "part_id": hex0x(row.part_id),
        "gtin": row.gtin,
        "serial": row.serial,
        "manufacturer": _org(names, row.manufacturer),
        "status": PartStatus(row.status).name.lower(),
        "recalled": bool(row.recalled),
    }


def consortium_part(row: Any, names: dict[int, str], lot_code: str | None) -> dict[str, Any]:
    return public_part(row, names) | {
        "lot": {"number": row.lot, "code": lot_code},
        "custodian": _org(names, row.custodian),
        "recipient": _org(names, row.recipient),
        "site_key": row.site_key,
        "registered_block": row.registered_block,
        "updated_block": row.updated_block,
    }


def may_see_part(conn: Connection, principal: Principal, row: Any) -> bool:
    """Consortium data of a part: its manufacturer, whoever holds or held it or is shipped it, auditors, regulators."""
    if principal.sees_everything or principal.org_id in (row.manufacturer, row.custodian, row.recipient):
        return True
    involved = select(T_EVENT.c.id).where(
        T_EVENT.c.part_id == row.part_id, or_(T_EVENT.c.org_id == principal.org_id, T_EVENT.c.counterparty == principal.org_id)
    )
    return conn.execute(involved.limit(1)).first() is not None


def part_detail(conn: Connection, principal: Principal, part_id: bytes) -> dict[str, Any]:
    row = conn.execute(select(T_PART).where(T_PART.c.part_id == part_id)).first()
    if row is None:
        raise NotFound(f"no part {hex0x(part_id)} is registered", code="unknown_part")
    names = organisation_names(conn)
    lineage = containment.lineage(conn, part_id)
    if not may_see_part(conn, principal, row):
        return {"part": public_part(row, names), "classification": "public", "history": None, "lineage": lineage, "containment": None}
    lot_code = conn.execute(select(T_LOT.c.lot_code).where(T_LOT.c.lot == row.lot)).scalar()
    history = _history(conn, principal, part_id, names)
    part = consortium_part(row, names, lot_code)
    part["vin_hash"] = hex0x(row.vin_hash) if principal.sees_everything or row.custodian == principal.org_id else None
    return {"part": part, "classification": "consortium", "history": history, "lineage": lineage, "containment": containment.containment_view(conn, part_id)}


def _history(conn: Connection, principal: Principal, part_id: bytes, names: dict[int, str]) -> list[dict[str, Any]]:
    """A part's (or a logistic unit's) events in chain order, VIN hashes for the acting organisation and those who
    see everything."""
    events = conn.execute(
        select(T_EVENT).where(T_EVENT.c.part_id == part_id).order_by(T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position)
    ).all()
    show_vin = principal.sees_everything
    return [
        {
            "kind": event.kind,
            "block": event.block_number,
            "tx_hash": hex0x(event.tx_hash),
            "log_index": event.log_index,
            "organisation": _org(names, event.org_id),
            "site_key": event.site_key,
            "counterparty": _org(names, event.counterparty),
            "doc_hash": hex0x(event.doc_hash),
            "vin_hash": hex0x(event.vin_hash) if show_vin or event.org_id == principal.org_id else None,
            "related_id": hex0x(event.related_id),
        }
        for event in events
    ]


def unit_detail(conn: Connection, principal: Principal, sscc: str) -> dict[str, Any]:
    """A logistic unit, what is inside it and its history: for the organisation that created it, whoever holds, held
    or is shipped it, auditors and regulators; 404 unknown_unit for a unit never packed, 403 not_involved for others."""
    unit_id = logistic_unit_id(sscc)
    row = conn.execute(select(T_UNIT).where(T_UNIT.c.unit_id == unit_id)).first()
    if row is None:
        raise NotFound(f"no logistic unit with SSCC {normalize_sscc(sscc)} was ever packed", code="unknown_unit")
    as_part = SimpleNamespace(part_id=unit_id, manufacturer=row.created_by, custodian=row.custodian, recipient=row.recipient)
    if not may_see_part(conn, principal, as_part):
        raise Forbidden("a logistic unit is visible to the organisations that held it or were shipped it, auditors and regulators", code="not_involved")
    names = organisation_names(conn)
    return {
        "unit": {
            "unit_id": hex0x(unit_id), "sscc": row.sscc, "status": PartStatus(row.status).name.lower(), "custodian": _org(names, row.custodian),
            "recipient": _org(names, row.recipient), "site_key": row.site_key, "created_by": _org(names, row.created_by),
            "created_block": row.block_number, "updated_block": row.updated_block,
        },
        "containment": containment.containment_view(conn, unit_id),
        "history": _history(conn, principal, unit_id, names),
    }  # fmt: skip


def list_parts(
    conn: Connection,
    principal: Principal,
    *,
    lot: int | None,
    custodian: int | None,
    status: PartStatus | None,
    gtin: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Parts matching the filters that the caller may see, in part id order, a page at a time."""
    query = select(T_PART)
    if lot is not None:
        query = query.where(T_PART.c.lot == lot)
    if custodian is not None:
        query = query.where(T_PART.c.custodian == custodian)
    if status is not None:
        query = query.where(T_PART.c.status == int(status))
    if gtin is not None:
        query = query.where(T_PART.c.gtin == gtin)
    if not principal.sees_everything:
        me = principal.org_id
        query = query.where(or_(T_PART.c.custodian == me, T_PART.c.manufacturer == me, T_PART.c.recipient == me))
    return parts_page(conn, query, limit=limit, cursor=cursor)


def parts_page(conn: Connection, query: Any, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the parts a `select(T_PART)` query finds, in part id order, as consortium data (the caller has
    narrowed the query to what its principal may see)."""
    after = decode_cursor(cursor, 1)
    if after is not None:
        query = query.where(T_PART.c.part_id > bytes.fromhex(after[0]))
    rows = conn.execute(query.order_by(T_PART.c.part_id).limit(limit + 1)).all()
    names = organisation_names(conn)
    lots = lot_codes(conn, {row.lot for row in rows[:limit]})
    items = [consortium_part(row, names, lots.get(row.lot)) for row in rows[:limit]]
    next_cursor = encode_cursor([bytes(rows[limit - 1].part_id).hex()]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


def lot_codes(conn: Connection, lots: set[int]) -> dict[int, str]:
    """The codes of these lots, by lot number."""
    return dict(conn.execute(select(T_LOT.c.lot, T_LOT.c.lot_code).where(T_LOT.c.lot.in_(lots))).all()) if lots else {}


def organisation_lots(conn: Connection, org_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The lots an organisation opened, newest first, a page at a time (lot codes are consortium data)."""
    query = select(T_LOT.c.lot, T_LOT.c.lot_code, T_LOT.c.recalled, T_LOT.c.opened_block).where(T_LOT.c.manufacturer == org_id)
    after = decode_cursor(cursor, 1)
    if after is not None:
        if not isinstance(after[0], int) or isinstance(after[0], bool):
            raise BadRequest("malformed pagination cursor", code="invalid_cursor")
        query = query.where(T_LOT.c.lot < after[0])
    rows = conn.execute(query.order_by(T_LOT.c.lot.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    items = [{"number": row.lot, "code": row.lot_code, "opened_block": row.opened_block, "recalled": bool(row.recalled)} for row in page]
    return {"items": items, "next_cursor": encode_cursor([page[-1].lot]) if len(rows) > limit else None}


def inventory(conn: Connection, principal: Principal, org_id: int | None) -> dict[str, Any]:
    """Parts held per site of an organisation (the caller's own; auditors and regulators may name any)."""
    target = principal.org_id if org_id is None else org_id
    if target != principal.org_id and not principal.sees_everything:
        raise Forbidden("only auditors and regulators see another organisation's inventory")
    rows = conn.execute(
        select(T_PART.c.site_key, T_PART.c.status, func.count())
        .where(T_PART.c.custodian == target)
        .group_by(T_PART.c.site_key, T_PART.c.status)
    ).all()
    sites = dict(conn.execute(select(T_KEY.c.address, T_KEY.c.site).where(T_KEY.c.org_id == target)).all())
    by_site: dict[str, dict[str, Any]] = {}
    for site_key, status, count in rows:
        entry = by_site.setdefault(site_key, {"site_key": site_key, "site": sites.get(site_key), "counts": {}})
        entry["counts"][PartStatus(status).name.lower()] = count
    inbound = conn.execute(select(func.count()).where(T_PART.c.recipient == target)).scalar()
    return {"org_id": target, "sites": sorted(by_site.values(), key=lambda e: e["site_key"]), "inbound_in_transit": inbound}


def _impact_lot(conn: Connection, principal: Principal, lot: int) -> Any:
    lot_row = conn.execute(select(T_LOT).where(T_LOT.c.lot == lot)).first()
    if lot_row is None:
        raise NotFound(f"no lot {lot}", code="unknown_lot")
    if not (principal.org_id == lot_row.manufacturer or principal.roles & (Role.REGULATOR | Role.AUDITOR)):
        raise Forbidden("recall impact is visible to the lot's manufacturer, regulators and auditors only")
    return lot_row


def recall_impact(conn: Connection, principal: Principal, lot: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Every part of a lot, where it is, and the vehicles (salted VIN hashes) it is installed in, directly or inside an
    assembly; how many assemblies and logistic units hold its parts at any depth; its current custodians."""
    lot_row = _impact_lot(conn, principal, lot)
    names = organisation_names(conn)
    recall = conn.execute(select(T_RECALL).where(T_RECALL.c.lot == lot)).first()
    held = conn.execute(select(T_PART.c.custodian, T_PART.c.status, func.count()).where(T_PART.c.lot == lot).group_by(T_PART.c.custodian, T_PART.c.status)).all()
    by_status: dict[int, int] = {}
    custodians: dict[int, dict[str, int]] = {}
    for custodian, status, count in held:
        by_status[status] = by_status.get(status, 0) + count
        custodians.setdefault(custodian, {})[PartStatus(status).name.lower()] = count
    holders = containment.lot_container_counts(conn, lot)
    after = decode_cursor(cursor, 1)
    query = select(T_PART).where(T_PART.c.lot == lot)
    if after is not None:
        query = query.where(T_PART.c.part_id > bytes.fromhex(after[0]))
    rows = conn.execute(query.order_by(T_PART.c.part_id).limit(limit + 1)).all()
    page = rows[:limit]
    outermost = containment.outermost_containers(conn, [bytes(row.part_id) for row in page])
    named = containment.nodes(conn, {container for container, _ in outermost.values()})
    items = []
    for row in page:
        root = outermost.get(bytes(row.part_id))
        items.append({
            "part_id": hex0x(row.part_id),
            "serial": row.serial,
            "status": PartStatus(row.status).name.lower(),
            "custodian": _org(names, row.custodian),
            "recipient": _org(names, row.recipient),
            "site_key": row.site_key,
            # the part's own vehicle, or that of the assembly it is inside (a contained part's row is its outermost container's)
            "vehicle_vin_hash": hex0x(row.vin_hash) if row.status == PartStatus.INSTALLED else None,
            "outermost_container": None if root is None else containment.container_view(named.get(root[0], containment.Node(root[0], "part")), root[1]),
        })  # fmt: skip
    return {
        "lot": {"number": lot, "code": lot_row.lot_code, "manufacturer": _org(names, lot_row.manufacturer), "recalled": bool(lot_row.recalled)},
        "recall": None if recall is None else {"block": recall.block_number, "tx_hash": hex0x(recall.tx_hash), "notice_hash": hex0x(recall.notice_hash), "by": _org(names, recall.org_id)},
        "counts": {PartStatus(status).name.lower(): count for status, count in by_status.items()},
        "installed_vehicles": conn.execute(
            select(func.count(func.distinct(T_PART.c.vin_hash))).where(T_PART.c.lot == lot, T_PART.c.status == int(PartStatus.INSTALLED))
        ).scalar(),
        "containers": {"assemblies": holders.assemblies, "units": holders.units, "contained_parts": holders.contained_parts, "levels": holders.levels},
        "custodians": [
            {"organisation": _org(names, org_id), "parts": sum(counts.values()), "counts": counts}
            for org_id, counts in sorted(custodians.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        ],
        "items": items,
        "next_cursor": encode_cursor([bytes(page[-1].part_id).hex()]) if len(rows) > limit else None,
    }  # fmt: skip


def _hex_cursor(value: Any) -> bytes:
    """A cursor's key that is a 32-byte id in hex."""
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BadRequest("malformed pagination cursor", code="invalid_cursor")
    return key


def recall_impact_containers(conn: Connection, principal: Principal, lot: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Every assembly and logistic unit holding parts of a lot at any depth, in id order, a page at a time: what it
    is, where it is (its effective state), the vehicle it is in, how many of the lot's parts it holds."""
    _impact_lot(conn, principal, lot)
    after = decode_cursor(cursor, 1)
    page, total, more = containment.lot_containers_page(conn, lot, after=None if after is None else _hex_cursor(after[0]), limit=limit)
    ids = [holder.id for holder in page]
    states: dict[bytes, Any] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        states.update({bytes(row.part_id): row for row in conn.execute(select(T_PART.c.part_id, T_PART.c.status, T_PART.c.custodian, T_PART.c.recipient, T_PART.c.vin_hash).where(T_PART.c.part_id.in_(chunk)))})
        states.update({bytes(row.unit_id): row for row in conn.execute(select(T_UNIT.c.unit_id, T_UNIT.c.status, T_UNIT.c.custodian, T_UNIT.c.recipient, T_UNIT.c.vin_hash).where(T_UNIT.c.unit_id.in_(chunk)))})
    named = containment.nodes(conn, ids)
    parents = dict(conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.container_id).where(T_CONTAIN.c.part_id.in_(ids))).all()) if ids else {}
    names = organisation_names(conn)
    items = []
    for holder in page:
        node, state = named.get(holder.id), states.get(holder.id)
        items.append({
            "id": hex0x(holder.id), "kind": holder.kind,
            "gtin": node.gtin if node else None, "serial": node.serial if node else None, "sscc": node.sscc if node else None,
            "status": PartStatus(state.status).name.lower() if state is not None else None,
            "custodian": _org(names, state.custodian) if state is not None else None,
            "recipient": _org(names, state.recipient) if state is not None else None,
            "vehicle_vin_hash": hex0x(state.vin_hash) if state is not None and state.status == PartStatus.INSTALLED else None,
            "container": hex0x(parents.get(holder.id)),
            "levels_above_lot": holder.depth,
            "lot_parts_inside": holder.parts,
        })  # fmt: skip
    next_cursor = encode_cursor([page[-1].id.hex()]) if more else None
    return {"lot": lot, "total": total if after is None else None, "items": items, "next_cursor": next_cursor}


def recall_impact_vehicles(conn: Connection, principal: Principal, lot: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The vehicles (salted VIN hashes) parts of a lot are in, directly or inside an assembly, in hash order, a page at
    a time: how many of the lot's parts each holds, and the workshop that installed them (their custodian)."""
    _impact_lot(conn, principal, lot)
    query = (
        select(T_PART.c.vin_hash, func.count(), func.min(T_PART.c.custodian))
        .where(T_PART.c.lot == lot, T_PART.c.status == int(PartStatus.INSTALLED))
        .group_by(T_PART.c.vin_hash)
    )
    after = decode_cursor(cursor, 1)
    if after is not None:
        query = query.where(T_PART.c.vin_hash > _hex_cursor(after[0]))
    rows = conn.execute(query.order_by(T_PART.c.vin_hash).limit(limit + 1)).all()
    page = rows[:limit]
    names = organisation_names(conn)
    items = [{"vin_hash": hex0x(vin), "lot_parts": count, "installed_by": _org(names, custodian)} for vin, count, custodian in page]
    return {"lot": lot, "items": items, "next_cursor": encode_cursor([bytes(page[-1][0]).hex()]) if len(rows) > limit else None}


def document_view(row: Any, names: dict[int, str]) -> dict[str, Any]:
    return {
        "doc_hash": hex0x(row.doc_hash),
        "doc_type": DocType(row.doc_type).name.lower() if row.doc_type in DocType._value2member_map_ else row.doc_type,
        "issuer": _org(names, row.issuer),
        "counterparty": _org(names, row.counterparty),
        "previous": hex0x(row.previous),
        "parts_root": hex0x(row.parts_root),
        "issuer_signer": row.issuer_signer,
        "counterparty_signer": row.counterparty_signer,
        "issuer_signature": hex0x(row.issuer_signature),
        "counterparty_signature": hex0x(row.counterparty_signature),
        "block": row.block_number,
        "block_time": row.block_time,
        "tx_hash": hex0x(row.tx_hash),
    }


def list_documents(
    conn: Connection,
    principal: Principal,
    *,
    party: int | None,
    doc_type: int | None,
    from_time: int | None,
    to_time: int | None,
    doc_hash: bytes | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Anchored documents the caller is a party to (auditors and regulators: all), newest first."""
    query = select(T_DOC)
    if not principal.sees_everything:
        query = query.where(or_(T_DOC.c.issuer == principal.org_id, T_DOC.c.counterparty == principal.org_id))
    if party is not None:
        query = query.where(or_(T_DOC.c.issuer == party, T_DOC.c.counterparty == party))
    if doc_type is not None:
        query = query.where(T_DOC.c.doc_type == doc_type)
    if from_time is not None:
        query = query.where(T_DOC.c.block_time >= from_time)
    if to_time is not None:
        query = query.where(T_DOC.c.block_time < to_time)
    if doc_hash is not None:
        query = query.where(T_DOC.c.doc_hash == doc_hash)
    after = decode_cursor(cursor, 2)
    if after is not None:
        query = query.where(tuple_(T_DOC.c.block_number, T_DOC.c.doc_hash) < tuple_(after[0], bytes.fromhex(after[1])))
    rows = conn.execute(query.order_by(T_DOC.c.block_number.desc(), T_DOC.c.doc_hash.desc()).limit(limit + 1)).all()
    names = organisation_names(conn)
    page = rows[:limit]
    return {
        "items": [document_view(row, names) for row in page],
        "next_cursor": encode_cursor([page[-1].block_number, bytes(page[-1].doc_hash).hex()]) if len(rows) > limit else None,
    }


def organisations(conn: Connection) -> list[dict[str, Any]]:
    keys = conn.execute(select(T_KEY).order_by(T_KEY.c.org_id, T_KEY.c.added_block)).all()
    result = []
    for org in conn.execute(select(T_ORG).order_by(T_ORG.c.org_id)).all():
        result.append({
            "id": org.org_id, "name": org.name, "roles": [role.name.lower() for role in Role if org.roles & role],
            "suspended": bool(org.suspended),
            "site_keys": [
                {"address": key.address, "site": key.site, "added_block": key.added_block, "revoked_block": key.revoked_block}
                for key in keys if key.org_id == org.org_id
            ],
        })  # fmt: skip
    return result


