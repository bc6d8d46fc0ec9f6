"""The member console's security acceptance on one real stack (Anvil, SQLite, the indexer, the submitter), with every
console route taken from the app itself, so that a route added later is covered or fails these tests:

- CSRF: every state-changing console route refuses a missing and a wrong token with 403 csrf_failed, and nothing
  changes (users, API keys, commands, proposals, settings, the chain); the sign-in form's own token likewise.
- A matrix over every console route (GET and POST) and every role of three organisations: organisation A (the
  maker), organisation B (another maker) and an auditor. B never sees A's data (commands, users, API keys, lot codes,
  part histories, the salted VIN hash of a vehicle A's part went into, proposals, documents, label jobs) and cannot
  act on it; a viewer cannot act; the auditor reads consortium data but none of A's private data (users, API keys,
  commands); nobody but the installing workshop sees a VIN in clear. Reading pages changes nothing.
- Sign-in throttling (429 with Retry-After, per account and per client), and a disabled user's live session ending.
- The session cookie's flags.
- XSS in Chromium: lot codes, serials, an organisation's name, a user's display name and a document's file name and
  kind holding script render inert (no dialog, no script run, no console error, no CSP violation), shown as text;
  so do script-holding query parameters and paths that pages show back.
- Accessibility: axe-core finds nothing serious or critical on any console page, in Chinese and English.

What fits where (the XSS payloads): an organisation's name and a display name take the whole
`<script>alert(1)</script>"'><img src=x onerror=alert(1)>`; lot codes and serials are at most 20 characters of GS1
character set 82 (no space), so they hold `<script>a()</script>` (20), `"'><svg/onload=a()>` (19) and
`<svg/onload=alert()>` (20), where `a` is a function the test defines in the page to see a payload run; a document's
file name holds `"'><img src=x onerror=alert(1)>.pdf` (a file name has no slash) and its kind
`<script>alert(1)</script>`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import text

from ledger_service import accounts
from ledger_service.auth import create_api_key
from ledger_service.console.home import SECTION_BY_NAME
from ledger_service.console.web import SESSION_COOKIE, SIGN_IN_COOKIE
from partledger.db import make_engine
from partledger.ids import part_id
from partledger.model import Role
from tests.chainkit import GTIN_A, GTIN_B, Ledger, revert_to, snapshot
from tests.consolekit import AXE, CSP_LISTENER, SERIOUS, Session, error_code, launched_chromium, phone_context, problem, served, session_of, sign_in_by_form
from tests.proofkit import anchor_document
from tests.servicekit import Stack, prepare_stack, running_service, wait_command, wait_until

pytestmark = pytest.mark.chain

PASSWORD = "security-console-password-7"
SCRIPT_FULL = "<script>alert(1)</script>\"'><img src=x onerror=alert(1)>"
LOT_XSS = ("<script>a()</script>", "\"'><svg/onload=a()>")  # lot codes: <= 20 characters of GS1 set 82
SERIAL_XSS = ("<script>a()</script>", "\"'><svg/onload=a()>", "<svg/onload=alert()>")
FILENAME_XSS = "\"'><img src=x onerror=alert(1)>.pdf"
DOC_TYPE_XSS = "<script>alert(1)</script>"
VIN = "1M8GDM9AXKP042788"  # a valid ISO 3779 VIN (check digit X)

USERS = {  # username: (organisation, role, display name)
    "aa.admin": ("maker", "admin", "Alfa Admin Qz1"),
    "aa.oper": ("maker", "operator", "Alfa Operator Qz2"),
    "aa.view": ("maker", "viewer", "Alfa Viewer Qz3"),
    "aa.target": ("maker", "viewer", "Alfa Target Qz4"),  # what another organisation's admin aims at
    "aa.xss": ("maker", "viewer", SCRIPT_FULL),
    "aa.disabled": ("maker", "operator", "Alfa Soon Disabled Qz5"),
    "aa.throttle": ("maker", "operator", "Alfa Throttled Qz6"),
    "bb.admin": ("maker2", "admin", "Bravo Admin"),
    "bb.oper": ("maker2", "operator", "Bravo Operator"),
    "bb.view": ("maker2", "viewer", "Bravo Viewer"),
    "au.oper": ("auditor", "operator", "Audit Operator"),
    "au.view": ("auditor", "viewer", "Audit Viewer"),
    "ws.oper": ("workshop", "operator", "Workshop Operator"),
    "xx.oper": ("xss-org", "operator", SCRIPT_FULL),
}
MATRIX = ("aa.admin", "aa.oper", "aa.view", "bb.admin", "bb.oper", "bb.view", "au.oper", "au.view")
ORG_A, ORG_B = "maker", "maker2"
A_KEY_LABEL = "alfa-key-label-Qz9"
A_LOT = "SEC-LOT-A1"
A_SERIALS = ("SEC-A-1", "SEC-A-2", "SEC-A-3")

# Answers that refuse a request for the user's role or organisation (403), each a documented refusal.
ROLE_REFUSALS = {"read_only_role", "admin_only", "missing_role", "not_auditor"}
# POSTs that change nothing (a scan reads labels, a check reads a file): a viewer may send them.
READ_ONLY_POSTS = {"/console/scan", "/console/scan/frame", "/console/documents/check"}
# POSTs about the user's own session and second factor: the matrix does not send them (a valid one would end or
# change the very session the matrix uses); the CSRF test covers them, and they name nothing of another user.
OWN_ACCOUNT_POSTS = {"/console/sign-out", "/console/totp/begin", "/console/totp/confirm"}
# The sign-in form carries its own token (there is no session yet): test_the_sign_in_form_refuses_a_missing_or_wrong_token_of_its_own.
SIGN_IN = "/console/sign-in"
# Routes the tests cannot build a URL for, each with the reason. Empty: every route is covered.
EXEMPT: dict[str, str] = {}


# --- the stack and what organisation A owns ------------------------------------------------------------------


@dataclass
class World:
    stack: Stack
    client: TestClient
    base: str  # the same app under uvicorn, for Chromium
    ids: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)

    @property
    def ledger(self) -> Ledger:
        return self.stack.ledger

    def org_id(self, name: str) -> int:
        return self.ids["xss_org"] if name == "xss-org" else self.ledger.orgs[name].id

    def session(self, username: str) -> Session:
        if username not in self.sessions:
            self.sessions[username] = session_of(self.client, username, PASSWORD, where="security-test")
        return self.sessions[username]


def confirmed(stack: Stack, org: str, reply: Response) -> dict[str, Any]:
    assert reply.status_code == 202, reply.text
    view = wait_command(stack, org, reply.json()["command_id"])
    assert view["status"] == "confirmed", view
    return view


@pytest.fixture(scope="module")
def world(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    snapshot_id = snapshot(deployed.w3)
    workdir = tmp_path_factory.mktemp("console-security")
    try:
        receipt = deployed.act(deployed.operator, deployed.registry.functions.registerOrganisation(int(Role.LOGISTICS), SCRIPT_FULL))
        xss_org = deployed.events(receipt, deployed.registry, "OrganisationRegistered")[0]["args"]["orgId"]
        anchored = anchor_document(deployed, deployed.orgs[ORG_A], deployed.orgs["distributor"])
        stack = prepare_stack(deployed, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
        engine = make_engine(stack.service_db_url)
        for username, (org, role, display) in USERS.items():
            org_id = xss_org if org == "xss-org" else deployed.orgs[org].id
            accounts.create_user(engine, org_id=org_id, username=username, password=PASSWORD, role=role, display_name=display)
        a_key = create_api_key(engine, org_id=deployed.orgs[ORG_A].id, label=A_KEY_LABEL)
        with running_service(stack, public_rate_limit="100000/minute") as client:
            world = World(stack, client, "")
            world.ids |= {"xss_org": xss_org, "anchored_doc": "0x" + anchored.doc_hash.hex(), "a_key_id": a_key.split("_")[1]}
            build_world(world)
            client.indexer.wait_for(deployed.w3.eth.block_number)  # type: ignore[attr-defined]
            with served(client.app, lifespan="off") as base:
                world.base = base
                yield world
    finally:
        revert_to(deployed.w3, snapshot_id)


def build_world(world: World) -> None:
    """Organisation A's objects, each reachable by a console URL: a lot and its parts (registered by A's API key, so
    a command of A's), lots and serials holding script, a shipment from B to A (A's inbound consignment), a proposal
    from A to the distributor, a label job, an auditor's read in the audit log."""
    stack, client, ledger = world.stack, world.client, world.ledger
    maker = stack.headers(ORG_A)
    replies = [client.post("/v1/parts/register", headers=maker, json={"gtin": GTIN_A, "lot": A_LOT, "serials": list(A_SERIALS)})]
    replies.append(client.post("/v1/parts/register", headers=maker, json={"gtin": GTIN_B, "lot": LOT_XSS[0], "serials": list(SERIAL_XSS[:2])}))
    replies.append(client.post("/v1/parts/register", headers=maker, json={"gtin": GTIN_B, "lot": LOT_XSS[1], "serials": [SERIAL_XSS[2]]}))
    from_b = client.post("/v1/parts/register", headers=stack.headers(ORG_B), json={"gtin": GTIN_A, "lot": "SEC-LOT-B1", "serials": ["SEC-B-1"]})
    world.ids["a_commands"] = [confirmed(stack, ORG_A, reply)["command_id"] for reply in replies]
    confirmed(stack, ORG_B, from_b)
    shipped = client.post("/v1/parts/ship", headers=stack.headers(ORG_B), json={"to_org": ledger.orgs[ORG_A].id, "parts": [{"gtin": GTIN_A, "serial": "SEC-B-1"}]})
    confirmed(stack, ORG_B, shipped)
    # a part of A's installed in a vehicle by the workshop: its VIN is the workshop's alone, its salted hash consortium data
    workshop = stack.headers("workshop")
    installed = {"gtin": GTIN_A, "serial": A_SERIALS[2]}
    confirmed(stack, ORG_A, client.post("/v1/parts/ship", headers=maker, json={"to_org": ledger.orgs["workshop"].id, "parts": [installed]}))
    confirmed(stack, "workshop", client.post("/v1/parts/receive", headers=workshop, json={"parts": [installed]}))
    confirmed(stack, "workshop", client.post("/v1/parts/install", headers=workshop, json={"items": [{"part": installed, "vin": VIN}]}))
    seen_by_auditor = client.get(f"/v1/parts/0x{part_id(GTIN_A, A_SERIALS[2]).hex()}", headers=stack.headers("auditor"))
    world.ids["vin_hash"] = seen_by_auditor.json()["part"]["vin_hash"]
    assert world.ids["vin_hash"], seen_by_auditor.text
    proposal = client.post("/v1/documents/proposals", headers=maker, json={"doc_hash": "0x" + "5e" * 32, "doc_type": "invoice", "counterparty": ledger.orgs["distributor"].id})
    assert proposal.status_code == 201, proposal.text
    world.ids |= {
        "pid": "0x" + part_id(GTIN_A, A_SERIALS[0]).hex(),
        "a_pids": ["0x" + part_id(GTIN_A, serial).hex() for serial in A_SERIALS],
        "lot": ledger.lot_number(ledger.orgs[ORG_A], A_LOT),
        "xss_lots": [ledger.lot_number(ledger.orgs[ORG_A], code) for code in LOT_XSS],
        "xss_pids": ["0x" + part_id(GTIN_B, serial).hex() for serial in SERIAL_XSS],
        "proposal": proposal.json()["proposal_id"],
        "proposal_doc": "0x" + "5e" * 32,
    }
    operator = world.session("aa.oper")
    inbound = operator.get("/console/custody/inbound")
    world.ids["inbound_key"] = re.search(r"/console/custody/inbound/(\d+-0x[0-9a-f]{64})", inbound.text).group(1)
    started = operator.post(f"/console/maker/lots/{world.ids['lot']}/labels", {"layout": "a4"})
    assert started.status_code == 303, started.text
    world.ids["job"] = started.headers["location"].rsplit("/", 1)[1]
    wait_until(lambda: 'data-phase="ready"' in operator.get(f"/console/maker/labels/{world.ids['job']}/progress").text, "the label PDF", timeout=120)
    auditor = world.session("au.oper")
    history = auditor.get(f"/console/audit/parts/{world.ids['pid']}")
    assert history.status_code == 200, history.text
    tx_hash, log_index = re.search(r'data-tx-hash="(0x[0-9a-f]{64})" data-log-index="(\d+)"', history.text).groups()
    with make_engine(stack.service_db_url).connect() as conn:
        entry = conn.execute(text("SELECT max(id) FROM audit_log WHERE org_id = :org"), {"org": ledger.orgs["auditor"].id}).scalar()
    world.ids |= {"tx_hash": tx_hash, "log_index": log_index, "entry": entry}
    assert auditor.post("/console/audit/log/anchor").status_code == 303  # so that the entry has a proof to download
    wait_until(lambda: auditor.get(f"/console/audit/log/{entry}/proof").status_code == 200, "the audit log's anchor", timeout=60)
    # a recall alert of A's about its lot, sent to the workshop that installed one of its parts
    alert = client.post("/v1/notifications", headers=maker, json={"kind": "alert", "title": "SEC alert", "lots": [world.ids["lot"]], "send": True})
    assert alert.status_code == 201, alert.text
    step = alert.json()["transitions"][-1]["id"]
    world.ids |= {"notification": alert.json()["id"], "transition": step}
    wait_until(lambda: client.get(f"/v1/notifications/{world.ids['notification']}/transitions/{step}/proof", headers=maker).status_code == 200, "the alert's anchor", timeout=60)


