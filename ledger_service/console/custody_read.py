"""What the console's site pages read from the mirror, with the API's visibility: the parts an organisation holds,
is shipped or made (auditors and regulators: all), the actions a user may take on a part now, inbound consignments,
held lots, recipients, held parts and their CSV.

Where it sits: beside ledger_service.read (whose functions it uses) for ledger_service.console.custody and scan;
it reads and never writes. Each function takes a connection (one snapshot) and the organisation or user it reads for.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.engine import Connection

from indexer.tables import Part, Shipment, SiteKey
from labels.digital_link import DigitalLink, parse_path, parse_uri
from ledger_service import read
from ledger_service.accounts import SessionUser
from ledger_service.errors import NotFound
from ledger_service.operations import OPERATIONS
from ledger_service.pagination import decode_cursor, encode_cursor
from partledger.ids import ascii32, part_id_unchecked
from partledger.model import CUSTODY_ROLES, PartStatus, Role

T_PART, T_SHIP, T_KEY = Part.__table__, Shipment.__table__, SiteKey.__table__
STATUS_NAMES = tuple(status.name.lower() for status in PartStatus if status is not PartStatus.NONE)
# What a part page and a scanned list offer, in this order. Install names one part and its VIN (its own form).
ACTIONS = ("receive", "ship", "sell", "install", "remove", "quarantine", "release", "scrap", "recycle", "cancel")
CSV_CHUNK = 1000
MAX_HISTORY = 200
HELD_LOT_CHOICES = 200
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")


# --- what this user may do with a part now -----------------------------------------------------------------------


def allowed_actions(user: SessionUser, *, status: str, custodian: int | None, recipient: int | None, recalled: bool) -> list[str]:
    """The writes this user may send for a part in this state, as the outbox's pre-check would judge them: the user
    role (a viewer: none), the organisation's roles, the status the write starts from, who must hold the part and
    whether its lot's recall blocks the write. The contract stays the final judge."""
    principal = user.principal
    if not principal.may_act or status not in STATUS_NAMES:
        return []
    state = PartStatus[status.upper()]
    allowed = []
    for kind in ACTIONS:
        op = OPERATIONS[kind]
        holder = recipient if op.holder == "recipient" else custodian
        if principal.roles & op.roles and state in op.from_statuses and holder == principal.org_id and not (op.blocked_by_recall and recalled):
            allowed.append(kind)
    return allowed


# --- reads over the mirror (the API's visibility: parts the organisation holds, is shipped, or made) -------------


@dataclass
class ListedPart:
    """One entry of a scanned list: the part as this user may see it, and what may be done with it."""

    item: str  # the entry as the form carries it: the label's Digital Link path (with its signature, if any)
    gtin: str
    serial: str
    part_id: str
    registered: bool = False
    consortium: bool = False  # involved with the part: custody, lot, site, holders are shown
    status: str | None = None
    recalled: bool = False
    lot_code: str | None = None
    manufacturer: str | None = None
    custodian: str | None = None
    recipient: str | None = None
    site: str | None = None
    shipment: str | None = None  # the open inbound shipment it is in, when it is shipped to this organisation
    signature: str | None = None  # the label's signature: valid, invalid, revoked, missing, unchecked
    actions: list[str] = field(default_factory=list)
    error: str | None = None  # why the last write refused this row, in the user's words


def item_of(link: DigitalLink) -> str:
    """A scanned label as a list entry: its Digital Link path, with the signature the label carries."""
    return link.path + (f"?sig={link.signature}" if link.signature else "")


def parse_item(value: str) -> DigitalLink:
    """A list entry back to its Digital Link (ValidationError when it is none)."""
    path, _, query = value.strip().partition("?")
    return parse_path(path, query)


def link_of_text(text: str) -> DigitalLink:
    """What a scanner read (a whole Digital Link URI, or an entry's path) as a Digital Link."""
    stripped = text.strip()
    if stripped.startswith("/"):
        return parse_item(stripped)
    return parse_uri(stripped)


def pid_of(link: DigitalLink) -> bytes:
    return part_id_unchecked(int(link.gtin), ascii32(link.serial))


