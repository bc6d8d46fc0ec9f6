"""The console's administration (an organisation's admins only): its users (add, role and sites, disable and
enable, reset a password: shown once), its API keys (create: shown once; list; revoke), whether its users must sign
in with a second factor, and its site keys as the chain mirror has them (read only).

Every action names the admin's own organisation to the accounts functions, so a user or a key of another
organisation is "unknown" here (404), never touched; such a refusal goes through as the error page (web.py). An admin cannot disable or demote itself (the organisation
would risk having no admin left).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool

from indexer.tables import SiteKey
from ledger_service import accounts
from ledger_service.accounts import SessionUser
from ledger_service.auth import create_api_key, revoke_api_key, site_restriction
from ledger_service.console.web import CONSOLE, Admin, PageParams, checked_form, next_page_url, page_error, render, router_for, see_other, services_of, status_of
from ledger_service.errors import ApiError, Forbidden, NotFound
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.tables import ApiKey
from partledger.errors import ValidationError

router = router_for("admin")
T_KEY, T_SITE = ApiKey.__table__, SiteKey.__table__
USERNAME = Path(pattern=r"^[a-z0-9._-]{2,64}$")
KEY_ID = Path(pattern=r"^[0-9a-f]{16}$")
MAX_LABEL = 100


# --- read functions ------------------------------------------------------------------------------------------


def list_api_keys(engine: Engine, *, org_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
    """The organisation's API keys (never their secrets), newest first."""
    query = select(T_KEY.c.key_id, T_KEY.c.label, T_KEY.c.sites, T_KEY.c.created_at, T_KEY.c.revoked_at).where(T_KEY.c.org_id == org_id)
    after = decode_cursor(cursor, 2)
    if after is not None:
        query = query.where(or_(T_KEY.c.created_at < float(after[0]), and_(T_KEY.c.created_at == float(after[0]), T_KEY.c.key_id < str(after[1]))))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(T_KEY.c.created_at.desc(), T_KEY.c.key_id.desc()).limit(limit + 1)).mappings().all()
    page = rows[:limit]
    items = [dict(row) | {"sites": json.loads(row["sites"]) if row["sites"] else None} for row in page]
    return {"items": items, "next_cursor": encode_cursor([page[-1]["created_at"], page[-1]["key_id"]]) if len(rows) > limit else None}


def api_key_org(engine: Engine, key_id: str) -> Optional[int]:
    with engine.connect() as conn:
        return conn.execute(select(T_KEY.c.org_id).where(T_KEY.c.key_id == key_id)).scalar()


def site_keys(conn: Connection, org_id: int) -> list[dict[str, Any]]:
    """The organisation's site keys in the mirror, oldest first (an organisation has a handful)."""
    rows = conn.execute(select(T_SITE).where(T_SITE.c.org_id == org_id).order_by(T_SITE.c.added_block, T_SITE.c.address).limit(1000)).mappings().all()
    return [{"address": row["address"], "site": row["site"], "added_block": row["added_block"], "revoked_block": row["revoked_block"]} for row in rows]