# --- the routes, and URLs for them ---------------------------------------------------------------------------------


def console_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every console route, as the app routes requests (included routers flattened)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.165 keeps included routers as one route each
    except ImportError:  # pragma: no cover - older FastAPI lists every route in app.routes
        contexts: Any = app.routes
    else:
        contexts = iter_route_contexts(app.routes)
    found = set()
    for route in contexts:
        path = route.path or ""
        if path == "/console" or path.startswith("/console/"):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, path))
    return sorted(found, key=lambda item: (item[1], item[0]))


def path_values(world: World) -> dict[str, list[str]]:
    """Organisation A's real objects for every path parameter the console has."""
    ids = world.ids
    return {
        "username": ["aa.target"], "key_id": [ids["a_key_id"]], "lot": [str(ids["lot"])], "job_id": [ids["job"]],
        "command_id": [ids["a_commands"][0]], "part_id": [ids["pid"]], "part": [ids["pid"]], "key": [ids["inbound_key"]],
        "proposal_id": [ids["proposal"]], "doc_hash": [ids["anchored_doc"]], "org_id": [str(world.org_id(ORG_A))],
        "tx_hash": [ids["tx_hash"]], "log_index": [ids["log_index"]], "entry_id": [str(ids["entry"])], "name": sorted(SECTION_BY_NAME),
        "notification_id": [ids["notification"]], "transition_id": [ids["transition"]],
    }  # fmt: skip