def site_names(conn: Connection, org_id: int) -> dict[str, str]:
    return dict(conn.execute(select(T_KEY.c.address, T_KEY.c.site).where(T_KEY.c.org_id == org_id)).all())


def listed_parts(conn: Connection, user: SessionUser, links: Sequence[DigitalLink]) -> list[ListedPart]:
    """The scanned parts in one read: each with the data the API shows this user (consortium data for the parts its
    organisation holds, is shipped or made; auditors and regulators all; otherwise the public status) and its
    actions."""
    principal = user.principal
    ids = [pid_of(link) for link in links]
    rows: dict[bytes, Any] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        rows.update({bytes(row.part_id): row for row in conn.execute(select(T_PART).where(T_PART.c.part_id.in_(chunk)))})
    names = read.organisation_names(conn)
    lots = read.lot_codes(conn, {row.lot for row in rows.values()})
    sites = site_names(conn, principal.org_id)
    inbound = open_shipments_of(conn, principal.org_id, [pid for pid, row in rows.items() if row.recipient == principal.org_id])
    listed = []
    for link, pid in zip(links, ids):
        entry = ListedPart(item=item_of(link), gtin=link.gtin, serial=link.serial, part_id="0x" + pid.hex())
        row = rows.get(pid)
        if row is not None:
            entry.registered = True
            entry.status = PartStatus(row.status).name.lower()
            entry.recalled = bool(row.recalled)
            entry.manufacturer = names.get(row.manufacturer)
            if principal.sees_everything or principal.org_id in (row.manufacturer, row.custodian, row.recipient):
                entry.consortium = True
                entry.lot_code = lots.get(row.lot)
                entry.custodian = names.get(row.custodian)
                entry.recipient = names.get(row.recipient) if row.recipient is not None else None
                entry.site = sites.get(row.site_key) if row.custodian == principal.org_id else None
                entry.shipment = inbound.get(pid)
                entry.actions = allowed_actions(user, status=entry.status, custodian=row.custodian, recipient=row.recipient, recalled=entry.recalled)
        listed.append(entry)
    return listed


def shipment_key(from_org: int, doc_hash: bytes | None, shipped_tx: bytes) -> str:
    """An inbound consignment: a sender and its delivery note (parts shipped under one note arrive together, over
    however many transactions the shipment took), or without a note the shipment's transaction."""
    return f"{from_org}-0x{bytes(doc_hash if doc_hash is not None else shipped_tx).hex()}"


def _parse_shipment_key(value: str) -> tuple[int, bytes]:
    sender, _, key = value.partition("-")
    if not (sender.isascii() and sender.isdigit()) or len(sender) > 10 or not _HEX32.fullmatch(key):
        raise NotFound("no such inbound shipment", code="unknown_shipment")
    return int(sender), bytes.fromhex(key[2:])


def _open_to(org_id: int) -> Any:
    return (T_SHIP.c.to_org == org_id) & T_SHIP.c.outcome.is_(None)


def _in_consignment(from_org: int, key: bytes) -> Any:
    return (T_SHIP.c.from_org == from_org) & ((T_SHIP.c.doc_hash == key) | (T_SHIP.c.doc_hash.is_(None) & (T_SHIP.c.shipped_tx == key)))


def open_shipments_of(conn: Connection, org_id: int, part_ids: Sequence[bytes]) -> dict[bytes, str]:
    """The open inbound consignment (shipment_key) of each of these parts shipped to `org_id`."""
    found: dict[bytes, str] = {}
    for start in range(0, len(part_ids), 900):
        chunk = list(part_ids[start : start + 900])
        query = select(T_SHIP.c.part_id, T_SHIP.c.from_org, T_SHIP.c.doc_hash, T_SHIP.c.shipped_tx).where(_open_to(org_id), T_SHIP.c.part_id.in_(chunk))
        found.update({bytes(row.part_id): shipment_key(row.from_org, row.doc_hash, row.shipped_tx) for row in conn.execute(query)})
    return found


