"""The console's core on the real stack (Anvil, SQLite, the indexer, the submitter): signing in and out with the
session cookie's flags, CSRF refusals that change nothing, session rotation, a disabled user's live session ending,
sign-in throttling (429 with Retry-After), the TOTP flow an admin can require, the admin pages closed to operators and
viewers and to another organisation's admin, the commands list with who sent each command and the contract's error
in words, the home page's "what needs me now" lists, and the vendored htmx being npm's file byte for byte. One
Chromium run on a phone viewport signs in, switches language and sees the home page in both, with no console error
and no CSP violation (axe-core reads these pages in tests/test_console_security.py)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import insert

from ledger_service import accounts, write_service
from ledger_service.app import create_app
from ledger_service.console.web import SESSION_COOKIE, SIGN_IN_COOKIE, Operator, checked_form, router_for
from ledger_service.tables import Command, CommandItem
from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from tests.chainkit import GTIN_A, Ledger, revert_to, snapshot
from tests.consolekit import CSP_LISTENER, create_users, csrf, error_code, field_error, launched_chromium, phone_context, problem, scrolls_sideways, served, signed_in_by_form, watch_errors
from tests.servicekit import Stack, prepare_stack, running_service, wait_command

pytestmark = pytest.mark.chain
PASSWORD = "correct horse battery staple"
USERS = {  # username: (organisation, role)
    "ann.admin": ("maker", "admin"),
    "mia.maker": ("maker", "operator"),
    "val.viewer": ("maker", "viewer"),
    "tom.totp": ("maker", "operator"),
    "wes.admin": ("warehouse", "admin"),
    "wil.ware": ("warehouse", "operator"),
    "dis.abled": ("warehouse", "operator"),
    "thr.ottle": ("warehouse", "operator"),
    "rot.ate": ("warehouse", "operator"),
}


@pytest.fixture(scope="module")
def console(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TestClient]]:
    """One service for the module (its tests use users of their own), on a chain rolled back afterwards."""
    snapshot_id = snapshot(deployed.w3)
    workdir = tmp_path_factory.mktemp("console-core")
    stack = prepare_stack(deployed, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    engine = make_engine(stack.service_db_url)
    create_users(engine, deployed, USERS, password=PASSWORD, titled=True)
    try:
        with running_service(stack) as client:
            yield stack, client
    finally:
        revert_to(deployed.w3, snapshot_id)


def browser(client: TestClient, **options: Any) -> TestClient:
    """A browser of its own (its own cookie jar) on the module's app."""
    return TestClient(client.app, **options)


def sign_in_form(web: TestClient, **params: str) -> tuple[Response, str]:
    page = web.get("/console/sign-in", params=params)
    assert page.status_code == 200, page.text
    return page, re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)


def sign_in(web: TestClient, username: str, password: str = PASSWORD, *, totp_code: str | None = None, next_path: str = "/console") -> Response:
    _, token = sign_in_form(web)
    data = {"username": username, "password": password, "signin_token": token, "next": next_path} | ({"totp_code": totp_code} if totp_code else {})
    return web.post("/console/sign-in", data=data, follow_redirects=False)


def signed_in(client: TestClient, username: str, **options: Any) -> TestClient:
    return signed_in_by_form(client, username, PASSWORD, **options)