def query_variants(world: World) -> dict[str, list[str]]:
    """Query strings that make a page show A's data (each is one more URL of the route)."""
    ids = world.ids
    return {
        "/console/parts/gs1": [urlencode({"gtin": GTIN_A, "serial": A_SERIALS[0]})],
        "/console/scan/open": [urlencode({"code": f"https://id.example.com/01/{GTIN_A}/21/{A_SERIALS[0]}"})],
        "/console/audit/find": [urlencode({"what": "part", "gtin": GTIN_A, "serial": A_SERIALS[0]}), urlencode({"what": "lot", "lot": ids["lot"]})],
        "/console/documents": ["box=waiting", "box=issued", "box=anchored"],
        "/console/audit/orgs/{org_id}": ["tab=parts", "tab=lots", "tab=documents"],
        "/console/commands": ["", "status=rejected"],
        "/console/maker/lots/{lot}": ["", "status=in_stock"],
        "/console/custody/install": [urlencode({"part": ids["pid"]})],
        "/console/custody/ship": ["", urlencode({"item": f"/01/{GTIN_A}/21/{A_SERIALS[0]}"})],
        "/console/audit/log": ["", "everyone=true"],
    }  # fmt: skip


def urls_for(world: World, template: str) -> list[str] | None:
    """Every concrete URL of a route template (None when a path parameter has no value here)."""
    values = path_values(world)
    urls = [template]
    for name in re.findall(r"\{(\w+)(?::\w+)?\}", template):
        if name not in values:
            return None
        urls = [re.sub(r"\{" + name + r"(?::\w+)?\}", value, url) for url in urls for value in values[name]]
    queries = query_variants(world).get(template, [""])
    return [url + (f"?{query}" if query else "") for url in urls for query in queries]


def pdf_bytes(words: str) -> bytes:
    from reportlab.pdfgen.canvas import Canvas

    buffer = io.BytesIO()
    canvas = Canvas(buffer, invariant=1)
    canvas.drawString(72, 720, words)
    canvas.save()
    return buffer.getvalue()


def png_bytes() -> bytes:
    import segno

    buffer = io.BytesIO()
    segno.make(f"https://id.example.com/01/{GTIN_A}/21/{A_SERIALS[0]}").save(buffer, kind="png", scale=4)
    return buffer.getvalue()


