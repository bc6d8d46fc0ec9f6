"""The console's commands: the organisation's commands newest first, who sent each (a user or an API key), and each
one's live status (accepted, submitted, confirmed, rejected) with the contract's error in words.

A command not final yet polls its status fragment every 2 seconds (htmx); the fragment of a final command carries no
trigger, so the polling stops by itself. Auditors and regulators see any organisation's command as the API shows it
to them (GET /v1/commands/{id}); the list is always the user's own organisation's.
"""

from __future__ import annotations

from typing import Any

from fastapi import Path, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection, Engine

from ledger_service.auth import Principal
from ledger_service.console.web import ConsoleUser, PageParams, next_page_url, render, router_for, services_of
from ledger_service.outbox import command_view, read_command
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.tables import Command, CommandItem

router = router_for("commands")
T_CMD, T_ITEM = Command.__table__, CommandItem.__table__
FINAL = ("confirmed", "rejected")
POLL_SECONDS = 2
COMMAND_ID = Path(pattern=r"^[0-9a-f-]{36}$")


def commands_page(conn: Connection, where: Any, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the commands matching `where`, newest first, as command_view shapes them (without transactions)."""
    query = select(T_CMD).where(where)
    after = decode_cursor(cursor, 2)
    if after is not None:
        query = query.where(or_(T_CMD.c.created_at < float(after[0]), and_(T_CMD.c.created_at == float(after[0]), T_CMD.c.id < str(after[1]))))
    rows = conn.execute(query.order_by(T_CMD.c.created_at.desc(), T_CMD.c.id.desc()).limit(limit + 1)).mappings().all()
    page = rows[:limit]
    items_of: dict[str, list[Any]] = {}
    if page:
        for item in conn.execute(select(T_ITEM).where(T_ITEM.c.command_id.in_([row["id"] for row in page])).order_by(T_ITEM.c.id)).mappings():
            items_of.setdefault(item["command_id"], []).append(item)
    return {
        "items": [command_view(row, items_of.get(row["id"], []), {}) for row in page],
        "next_cursor": encode_cursor([page[-1]["created_at"], page[-1]["id"]]) if len(rows) > limit else None,
    }


def rejected_item() -> Any:
    """Where a command has a rejected item (the command's status is then rejected)."""
    return select(T_ITEM.c.id).where(T_ITEM.c.command_id == T_CMD.c.id, T_ITEM.c.state == "rejected").exists()


def list_commands(engine: Engine, principal: Principal, *, limit: int, cursor: str | None, status: str | None = None) -> dict[str, Any]:
    """The caller's organisation's commands (`status` "rejected": those only), newest first."""
    where = T_CMD.c.org_id == principal.org_id
    if status == "rejected":
        where = and_(where, rejected_item())
    with engine.connect() as conn:
        return commands_page(conn, where, limit=limit, cursor=cursor)


@router.get("/commands")
def commands(request: Request, user: ConsoleUser, paging: PageParams) -> HTMLResponse:
    status = request.query_params.get("status")
    found = list_commands(services_of(request).service_engine, user.principal, limit=paging.limit, cursor=paging.cursor, status=status if status == "rejected" else None)
    return render(request, user, "console/commands.html", {
        "commands": found["items"], "next_url": next_page_url(request, found["next_cursor"]),
        "first_url": request.url.path + ("?status=rejected" if status == "rejected" else "") if paging.cursor else None,
        "only_rejected": status == "rejected", "final": FINAL, "poll_seconds": POLL_SECONDS,
    })  # fmt: skip


@router.get("/commands/{command_id}")
def command_page(request: Request, user: ConsoleUser, command_id: str = COMMAND_ID) -> HTMLResponse:
    view = read_command(services_of(request).service_engine, user.principal, command_id)
    return render(request, user, "console/command.html", {"command": view, "final": FINAL, "poll_seconds": POLL_SECONDS})


@router.get("/commands/{command_id}/status")
def command_status(request: Request, user: ConsoleUser, command_id: str = COMMAND_ID) -> HTMLResponse:
    """The status fragment htmx polls; with ?row=1 the list's cell, else the command page's block."""
    view = read_command(services_of(request).service_engine, user.principal, command_id)
    return render(request, user, "console/commands_status.html", {"command": view, "final": FINAL, "poll_seconds": POLL_SECONDS, "row": request.query_params.get("row") == "1"})
