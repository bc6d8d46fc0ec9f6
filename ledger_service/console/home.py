"""The console's home page: what needs me now.

Five short lists, each with its count, a link to the whole list (paginated, /console/home/<section>) and to the area
where the work is done: shipments on their way to my organisation (to receive), my commands the chain or the service
rejected lately, clone-detection flags on my organisation's parts (manufacturers), recalled lots touching parts my
organisation holds or installed, and trade documents waiting for my organisation's countersignature. A section shows
only where the organisation's roles make it possible.

The read functions below are the home page's own queries, each bounded (a page, and counts over indexed columns).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.engine import Connection, Engine

from indexer.tables import Installation, Lot, Part, Recall
from ledger_service import evidence, scans
from ledger_service.auth import Principal
from ledger_service.console import custody_read
from ledger_service.console.commands import commands_page, rejected_item
from ledger_service.console.i18n import lazy
from ledger_service.console.web import CONSOLE, ConsoleUser, PageParams, next_page_url, org_names, render, router_for, services_of
from ledger_service.deps import Services
from ledger_service.errors import NotFound
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.read import hex0x, organisation_names
from ledger_service.recall_notices import held_notices
from ledger_service.scan_tables import ScanFlag
from ledger_service.tables import Command, DocumentProposal
from partledger.model import CUSTODY_ROLES, PartStatus, Role

router = router_for("home")

T_PART, T_LOT, T_RECALL, T_INSTALL = Part.__table__, Lot.__table__, Recall.__table__, Installation.__table__
T_CMD, T_FLAG, T_PROPOSAL = Command.__table__, ScanFlag.__table__, DocumentProposal.__table__
SHORT_LIST = 5
REJECTED_WINDOW = 7 * 86400.0  # "lately": rejected commands of the last week
FLAG_WINDOW = 30 * 86400.0
HELD = (int(PartStatus.IN_STOCK), int(PartStatus.IN_TRANSIT), int(PartStatus.QUARANTINED))


# --- read functions ------------------------------------------------------------------------------------------


def inbound_shipments(conn: Connection, principal: Principal, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Shipments in transit to the caller's organisation, grouped as the inbound page groups them (per sender and
    delivery note), newest first, with how many there are."""
    page = custody_read.inbound_shipments(conn, principal.org_id, limit=limit, cursor=cursor)
    return page | {"count": custody_read.inbound_count(conn, principal.org_id)}


def rejected_commands(engine: Engine, principal: Principal, *, limit: int, cursor: str | None, now: float | None = None) -> dict[str, Any]:
    """The caller's own commands (by its actor) rejected within REJECTED_WINDOW, newest first, with their errors."""
    since = (time.time() if now is None else now) - REJECTED_WINDOW
    where = and_(T_CMD.c.org_id == principal.org_id, T_CMD.c.actor == principal.actor, T_CMD.c.created_at >= since, rejected_item())
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(T_CMD).where(where)).scalar() or 0
        page = commands_page(conn, where, limit=limit, cursor=cursor)
    return page | {"count": count}


def clone_flags(engine: Engine, principal: Principal, *, limit: int, cursor: str | None, now: float | None = None) -> dict[str, Any]:
    """Clone-detection flags raised on the caller's (a manufacturer's) parts within FLAG_WINDOW, newest first."""
    since = (time.time() if now is None else now) - FLAG_WINDOW
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(T_FLAG).where(T_FLAG.c.manufacturer == principal.org_id, T_FLAG.c.created_at >= since)).scalar() or 0
        page = scans.list_flags(conn, principal, kind=None, since=since, part_id=None, limit=limit, cursor=cursor)
    return page | {"count": count}