def acting_forms(world: World) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """For each POST route template, a form that WOULD change something if it were accepted, naming A's objects
    where the route takes any: (fields, files). Sent without or with a wrong token (CSRF), by B or the auditor (the
    matrix), and by viewers. "route#variant": one more form the matrix sends to the same route."""
    ids = world.ids
    distributor = world.ledger.orgs["distributor"].id
    notice = pdf_bytes("recall notice")
    return {
        "/console/sign-out": ({}, None),
        "/console/totp/begin": ({}, None),
        "/console/totp/confirm": ({"code": "123456"}, None),
        "/console/admin/users": ({"username": "sec.created", "role": "admin", "password": "a long enough password 1"}, None),
        "/console/admin/users/{username}/role": ({"role": "admin"}, None),
        "/console/admin/users/{username}/disable": ({}, None),
        "/console/admin/users/{username}/enable": ({}, None),
        "/console/admin/users/{username}/reset": ({"clear_totp": "on"}, None),
        "/console/admin/totp": ({"required": "on"}, None),
        "/console/admin/keys": ({"label": "sec-created-key"}, None),
        "/console/admin/keys/{key_id}/revoke": ({}, None),
        "/console/maker/register": ({"gtin": GTIN_A, "lot": "SEC-NEW", "mode": "list", "serials": "SEC-NEW-1", "idempotency_key": f"console-{uuid.uuid4().hex}"}, None),
        "/console/maker/register.csv": ({}, {"file": ("lot.csv", f"gtin,serial,lot\n{GTIN_A},SEC-NEW-2,SEC-NEW\n".encode(), "text/csv")}),
        "/console/maker/lots/{lot}/labels": ({"layout": "a4"}, None),
        "/console/maker/lots/{lot}/recall": ({}, {"notice": ("notice.pdf", notice, "application/pdf")}),
        "/console/maker/lots/{lot}/recall/confirm": (
            {"notice_hash": "0x" + hashlib.sha256(notice).hexdigest(), "idempotency_key": f"console-{uuid.uuid4().hex}", "confirm": "yes"}, None,
        ),
        "/console/custody/act": ({"kind": "quarantine", "part": ids["pid"]}, None),
        "/console/custody/act#shipment": ({"kind": "receive", "shipment": ids["inbound_key"]}, None),  # A's inbound consignment
        "/console/custody/act#item": ({"kind": "quarantine", "item": f"/01/{GTIN_A}/21/{A_SERIALS[0]}"}, None),
        "/console/custody/ship": ({"step": "submit", "source": "lot", "lot": f"{ids['lot']}:{GTIN_A}", "to_org": str(distributor)}, None),
        "/console/custody/ship#item": ({"step": "submit", "source": "list", "item": f"/01/{GTIN_A}/21/{A_SERIALS[0]}", "to_org": str(distributor)}, None),
        "/console/custody/install": ({"part": ids["pid"], "vin": VIN}, None),
        "/console/scan": ({"gtin": GTIN_A, "serial": A_SERIALS[0], "many": "1"}, None),
        "/console/scan/frame": ({"kind": "label"}, {"image": ("frame.png", png_bytes(), "image/png")}),
        "/console/documents/propose": ({"doc_type": "invoice", "counterparty": str(distributor), "valid_days": "7"}, {"document": ("d.pdf", pdf_bytes("proposed"), "application/pdf")}),
        "/console/documents/proposals/{proposal_id}/countersign": ({}, None),
        "/console/documents/check": ({"salt": "0x" + "11" * 32}, {"document": ("d.pdf", pdf_bytes("checked"), "application/pdf")}),
        "/console/audit/log/anchor": ({}, None),
        "/console/notifications/new": ({"kind": "alert", "severity": "major", "title": "SEC new", "lots": str(ids["lot"]), "send": "on"}, None),
        "/console/notifications/{notification_id}/act": ({"action": "close"}, None),
    }  # fmt: skip


# --- what may not change -------------------------------------------------------------------------------------------


def settle(world: World) -> None:
    """Waits until the outbox has nothing in flight (every command item confirmed or rejected) and the indexer has
    the chain's head."""
    engine = make_engine(world.stack.service_db_url)

    def idle() -> bool:
        with engine.connect() as conn:
            return not conn.execute(text("SELECT count(*) FROM command_items WHERE state NOT IN ('confirmed', 'rejected')")).scalar()

    wait_until(idle, "the outbox to settle", timeout=60)
    world.client.indexer.wait_for(world.ledger.w3.eth.block_number)  # type: ignore[attr-defined]


def a_state(world: World) -> dict[str, Any]:
    """Everything of organisation A another organisation might touch: its users, API keys, settings, commands,
    proposals, and its parts and lot on chain."""
    org = world.org_id(ORG_A)
    with make_engine(world.stack.service_db_url).connect() as conn:
        rows = {
            "users": conn.execute(text("SELECT username, role, sites, disabled_at, password_hash, totp_secret, totp_confirmed, display_name FROM users WHERE org_id = :o ORDER BY username"), {"o": org}).all(),
            "keys": conn.execute(text("SELECT key_id, label, sites, revoked_at FROM api_keys WHERE org_id = :o ORDER BY key_id"), {"o": org}).all(),
            "settings": conn.execute(text("SELECT require_totp FROM org_settings WHERE org_id = :o"), {"o": org}).all(),
            "commands": conn.execute(text("SELECT id FROM commands WHERE org_id = :o ORDER BY id"), {"o": org}).all(),
            "proposals": conn.execute(text("SELECT id, command_id, counterparty_signer FROM document_proposals WHERE issuer = :o OR counterparty = :o ORDER BY id"), {"o": org}).all(),
        }  # fmt: skip
    state: dict[str, Any] = {key: [tuple(row) for row in value] for key, value in rows.items()}
    ledger = world.ledger
    state["parts"] = [tuple(ledger.status(bytes.fromhex(pid[2:]))) for pid in world.ids["a_pids"]]
    state["lot"] = tuple(ledger.parts.functions.lot(world.ids["lot"]).call())
    return state


def counts(world: World) -> dict[str, int]:
    """How many users, API keys, proposals and commands the service has (the audit log's own anchoring left out:
    an auditor's read is logged, and the log anchors itself)."""
    with make_engine(world.stack.service_db_url).connect() as conn:
        return {
            "users": conn.execute(text("SELECT count(*) FROM users")).scalar(),
            "api_keys": conn.execute(text("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")).scalar(),
            "document_proposals": conn.execute(text("SELECT count(*) FROM document_proposals")).scalar(),
            "countersigned": conn.execute(text("SELECT count(*) FROM document_proposals WHERE command_id IS NOT NULL")).scalar(),
            "commands": conn.execute(text("SELECT count(*) FROM commands WHERE kind != 'anchor_batch'")).scalar(),
            "org_settings": conn.execute(text("SELECT count(*) FROM org_settings WHERE require_totp")).scalar(),
            "disabled_users": conn.execute(text("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL")).scalar(),
        }  # fmt: skip


