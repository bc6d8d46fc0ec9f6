"""The console's operations dashboard (/console/operations, issue 18 Build 4) on the real stack (Anvil, SQLite, the
indexer, the submitter): the platform's key figures — active organisations, commands per day (confirmed ones and a
rejected one), parts by status, verification volume, clone flags, lag — equal what SQL and the chain say;
its charts are server-drawn inline SVG with the figures' tables. Admins and operators of any member read it; a
viewer gets 403 operators_only and no link to it; nobody signed in is sent to sign in. Read in real Chromium on a
phone, in Chinese and in English: no console error, no CSP violation, no sideways scrolling, nothing serious for
axe-core."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from indexer.tables import Organisation, Part
from ledger_service.app import create_app
from ledger_service.console.i18n import Catalogue
from ledger_service.routes.resolver import desk_of
from ledger_service.tables import Command
from partledger.db import make_engine
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, Ledger, revert_to, snapshot
from tests.consolekit import CSP_LISTENER, axe_findings, create_users, error_code, launched_chromium, phone_context, scrolls_sideways, served, session_of, watch_errors
from tests.servicekit import IndexerThread, Stack, prepare_stack, wait_until

pytestmark = pytest.mark.chain
PASSWORD = "operations dashboard password"
USERS = {"ops.admin": ("maker", "admin"), "ops.oper": ("maker", "operator"), "ops.viewer": ("maker", "viewer"), "ws.oper": ("workshop", "operator")}
T_CMD = Command.__table__


def post(client: TestClient, stack: Stack, org: str, path: str, body: dict[str, Any]) -> str:
    reply = client.post(path, json=body, headers=stack.headers(org))
    assert reply.status_code == 202, reply.text
    return reply.json()["command_id"]


def final(client: TestClient, stack: Stack, org: str, command_id: str) -> dict[str, Any]:
    return wait_until(
        lambda: (view := client.get(f"/v1/commands/{command_id}", headers=stack.headers(org)).json())["status"] in ("confirmed", "rejected") and view,
        f"command {command_id} final",
    )


@pytest.fixture(scope="module")
def dashboard(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TestClient]]:
    """A service whose commands are one registration confirmed and the same registration rejected by the chain (both
    accepted while the indexer was stopped: the mirror could not tell), then the indexer running again, scans (two of
    a registered part, one of an unknown serial: a clone flag), and their batch anchored (a third command)."""
    snapshot_id = snapshot(deployed.w3)
    workdir = tmp_path_factory.mktemp("operations")
    stack = prepare_stack(deployed, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    create_users(make_engine(stack.service_db_url), deployed, USERS, password=PASSWORD)
    body = {"gtin": GTIN_A, "lot": "L-OPS", "serials": ["OPS-1", "OPS-2", "OPS-3"]}
    try:
        with IndexerThread(deployed, stack.index_db_url) as indexer:  # the members and their keys, then it stops
            indexer.wait_for(deployed.w3.eth.block_number)
        with TestClient(create_app(stack.settings())) as client:
            first = post(client, stack, "maker", "/v1/parts/register", body)
            second = post(client, stack, "maker", "/v1/parts/register", body | {"lot": "L-OPS-AGAIN"})  # not packed with the first
            assert final(client, stack, "maker", first)["status"] == "confirmed"
            assert final(client, stack, "maker", second)["errors"][0]["error"] == "PartLedgerPartAlreadyRegistered"
            with IndexerThread(deployed, stack.index_db_url) as indexer:
                indexer.wait_for(deployed.w3.eth.block_number)
                wait_until(lambda: mirrored_at(stack, first), "the registration in the mirror")
                for serial in ("OPS-1", "OPS-2", "NO-SUCH-PART"):
                    client.get(f"/01/{GTIN_A}/21/{serial}", headers={"Accept": "application/json"})
                # anchored now, as the scan keeper would within a minute: the commands are then three, however long this takes
                services = client.app.state.services  # type: ignore[attr-defined]
                (batch,) = desk_of(client.app).book.anchor(services.outbox, services.index_engine)
                assert batch["scans"] == 3
                assert final(client, stack, "maker", batch["command_id"])["status"] == "confirmed"
                yield stack, client
    finally:
        revert_to(deployed.w3, snapshot_id)


@pytest.fixture(scope="module")
def sessions(dashboard) -> Any:
    """Each user's signed-in browser, made once (a sign-in costs an Argon2id hash)."""
    _, client = dashboard
    return functools.cache(lambda username: session_of(client, username, PASSWORD))


def mirrored_at(stack: Stack, command_id: str) -> float | None:
    engine = make_engine(stack.service_db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(T_CMD.c.mirrored_at).where(T_CMD.c.id == command_id)).scalar()
    finally:
        engine.dispose()