def recalls_touching(conn: Connection, principal: Principal, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """Recalled lots with parts the caller's organisation holds (in stock, in transit, quarantined) or installed in
    a vehicle (still fitted), with how many of each, newest recall first. The held parts are looked for in the
    recalled lots only (ix_parts_lot_status: lot, status, custodian), not among everything the organisation holds."""
    me = principal.org_id
    held = dict(
        conn.execute(
            select(T_PART.c.lot, func.count())
            .where(T_PART.c.lot.in_(select(T_RECALL.c.lot)), T_PART.c.status.in_(HELD), T_PART.c.custodian == me, T_PART.c.recalled.is_(True))
            .group_by(T_PART.c.lot)
        ).all()
    )  # fmt: skip
    installed = dict(
        conn.execute(
            select(T_PART.c.lot, func.count())
            .select_from(T_INSTALL.join(T_PART, T_PART.c.part_id == T_INSTALL.c.part_id))
            .where(T_INSTALL.c.org_id == me, T_INSTALL.c.removed_block.is_(None), T_PART.c.recalled.is_(True))
            .group_by(T_PART.c.lot)
        ).all()
    )  # fmt: skip
    lots = set(held) | set(installed)
    if not lots:
        return {"items": [], "count": 0, "next_cursor": None}
    query = select(T_RECALL.c.lot, T_RECALL.c.block_number, T_RECALL.c.notice_hash, T_RECALL.c.org_id, T_LOT.c.lot_code).join(T_LOT, T_LOT.c.lot == T_RECALL.c.lot).where(T_RECALL.c.lot.in_(lots))
    after = decode_cursor(cursor, 2)
    if after is not None:
        query = query.where(tuple_(T_RECALL.c.block_number, T_RECALL.c.lot) < tuple_(int(after[0]), int(after[1])))
    rows = conn.execute(query.order_by(T_RECALL.c.block_number.desc(), T_RECALL.c.lot.desc()).limit(limit + 1)).all()
    names = organisation_names(conn)
    page = rows[:limit]
    items = [
        {"lot": row.lot, "lot_code": row.lot_code, "block": row.block_number, "notice_hash": hex0x(row.notice_hash),
         "by": {"id": row.org_id, "name": names.get(row.org_id)}, "held": held.get(row.lot, 0), "installed": installed.get(row.lot, 0)}
        for row in page
    ]  # fmt: skip
    next_cursor = encode_cursor([page[-1].block_number, page[-1].lot]) if len(rows) > limit else None
    return {"items": items, "count": len(lots), "next_cursor": next_cursor}


def documents_to_countersign(engine: Engine, principal: Principal, *, limit: int, cursor: str | None, now: float | None = None) -> dict[str, Any]:
    """Trade documents other members proposed to the caller's organisation, still waiting for its countersignature
    (not expired), newest first."""
    moment = time.time() if now is None else now
    with engine.connect() as conn:
        waiting = conn.execute(
            select(T_PROPOSAL.c.attestation).where(T_PROPOSAL.c.counterparty == principal.org_id, T_PROPOSAL.c.command_id.is_(None)).limit(10_000)
        ).scalars().all()  # fmt: skip
    count = sum(1 for text in waiting if json.loads(text).get("deadline", 0) > moment)
    page = evidence.list_proposals(engine, principal, side="to_countersign", waiting_only=True, limit=limit, cursor=cursor)
    return page | {"count": count}


# --- the sections --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    name: str
    title: str  # catalogue key
    area_path: str  # where the work is done
    area_label: str
    shown: Callable[[Principal], bool]
    read: Callable[[Services, Principal, int, str | None], dict[str, Any]]


def _index_read(function: Callable[..., dict[str, Any]]) -> Callable[[Services, Principal, int, str | None], dict[str, Any]]:
    def read(services: Services, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        with services.index_engine.connect() as conn:
            return function(conn, principal, limit=limit, cursor=cursor)

    return read


def _service_read(function: Callable[..., dict[str, Any]]) -> Callable[[Services, Principal, int, str | None], dict[str, Any]]:
    def read(services: Services, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        return function(services.service_engine, principal, limit=limit, cursor=cursor)

    return read


def _recalls_read(services: Services, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
    """recalls_touching, each recall with its notice (what to do now), when the service holds its text."""
    with services.index_engine.connect() as conn:
        page = recalls_touching(conn, principal, limit=limit, cursor=cursor)
    notices = held_notices(services.service_engine, [bytes.fromhex(item["notice_hash"][2:]) for item in page["items"]])
    for item in page["items"]:
        item["notice"] = notices.get(bytes.fromhex(item["notice_hash"][2:]))
    return page


SECTIONS = (
    Section("inbound", lazy("home.inbound.title"), CONSOLE + "/custody/inbound", lazy("home.inbound.go"),
            lambda p: bool(p.roles & CUSTODY_ROLES), _index_read(inbound_shipments)),
    Section("rejected", lazy("home.rejected.title"), CONSOLE + "/commands?status=rejected", lazy("home.rejected.go"),
            lambda p: True, _service_read(rejected_commands)),
    Section("flags", lazy("home.flags.title"), CONSOLE + "/maker", lazy("home.flags.go"),
            lambda p: bool(p.roles & Role.MANUFACTURER), _service_read(clone_flags)),
    Section("recalls", lazy("home.recalls.title"), CONSOLE + "/custody/inventory", lazy("home.recalls.go"),
            lambda p: bool(p.roles & CUSTODY_ROLES), _recalls_read),
    Section("documents", lazy("home.documents.title"), CONSOLE + "/documents", lazy("home.documents.go"),
            lambda p: True, _service_read(documents_to_countersign)),
)  # fmt: skip
SECTION_BY_NAME = {section.name: section for section in SECTIONS}


@router.get("")
@router.get("/")
def home(request: Request, user: ConsoleUser) -> HTMLResponse:
    services = services_of(request)
    shown = []
    for section in SECTIONS:
        if section.shown(user.principal):
            found = section.read(services, user.principal, SHORT_LIST, None)
            shown.append({"section": section, "page": found, "more_url": f"{CONSOLE}/home/{section.name}" if found["next_cursor"] else None})
    return render(request, user, "console/home.html", {"sections": shown, "names": org_names(request)})


@router.get("/home/{name}")
def home_section(request: Request, user: ConsoleUser, name: str, paging: PageParams) -> HTMLResponse:
    section = SECTION_BY_NAME.get(name)
    if section is None or not section.shown(user.principal):
        raise NotFound(f"no home section {name!r}", code="not_found")
    found = section.read(services_of(request), user.principal, paging.limit, paging.cursor)
    return render(
        request, user, "console/home_section.html",
        {"entry": {"section": section, "page": found}, "next_url": next_page_url(request, found["next_cursor"]),
         "first_url": request.url.path if paging.cursor else None, "names": org_names(request)},
    )  # fmt: skip


__all__ = ["router", "inbound_shipments", "rejected_commands", "clone_flags", "recalls_touching", "documents_to_countersign"]
