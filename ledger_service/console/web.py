"""The console's framework: how every /console page is written.

An area module declares `router = router_for("maker")` and writes routes on it:

    @router.get("/maker/lots")
    def lots(request: Request, user: ConsoleUser, page: PageParams) -> HTMLResponse:
        ...read through a read function...
        return render(request, user, "console/maker/lots.html", {"lots": found["items"], "next_url": next_page_url(request, found["next_cursor"])})

    @router.post("/maker/recall")
    async def recall(request: Request, user: Operator) -> Response:
        form = await checked_form(request, user)            # 403 csrf_failed unless the session's token came back
        errors = {...}                                       # {"field": "message key or text" | ("key", {params})}
        if errors:
            return render(request, user, "console/maker/recall.html", {"errors": errors, "values": dict(form)}, status=422, code="invalid_form")
        try:
            answer = await run_in_threadpool(write_service.submit_recall, services_of(request), user.principal, ...)
        except ApiError as exc:
            return page_error(request, user, exc)           # or re-render the form with code=exc.code, status=status_of(exc)
        return see_other(f"/console/commands/{answer['command_id']}")

- `ConsoleUser` / `Operator` / `Admin`: the signed-in user (accounts.SessionUser). A page without a session redirects
  (303) to /console/sign-in?next=<this page> (GET; other methods get the 401 page); a viewer on an Operator route and a
  non-admin on an Admin route get the 403 page (read_only_role, admin_only).
- An ApiError, ValidationError, 404 or request validation error escaping a /console route becomes an HTML page with
  the status, the machine code and the message in the user's language (catalogue key `error.<code>` when present):
  routes may simply let service errors through.
- A form's fields: `form_text`, `read_upload` (a file field; 413 payload_too_large over the limit), `upload_name`;
  its Idempotency-Key: `new_form_key()` on the page, `form_key(form)` back, bound to `form_digest(path, meaning)`.
- Every /console response carries the CSP (a fresh nonce per request, `csp_nonce` in templates), nosniff,
  frame-ancestors 'none', no-store caching (static files: a year, immutable, addressed by content hash through
  `static_url("name")`); `?lang=zh|en` on any console URL also sets the `lang` cookie the verify page uses;
  `Server-Timing: app;dur=<ms>` tells the server's time to the response's start (benchmarks/console_bench.py).
- Templates extend "console/base.html" and `{% import "console/macros.html" as m with context %}`; every string
  through `_` with a dotted key and named values (`%(name)s` in the PO text).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger_service import accounts
from ledger_service.accounts import SessionUser
from ledger_service.console.i18n import LANGUAGES, Catalogue, default_catalogue, lazy
from ledger_service.deps import Services
from ledger_service.errors import (
    DATABASE_UNAVAILABLE, STATUS, ApiError, BadRequest, Forbidden, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable,
)
from ledger_service.outbox import request_digest
from ledger_service.read import organisation_names
from ledger_service.verify_page import choose_language
from partledger.errors import ChainUnavailable, ValidationError
from partledger.model import CUSTODY_ROLES, PartStatus, Role

log = logging.getLogger("partledger.console")
CONSOLE = "/console"
STATIC_PATH = CONSOLE + "/static"
SIGN_IN_PATH = CONSOLE + "/sign-in"
TOTP_PATH = CONSOLE + "/totp"
SESSION_COOKIE = "pl_session"
SIGN_IN_COOKIE = "pl_signin"  # the sign-in form's own CSRF token (there is no session yet)
LANG_COOKIE = "lang"
TOTP_OPEN_PATHS = (TOTP_PATH, TOTP_PATH + "/begin", TOTP_PATH + "/confirm", CONSOLE + "/sign-out")  # open to a user who must set up TOTP first
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 400
ORG_NAMES_TTL = 10.0
CSP = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
COMMAND_STATUSES = ("accepted", "submitted", "confirmed", "rejected")
PART_STATUSES = tuple(status.name.lower() for status in PartStatus if status is not PartStatus.NONE)


def router_for(area: str) -> APIRouter:
    """The router of one console area: paths under /console, left out of the API's OpenAPI schema."""
    return APIRouter(prefix=CONSOLE, include_in_schema=False, tags=[f"console:{area}"])


# --- who is signed in ----------------------------------------------------------------------------------------


class SignInRequired(Exception):
    """No live session: a page GET is redirected to the sign-in page, anything else gets the 401 page."""

    def __init__(self, code: str = "not_signed_in") -> None:
        super().__init__(code)
        self.code = code


class TotpEnrolmentRequired(Exception):
    """The organisation requires a second factor and this user has none yet: every page but the enrolment's."""