def markers(world: World) -> tuple[set[str], set[str]]:
    """A's private markers (no other organisation, auditors included, may see them) and A's consortium markers
    (auditors may see them, B may not). A part's id, GTIN, serial, manufacturer and status are public (the label and
    the verify page show them), so they are no markers; its lot code and its history (transactions) are."""
    ids = world.ids
    private = {*ids["a_commands"], ids["a_key_id"], A_KEY_LABEL} | {u for u, (org, _, _) in USERS.items() if org == ORG_A} | {
        display for org, _, display in USERS.values() if org == ORG_A and display != SCRIPT_FULL
    }
    consortium = {A_LOT, ids["tx_hash"], ids["vin_hash"], ids["proposal"], ids["proposal_doc"], ids["anchored_doc"], ids["job"], ids["notification"]}
    return private, consortium


def seen_markers(reply: Response, wanted: set[str], asked: str) -> list[str]:
    """The markers a reply shows that the request did not carry itself (a URL or form echoed back is no leak)."""
    urls = unquote(" ".join([str(r.url) for r in reply.history] + [str(reply.url), asked]))
    body = reply.text.lower()
    # a long hash may be shown shortened ("0x1234567890…abcd"): its start counts
    return sorted(m for m in wanted if (m.lower() in body or (m.startswith("0x") and len(m) > 20 and m[:10].lower() in body)) and m not in urls)


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n" + "\n".join(lines)


# --- 1. CSRF --------------------------------------------------------------------------------------------------------


def test_every_state_changing_console_route_refuses_a_missing_or_wrong_csrf_token_with_403_and_changes_nothing(world: World):
    routes = [(method, path) for method, path in console_routes(world.client.app) if method in ("POST", "PUT", "PATCH", "DELETE") and path != SIGN_IN]
    assert len(routes) >= 20, routes  # the enumeration works (FastAPI's included routers flattened)
    forms = acting_forms(world)
    # The user who passes the route's role checks, so that only the token stands in the way: A's admin, else a
    # workshop's operator (installation), else an auditor (the audit log).
    candidates = [world.session(name) for name in ("aa.admin", "ws.oper", "au.oper")]
    settle(world)
    before, before_a, head = counts(world), a_state(world), world.ledger.w3.eth.block_number
    violations: list[tuple[str, str, str, str, Any]] = []
    for method, template in routes:
        urls = urls_for(world, template)
        if urls is None or template not in forms:
            if template not in EXEMPT:
                violations.append((method, template, "-", "no URL or form for this route: add it to the test", None))
            continue
        data, files = forms[template]
        for user in candidates:
            sent = (  # no token; a wrong one; one a character off; the right one from another site's page
                (None, {}), ("x" * len(user.csrf), {}), (user.csrf[:-1] + ("A" if user.csrf[-1] != "A" else "B"), {}), (user.csrf, {"Origin": "https://evil.example"}),
            )  # fmt: skip
            refused = [user.client.request(method, urls[0], data=data | ({"csrf_token": token} if token else {}), files=files, headers=user.headers(origin))
                       for token, origin in sent]  # fmt: skip
            codes = [(reply.status_code, error_code(reply) or _json_code(reply)) for reply in refused]
            if all(code in ROLE_REFUSALS for _, code in codes):
                continue  # this user's role or organisation is refused before the form: the next candidate
            for (status, code), token in zip(codes, ("missing", "wrong", "almost right", "cross-site")):
                if (status, code) != (403, "csrf_failed"):
                    violations.append((method, template, user.username, f"{token} token", (status, code)))
            break
        else:
            violations.append((method, template, "-", "no candidate user passes the route's role checks", None))
    settle(world)
    assert not violations, "routes that did not refuse a bad CSRF token:" + table(violations, ("method", "route", "user", "sent", "answer"))
    assert counts(world) == before and a_state(world) == before_a
    assert world.ledger.w3.eth.block_number == head  # nothing went to the chain either
    # every session is still alive: a refused sign-out did not sign anyone out
    assert all(user.get("/console").status_code == 200 for user in candidates)


def _json_code(reply: Response) -> str | None:
    try:
        return reply.json()["error"]["code"]
    except Exception:  # noqa: BLE001 - an HTML page
        return None


