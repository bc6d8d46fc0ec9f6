"""The edge agent's local pages (wallets.edge.pages) in real Chromium, on the agent as `partledger edge run` starts it
(a real process), against the real stack of tests/test_edge_agent.py (Anvil, the indexer, the service and its
relayer), its link to the cloud through TCP proxies the test cuts.

A part is looked up by scanning its label's Digital Link; it is received and installed (VIN entered) through the
forms while the link is cut, shown queued, and confirmed once the link is back; a request the chain refuses shows
its reason in words, as does one the site's view refuses (the form keeping its input); the pages render in Chinese
and English; a post without the CSRF token, from another site, or through a DNS name is refused.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from partledger.ids import vin_check_digit, vin_hash
from partledger.model import PartStatus
from tests.chainkit import GTIN_A
from tests.consolekit import PHONE, launched_chromium, scrolls_sideways, watch_errors
from tests.ports import free_port
from tests.servicekit import PASSPHRASE, wait_until
from tests.test_edge_agent import EDGE, NO_DOC, Agent, World, hexid, world  # noqa: F401  (world: the fixture)
from wallets.edge.pages import open_vin
from wallets.keystore import load_keystore

pytestmark = [pytest.mark.chain, pytest.mark.heavy]  # about 35-40 s alone: the stack, an agent process, Chromium

SERIALS = ["EDG-PG-1", "EDG-PG-2", "EDG-PG-3"]


def digital_link(serial: str) -> str:
    return f"https://id.example.com/01/{GTIN_A}/21/{serial}"


def valid_vin(body: str = "LSVAU2180N2000001") -> str:
    return body[:8] + vin_check_digit(body) + body[9:]


@dataclass
class Site:
    world: World
    url: str
    agent: Agent
    parts: dict[str, bytes]


@pytest.fixture(scope="module")
def site(world: World) -> Site:  # noqa: F811
    """One agent process for the module, its view synced once (a later sync only after a failure), the parts shipped
    to it beforehand."""
    ids = world.ship_to_edge(SERIALS, "L-EDGE-PAGES")
    port = free_port()
    world.start_agent(world.workdir / "pages.db", port, sync_interval=3600)
    agent = Agent(port)
    agent.synced_at_least(world.ledger.w3.eth.block_number)
    return Site(world, f"http://127.0.0.1:{port}", agent, dict(zip(SERIALS, ids)))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(**PHONE, locale="en-US")
    problems: list[str] = []
    page = watch_errors(context.new_page(), problems)
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()
    assert [text for text in problems if not text.startswith("Failed to load resource: the server responded with a status of 4")] == []  # a refusal is a 4xx page


def state_of(page: Any) -> str:
    return page.locator("#request-state").get_attribute("data-state")


def settled_state(page: Any, timeout: float = 60) -> str:
    """The request page refreshes itself until the request settles."""
    wait_until(lambda: state_of(page) in ("confirmed", "failed"), "the request page to show the request settled", timeout)
    return state_of(page)


def test_receive_and_install_through_the_pages_while_the_link_is_cut_then_confirmed_when_it_returns(site: Site, page: Any):
    world, serial = site.world, SERIALS[0]
    page.goto(f"{site.url}/edge/site/scan")
    page.fill("#f-q", digital_link(serial))
    page.press("#f-q", "Enter")  # as a scanner ends its read
    assert page.locator("#part").get_attribute("data-part-id") == hexid(site.parts[serial])
    assert page.locator("#part-status").inner_text() == "in transit"
    assert [link.get_attribute("id") for link in page.locator("#part-actions a").all()] == ["action-receive"]

    world.link.cut()
    try:
        page.click("#action-receive")
        assert page.input_value("#f-parts") == hexid(site.parts[serial])
        page.click("#submit")
        received = page.locator("#request-id").inner_text()
        assert (state_of(page), page.locator("#request-state").inner_text()) == ("queued", "accepted, queued")

        page.goto(f"{site.url}/edge/site/install")
        page.fill("#f-part", digital_link(serial))
        page.fill("#f-vin", valid_vin().lower())
        page.click("#submit")
        installed = page.locator("#request-id").inner_text()
        assert state_of(page) == "queued"
        hashed = site.agent.request(installed)["payload"]["vin_hashes"][0]
        with closing(sqlite3.connect(f"file:{world.workdir / 'pages.db'}?mode=ro", uri=True)) as db:  # the salt that proves the VIN, sealed under the site key
            kept = db.execute("SELECT sealed FROM vins WHERE vin_hash = ?", (hashed,)).fetchone()[0]
            assert not [row for row in db.execute("SELECT * FROM vins") if any(valid_vin() in str(value) for value in row)]
        vin, salt = open_vin(load_keystore(world.keystore, PASSPHRASE), hashed, kept)
        assert vin == valid_vin() and "0x" + vin_hash(vin, salt).hex() == hashed

        wait_until(lambda: site.agent.status()["link"].startswith("down"), "the agent to find the link down")  # trying to post
        page.goto(f"{site.url}/edge/site")
        assert page.locator("#link").get_attribute("data-link") == "down"
        assert page.locator("#queue-depth").inner_text() == "2"
        assert page.locator("#oldest-unsent a").get_attribute("href") == f"/edge/site/requests/{received}"
        assert page.locator("#last-sync").inner_text() != "never"
        recent = {item.get_attribute("data-request-id"): item.locator("[data-state]").get_attribute("data-state") for item in page.locator("#recent li").all()}
        assert {received: recent.get(received), installed: recent.get(installed)} == {received: "queued", installed: "queued"}
    finally:
        world.link.restore()

    page.goto(f"{site.url}/edge/site/requests/{installed}")
    assert settled_state(page) == "confirmed"
    assert site.agent.request(received)["status"] == "confirmed"
    status, custodian, *_ = world.ledger.status(site.parts[serial])
    assert (PartStatus(status), custodian) == (PartStatus.INSTALLED, world.org(EDGE).id)
    page.goto(f"{site.url}/edge/site")
    assert page.locator("#link").get_attribute("data-link") == "up"
    assert page.locator("#queue-depth").inner_text() == "0"
    assert not scrolls_sideways(page)


def test_a_refusal_shows_its_reason_in_words_and_the_form_keeps_its_input(site: Site, page: Any):
    world, maker = site.world, site.world.org("maker")
    # The site's view refuses at once: the part is not on its way here (it was never shipped to the site).
    stranger = hexid(world.ledger.register(maker, ["EDG-PG-X"], lot="L-EDGE-PAGES-X")[0])
    page.goto(f"{site.url}/edge/site/receive")
    page.fill("#f-parts", f"{digital_link(SERIALS[1])}\n{stranger}")
    page.click("#submit")
    assert page.locator("#error-code").inner_text() == "part_not_inbound"
    assert page.locator(".problem-text").inner_text() == "This part is not in transit to this site."
    assert page.input_value("#f-parts") == f"{digital_link(SERIALS[1])}\n{stranger}"
    # Unreadable input: the field's error in words, nothing queued.
    page.fill("#f-parts", "not a label")
    page.click("#submit")
    assert (page.locator("#error-code").inner_text(), page.locator("#f-parts-error").inner_text()) == ("unreadable", "This entry cannot be read (a part id, GTIN and serial, a Digital Link or a lot selection).")
    assert site.agent.status()["counts"]["failed"] == 0

    # The chain refuses what the view allowed: the maker cancels the shipment, the site's view does not know yet.
    world.ledger.act(maker.key, world.ledger.parts.functions.cancelShipments([site.parts[SERIALS[1]]], NO_DOC))
    page.fill("#f-parts", digital_link(SERIALS[1]))
    page.click("#submit")
    assert settled_state(page) == "failed"
    assert page.locator("#request-reason").inner_text() == "The part's status does not allow this."
    page.goto(f"{site.url}/edge/site")
    failed = page.locator('#recent li:has([data-state="failed"])')
    assert failed.locator(".reason").inner_text() == "The part's status does not allow this."


def test_the_pages_render_in_chinese_and_english(site: Site, page: Any):
    page.goto(f"{site.url}/edge/site?lang=zh")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("h1").inner_text() == "站点 edge-bay-1"
    assert page.locator("nav.areas").inner_text().split() == ["状态", "扫码查询", "收货", "安装", "发货"]
    page.goto(f"{site.url}/edge/site/scan")  # the choice is remembered in the `lang` cookie
    page.fill("#f-q", "0x12")
    page.click("#look-up")
    assert page.locator("label[for=f-q]").inner_text().startswith("扫描标签或输入零件编号")
    assert page.locator(".problem-text").inner_text() == "无法识别此条目（配件编号、商品条码+序列号、数字链接或批次选择）。"
    page.click("#lang-switch")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Look up a part"
    page.goto(f"{site.url}/edge/site/ship")
    options = page.locator("#f-to option").all_inner_texts()
    assert f"maker (#{site.world.org('maker').id})" in options and all(f"(#{site.world.org(EDGE).id})" not in text for text in options)


def test_a_post_without_the_csrf_token_from_another_site_or_through_a_dns_name_is_refused(site: Site):
    web = httpx.Client(base_url=site.url, timeout=10, headers={"Accept-Language": "en"})
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/edge/site/receive").text).group(1)
    before = site.agent.status()["counts"]
    part = hexid(site.parts[SERIALS[2]])
    wrong = ("y" if token[0] == "x" else "x") + token[1:]  # one character off (a token starting with x: "x" + token[1:] is the token)
    for data, headers, code in (
        ({"parts": part}, {}, "csrf_failed"),
        ({"parts": part, "csrf_token": wrong}, {}, "csrf_failed"),
        ({"parts": part, "csrf_token": token}, {"Origin": "https://elsewhere.example"}, "csrf_failed"),
        ({"parts": part, "csrf_token": token}, {"Host": "rebound.example:80"}, "host_not_local"),
    ):
        answer = web.post("/edge/site/receive", data=data, headers=headers)
        assert answer.status_code == 403, answer.text
        assert re.search(r'<code id="error-code">([^<]+)</code>', answer.text).group(1) == code
        assert "Traceback" not in answer.text
    assert site.agent.status()["counts"] == before
    # The same post with the token (and this host as its Origin) is taken.
    answer = web.post("/edge/site/receive", data={"parts": part, "csrf_token": token}, headers={"Origin": site.url}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/edge/site/requests/")
    assert site.agent.settled(answer.headers["location"].rsplit("/", 1)[1])["status"] == "confirmed"  # the other tests count the queue


def test_every_text_the_pages_show_is_in_both_languages():
    from ledger_service.console.i18n import Catalogue
    from partledger.artifacts import REPO_ROOT
    from tests.test_console_catalogue import KEY_USE
    from wallets.edge.queue import STATUSES

    edge = REPO_ROOT / "wallets" / "edge"
    sources = [*sorted((edge / "templates").rglob("*.html")), *sorted(edge.glob("*.py"))]
    texts = [path.read_text(encoding="utf-8") for path in sources]
    used = {match.group(2) for text in texts for match in KEY_USE.finditer(text)}
    used |= {match.group(1) for text in texts for match in re.finditer(r"""["'](edge\.[a-z0-9_.]*[a-z0-9_])["']""", text)}  # macro arguments
    assert {"edge.title", "edge.scan.label", "edge.form.vin"} <= used
    refusals = {match.group(1) for text in texts for match in re.finditer(r'Refusal\(\s*\d+,\s*"([a-z_]+)"', text)}
    assert {"part_not_inbound", "csrf_failed", "host_not_local", "unknown_organisation"} <= refusals
    built = (
        {f"edge.state.{state}" for state in STATUSES} | {f"edge.state_help.{state}" for state in STATUSES}
        | {f"edge.kind.{kind}" for kind in ("receive", "install", "ship", "nonce_fill")}
        | {f"edge.nav.{area}" for area in ("status", "scan", "receive", "install", "ship")}
        | {f"error.{code}" for code in refusals | {"unknown_part", "invalid_vin", "vin_check_digit", "not_found", "invalid_request", "generic"}}
    )  # fmt: skip
    catalogue = Catalogue.load()
    missing = {lang: keys for lang, keys in catalogue.missing(used | built).items() if keys}
    assert not missing