def services_of(request: Request) -> Services:
    return request.app.state.services


def current_user(request: Request) -> SessionUser:
    """The user of the request's session cookie (sliding its expiry), or SignInRequired."""
    services = services_of(request)
    try:
        user = accounts.authenticate_session(services.service_engine, services.index_engine, request.cookies.get(SESSION_COOKIE))
    except Unauthorized as exc:
        raise SignInRequired(exc.code) from None
    request.state.console_user = user
    if user.totp_setup_required and request.url.path not in TOTP_OPEN_PATHS:
        raise TotpEnrolmentRequired()
    return user


def require_operator(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """A user who may act (admin or operator); a viewer gets 403 read_only_role."""
    if not user.principal.may_act:
        raise Forbidden(f"the role {user.role!r} may read but not act", code="read_only_role")
    return user


def require_admin(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """An administrator of the user's organisation; anyone else gets 403 admin_only."""
    if not user.principal.is_admin:
        raise Forbidden("only an administrator of the organisation may do this", code="admin_only")
    return user


ConsoleUser = Annotated[SessionUser, Depends(current_user)]
Operator = Annotated[SessionUser, Depends(require_operator)]
Admin = Annotated[SessionUser, Depends(require_admin)]


# --- forms ---------------------------------------------------------------------------------------------------


def check_origin(request: Request) -> None:
    """A state-changing request whose browser says it comes from another site is refused (csrf_failed): its Origin
    must name this host as the request reached us (Host) or as a proxy in front received it (X-Forwarded-Host, which
    a cross-site form cannot set). A request without Origin relies on the CSRF token alone."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    ours = {request.headers.get("host", "").lower()} | {host.strip().lower() for host in request.headers.get("x-forwarded-host", "").split(",") if host.strip()}
    if origin == "null" or urlsplit(origin).netloc.lower() not in ours:
        raise Forbidden("the form was sent from another site", code="csrf_failed")


def tokens_equal(given: object, expected: str | None) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given.encode(), str(expected).encode())


async def checked_form(request: Request, user: SessionUser) -> FormData:
    """The request's form (urlencoded or multipart) once its `csrf_token` field equals the session's; otherwise
    403 csrf_failed, before anything is done."""
    check_origin(request)
    form = await request.form()
    if not tokens_equal(form.get("csrf_token"), user.csrf_token):
        raise Forbidden("the form's security token is missing or wrong: reload the page and send it again", code="csrf_failed")
    return form


def form_text(form: FormData, name: str, limit: int = 200) -> str:
    """A text field, stripped and cut to `limit` characters ("" when missing or a file)."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


async def read_upload(form: FormData, name: str, *, limit: int) -> bytes | None:
    """The bytes of an uploaded file field (None when no file was chosen; b"" for an empty file); 413
    payload_too_large over `limit`, read no further than that."""
    value = form.get(name)
    if not isinstance(value, UploadFile) or not value.filename:
        return None
    data = await value.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the file is over {limit} bytes", code="payload_too_large")
    return data


def upload_name(form: FormData, name: str) -> str:
    """The file name the browser gave an uploaded file field ("" without one)."""
    value = form.get(name)
    return value.filename or "" if isinstance(value, UploadFile) else ""


def new_form_key() -> str:
    """A form's Idempotency-Key: sending the same form twice (a double tap, a reload) answers the first command."""
    return f"console-{uuid.uuid4().hex}"


def form_key(form: FormData, name: str = "form_key") -> str:
    """The Idempotency-Key a form carries back in field `name` (a new one when it carries none of ours)."""
    value = form_text(form, name, 64)
    return value if re.fullmatch(r"console-[0-9a-f]{32}", value) else new_form_key()


def form_digest(path: str, payload: dict[str, Any]) -> str:
    """What a form's Idempotency-Key is bound to: its meaning (not the CSRF token, not the multipart boundary)."""
    return request_digest("POST", path, json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode())


# --- language, pages -----------------------------------------------------------------------------------------


def ui_lang(request: Request) -> str:
    """zh or en: ?lang=, else the `lang` cookie, else Accept-Language, else Chinese (as the verify page)."""
    return choose_language(query=request.query_params.get("lang"), cookie=request.cookies.get(LANG_COOKIE), accept_language=request.headers.get("accept-language"))


def catalogue_of(request: Request) -> Catalogue:
    return getattr(request.app.state, "console_catalogue", None) or default_catalogue()


def translator(request: Request) -> Any:
    return catalogue_of(request).translator(ui_lang(request))


def url_with(request: Request, **changes: Optional[str]) -> str:
    """This page's path and query with some parameters replaced (None: removed)."""
    params = [(key, value) for key, value in request.query_params.multi_items() if key not in changes]
    params += [(key, value) for key, value in changes.items() if value is not None]
    return request.url.path + (f"?{urlencode(params)}" if params else "")


@dataclass(frozen=True)
class NavEntry:
    key: str
    path: str
    roles: Role | None = None  # any of these organisation roles; None: every organisation
    admin_only: bool = False
    operators_only: bool = False  # admins and operators (users who may act), not viewers


NAVIGATION = (
    NavEntry(lazy("nav.home"), CONSOLE),
    NavEntry(lazy("nav.scan"), CONSOLE + "/scan", CUSTODY_ROLES),
    NavEntry(lazy("nav.maker"), CONSOLE + "/maker", Role.MANUFACTURER),
    NavEntry(lazy("nav.custody"), CONSOLE + "/custody", CUSTODY_ROLES),
    NavEntry(lazy("nav.documents"), CONSOLE + "/documents"),
    NavEntry(lazy("nav.notifications"), CONSOLE + "/notifications"),
    NavEntry(lazy("nav.audit"), CONSOLE + "/audit", Role.AUDITOR | Role.REGULATOR),
    NavEntry(lazy("nav.commands"), CONSOLE + "/commands"),
    NavEntry(lazy("nav.admin"), CONSOLE + "/admin", admin_only=True),
    NavEntry(lazy("nav.operations"), CONSOLE + "/operations", operators_only=True),
)


def navigation(user: SessionUser | None, path: str) -> list[dict[str, Any]]:
    """The areas this user's organisation roles and user role open, the current one marked."""
    if user is None:
        return []
    roles = user.principal.roles
    entries = [
        entry for entry in NAVIGATION
        if (entry.roles is None or roles & entry.roles) and (not entry.admin_only or user.principal.is_admin) and (not entry.operators_only or user.principal.may_act)
    ]  # fmt: skip
    return [
        {"key": entry.key, "path": entry.path, "current": path == entry.path or (entry.path != CONSOLE and path.startswith(entry.path + "/"))}
        for entry in entries
    ]


_org_names_lock = threading.Lock()


def org_names(request: Request) -> dict[int, str]:
    """Organisation names from the mirror, cached for a few seconds per app (the header shows one on every page)."""
    state = request.app.state
    with _org_names_lock:
        cached = getattr(state, "console_org_names", None)
        if cached is not None and time.monotonic() - cached[0] < ORG_NAMES_TTL:
            return cached[1]
    with services_of(request).index_engine.connect() as conn:
        names = organisation_names(conn)
    with _org_names_lock:
        state.console_org_names = (time.monotonic(), names)
    return names


@functools.cache
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]


def static_url(name: str) -> str:
    """The URL of a file in console/static/, addressed by its content so that it may be cached for a year."""
    return f"{STATIC_PATH}/{name}?v={_static_version(name)}"


def part_url(part_id: str) -> str:
    """The console's page of a part (0x-hex id)."""
    return f"{CONSOLE}/parts/{part_id}"


def _when(value: float | int | None) -> str:
    if value is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(value)))


