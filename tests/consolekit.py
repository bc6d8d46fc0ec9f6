"""Test kit for the member console: browsers with a session (the cookie on every request, the session's CSRF token
in every form), reading a console page's error code and field errors, the app under a real uvicorn for Chromium,
and Chromium itself: its settings, a phone's context signed in, the page's console errors, axe-core's check.

What the browser tests share lives here, once: every console test module takes it from this kit (none imports
another test module). Accessibility: tests/test_console_security.py runs axe-core on every console page (each GET
route, zh and en); a module's own Chromium test runs it only on states no GET reaches (a form's answer)."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from httpx import Response

from ledger_service import accounts
from ledger_service.console.web import SESSION_COOKIE
from partledger.artifacts import REPO_ROOT
from tests.ports import free_port
from tests.servicekit import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
AXE = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
# axe-core's serious and critical findings on the page, as "rule-id selector, selector" lines
SERIOUS = (
    "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.filter(v => ['serious', 'critical'].includes(v.impact))"
    ".map(v => v.id + ' ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')))"
)
# collects the page's CSP violations in window.__csp, from before any of its own scripts run
CSP_LISTENER = "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));"


def error_code(page: Response) -> str | None:
    """The machine code a console page shows for a 4xx/5xx (None on a page without one)."""
    found = re.search(r'<code id="error-code">([^<]+)</code>', page.text)
    return found.group(1) if found else None


def problem(page: Response) -> str:
    found = re.search(r'<p class="problem-text">([^<]*)</p>', page.text)
    return html.unescape(found.group(1)) if found else ""


def field_error(page: Response, field: str) -> str | None:
    """The error shown next to a form's field (None when there is none)."""
    found = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]*)</p>', page.text)
    return html.unescape(found.group(1)) if found else None


def csrf(page: Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def create_users(engine: Any, ledger: Any, users: dict[str, tuple[str, str]], *, password: str, titled: bool = False) -> None:
    """Creates `users` ({username: (organisation, role)}) with one password; `titled`: each named by its username
    in title case."""
    for username, (org, role) in users.items():
        accounts.create_user(engine, org_id=ledger.orgs[org].id, username=username, password=password, role=role, display_name=username.title() if titled else "")


def sign_in_token(web: TestClient) -> str:
    """Opens the sign-in form in `web` (setting its own CSRF cookie) and returns the form's token."""
    page = web.get("/console/sign-in")
    assert page.status_code == 200, page.text
    return re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)


def sign_in_by_form(web: TestClient, username: str, password: str, **extra: str) -> Response:
    token = sign_in_token(web)
    data = {"username": username, "password": password, "signin_token": token} | extra
    return web.post("/console/sign-in", data=data, follow_redirects=False)


def signed_in_by_form(client: TestClient, username: str, password: str, **options: Any) -> TestClient:
    """A browser of its own (its own cookie jar, `options` for its TestClient) on `client`'s app, signed in through
    the sign-in form."""
    web = TestClient(client.app, **options)
    reply = sign_in_by_form(web, username, password)
    assert reply.status_code == 303, reply.text
    return web


def form_data(fields: dict[str, Any] | list[tuple[str, Any]] | None) -> dict[str, Any]:
    """httpx form data from a dict or from (name, value) pairs: a name given more than once becomes a list."""
    merged: dict[str, Any] = {}
    for name, value in fields.items() if isinstance(fields, dict) else fields or []:
        if name in merged:
            merged[name] = (merged[name] if isinstance(merged[name], list) else [merged[name]]) + [value]
        else:
            merged[name] = value
    return merged


@dataclass
class Session:
    """A signed-in user's browser: the session cookie in its jar, the session's CSRF token in every form."""

    client: TestClient
    username: str
    token: str
    csrf: str
    lang: str = "en"  # the Accept-Language sent; "" for none

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return ({"Accept-Language": self.lang} if self.lang else {}) | (extra or {})

    def get(self, url: str, *, follow: bool = False, params: Any = None, **headers: str) -> Response:
        return self.client.get(url, params=params, headers=self.headers(headers), follow_redirects=follow)

    def post(self, url: str, data: dict[str, Any] | list[tuple[str, Any]] | None = None, *, files: Any = None, csrf: str | None | bool = True, **headers: str) -> Response:
        """POSTs a form (a dict, or (name, value) pairs where a name repeats); `csrf`: True for the session's token,
        None or False for none, a string for that token."""
        token = self.csrf if csrf is True else (csrf or None)
        form = ({"csrf_token": token} if token is not None else {}) | form_data(data)
        return self.client.post(url, data=form, files=files, headers=self.headers(headers), follow_redirects=False)


def session_of(client: TestClient, username: str, password: str, *, lang: str = "en", where: str = "consolekit") -> Session:
    """Signs `username` in through the accounts service (no form, no throttle bookkeeping for the test client)."""
    services = client.app.state.services  # type: ignore[attr-defined]
    token, user = accounts.sign_in(services.service_engine, services.index_engine, username=username, password=password, totp_code=None, client=where)
    # the cookie in the client's jar (not a header): httpx keeps the jar across redirects, and drops a Cookie header
    return Session(TestClient(client.app, cookies={SESSION_COOKIE: token}), username, token, user.csrf_token, lang)


@contextmanager
def served(app: Any, *, lifespan: str = "on") -> Iterator[str]:
    """The app under a real uvicorn on a loopback port (a browser needs one); its base URL. lifespan="off" serves an
    app whose lifespan already runs (a TestClient's), so that both share its state (label jobs, the audit log)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def launched_chromium(*extra_args: str) -> Iterator[Any]:
    """Chromium under Playwright (CHROMIUM_ARGS and `extra_args`), closed afterwards; the test fails without it."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium fonts-wqy-microhei)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


def phone_context(chromium: Any, *, locale: str, token: str | None = None, **options: Any) -> Any:
    """A phone-sized browser context (`options` over PHONE), with the session cookie `token` as the sign-in sets it."""
    context = chromium.new_context(**(PHONE | options), locale=locale)
    if token is not None:
        context.add_cookies([{"name": SESSION_COOKIE, "value": token, "domain": "127.0.0.1", "path": "/console", "httpOnly": True, "sameSite": "Strict"}])
    return context


def watch_errors(page: Any, problems: list[str], *, who: str = "") -> Any:
    """Collects the page's console errors and uncaught exceptions in `problems` (each after `who`, when given)."""
    prefix = f"{who}: " if who else ""
    page.on("console", lambda message: problems.append(prefix + message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"{prefix}{error}"))
    return page


def scrolls_sideways(page: Any) -> bool:
    """Whether the page is wider than a phone's screen."""
    return page.evaluate("document.documentElement.scrollWidth") > PHONE["viewport"]["width"]


def axe_findings(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now. npm's file is evaluated by the test
    (through the debugger protocol, so the page's CSP does not stop it), not served."""
    page.evaluate(AXE.read_text())
    return page.evaluate(SERIOUS)