def inbound_shipments(conn: Connection, org_id: int, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Shipments to `org_id` still in transit, one entry per sender and delivery note (or transaction, without a
    note), newest first: the sender, the parts' count, the blocks they were shipped in."""
    group = func.coalesce(T_SHIP.c.doc_hash, T_SHIP.c.shipped_tx)
    last = func.max(T_SHIP.c.shipped_block)
    query = (
        select(T_SHIP.c.from_org, group.label("key"), func.max(T_SHIP.c.doc_hash).label("doc_hash"), func.count().label("parts"),
               func.min(T_SHIP.c.shipped_block).label("first_block"), last.label("last_block"))
        .where(_open_to(org_id)).group_by(T_SHIP.c.from_org, group)
    )  # fmt: skip
    after = decode_cursor(cursor, 3)
    if after is not None:
        query = query.having(tuple_(last, T_SHIP.c.from_org, group) < tuple_(int(after[0]), int(after[1]), bytes.fromhex(after[2])))
    rows = conn.execute(query.order_by(last.desc(), T_SHIP.c.from_org.desc(), group.desc()).limit(limit + 1)).all()
    names = read.organisation_names(conn)
    page = rows[:limit]
    items = [
        {
            "key": f"{row.from_org}-0x{bytes(row.key).hex()}", "sender": {"id": row.from_org, "name": names.get(row.from_org)},
            "doc_hash": read.hex0x(row.doc_hash), "parts": row.parts, "first_block": row.first_block, "last_block": row.last_block,
        }
        for row in page
    ]  # fmt: skip
    next_cursor = encode_cursor([page[-1].last_block, page[-1].from_org, bytes(page[-1].key).hex()]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


def inbound_count(conn: Connection, org_id: int) -> int:
    """How many entries inbound_shipments lists for `org_id` in all."""
    groups = select(T_SHIP.c.from_org, func.coalesce(T_SHIP.c.doc_hash, T_SHIP.c.shipped_tx)).where(_open_to(org_id)).distinct().subquery()
    return conn.execute(select(func.count()).select_from(groups)).scalar() or 0


def consignment(conn: Connection, org_id: int, key: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """One open inbound consignment of `org_id` and a page of its parts, in part id order; 404 unknown_shipment
    when it has no part in transit to `org_id` (another organisation's shipments are not found either)."""
    from_org, hashed = _parse_shipment_key(key)
    where = _open_to(org_id) & _in_consignment(from_org, hashed)
    total = conn.execute(select(func.count()).select_from(T_SHIP).where(where)).scalar() or 0
    if not total:
        raise NotFound("no such inbound shipment", code="unknown_shipment")
    page = read.parts_page(conn, select(T_PART).join(T_SHIP, T_SHIP.c.part_id == T_PART.c.part_id).where(where), limit=limit, cursor=cursor)
    doc = conn.execute(select(T_SHIP.c.doc_hash).where(where).limit(1)).scalar()
    sender = {"id": from_org, "name": read.organisation_names(conn).get(from_org)}
    return {"key": key, "sender": sender, "doc_hash": read.hex0x(doc), "parts": total} | page


def consignment_part_ids(conn: Connection, org_id: int, key: str) -> list[bytes]:
    """Every part of an open inbound consignment of `org_id` ("receive all"); 404 unknown_shipment when none."""
    from_org, hashed = _parse_shipment_key(key)
    ids = [bytes(pid) for pid in conn.execute(select(T_SHIP.c.part_id).where(_open_to(org_id) & _in_consignment(from_org, hashed)).order_by(T_SHIP.c.part_id)).scalars()]
    if not ids:
        raise NotFound("no such inbound shipment", code="unknown_shipment")
    return ids


def held_lots(conn: Connection, org_id: int, *, limit: int = HELD_LOT_CHOICES) -> list[dict[str, Any]]:
    """The lots (and GTINs) of which `org_id` holds parts in stock, with how many: the ship form's lot choices."""
    rows = conn.execute(
        select(T_PART.c.lot, T_PART.c.gtin, T_PART.c.manufacturer, func.count().label("parts"))
        .where(T_PART.c.custodian == org_id, T_PART.c.status == int(PartStatus.IN_STOCK))
        .group_by(T_PART.c.lot, T_PART.c.gtin, T_PART.c.manufacturer).order_by(T_PART.c.lot, T_PART.c.gtin).limit(limit)
    ).all()  # fmt: skip
    names = read.organisation_names(conn)
    codes = read.lot_codes(conn, {row.lot for row in rows})
    return [
        {"value": f"{row.lot}:{row.gtin}", "lot": row.lot, "code": codes.get(row.lot), "gtin": row.gtin, "manufacturer": names.get(row.manufacturer), "parts": row.parts}
        for row in rows
    ]


def recipients(conn: Connection, org_id: int) -> list[dict[str, Any]]:
    """The consortium members a shipment may go to: active, holding parts, not the shipper (read.organisations)."""
    return [
        {"id": org["id"], "name": org["name"], "roles": org["roles"]}
        for org in read.organisations(conn)
        if org["id"] != org_id and not org["suspended"] and Role(sum(Role[name.upper()] for name in org["roles"])) & CUSTODY_ROLES
    ]


def held_parts(conn: Connection, org_id: int, *, site_key: str | None, status: PartStatus | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the parts `org_id` holds, in part id order, narrowed to a site key and a status."""
    query = select(T_PART).where(T_PART.c.custodian == org_id)
    if status is not None:
        query = query.where(T_PART.c.status == int(status))
    if site_key is not None:
        query = query.where(T_PART.c.site_key == site_key)
    return read.parts_page(conn, query, limit=limit, cursor=cursor)


CSV_COLUMNS = ("part_id", "gtin", "serial", "lot", "status", "site", "site_key", "manufacturer", "recalled", "updated_block")


def csv_cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula (= + - @ first) is prefixed with an apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def inventory_csv(engine: Any, org_id: int, *, site_key: str | None, status: PartStatus | None) -> Iterator[str]:
    """The parts `org_id` holds as CSV, streamed a thousand rows at a time from one read transaction (one snapshot
    of the mirror, whatever its size)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    with engine.connect() as conn, conn.begin():
        names = read.organisation_names(conn)
        sites = site_names(conn, org_id)
        codes: dict[int, str] = {}
        cursor = None
        while True:
            page = held_parts(conn, org_id, site_key=site_key, status=status, limit=CSV_CHUNK, cursor=cursor)
            buffer.seek(0)
            buffer.truncate()
            for part in page["items"]:
                lot = part["lot"]
                codes.setdefault(lot["number"], lot["code"])
                writer.writerow([csv_cell(value) for value in (
                    part["part_id"], part["gtin"], part["serial"], lot["code"], part["status"], sites.get(part["site_key"]), part["site_key"],
                    names.get(part["manufacturer"]["id"]), "true" if part["recalled"] else "false", part["updated_block"],
                )])  # fmt: skip
            yield buffer.getvalue()
            cursor = page["next_cursor"]
            if cursor is None:
                return


def part_view(conn: Connection, user: SessionUser, pid: bytes) -> dict[str, Any]:
    """A part as the API shows it to this user (read.part_detail), with the actions the user may take on it now, the
    open inbound shipment it is in and the site that holds it (when it is the user's organisation's)."""
    detail = read.part_detail(conn, user.principal, pid)
    part = detail["part"]
    actions: list[str] = []
    shipment = site = None
    if detail["classification"] == "consortium":
        recipient = (part["recipient"] or {}).get("id")
        actions = allowed_actions(user, status=part["status"], custodian=part["custodian"]["id"], recipient=recipient, recalled=part["recalled"])
        if recipient == user.org_id:
            shipment = open_shipments_of(conn, user.org_id, [pid]).get(pid)
        if part["custodian"]["id"] == user.org_id:
            site = site_names(conn, user.org_id).get(part["site_key"])
    return {
        "part": part, "classification": detail["classification"], "history": (detail["history"] or [])[-MAX_HISTORY:], "actions": actions,
        "shipment": shipment, "site": site,
    }  # fmt: skip
