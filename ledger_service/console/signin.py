"""Signing in and out of the console, and setting up the second factor (TOTP).

The sign-in form has no session to carry a CSRF token yet, so it carries its own: a random value both in the form
and in a SameSite=Strict cookie scoped to the sign-in path (a cross-site POST arrives without the cookie); a
browser's Origin from another site is refused too. A successful sign-in ends the session the browser held and sets
a new token (rotation). `next=` leads only to a page of this console.
"""

from __future__ import annotations

import secrets
from typing import Any, Optional

import segno
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger_service import accounts
from ledger_service.accounts import SessionUser
from ledger_service.console.web import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    TOTP_PATH,
    ConsoleUser,
    checked_form,
    check_origin,
    clear_session_cookie,
    error_message,
    is_https,
    local_console_path,
    page_error,
    render,
    router_for,
    see_other,
    services_of,
    set_session_cookie,
    status_of,
    tokens_equal,
)
from ledger_service.errors import ApiError, Forbidden, TooManyRequests
from partledger.errors import ValidationError

router = router_for("signin")
SIGN_IN_TOKEN_AGE = 3600
OTPAUTH_PREFIX = "otpauth://totp/"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _sign_in_page(request: Request, *, next_path: str, username: str = "", need_totp: bool = False, status: int = 200,
                  code: Optional[str] = None, problem: Optional[str] = None, headers: Optional[dict[str, str]] = None,
                  errors: Optional[dict[str, Any]] = None) -> HTMLResponse:  # fmt: skip
    token = secrets.token_urlsafe(32)
    context = {"next": next_path, "signin_token": token, "need_totp": need_totp, "values": {"username": username}, "errors": errors or {}}
    if problem is not None:
        context["problem"] = problem
    response = render(request, None, "console/signin.html", context, status=status, code=code, headers=headers)
    response.set_cookie(SIGN_IN_COOKIE, token, path=SIGN_IN_PATH, max_age=SIGN_IN_TOKEN_AGE, httponly=True, samesite="strict", secure=is_https(request))
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: Optional[str] = None) -> Response:  # noqa: A002 - the query parameter's name
    """The form, also to someone signed in already (to sign in as someone else: the former session then ends)."""
    return _sign_in_page(request, next_path=local_console_path(next))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    next_path = local_console_path(form.get("next") if isinstance(form.get("next"), str) else None)
    username = str(form.get("username") or "").strip()[:255]
    password = str(form.get("password") or "")
    totp_code = str(form.get("totp_code") or "").strip() or None
    try:
        check_origin(request)
        if not tokens_equal(form.get("signin_token"), request.cookies.get(SIGN_IN_COOKIE)):
            raise Forbidden("the sign-in form expired or came from another site: send it again", code="csrf_failed")
    except ApiError as exc:
        return _sign_in_page(request, next_path=next_path, username=username, status=status_of(exc), code=exc.code)
    errors = {}
    if not username:
        errors["username"] = "signin.username_missing"
    if not password:
        errors["password"] = "signin.password_missing"
    if errors:
        return _sign_in_page(request, next_path=next_path, username=username, status=422, code="invalid_form", errors=errors, need_totp=bool(totp_code))
    services = services_of(request)
    previous = request.cookies.get(SESSION_COOKIE)
    try:
        token, _user = await run_in_threadpool(
            accounts.sign_in, services.service_engine, services.index_engine, username=username, password=password,
            totp_code=totp_code, client=_client(request), vault=services.vault, previous_token=previous,
        )  # fmt: skip
    except TooManyRequests as exc:
        problem = error_message(request, exc.code, exc.message, seconds=exc.retry_after)
        return _sign_in_page(request, next_path=next_path, username=username, status=429, code=exc.code, problem=problem, headers={"Retry-After": str(exc.retry_after)})
    except (ApiError, ValidationError) as exc:
        code = getattr(exc, "code", "bad_credentials")
        need_totp = code == "totp_required" or bool(totp_code)
        if isinstance(exc, ValidationError):
            code, status = "bad_credentials", 401  # a malformed username says no more than a wrong one
        else:
            status = status_of(exc)
        errors = {"totp_code": "signin.totp_needed"} if code == "totp_required" else {}
        return _sign_in_page(request, next_path=next_path, username=username, status=status, code=code, need_totp=need_totp, errors=errors)
    response = see_other(next_path)
    set_session_cookie(response, request, token)
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN_PATH, httponly=True, samesite="strict", secure=is_https(request))
    return response


@router.post("/sign-out")
async def sign_out(request: Request, user: ConsoleUser) -> Response:
    await checked_form(request, user)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(accounts.sign_out, services_of(request).service_engine, token)
    response = see_other(SIGN_IN_PATH)
    clear_session_cookie(response, request)
    return response


# --- the second factor ---------------------------------------------------------------------------------------


def _qr_data_uri(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2, dark="#000", light="#fff")


def _totp_page(request: Request, user: SessionUser, context: dict[str, Any], *, status: int = 200, code: Optional[str] = None) -> HTMLResponse:
    base = {"enabled": user.totp_enabled, "required": user.totp_setup_required, "uri": None, "secret": None, "qr": None}
    return render(request, user, "console/totp.html", base | context, status=status, code=code)


@router.get("/totp")
def totp_status(request: Request, user: ConsoleUser) -> HTMLResponse:
    return _totp_page(request, user, {"done": request.query_params.get("done") == "1"})


@router.post("/totp/begin")
async def totp_begin(request: Request, user: ConsoleUser) -> HTMLResponse:
    await checked_form(request, user)
    services = services_of(request)
    try:
        secret, uri = await run_in_threadpool(accounts.begin_totp, services.service_engine, user_id=user.user_id, vault=services.vault)
    except ApiError as exc:
        return page_error(request, user, exc)
    return _totp_page(request, user, {"uri": uri, "secret": secret, "qr": _qr_data_uri(uri)})


@router.post("/totp/confirm")
async def totp_confirm(request: Request, user: ConsoleUser) -> Response:
    form = await checked_form(request, user)
    services = services_of(request)
    code = str(form.get("code") or "").strip()
    try:
        await run_in_threadpool(accounts.confirm_totp, services.service_engine, user_id=user.user_id, code=code, vault=services.vault)
    except (ValidationError, ApiError) as exc:
        uri = str(form.get("uri") or "")
        shown: dict[str, Any] = {"errors": {"code": f"error.{exc.code}"}}
        if uri.startswith(OTPAUTH_PREFIX) and len(uri) < 500:  # shown again (the user's own secret), never trusted for checking
            secret = dict(part.split("=", 1) for part in uri.split("?", 1)[-1].split("&") if "=" in part).get("secret", "")
            shown |= {"uri": uri, "secret": secret, "qr": _qr_data_uri(uri)}
        return _totp_page(request, user, shown, status=status_of(exc), code=exc.code)
    return see_other(f"{TOTP_PATH}?done=1")