def set_cookie(reply: Response, name: str) -> str:
    headers = [value for value in reply.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
    assert len(headers) == 1, reply.headers
    return headers[0]


def user_row(stack: Stack, username: str) -> dict[str, Any]:
    return accounts.get_user(make_engine(stack.service_db_url), username=username)


# --- signing in and out ----------------------------------------------------------------------------------------


def test_sign_in_sets_an_httponly_strict_session_cookie_for_the_console_only_secure_over_https(console):
    stack, client = console
    plain = sign_in(browser(client), "mia.maker")
    assert plain.status_code == 303 and plain.headers["location"] == "/console"
    cookie = set_cookie(plain, SESSION_COOKIE).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie and "secure" not in cookie

    tls = sign_in(browser(client, base_url="https://testserver"), "mia.maker")
    assert "secure" in set_cookie(tls, SESSION_COOKIE).lower().split("; ")

    # X-Forwarded-Proto counts only when the settings say a proxy in front sets it
    forwarded = browser(client, headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in set_cookie(sign_in(forwarded, "mia.maker"), SESSION_COOKIE).lower().split("; ")
    services = client.app.state.services  # type: ignore[attr-defined]
    original = services.settings
    services.settings = original.model_copy(update={"console_trust_forwarded_proto": True})
    try:
        page, token = sign_in_form(forwarded)
        form_cookie = set_cookie(page, SIGN_IN_COOKIE)
        assert "secure" in form_cookie.lower().split("; ")  # the browser talks https to the proxy: it keeps it
        behind = browser(client, headers={"X-Forwarded-Proto": "https"}, cookies={SIGN_IN_COOKIE: form_cookie.split(";")[0].split("=", 1)[1]})
        reply = behind.post("/console/sign-in", data={"username": "mia.maker", "password": PASSWORD, "signin_token": token}, follow_redirects=False)
        assert "secure" in set_cookie(reply, SESSION_COOKIE).lower().split("; ")
    finally:
        services.settings = original


def test_a_page_without_a_session_redirects_to_sign_in_and_back_to_local_pages_only(console):
    _, client = console
    web = browser(client)
    away = web.get("/console/commands?limit=5", follow_redirects=False)
    assert away.status_code == 303 and away.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fcommands%3Flimit%3D5"
    polled = web.get(f"/console/commands/{uuid.uuid4()}/status", headers={"HX-Request": "true"})  # an htmx poll after the session ended
    assert polled.status_code == 401 and error_code(polled) == "not_signed_in" and polled.headers["hx-redirect"].startswith("/console/sign-in?next=")
    posted = web.post("/console/sign-out", data={}, follow_redirects=False)
    assert posted.status_code == 401 and error_code(posted) == "not_signed_in"
    _, token = sign_in_form(web)
    back = web.post("/console/sign-in", data={"username": "mia.maker", "password": PASSWORD, "signin_token": token, "next": "/console/commands?limit=5"}, follow_redirects=False)
    assert back.headers["location"] == "/console/commands?limit=5"
    for elsewhere in ("https://evil.example/console", "//evil.example/console", "/console/../v1/parts", "/\\evil.example", "/v1/parts", "javascript:alert(1)"):
        other = browser(client)
        _, token = sign_in_form(other)
        reply = other.post("/console/sign-in", data={"username": "mia.maker", "password": PASSWORD, "signin_token": token, "next": elsewhere}, follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"] == "/console", elsewhere


def test_a_new_sign_in_rotates_the_session_and_the_old_token_stops_working(console):
    _, client = console
    web = browser(client)
    first = set_cookie(sign_in(web, "rot.ate"), SESSION_COOKIE).split(";")[0].split("=", 1)[1]
    assert web.get("/console", follow_redirects=False).status_code == 200
    second = set_cookie(sign_in(web, "rot.ate"), SESSION_COOKIE).split(";")[0].split("=", 1)[1]
    assert second != first
    stale = browser(client, cookies={SESSION_COOKIE: first})
    assert stale.get("/console", follow_redirects=False).status_code == 303  # the browser's former session ended
    assert web.get("/console", follow_redirects=False).status_code == 200


def test_sign_in_refusals_say_why_without_saying_which_part_was_wrong(console):
    _, client = console
    web = browser(client, headers={"Accept-Language": "en"})
    wrong = sign_in(web, "mia.maker", "not the password at all")
    assert wrong.status_code == 401 and error_code(wrong) == "bad_credentials" and problem(wrong) == "Wrong username, password or code."
    nobody = sign_in(web, "no.such.user", "not the password at all")
    assert nobody.status_code == 401 and error_code(nobody) == "bad_credentials"
    assert 'value="mia.maker"' in wrong.text and "not the password" not in wrong.text  # the name kept, never the password
    empty = sign_in(web, "mia.maker", "")
    assert empty.status_code == 422 and field_error(empty, "password") == "Enter your password."
    forged = web.post("/console/sign-in", data={"username": "mia.maker", "password": PASSWORD, "signin_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 403 and error_code(forged) == "csrf_failed" and SESSION_COOKIE not in forged.headers.get("set-cookie", "")


def test_sign_out_needs_the_csrf_token_and_ends_the_session(console):
    _, client = console
    web = signed_in(client, "mia.maker")
    home = web.get("/console")
    refused = web.post("/console/sign-out", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403 and error_code(refused) == "csrf_failed"
    assert web.get("/console", follow_redirects=False).status_code == 200  # still signed in
    done = web.post("/console/sign-out", data={"csrf_token": csrf(home)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/sign-in"
    assert 'max-age=0' in set_cookie(done, SESSION_COOKIE).lower()
    token = home.request.headers["cookie"].split(f"{SESSION_COOKIE}=")[1].split(";")[0]
    assert browser(client, cookies={SESSION_COOKIE: token}).get("/console", follow_redirects=False).status_code == 303


def test_sign_in_is_throttled_per_account_with_429_and_retry_after(console):
    _, client = console
    web = browser(client, headers={"Accept-Language": "en"})
    for _ in range(accounts.ACCOUNT_FAILURES):
        assert sign_in(web, "thr.ottle", "wrong password, again").status_code == 401
    throttled = sign_in(web, "thr.ottle", PASSWORD)  # even the right password now
    assert throttled.status_code == 429 and error_code(throttled) == "sign_in_throttled"
    wait = int(throttled.headers["retry-after"])
    assert 0 < wait <= accounts.THROTTLE_WINDOW
    assert problem(throttled) == f"Too many failed sign-ins: try again in {wait} s."
    assert SESSION_COOKIE not in throttled.headers.get("set-cookie", "")


def test_a_disabled_users_live_session_ends_at_once(console):
    stack, client = console
    user = signed_in(client, "dis.abled")
    assert user.get("/console", follow_redirects=False).status_code == 200
    admin = signed_in(client, "wes.admin")
    page = admin.get("/console/admin")
    assert admin.post("/console/admin/users/dis.abled/disable", data={"csrf_token": csrf(page)}, follow_redirects=False).status_code == 303
    assert user_row(stack, "dis.abled")["disabled"]
    assert user.get("/console", follow_redirects=False).status_code == 303
    assert sign_in(browser(client), "dis.abled").status_code == 401
    assert admin.post("/console/admin/users/dis.abled/enable", data={"csrf_token": csrf(page)}, follow_redirects=False).status_code == 303
    assert sign_in(browser(client), "dis.abled").status_code == 303


# --- CSRF, roles, organisations ---------------------------------------------------------------------------------


def test_a_missing_wrong_or_cross_site_csrf_token_is_refused_with_403_and_nothing_changes(console):
    stack, client = console
    admin = signed_in(client, "ann.admin")
    token = csrf(admin.get("/console/admin"))
    form = {"username": "new.person", "role": "operator", "password": "a long enough password"}
    for data, headers in (
        (form, {}),
        (form | {"csrf_token": "x" * len(token)}, {}),
        (form | {"csrf_token": token}, {"Origin": "https://evil.example"}),
    ):
        refused = admin.post("/console/admin/users", data=data, headers=headers)
        assert refused.status_code == 403 and error_code(refused) == "csrf_failed", refused.text
        assert "未做任何更改" in problem(refused)  # Chinese unless the browser asks otherwise
    assert "new.person" not in [user["username"] for user in accounts.list_users(make_engine(stack.service_db_url))]
    keys_page = admin.get("/console/admin/keys")
    assert admin.post("/console/admin/keys", data={"label": "no csrf"}).status_code == 403
    assert "no csrf" not in admin.get("/console/admin/keys").text and keys_page.status_code == 200


def test_admin_pages_are_refused_to_operators_and_viewers(console):
    _, client = console
    for username in ("mia.maker", "val.viewer"):
        web = signed_in(client, username)
        token = csrf(web.get("/console"))
        for path in ("/console/admin", "/console/admin/keys", "/console/admin/sites"):
            page = web.get(path)
            assert page.status_code == 403 and error_code(page) == "admin_only", (username, path)
        for path in ("/console/admin/users", "/console/admin/keys", "/console/admin/totp", "/console/admin/users/ann.admin/disable"):
            assert web.post(path, data={"csrf_token": token, "username": "x.y.z", "role": "admin"}).status_code == 403
        assert 'href="/console/admin"' not in web.get("/console").text  # not offered either


def test_a_viewer_may_read_but_not_act(console):
    _, client = console
    probe = router_for("probe")

    @probe.post("/probe/act")
    async def act(request: Request, user: Operator) -> PlainTextResponse:
        await checked_form(request, user)
        return PlainTextResponse("acted")

    client.app.include_router(probe)  # type: ignore[attr-defined]
    viewer, operator = signed_in(client, "val.viewer"), signed_in(client, "mia.maker")
    refused = viewer.post("/console/probe/act", data={"csrf_token": csrf(viewer.get("/console"))})
    assert refused.status_code == 403 and error_code(refused) == "read_only_role"
    assert operator.post("/console/probe/act", data={"csrf_token": csrf(operator.get("/console"))}).text == "acted"


def test_an_admin_cannot_touch_another_organisations_users_or_keys(console):
    stack, client = console
    maker_admin = signed_in(client, "ann.admin")
    token = csrf(maker_admin.get("/console/admin"))
    assert "wil.ware" not in maker_admin.get("/console/admin").text
    for action in ("disable", "reset", "role"):
        refused = maker_admin.post(f"/console/admin/users/wil.ware/{action}", data={"csrf_token": token, "role": "viewer"})
        assert refused.status_code == 404 and error_code(refused) == "unknown_user", action
    assert user_row(stack, "wil.ware")["role"] == "operator" and not user_row(stack, "wil.ware")["disabled"]
    assert sign_in(browser(client), "wil.ware").status_code == 303  # its password unchanged

    warehouse_key = stack.api_keys["warehouse"]
    key_id = warehouse_key.split("_")[1]
    refused = maker_admin.post(f"/console/admin/keys/{key_id}/revoke", data={"csrf_token": token})
    assert refused.status_code == 404 and error_code(refused) == "unknown_api_key"
    assert client.get("/v1/inventory", headers=stack.headers("warehouse")).status_code == 200  # the key still works
    assert key_id not in maker_admin.get("/console/admin/keys").text


def test_an_admin_adds_a_user_resets_a_password_and_manages_api_keys(console):
    stack, client = console
    admin = signed_in(client, "ann.admin", headers={"Accept-Language": "en"})
    token = csrf(admin.get("/console/admin"))
    bad = admin.post("/console/admin/users", data={"csrf_token": token, "username": "N", "role": "boss", "password": "short"})
    assert bad.status_code == 422 and error_code(bad) == "invalid_form"
    assert field_error(bad, "username") and field_error(bad, "role") == "A role is admin, operator or viewer." and field_error(bad, "password") == "A password has at least 10 characters."
    added = admin.post("/console/admin/users", data={"csrf_token": token, "username": "new.clerk", "role": "viewer", "display_name": "New Clerk"})
    assert added.status_code == 200
    password = re.search(r'<code class="secret" id="new-password">([^<]+)</code>', added.text).group(1)
    assert sign_in(browser(client), "new.clerk", password).status_code == 303
    taken = admin.post("/console/admin/users", data={"csrf_token": token, "username": "new.clerk", "role": "viewer"})
    assert taken.status_code == 409 and error_code(taken) == "username_taken"

    reset = admin.post("/console/admin/users/new.clerk/reset", data={"csrf_token": token})
    fresh = re.search(r'<code class="secret" id="new-password">([^<]+)</code>', reset.text).group(1)
    assert fresh != password and sign_in(browser(client), "new.clerk", password).status_code == 401
    assert sign_in(browser(client), "new.clerk", fresh).status_code == 303
    promoted = admin.post("/console/admin/users/new.clerk/role", data={"csrf_token": token, "role": "operator", "sites": "service-site"}, follow_redirects=False)
    assert promoted.status_code == 303 and user_row(stack, "new.clerk")["role"] == "operator" and user_row(stack, "new.clerk")["sites"] == ["service-site"]
    assert admin.post("/console/admin/users/ann.admin/disable", data={"csrf_token": token}).status_code == 403  # not itself

    created = admin.post("/console/admin/keys", data={"csrf_token": token, "label": "ERP link"})
    key = re.search(r'<code class="secret" id="new-key">(plk_[^<]+)</code>', created.text).group(1)
    assert client.get("/v1/inventory", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = admin.get("/console/admin/keys")
    assert "ERP link" in listed.text and key.split("_", 2)[2] not in listed.text  # the secret (base64url: it may hold "_") is never shown again
    revoked = admin.post(f"/console/admin/keys/{key.split('_')[1]}/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert revoked.status_code == 303
    assert client.get("/v1/inventory", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    sites = admin.get("/console/admin/sites")
    assert stack.site_keys["maker"] in sites.text and "service-site" in sites.text
    assert stack.site_keys["warehouse"] not in sites.text


def test_an_organisation_that_requires_totp_sends_its_users_through_enrolment_then_asks_for_codes(console):
    stack, client = console
    admin = signed_in(client, "ann.admin")
    token = csrf(admin.get("/console/admin"))
    assert admin.post("/console/admin/totp", data={"csrf_token": token, "required": "on"}, follow_redirects=False).status_code == 303
    try:
        user = signed_in(client, "tom.totp", headers={"Accept-Language": "en"})
        detour = user.get("/console/commands", follow_redirects=False)
        assert detour.status_code == 303 and detour.headers["location"] == "/console/totp"
        page = user.get("/console/totp")
        assert 'id="totp-required"' in page.text
        begun = user.post("/console/totp/begin", data={"csrf_token": csrf(page)})
        assert begun.status_code == 200 and 'src="data:image/svg+xml' in begun.text
        secret = re.search(r'<code class="secret" id="totp-secret">([A-Z2-7]+)</code>', begun.text).group(1)
        wrong = user.post("/console/totp/confirm", data={"csrf_token": csrf(page), "code": "000000" if accounts.totp_now(secret) != "000000" else "111111", "uri": "otpauth://totp/x?secret=" + secret})
        assert wrong.status_code == 400 and error_code(wrong) == "totp_invalid" and field_error(wrong, "code").startswith("The code does not match")
        confirmed = user.post("/console/totp/confirm", data={"csrf_token": csrf(page), "code": accounts.totp_now(secret)}, follow_redirects=False)
        assert confirmed.status_code == 303
        assert user.get("/console/commands", follow_redirects=False).status_code == 200

        fresh = browser(client, headers={"Accept-Language": "en"})
        asked = sign_in(fresh, "tom.totp")
        assert asked.status_code == 401 and error_code(asked) == "totp_required" and 'name="totp_code"' in asked.text
        later = accounts.totp_now(secret, time.time() + accounts.TOTP_STEP)  # the next step's code: each code counts once
        assert sign_in(fresh, "tom.totp", totp_code=later).status_code == 303
        assert admin.get("/console/admin", follow_redirects=False).headers["location"] == "/console/totp"  # the admin too
    finally:
        accounts.set_require_totp(make_engine(stack.service_db_url), org_id=stack.ledger.orgs["maker"].id, required=False)


# --- commands and home ------------------------------------------------------------------------------------------


def _rejected_command(stack: Stack, *, org: str, actor: str, error_name: str) -> str:
    """A command as the submitter leaves one the contract refused (written directly: making the chain refuse a
    pre-checked command takes a race)."""
    command_id, now = str(uuid.uuid4()), time.time()
    with make_engine(stack.service_db_url).begin() as conn:
        conn.execute(insert(Command.__table__).values(
            id=command_id, org_id=stack.ledger.orgs[org].id, api_key_id="test", actor=actor, kind="receive",
            site_key=stack.site_keys[org], part_count=1, summary="{}", created_at=now,
        ))  # fmt: skip
        conn.execute(insert(CommandItem.__table__).values(
            command_id=command_id, signer=stack.site_keys[org], kind="receive", pack_key="[]", payload=json.dumps({"parts": []}), part_count=1,
            state="rejected", tx_id=None, not_before=0.0, error_name=error_name, error_args="[]", error_message=f"{error_name}()", created_at=now, updated_at=now,
        ))  # fmt: skip
    return command_id


def test_the_commands_list_shows_who_sent_each_command_and_its_status_in_words(console):
    stack, client = console
    ledger = stack.ledger
    by_key = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "LOT-CMD-1", "serials": ["CMD-1"]})
    assert by_key.status_code == 202, by_key.text
    services = client.app.state.services  # type: ignore[attr-defined]
    _, mia = accounts.sign_in(services.service_engine, services.index_engine, username="mia.maker", password=PASSWORD, totp_code=None, client="test")
    by_user = write_service.submit_register(services, mia.principal, gtin=GTIN_A, lot="LOT-CMD-2", serials=["CMD-2"], request_sha256="0" * 64)
    for answer in (by_key.json(), by_user):
        assert wait_command(stack, "maker", answer["command_id"])["status"] == "confirmed"
    rejected = _rejected_command(stack, org="maker", actor="user:mia.maker", error_name="PartLedgerNotRecipient")

    web = signed_in(client, "mia.maker")
    listed = web.get("/console/commands")
    assert listed.status_code == 200
    key_id = stack.api_keys["maker"].split("_")[1]
    rows = {cid: re.search(rf'<li class="command" id="command-{cid}">(.*?)</li>', listed.text, re.S).group(1) for cid in (by_key.json()["command_id"], by_user["command_id"], rejected)}
    assert f'<span class="actor-name">key:{key_id}</span>' in rows[by_key.json()["command_id"]]
    assert '<span class="actor-name">user:mia.maker</span>' in rows[by_user["command_id"]]
    assert "已确认" in rows[by_user["command_id"]] and "hx-trigger" not in rows[by_user["command_id"]]  # final: no more polling
    assert "该配件不是发给您的组织的。" in rows[rejected] and "PartLedgerNotRecipient" in rows[rejected]
    assert listed.text.index(rejected) < listed.text.index(by_user["command_id"])  # newest first

    english = web.get(f"/console/commands/{rejected}?lang=en")
    assert "The part was not shipped to your organisation." in english.text and "lang=en" in english.headers["set-cookie"]
    assert web.get(f"/console/commands/{rejected}/status?row=1").text.count("badge-rejected") == 1
    only = web.get("/console/commands?status=rejected&limit=1")
    assert rejected in only.text and by_user["command_id"] not in only.text
    other = signed_in(client, "wil.ware").get(f"/console/commands/{rejected}")
    assert other.status_code == 404 and error_code(other) == "unknown_command"  # another organisation's command

    paged = web.get("/console/commands?limit=1")
    assert 'rel="next"' in paged.text and web.get("/console/commands?limit=100000").status_code == 200
    assert web.get("/console/commands?cursor=%%%").status_code == 400


def test_a_pending_command_polls_its_status_every_two_seconds(console):
    from ledger_service.console.i18n import default_catalogue
    from ledger_service.console.web import templates

    _ = default_catalogue().translator("en")
    command = {"command_id": str(uuid.uuid4()), "status": "submitted", "errors": [], "block": None}
    fragment = templates().get_template("console/commands_status.html").render(
        command=command, final=("confirmed", "rejected"), poll_seconds=2, row=True, _=_, CONSOLE="/console", error_text=lambda name, fallback="": name,
    )  # fmt: skip
    assert f'hx-get="/console/commands/{command["command_id"]}/status?row=1"' in fragment and 'hx-trigger="every 2s"' in fragment
    assert "submitted" in fragment


def test_home_lists_what_needs_me_now_with_counts(console):
    stack, client = console
    ledger, maker, warehouse = stack.ledger, stack.headers("maker"), stack.headers("warehouse")

    def confirmed(reply: Response, org: str = "maker") -> None:
        assert reply.status_code in (201, 202), reply.text
        assert wait_command(stack, org, reply.json()["command_id"])["status"] == "confirmed"

    confirmed(client.post("/v1/parts/register", headers=maker, json={"gtin": GTIN_A, "lot": "LOT-HOME", "serials": ["H-1", "H-2", "H-3", "H-4"]}))
    parts = client.get("/v1/parts", params={"gtin": GTIN_A}, headers=maker).json()["items"]
    home_parts = {p["serial"]: p for p in parts if p["serial"].startswith("H-")}
    lot = home_parts["H-1"]["lot"]["number"]
    warehouse_id = ledger.orgs["warehouse"].id
    confirmed(client.post("/v1/parts/ship", headers=maker, json={"to_org": warehouse_id, "parts": [{"gtin": GTIN_A, "serial": "H-1"}, {"gtin": GTIN_A, "serial": "H-2"}]}))
    confirmed(client.post("/v1/parts/receive", headers=warehouse, json={"parts": [{"gtin": GTIN_A, "serial": "H-1"}, {"gtin": GTIN_A, "serial": "H-2"}]}), "warehouse")
    confirmed(client.post("/v1/parts/ship", headers=maker, json={"to_org": warehouse_id, "parts": [{"gtin": GTIN_A, "serial": "H-3"}, {"gtin": GTIN_A, "serial": "H-4"}]}))
    confirmed(client.post("/v1/lots/recall", headers=maker, json={"lot": lot, "notice_hash": "0x" + "ab" * 32}))
    proposal = client.post("/v1/documents/proposals", headers=maker, json={"doc_hash": "0x" + "cd" * 32, "doc_type": "invoice", "counterparty": warehouse_id})
    assert proposal.status_code == 201, proposal.text
    _rejected_command(stack, org="warehouse", actor="user:wil.ware", error_name="PartLedgerWrongStatus")
    _rejected_command(stack, org="warehouse", actor="user:rot.ate", error_name="PartLedgerWrongStatus")  # someone else's

    web = signed_in(client, "wil.ware", headers={"Accept-Language": "en"})
    home = web.get("/console")
    assert home.status_code == 200

    def count(section: str) -> int:
        return int(re.search(rf'id="home-{section}-count">(\d+)<', home.text).group(1))

    assert count("inbound") == 1 and "2 part(s) from " in home.text
    assert count("rejected") == 1 and "The part&#39;s status does not allow this." in home.text
    assert count("recalls") == 1 and f"Lot LOT-HOME: 2 held, 0 installed" in home.text
    assert count("documents") == 1 and 'href="/console/documents/proposals/' + proposal.json()["proposal_id"] in home.text
    assert 'id="home-flags"' not in home.text  # clone flags are the manufacturers' (warehouse is none)
    section = web.get("/console/home/inbound")
    assert section.status_code == 200 and "2 part(s) from " in section.text
    consignment = re.search(r'href="(/console/custody/inbound/[^"]+)"', section.text).group(1)  # as the inbound page groups it
    assert consignment in web.get("/console/custody/inbound").text and web.get(consignment).status_code == 200
    assert web.get("/console/home/flags").status_code == 404

    maker_home = signed_in(client, "mia.maker").get("/console")
    assert 'id="home-flags-count">0<' in maker_home.text and 'id="home-inbound-count">0<' in maker_home.text


# --- the frame: headers, static files, language ------------------------------------------------------------------


def test_every_console_answer_carries_the_strict_csp_and_static_files_are_cached(console):
    _, client = console
    web = signed_in(client, "mia.maker")
    page = web.get("/console")
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert csp.startswith("default-src 'none'; script-src 'self' 'nonce-") and "frame-ancestors 'none'" in csp and "style-src 'self';" in csp
    assert page.text.count(f'nonce="{nonce}"') == 2 and " style=" not in page.text and " on" + "click=" not in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["x-content-type-options"] == "nosniff"
    assert web.get("/console").headers["content-security-policy"] != csp  # a fresh nonce per answer
    for path in ("/console/sign-in", "/console/nowhere", "/console/commands/not-an-id"):
        assert "content-security-policy" in browser(client).get(path).headers
    missing = web.get("/console/nowhere")
    assert missing.status_code == 404 and error_code(missing) == "not_found" and missing.headers["content-type"].startswith("text/html")
    assert client.get("/v1/nowhere").headers["content-type"] == "application/json"  # the API keeps its JSON errors
    assert "/console" not in json.dumps(client.get("/openapi.json").json()["paths"])  # pages are no API

    script = re.search(r'src="(/console/static/htmx\.min\.js\?v=[0-9a-f]+)"', page.text).group(1)
    served_js = web.get(script)
    assert served_js.status_code == 200 and served_js.headers["content-type"].startswith("text/javascript")
    assert served_js.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = web.get(re.search(r'href="(/console/static/console\.css\?v=[0-9a-f]+)"', page.text).group(1))
    assert css.headers["content-type"].startswith("text/css")


def test_the_language_follows_the_verify_pages_rules_and_the_switch_sticks(console):
    _, client = console
    web = signed_in(client, "mia.maker")
    assert '<html lang="zh-CN">' in web.get("/console").text  # no preference: Chinese
    assert '<html lang="en">' in browser(client, headers={"Accept-Language": "en-GB,en;q=0.9"}).get("/console/sign-in").text
    switched = web.get("/console?lang=en")
    assert '<html lang="en">' in switched.text and 'href="/console?lang=zh"' in switched.text
    assert "lang=en; Path=/" in switched.headers["set-cookie"]
    assert '<html lang="en">' in web.get("/console/commands").text  # the cookie keeps it


def test_the_vendored_htmx_is_the_npm_packages_file():
    vendored = REPO_ROOT / "ledger_service" / "console" / "static" / "htmx.min.js"
    npm = REPO_ROOT / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"
    assert vendored.read_bytes() == npm.read_bytes()
    package = json.loads((REPO_ROOT / "node_modules" / "htmx.org" / "package.json").read_text())
    assert package["version"] == json.loads((REPO_ROOT / "package.json").read_text())["dependencies"]["htmx.org"].lstrip("^~=")


# --- in Chromium ---------------------------------------------------------------------------------------------------


def test_a_phone_signs_in_and_reads_home_in_both_languages_without_console_errors_or_csp_violations(console, artifacts_dir):
    """The sign-in form, the language switch and its cookie, the vendored htmx running under the CSP, no sideways
    scrolling, and no CSP violation or console error on the admin pages either. axe-core reads every one of these
    pages, in zh and en, in tests/test_console_security.py (test_axe_core_finds_nothing_serious_...)."""
    from playwright.sync_api import expect

    stack, _ = console
    with served(create_app(stack.settings(submitter=False))) as base, launched_chromium() as chromium:
        context = phone_context(chromium, locale="zh-CN")
        context.add_init_script(CSP_LISTENER)
        problems: list[str] = []
        page = watch_errors(context.new_page(), problems)

        def no_csp_violation(what: str) -> None:
            assert page.evaluate("window.__csp") == [], what

        page.goto(f"{base}/console/commands")
        expect(page.locator("h1")).to_have_text("登录")
        no_csp_violation("sign-in")
        page.locator("#f-username").fill("ann.admin")
        page.locator("#f-password").fill(PASSWORD)
        page.locator("#sign-in").click()
        expect(page.locator("h1")).to_have_text("命令")  # back where it was going
        no_csp_violation("commands")
        page.locator("nav.areas a[href='/console']").click()
        expect(page.locator("h1")).to_have_text("待办事项")
        assert not scrolls_sideways(page)  # on a phone
        no_csp_violation("home zh")
        page.screenshot(path=str(artifacts_dir / "console-home-phone-zh.png"), full_page=True)

        page.locator("#lang-switch").click()
        expect(page.locator("h1")).to_have_text("What needs me now")
        expect(page.locator("#lang-switch")).to_have_text("中文")
        page.reload()
        expect(page.locator("h1")).to_have_text("What needs me now")  # the cookie keeps the choice
        assert page.evaluate("typeof htmx") == "object"  # the vendored script ran under the CSP
        no_csp_violation("home en")
        page.screenshot(path=str(artifacts_dir / "console-home-phone-en.png"), full_page=True)
        for path in ("/console/admin/keys", "/console/admin/sites", "/console/totp", "/console/home/rejected", "/console/nowhere", "/console/admin"):
            page.goto(base + path)
            no_csp_violation(path)
        page.screenshot(path=str(artifacts_dir / "console-admin-phone-en.png"), full_page=True)

        page.locator("#sign-out").click()
        expect(page.locator("h1")).to_have_text("Sign in")
        no_csp_violation("signed out")
        assert [text for text in problems if "404" not in text] == [] and len(problems) <= 1  # the one 404 page asked for
    for name in ("console-home-phone-zh.png", "console-home-phone-en.png", "console-admin-phone-en.png"):
        assert (artifacts_dir / name).stat().st_size > 10_000