def figure(page: Any, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', page.text)
    assert found, element_id
    return found.group(1).strip()


def table_sums(page: Any, table_id: str) -> dict[str, int]:
    """A day table's columns, summed over its days (14 rows)."""
    table = page.text.split(f'id="{table_id}"')[1].split("</table>")[0]
    rows = re.findall(r"<tr data-day=.*?</tr>", table)
    assert len(rows) == 14
    sums: dict[str, int] = {}
    for row in rows:
        for series, count in re.findall(r'data-series="(\w+)">(\d+)<', row):
            sums[series] = sums.get(series, 0) + int(count)
    return sums


def mirror_counts(stack: Stack) -> tuple[dict[str, int], int]:
    """Parts by status and active members, as the mirror has them."""
    with make_engine(stack.index_db_url).connect() as conn:
        by_status = dict(conn.execute(select(Part.__table__.c.status, func.count()).group_by(Part.__table__.c.status)).all())
        members = conn.execute(select(func.count()).where(Organisation.__table__.c.suspended.is_(False))).scalar()
    return {status.name.lower(): by_status.get(int(status), 0) for status in PartStatus if status is not PartStatus.NONE}, members


def test_the_dashboard_shows_the_platforms_figures_as_sql_and_the_chain_have_them(dashboard, sessions):
    stack, _ = dashboard
    today = time.strftime("%Y-%m-%d", time.gmtime())
    operator = sessions("ops.oper")
    page = operator.get("/console/operations")
    assert page.status_code == 200, page.text
    parts, members = mirror_counts(stack)
    assert figure(page, "fig-active") == "1"  # only the maker sent commands
    assert f"of {members} members; 0 suspended" in page.text
    assert figure(page, "fig-commands") == "3"
    assert figure(page, "fig-parts") == str(sum(parts.values()))
    assert figure(page, "fig-scans") == "3" and figure(page, "fig-flags") == "1"
    assert figure(page, "fig-lag").startswith(("0 blocks", "1 blocks"))  # the head may move on while the page is drawn

    assert table_sums(page, "commands-table") == {"confirmed": 2, "rejected": 1, "open": 0, "total": 3}
    assert f'<tr data-day="{today}">' in page.text or time.gmtime().tm_hour == 0  # the newest row is today's (unless midnight just passed)
    chart = page.text.split('id="commands-chart"')[1].split("</svg>")[0]
    assert {"confirmed", "rejected"} == set(re.findall(r'data-series="(\w+)"', chart))  # a bar segment for each
    assert len(re.findall(r"<g data-day=", chart)) == 14
    for status, count in parts.items():
        assert f'data-status="{status}" data-count="{count}"' in page.text
    assert table_sums(page, "scans-table") == {"ok": 2, "flagged": 1, "total": 3}
    assert re.search(r'<tr data-kind="unregistered_serial"><th scope="row">[^<]+</th><td>1</td>', page.text)
    assert "0 items not final" in figure(page, "lag-outbox") and figure(page, "lag-reorgs").startswith("0 rolled back")
    assert figure(page, "lag-indexer-health") == "" and 'class="ok">Healthy<' in page.text
    assert '<a href="/console/operations"' in page.text  # in the navigation


def test_admins_and_operators_of_any_member_read_it_a_viewer_is_refused_and_nobody_signed_in_is_sent_to_sign_in(dashboard, sessions):
    _, client = dashboard
    for username in ("ops.admin", "ops.oper", "ws.oper"):
        assert sessions(username).get("/console/operations").status_code == 200, username
    viewer = sessions("ops.viewer")
    refused = viewer.get("/console/operations")
    assert refused.status_code == 403 and error_code(refused) == "operators_only"
    assert "for the admins and operators of member organisations" in refused.text
    assert '<a href="/console/operations"' not in viewer.get("/console").text
    away = TestClient(client.app).get("/console/operations", follow_redirects=False)
    assert away.status_code == 303 and away.headers["location"] == "/console/sign-in?next=%2Fconsole%2Foperations"


def test_every_text_of_the_dashboard_is_in_both_languages():
    catalogue = Catalogue.load()
    template = (Path(__file__).resolve().parent.parent / "ledger_service" / "templates" / "console" / "operations.html").read_text()
    literal = {key for key in re.findall(r'_\("([a-z0-9_.]+)"', template) if not key.endswith(".")}  # not the prefixes of built keys
    built = {f"ops.series.{name}" for name in ("confirmed", "rejected", "open", "ok", "flagged")} | {f"ops.state.{s}" for s in ("pending", "signed", "sent", "mined")}
    wanted = literal | built | {"nav.operations", "error.operators_only", "error.metrics_unauthorized", "error.metrics_local_only"}
    assert len(literal) > 30
    assert catalogue.missing(wanted) == {"zh": [], "en": []}


def test_chromium_on_a_phone_reads_the_dashboard_in_chinese_and_english(dashboard, sessions, artifacts_dir: Path):
    _, client = dashboard
    token = sessions("ops.oper").token
    catalogue = Catalogue.load()
    with served(client.app, lifespan="off") as base, launched_chromium() as browser:
        problems: list[str] = []
        for locale, lang in (("zh-CN", "zh"), ("en-GB", "en")):
            context = phone_context(browser, locale=locale, token=token)
            context.add_init_script(CSP_LISTENER)
            page = watch_errors(context.new_page(), problems, who=lang)
            assert page.goto(f"{base}/console/operations?lang={lang}").status == 200
            assert page.locator("h1").inner_text() == catalogue.gettext(lang, "ops.title")
            assert page.locator("#fig-commands").inner_text() == "3"
            assert page.locator("#commands-chart rect[data-series]").count() == 2
            assert page.locator("#commands-chart").get_attribute("role") == "img"
            page.locator("#commands-table").locator("xpath=ancestor::details").locator("summary").click()
            assert page.locator("#commands-table").is_visible()
            assert not scrolls_sideways(page)
            page.screenshot(path=str(artifacts_dir / f"console-operations-phone-{lang}.png"), full_page=True)
            assert page.evaluate("window.__csp") == []
            assert axe_findings(page) == []
            context.close()
        assert problems == [], problems