def test_the_sign_in_form_refuses_a_missing_wrong_or_cross_site_token_of_its_own_and_signs_no_one_in(world: World):
    web = TestClient(world.client.app)
    page = web.get("/console/sign-in")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)
    form = {"username": "aa.oper", "password": PASSWORD}
    for data, headers, without_cookie in (
        (form, {}, False),  # no token
        (form | {"signin_token": "x" * len(token)}, {}, False),  # a wrong one
        (form | {"signin_token": token}, {"Origin": "https://evil.example"}, False),  # from another site
        (form | {"signin_token": token}, {}, True),  # the form's token without its cookie (a cross-site POST has none)
    ):
        sender = TestClient(world.client.app) if without_cookie else web
        refused = sender.post("/console/sign-in", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403 and error_code(refused) == "csrf_failed", refused.text
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    assert web.get("/console", follow_redirects=False).status_code == 303  # still signed out


# --- 2. the matrix of routes and roles -----------------------------------------------------------------------------


def test_every_console_route_keeps_an_organisations_data_from_other_organisations_and_viewers_from_acting(world: World):
    """Every console route (GET and POST, from the app's routes) for A's admin, operator and viewer, B's admin,
    operator and viewer, and an auditor's operator and viewer, with URLs naming A's real objects."""
    routes = console_routes(world.client.app)
    private, consortium = markers(world)
    forms = acting_forms(world) | {"/console/admin/totp": ({}, None)}  # B's admin turning its own TOTP rule off is harmless
    # the POSTs that name one of A's objects (in the path, or a part or lot of A's in the form): only A may act on them
    names_a = {path for _, path in routes if "{" in path} | {"/console/custody/act", "/console/custody/ship", "/console/custody/install"}
    violations: list[tuple[str, str, str, Any]] = []
    checked: list[tuple[str, str]] = []
    posted: list[tuple[str, str, int, str | None]] = []
    settle(world)
    start_a = a_state(world)

    def leaks(username: str) -> set[str]:
        """What this user may not see: a VIN in clear is the installing workshop's alone (nobody here may see it)."""
        org = USERS[username][0]
        if org == ORG_A:
            return {VIN}
        return (private if org == "auditor" else private | consortium) | {VIN}

    before_gets = counts(world)
    for method, template in sorted(routes, key=lambda route: route[0] != "GET"):  # every GET, then every POST
        urls = urls_for(world, template)
        if urls is None:
            if template not in EXEMPT:
                violations.append((method, template, "-", "no URL for this route's parameters: add a value (or an exemption)"))
            continue
        if method != "GET" and before_gets is not None:
            if counts(world) != before_gets or a_state(world) != start_a:
                violations.append(("GET", "*", "*", "reading pages changed the service's rows or A's state"))
            before_gets = None
        if method == "GET":
            for username in MATRIX:
                user = world.session(username)
                for url in urls:
                    reply = user.get(url, follow=True)
                    checked.append((method, url))
                    if reply.status_code >= 500:
                        violations.append((method, url, username, reply.status_code))
                    shown = seen_markers(reply, leaks(username), url)
                    if shown:
                        violations.append((method, url, username, f"{reply.status_code} shows {shown}"))
            continue
        if template == SIGN_IN or template in OWN_ACCOUNT_POSTS:
            continue
        if template not in forms:
            violations.append((method, template, "-", "no form for this POST route: add one to acting_forms"))
            continue
        variants = [form for key, form in forms.items() if key.split("#")[0] == template]
        for username in MATRIX:
            org, role, _ = USERS[username]
            if org == ORG_A and role != "viewer":
                continue  # A's own admin and operator may act on A's data: the other tests do
            user = world.session(username)
            for url, (data, files) in ((url, form) for url in urls for form in variants):
                before_counts, before_a = counts(world), a_state(world)
                reply = user.client.request(method, url, data=data | {"csrf_token": user.csrf}, files=files, headers=user.headers())
                code = error_code(reply) or _json_code(reply)
                checked.append((method, url))
                posted.append((url, username, reply.status_code, code))
                if reply.status_code >= 500:
                    violations.append((method, url, username, (reply.status_code, code)))
                if role == "viewer" and template not in READ_ONLY_POSTS:
                    if reply.status_code != 403 or code not in ROLE_REFUSALS:
                        violations.append((method, url, username, f"a viewer was not refused: {(reply.status_code, code)}"))
                    if counts(world) != before_counts:
                        violations.append((method, url, username, "a viewer's POST changed the service's rows"))
                if a_state(world) != before_a:
                    violations.append((method, url, username, f"changed A's state ({reply.status_code}, {code})"))
                echoed = " ".join(str(value) for value in data.values())
                shown = seen_markers(reply, leaks(username), url + " " + echoed)
                if shown:
                    violations.append((method, url, username, f"{reply.status_code} shows {shown}"))
                if org != ORG_A and template in names_a and reply.status_code in (200, 201, 202, 303):
                    violations.append((method, url, username, f"a request on A's object by another organisation was accepted: {reply.status_code} {reply.headers.get('location', '')}"))
    settle(world)
    if a_state(world) != start_a:
        violations.append(("*", "*", "*", "A's state changed once the outbox settled"))
    assert not violations, "violations of the route x role matrix:" + table(violations, ("method", "route", "user", "answer"))

    # the markers are real: A's own users see them where they belong
    admin, operator = world.session("aa.admin"), world.session("aa.oper")
    assert "Alfa Target Qz4" in admin.get("/console/admin").text and A_KEY_LABEL in admin.get("/console/admin/keys").text
    assert world.ids["a_commands"][0] in operator.get("/console/commands").text
    assert world.ids["proposal"] in operator.get("/console/documents?box=issued").text
    assert A_LOT in operator.get("/console/maker/lots").text
    assert world.ids["vin_hash"][:10] in operator.get(f"/console/maker/lots/{world.ids['lot']}/impact").text  # the maker sees where its parts went
    assert A_LOT in world.session("au.oper").get(f"/console/audit/orgs/{world.org_id(ORG_A)}?tab=lots").text  # consortium data: the auditor reads it
    print(f"\nmatrix: {len(checked)} requests over {len(routes)} routes x {len(MATRIX)} users; the POSTs:" + table(posted, ("route", "user", "status", "code")))


# --- 3. throttling, disabled users -----------------------------------------------------------------------------------


def test_sign_in_is_throttled_per_account_and_per_client_with_429_and_retry_after_shown_on_the_page(world: World):
    web = TestClient(world.client.app, headers={"Accept-Language": "en"}, client=("198.51.100.4", 40000))
    for _ in range(accounts.ACCOUNT_FAILURES):
        assert sign_in_by_form(web, "aa.throttle", "not the password at all").status_code == 401
    throttled = sign_in_by_form(web, "aa.throttle", PASSWORD)  # the right password, too late
    assert throttled.status_code == 429 and error_code(throttled) == "sign_in_throttled"
    wait = int(throttled.headers["retry-after"])
    assert 0 < wait <= accounts.THROTTLE_WINDOW
    assert str(wait) in problem(throttled)  # the page says how long to wait
    assert SESSION_COOKIE not in throttled.headers.get("set-cookie", "")

    other = TestClient(world.client.app, headers={"Accept-Language": "en"}, client=("198.51.100.77", 40001))
    for n in range(accounts.CLIENT_FAILURES):
        assert sign_in_by_form(other, f"nobody.{n}", "not the password at all").status_code in (401, 429)
    from_client = sign_in_by_form(other, "aa.oper", PASSWORD)  # a real user, from the client that guessed
    assert from_client.status_code == 429 and error_code(from_client) == "sign_in_throttled" and int(from_client.headers["retry-after"]) > 0
    elsewhere = TestClient(world.client.app, client=("198.51.100.78", 40002))
    assert sign_in_by_form(elsewhere, "aa.oper", PASSWORD).status_code == 303  # the same user from elsewhere


def test_a_disabled_users_live_session_ends_at_its_next_request(world: World):
    victim = session_of(world.client, "aa.disabled", PASSWORD)
    token = victim.csrf
    assert victim.get("/console").status_code == 200
    admin = world.session("aa.admin")
    assert admin.post("/console/admin/users/aa.disabled/disable").status_code == 303
    page = victim.get("/console/commands")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in?next=")
    posted = victim.post("/console/scan", {"gtin": GTIN_A, "serial": A_SERIALS[0]}, csrf=token)
    assert posted.status_code == 401 and error_code(posted) == "not_signed_in"
    polled = victim.get(f"/console/commands/{world.ids['a_commands'][0]}/status", **{"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["hx-redirect"].startswith("/console/sign-in")
    assert sign_in_by_form(TestClient(world.client.app, client=("198.51.100.90", 1)), "aa.disabled", PASSWORD).status_code == 401


# --- 4. the session cookie -----------------------------------------------------------------------------------------


def _cookie(reply: Response, name: str) -> dict[str, str | bool]:
    found = [value for value in reply.headers.get_list("set-cookie") if value.startswith(f"{name}=")]
    assert len(found) == 1, reply.headers
    parts = [part.strip() for part in found[0].split(";")]
    flags: dict[str, str | bool] = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        flags[key.lower()] = value if value else True
    return flags


def test_the_session_cookie_is_httponly_samesite_strict_for_the_console_path_and_secure_only_over_https(world: World):
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        web = TestClient(world.client.app, base_url=base, client=("198.51.100.20", 1))
        reply = sign_in_by_form(web, "aa.oper", PASSWORD)
        assert reply.status_code == 303, reply.text
        for name, path in ((SESSION_COOKIE, "/console"), (SIGN_IN_COOKIE, "/console/sign-in")):
            flags = _cookie(reply, name) if name == SESSION_COOKIE else _cookie(web.get("/console/sign-in"), name)
            assert flags.get("httponly") is True, (base, name, flags)
            assert str(flags.get("samesite", "")).lower() == "strict", (base, name, flags)
            assert flags.get("path") == path, (base, name, flags)
            assert ("secure" in flags) is secure, (base, name, flags)
            assert "domain" not in flags  # host-only


# --- 5. XSS in Chromium --------------------------------------------------------------------------------------------


XSS_PROBE = """() => {
  const handlers = [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /^on/i.test(a.name))).map(e => e.outerHTML.slice(0, 80));
  const injected = [...document.querySelectorAll('svg[onload], img[onerror], img[src="x"]')].map(e => e.outerHTML.slice(0, 80));
  const scripts = [...document.scripts].filter(s => /a\\(\\)|alert/.test(s.textContent)).map(s => s.outerHTML.slice(0, 80));
  return {handlers, injected, scripts, ran: window.__xss || [], csp: window.__csp || []};
}"""
SHOWN = """(probes) => probes.filter(p => document.body.textContent.includes(p)
  || [...document.querySelectorAll('*')].some(e => [...e.attributes].some(a => a.value.includes(p))))"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


def browser_context(chromium: Any, world: World, username: str, *, locale: str = "zh-CN", bypass_csp: bool = False, **options: Any) -> Any:
    """A phone-sized context signed in as `username` (its session cookie as the sign-in sets it)."""
    return phone_context(chromium, locale=locale, token=session_of(world.client, username, PASSWORD, where="chromium").token, bypass_csp=bypass_csp, **options)


def test_script_in_lot_codes_serials_an_organisation_name_a_display_name_and_a_document_renders_inert_in_chromium(world: World, chromium: Any, artifacts_dir: Path):
    ids = world.ids
    lots, pids = ids["xss_lots"], ids["xss_pids"]
    short = [payload[:10] for payload in (*LOT_XSS, *SERIAL_XSS)]  # a long code may be shortened on a page: its start shows
    org_probe = [SCRIPT_FULL[:25]]
    payload = urlencode({"x": SCRIPT_FULL})[2:]
    reflected = [
        f"/console/scan/open?code={payload}", f"/console/parts/gs1?gtin={payload}&serial=1", f"/console/custody/install?part={payload}",
        f"/console/{payload}", f"/console/commands?status={payload}&cursor={payload}", f"/console/custody/ship?item={payload}",
        f"/console/sign-in?next=javascript:alert(1)", f"/console/maker/lots?lang={payload}",
    ]  # fmt: skip
    pages: dict[str, list[tuple[str, list[str]]]] = {  # user: [(path, what the page shows of the payloads)]
        "aa.oper": [
            ("/console/maker/lots", short), (f"/console/maker/lots/{lots[0]}", short), (f"/console/maker/lots/{lots[1]}", short),
            (f"/console/maker/lots/{lots[0]}/impact", short), (f"/console/maker/lots/{lots[0]}/recall", short),
            *[(f"/console/parts/{pid}", short) for pid in pids], ("/console/custody/inventory/parts", short), ("/console/custody/inventory", []),
            ("/console/custody/ship", org_probe), (f"/console/custody/ship?item=/01/{GTIN_B}/21/%3Csvg%2Fonload%3Dalert%28%29%3E", short),
            ("/console/commands", []), ("/console", []),
            # reflected: what a URL carries, shown back on the page (a 4xx page mostly)
            *[(path, [SCRIPT_FULL[:15]] if "gs1" in path else []) for path in reflected],  # the GTIN field keeps 20 characters
        ],
        "aa.admin": [("/console/admin", org_probe)],
        "xx.oper": [("/console", org_probe), ("/console/custody", org_probe), ("/console/documents", org_probe)],
        "au.oper": [
            ("/console/audit", org_probe), (f"/console/audit/orgs/{world.org_id(ORG_A)}?tab=lots", short),
            (f"/console/audit/orgs/{world.org_id(ORG_A)}?tab=parts", short), (f"/console/audit/orgs/{ids['xss_org']}", org_probe),
            *[(f"/console/audit/parts/{pid}", short) for pid in pids], (f"/console/audit/lots/{lots[0]}", short),
        ],
    }  # fmt: skip
    findings: list[tuple[str, str, Any]] = []
    dialogs: list[str] = []
    checked = 0

    def watch(page: Any, username: str) -> list[str]:
        problems: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(f"{username} {page.url}: {dialog.message}"), dialog.dismiss()))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        return problems

    def probe(page: Any, username: str, path: str, probes: list[str], problems: list[str]) -> None:
        nonlocal checked
        checked += 1
        found = page.evaluate(XSS_PROBE)
        for key in ("handlers", "injected", "scripts", "ran", "csp"):
            if found[key]:
                findings.append((username, path, {key: found[key]}))
        if path in reflected:  # the 4xx answer itself is logged by Chromium as a failed resource
            problems[:] = [text for text in problems if not text.startswith("Failed to load resource: the server responded with a status of 4")]
        if problems:
            findings.append((username, path, {"console": list(problems)}))
            problems.clear()
        if probes and not page.evaluate(SHOWN, probes):
            findings.append((username, path, f"none of {probes} shown as text"))
        page.screenshot(path=str(artifacts_dir / f"console-xss-{checked:02d}-phone.png"), full_page=True)

    for username, paths in pages.items():
        context = browser_context(chromium, world, username)
        context.add_init_script(CSP_LISTENER + " window.__xss = []; window.a = () => window.__xss.push(location.pathname);")
        page = context.new_page()
        problems = watch(page, username)
        for path, probes in paths:
            reply = page.goto(world.base + path)
            if reply is None or reply.status >= (500 if path in reflected else 400):
                findings.append((username, path, f"status {reply and reply.status}"))
            probe(page, username, path, probes, problems)
        if username == "aa.oper":  # a document proposed with a file name holding script, and a kind holding script
            page.goto(world.base + "/console/documents/propose")
            page.set_input_files("#f-document", files=[{"name": FILENAME_XSS, "mimeType": "application/pdf", "buffer": pdf_bytes("xss proposal")}])
            page.select_option("#f-counterparty", str(world.ledger.orgs["distributor"].id))
            page.locator("form#propose-form button[type=submit], #propose-submit").first.click()
            page.wait_for_load_state()
            probe(page, username, "POST /console/documents/propose (file name)", [FILENAME_XSS[1:14]], problems)  # Chromium sends the " as %22
            page.goto(world.base + "/console/documents/propose")
            page.set_input_files("#f-document", files=[{"name": "kind.pdf", "mimeType": "application/pdf", "buffer": pdf_bytes("xss kind")}])
            page.evaluate("(kind) => { const s = document.querySelector('#f-doc_type'); const o = document.createElement('option'); o.value = kind; o.textContent = 'x'; s.appendChild(o); s.value = kind; }", DOC_TYPE_XSS)
            page.locator("form#propose-form button[type=submit], #propose-submit").first.click()
            page.wait_for_load_state()
            probe(page, username, "POST /console/documents/propose (kind)", [], problems)
        context.close()
    assert not dialogs, dialogs
    assert not findings, "script that was not inert, or payloads not shown as text:" + table(findings, ("user", "page", "finding"))
    print(f"\nXSS: {checked} pages checked in Chromium, no dialog, no script run, no CSP violation")


# --- 6. accessibility ----------------------------------------------------------------------------------------------


# Routes whose query variants are pages of their own (other tables, other lists): axe reads each variant.
AXE_VARIANTS = {"/console/audit/orgs/{org_id}", "/console/documents"}


def test_axe_core_finds_nothing_serious_or_critical_on_any_console_page_in_chinese_or_english(world: World, chromium: Any, artifacts_dir: Path):
    """Every console GET route with real ids, each read by the first user who may read it (A's admin, a workshop's
    operator, an auditor); downloads (PDF, CSV, JSON) and htmx fragments are no pages (the fragments are part of the
    pages that poll them, checked there)."""
    readers = ("aa.admin", "ws.oper", "au.oper")
    pages: dict[str, list[str]] = {name: [] for name in readers}
    skipped: list[tuple[str, str]] = []
    unreadable: list[tuple[str, Any]] = []
    landed: set[str] = set()
    for method, template in console_routes(world.client.app):
        if method != "GET":
            continue
        urls = urls_for(world, template)
        if urls is None:
            if template not in EXEMPT:
                unreadable.append((template, "no URL"))
            continue
        for url in urls if template in AXE_VARIANTS else urls[:1]:
            for name in readers:
                reply = world.session(name).get(url, follow=True)
                if reply.status_code == 200:
                    kind = reply.headers.get("content-type", "")
                    final = reply.url.raw_path.decode()
                    if not kind.startswith("text/html"):
                        skipped.append((url, f"download {kind.split(';')[0]}"))
                    elif not reply.text.lstrip().lower().startswith("<!doctype html"):
                        skipped.append((url, "htmx fragment"))
                    elif final.rstrip("/") in landed:
                        skipped.append((url, f"the same page as {final}"))
                    else:
                        landed.add(final.rstrip("/"))
                        pages[name].append(url)
                    break
            else:
                unreadable.append((url, "no reader gets 200"))
    assert not unreadable, "console pages nobody could read:" + table(unreadable, ("page", "why"))
    findings: dict[str, list[str]] = {}
    checked: list[str] = []
    for name, urls in pages.items():
        for locale, lang in (("zh-CN", "zh"), ("en-GB", "en")):
            # axe's script needs the CSP lifted; a phone's viewport, drawn at one pixel a point (the layout is the same)
            context = browser_context(chromium, world, name, locale=locale, bypass_csp=True, device_scale_factor=1)
            context.add_init_script(path=str(AXE))
            page = context.new_page()
            for url in urls + (["/console/nowhere"] if name == "aa.admin" else []):
                page.goto(world.base + url + ("&" if "?" in url else "?") + f"lang={lang}")
                found = page.evaluate(SERIOUS)
                checked.append(f"{lang} {name} {url}")
                if found:
                    findings[f"{lang} {url}"] = found
            context.close()
    print("\naxe-core checked:\n  " + "\n  ".join(checked) + "\nnot pages:\n  " + "\n  ".join(f"{url} ({why})" for url, why in skipped))
    assert not findings, json.dumps(findings, indent=1, ensure_ascii=False)