def page_of_users(engine: Engine, *, org_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
    """The organisation's users by name, a page at a time (the cursor: the last name shown)."""
    after = decode_cursor(cursor, 1)
    users = [user for user in accounts.list_users(engine, org_id=org_id) if after is None or user["username"] > str(after[0])]
    page = users[:limit]
    return {"items": page, "next_cursor": encode_cursor([page[-1]["username"]]) if len(users) > limit else None}


def _sites(text: str) -> list[str] | None:
    """A comma- or line-separated list of site names or site key addresses; empty: every site."""
    sites = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    return [site_restriction(site) for site in sites] or None


# --- pages ---------------------------------------------------------------------------------------------------


def _users_page(request: Request, user: SessionUser, paging_cursor: str | None, limit: int, extra: dict[str, Any] | None = None,
                *, status: int = 200, code: str | None = None) -> HTMLResponse:  # fmt: skip
    services = services_of(request)
    found = page_of_users(services.service_engine, org_id=user.org_id, limit=limit, cursor=paging_cursor)
    context = {
        "users": found["items"], "next_url": next_page_url(request, found["next_cursor"]), "roles": accounts.ROLES,
        "require_totp": accounts.require_totp(services.service_engine, user.org_id), "tab": "users", "me": user.username,
    }  # fmt: skip
    return render(request, user, "console/admin.html", context | (extra or {}), status=status, code=code)


@router.get("/admin")
def users(request: Request, user: Admin, paging: PageParams) -> HTMLResponse:
    return _users_page(request, user, paging.cursor, paging.limit)


@router.post("/admin/users")
async def add_user(request: Request, user: Admin) -> Response:
    form = await checked_form(request, user)
    values = {key: str(form.get(key) or "") for key in ("username", "display_name", "role", "sites", "password")}
    errors: dict[str, Any] = {}
    try:
        username = accounts.normal_username(values["username"])
    except ValidationError as exc:
        errors["username"] = f"error.{exc.code}"
    if values["role"] not in accounts.ROLES:
        errors["role"] = "error.invalid_role"
    try:
        sites = _sites(values["sites"])
    except ValidationError as exc:
        errors["sites"] = f"error.{exc.code}"
    password = values["password"] or accounts.new_password()
    try:
        accounts.check_password(password)
    except ValidationError as exc:
        errors["password"] = f"error.{exc.code}"
    if errors:
        return _users_page(request, user, None, 50, {"errors": errors, "values": values | {"password": ""}, "open_add": True}, status=422, code="invalid_form")
    try:
        await run_in_threadpool(
            accounts.create_user, services_of(request).service_engine, org_id=user.org_id, username=username, password=password,
            role=values["role"], sites=sites, display_name=values["display_name"],
        )  # fmt: skip
    except (ApiError, ValidationError) as exc:
        field = "username" if exc.code == "username_taken" else "sites"
        return _users_page(request, user, None, 50, {"errors": {field: f"error.{exc.code}"}, "values": values | {"password": ""}, "open_add": True},
                           status=status_of(exc), code=exc.code)  # fmt: skip
    shown = {"username": username, "password": password} if not values["password"] else {"username": username, "password": None}
    return _users_page(request, user, None, 50, {"created": shown})


def _not_self(user: SessionUser, username: str) -> None:
    if username == user.username:
        raise Forbidden("an admin cannot disable, demote or reset itself here", code="cannot_change_self")


@router.post("/admin/users/{username}/role")
async def change_role(request: Request, user: Admin, username: str = USERNAME) -> Response:
    form = await checked_form(request, user)
    role = str(form.get("role") or "")
    if role != "admin":
        _not_self(user, username)
    sites = _sites(str(form.get("sites") or ""))
    await run_in_threadpool(accounts.set_user_role, services_of(request).service_engine, org_id=user.org_id, username=username, role=role, sites=sites)
    return see_other(f"{CONSOLE}/admin")


@router.post("/admin/users/{username}/disable")
async def disable(request: Request, user: Admin, username: str = USERNAME) -> Response:
    await checked_form(request, user)
    _not_self(user, username)
    await run_in_threadpool(accounts.disable_user, services_of(request).service_engine, username=username, org_id=user.org_id)
    return see_other(f"{CONSOLE}/admin")


@router.post("/admin/users/{username}/enable")
async def enable(request: Request, user: Admin, username: str = USERNAME) -> Response:
    await checked_form(request, user)
    await run_in_threadpool(accounts.enable_user, services_of(request).service_engine, username=username, org_id=user.org_id)
    return see_other(f"{CONSOLE}/admin")


@router.post("/admin/users/{username}/reset")
async def reset(request: Request, user: Admin, username: str = USERNAME) -> Response:
    form = await checked_form(request, user)
    _not_self(user, username)
    password = await run_in_threadpool(
        accounts.reset_password, services_of(request).service_engine, username=username, org_id=user.org_id, clear_totp=form.get("clear_totp") == "on"
    )  # fmt: skip
    return _users_page(request, user, None, 50, {"reset": {"username": username, "password": password}})


@router.post("/admin/totp")
async def require_totp(request: Request, user: Admin) -> Response:
    form = await checked_form(request, user)
    await run_in_threadpool(accounts.set_require_totp, services_of(request).service_engine, org_id=user.org_id, required=form.get("required") == "on")
    return see_other(f"{CONSOLE}/admin")


# --- API keys ------------------------------------------------------------------------------------------------


def _keys_page(request: Request, user: SessionUser, cursor: str | None, limit: int, extra: dict[str, Any] | None = None,
               *, status: int = 200, code: str | None = None) -> HTMLResponse:  # fmt: skip
    found = list_api_keys(services_of(request).service_engine, org_id=user.org_id, limit=limit, cursor=cursor)
    context = {"keys": found["items"], "next_url": next_page_url(request, found["next_cursor"]), "tab": "keys"}
    return render(request, user, "console/admin_keys.html", context | (extra or {}), status=status, code=code)


@router.get("/admin/keys")
def keys(request: Request, user: Admin, paging: PageParams) -> HTMLResponse:
    return _keys_page(request, user, paging.cursor, paging.limit)


@router.post("/admin/keys")
async def create_key(request: Request, user: Admin) -> Response:
    form = await checked_form(request, user)
    values = {"label": str(form.get("label") or "").strip(), "sites": str(form.get("sites") or "")}
    errors: dict[str, Any] = {}
    if len(values["label"]) > MAX_LABEL:
        errors["label"] = "admin.keys.label_too_long"
    try:
        sites = _sites(values["sites"])
    except ValidationError as exc:
        errors["sites"] = f"error.{exc.code}"
    if errors:
        return _keys_page(request, user, None, 50, {"errors": errors, "values": values}, status=422, code="invalid_form")
    key = await run_in_threadpool(create_api_key, services_of(request).service_engine, org_id=user.org_id, label=values["label"], sites=sites)
    return _keys_page(request, user, None, 50, {"created_key": key})


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(request: Request, user: Admin, key_id: str = KEY_ID) -> Response:
    await checked_form(request, user)
    engine = services_of(request).service_engine
    if await run_in_threadpool(api_key_org, engine, key_id) != user.org_id:
        return page_error(request, user, NotFound(f"no API key {key_id} of your organisation", code="unknown_api_key"))
    await run_in_threadpool(revoke_api_key, engine, key_id)
    return see_other(f"{CONSOLE}/admin/keys")


# --- site keys -----------------------------------------------------------------------------------------------


@router.get("/admin/sites")
def sites(request: Request, user: Admin) -> HTMLResponse:
    with services_of(request).index_engine.connect() as conn:
        found = site_keys(conn, user.org_id)
    return render(request, user, "console/admin_sites.html", {"sites": found, "tab": "sites"})