@functools.cache
def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.globals.update(static_url=static_url, part_url=part_url, CONSOLE=CONSOLE)
    env.filters["when"] = _when
    env.filters["short"] = lambda value, n=10: value if not isinstance(value, str) or len(value) <= n + 4 else f"{value[: n]}…{value[-4:]}"
    return env


def csp_nonce(request: Request) -> str:
    nonce = getattr(request.state, "csp_nonce", None)
    if nonce is None:
        nonce = request.state.csp_nonce = secrets.token_urlsafe(16)
    return nonce


def render(
    request: Request,
    user: SessionUser | None,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A console page. The template sees `user`, `lang`, `_`/`gettext`, `csrf_token`, `csp_nonce`, `nav`,
    `switch_url`, `org_name`, `errors`/`values` (empty unless given), `code` and `problem` (a 4xx page's machine
    code and its message), `has_text(key)`, `error_text(name, fallback)` (the words of an API code or a contract
    error: `error.<name>` when the catalogue has it, else `fallback`), and everything in `context`."""
    lang = ui_lang(request)
    catalogue = catalogue_of(request)
    _ = catalogue.translator(lang)
    page: dict[str, Any] = {
        "request": request,
        "user": user,
        "lang": lang,
        "html_lang": "zh-CN" if lang == "zh" else "en",
        "_": _,
        "gettext": _,
        "csrf_token": user.csrf_token if user is not None else "",
        "csp_nonce": csp_nonce(request),
        "nav": navigation(user, request.url.path),
        "switch_url": url_with(request, lang="en" if lang == "zh" else "zh"),
        "other_lang": "en" if lang == "zh" else "zh",
        "org_name": org_names(request).get(user.org_id, "") if user is not None else "",
        "errors": {},
        "values": {},
        "code": code,
        "problem": None,
        "has_text": lambda key: catalogue.has(lang, key),
        "error_text": lambda name, fallback="": _(f"error.{name}") if catalogue.has(lang, f"error.{name}") else (fallback or name),
    }
    page.update(context or {})
    if code is not None and page["problem"] is None:
        page["problem"] = _(f"error.{code}") if catalogue.has(lang, f"error.{code}") else _("error.generic")
    body = templates().get_template(template).render(page)
    response = HTMLResponse(body, status_code=status, headers=dict(headers or {}))
    response.headers["Content-Language"] = page["html_lang"]
    response.headers["Content-Security-Policy"] = CSP.format(nonce=page["csp_nonce"])  # also where no middleware runs (a 500)
    return response


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_message(request: Request, code: str, fallback: str, **params: Any) -> str:
    """An error's text in the user's language: the catalogue's `error.<code>`, else the service's own message."""
    catalogue, lang = catalogue_of(request), ui_lang(request)
    return catalogue.gettext(lang, f"error.{code}", **params) if catalogue.has(lang, f"error.{code}") else fallback


def page_error(request: Request, user: SessionUser | None, exc: Exception) -> HTMLResponse:
    """The page for an ApiError or ValidationError a service function raised: its status, its code shown, its
    message translated when the catalogue has `error.<code>` (a 429 also says how long to wait, with Retry-After)."""
    code = getattr(exc, "code", None) or "error"
    status = status_of(exc)
    headers: dict[str, str] = {}
    params: dict[str, Any] = {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
        params["seconds"] = exc.retry_after
    elif status == 503:
        headers["Retry-After"] = "5"
    message = error_message(request, code, getattr(exc, "message", None) or str(exc), **params)
    return render(request, user, "console/error.html", {"problem": message, "details": getattr(exc, "details", None)}, status=status, code=code, headers=headers)


def see_other(url: str) -> RedirectResponse:
    """303 to another console page (after a POST)."""
    return RedirectResponse(url, status_code=303)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# --- pagination ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paging:
    limit: int
    cursor: str | None


async def paging(request: Request) -> Paging:
    """?limit= (1..100, default 50; out of range is clamped) and ?cursor= (an opaque cursor of the read functions)."""
    raw = request.query_params.get("limit", "")
    limit = min(max(int(raw), 1), MAX_PAGE_SIZE) if raw.isascii() and raw.isdigit() and len(raw) < 7 else DEFAULT_PAGE_SIZE
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_LENGTH:
        raise BadRequest("malformed pagination cursor", code="invalid_cursor")
    return Paging(limit=limit, cursor=cursor)


PageParams = Annotated[Paging, Depends(paging)]


def next_page_url(request: Request, next_cursor: str | None, *, param: str = "cursor") -> str | None:
    """The link to the next page (None on the last), this page's other parameters kept."""
    return None if next_cursor is None else url_with(request, **{param: next_cursor})


# --- cookies -------------------------------------------------------------------------------------------------


def is_https(request: Request) -> bool:
    """Whether the browser reached us over TLS: the URL's scheme, or X-Forwarded-Proto when the settings say a
    proxy in front sets it (console_trust_forwarded_proto); never the header alone."""
    if request.url.scheme == "https":
        return True
    if getattr(services_of(request).settings, "console_trust_forwarded_proto", False):
        return request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"
    return False


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, path=CONSOLE, httponly=True, samesite="strict", secure=is_https(request))


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path=CONSOLE, httponly=True, samesite="strict", secure=is_https(request))


def local_console_path(value: str | None) -> str:
    """`next=` made safe: a path of this console (no scheme, no host, no backslash or control character, not the
    sign-in page itself); anything else is the home page."""
    if not value or len(value) > 2000 or any(ord(c) < 0x21 or c in "\\\x7f" for c in value) or value.startswith("//"):
        return CONSOLE
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == CONSOLE or parts.path.startswith(CONSOLE + "/")):
        return CONSOLE
    if ".." in parts.path.split("/") or parts.path.startswith((SIGN_IN_PATH, STATIC_PATH)):
        return CONSOLE
    return value


# --- the app: headers, static files, error pages -------------------------------------------------------------


def is_console_path(path: str) -> bool:
    return path == CONSOLE or path.startswith(CONSOLE + "/")


class ConsoleHeaders:
    """Pure ASGI: every /console answer gets the CSP with this request's nonce (in request.state.csp_nonce), and
    the other security headers; pages are not cached, static files are (immutable); ?lang= sets the `lang` cookie.
    `Server-Timing: app;dur=<ms>` gives the server's time from the request's start to the response's start
    (benchmarks/console_bench.py reads it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not is_console_path(path):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        static = path.startswith(STATIC_PATH + "/")
        chosen = _lang_param(scope.get("query_string", b""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"  # request start to response start
                headers["Content-Security-Policy"] = CSP.format(nonce=nonce)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "same-origin"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Permissions-Policy"] = "camera=(self), microphone=(), geolocation=()"
                if static and message["status"] in (200, 304):
                    headers["Cache-Control"] = "public, max-age=31536000, immutable"
                elif "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if chosen is not None and not static:
                    headers.append("Set-Cookie", f"{LANG_COOKIE}={chosen}; Path=/; Max-Age=31536000; SameSite=Lax")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _lang_param(query: bytes) -> str | None:
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"lang" and value.decode("ascii", "replace") in LANGUAGES:
            return value.decode()
    return None


def install_framework(app: FastAPI) -> None:
    """The console's headers, static files and error pages (the API's JSON error answers stay for every other
    path). Called by install_console, after install_error_handlers."""
    app.state.console_catalogue = default_catalogue()
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR, follow_symlink=False), name="console-static")
    app.add_middleware(ConsoleHeaders)

    def delegate(exc_class: type[BaseException] | int) -> Any:
        previous = app.exception_handlers.get(exc_class)

        def decorator(page: Any) -> None:
            async def handler(request: Request, exc: Exception) -> Response:
                if is_console_path(request.url.path) or previous is None:
                    return page(request, exc)
                answer = previous(request, exc)
                return await answer if inspect.isawaitable(answer) else answer

            app.add_exception_handler(exc_class, handler)

        return decorator

    @delegate(ApiError)
    def api_error(request: Request, exc: Exception) -> Response:
        return page_error(request, getattr(request.state, "console_user", None), exc)

    @delegate(ValidationError)
    def validation_error(request: Request, exc: Exception) -> Response:
        return page_error(request, getattr(request.state, "console_user", None), exc)

    @delegate(ChainUnavailable)
    def chain_unavailable(request: Request, exc: Exception) -> Response:
        exc.code = "chain_unavailable"  # type: ignore[attr-defined]
        return page_error(request, getattr(request.state, "console_user", None), exc)

    @delegate(RequestValidationError)
    def request_invalid(request: Request, exc: Exception) -> Response:
        return page_error(request, getattr(request.state, "console_user", None), BadRequest("the request's parameters are not valid", code="invalid_request"))

    @delegate(StarletteHTTPException)
    def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        user = getattr(request.state, "console_user", None)
        return render(request, user, "console/error.html", {"problem": error_message(request, code, str(getattr(exc, "detail", "")))}, status=status, code=code)

    def database_unavailable(request: Request, exc: Exception) -> Response:
        return page_error(request, getattr(request.state, "console_user", None), Unavailable("the database is unavailable; try again shortly", code="database_unavailable"))

    for database_error in DATABASE_UNAVAILABLE:
        delegate(database_error)(database_unavailable)

    @delegate(Exception)
    def unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, DATABASE_UNAVAILABLE):  # raised in a middleware, outside the handlers above
            return database_unavailable(request, exc)
        log.exception("unexpected error on a console page")
        user = getattr(request.state, "console_user", None)
        return render(request, user, "console/error.html", {"problem": error_message(request, "internal_error", "an unexpected error occurred; it was logged")}, status=500, code="internal_error")

    @delegate(SignInRequired)
    def sign_in_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"{SIGN_IN_PATH}?{urlencode({'next': local_console_path(target)})}"
        if request.method in ("GET", "HEAD") and not is_htmx(request):
            return see_other(location)
        response = render(request, None, "console/error.html", {"problem": error_message(request, "not_signed_in", "sign in first"), "sign_in_url": location}, status=401, code="not_signed_in")
        if is_htmx(request):
            response.headers["HX-Redirect"] = location
        return response

    @delegate(TotpEnrolmentRequired)
    def totp_required(request: Request, exc: Exception) -> Response:
        if request.method in ("GET", "HEAD") and not is_htmx(request):
            return see_other(TOTP_PATH)
        user = getattr(request.state, "console_user", None)
        return render(request, user, "console/error.html", {"problem": error_message(request, "totp_enrolment_required", "set up a second factor first")}, status=403, code="totp_enrolment_required")
