"""The console's journey, as issue 14's acceptance names it: three people of three organisations, each on a phone in a
browser context of their own, take a 50-part lot from registration to a part installed in a vehicle.

- The maker's operator registers the lot by CSV upload and downloads its A4 label PDF; the PDF is rendered
  (pypdfium2) and its QR codes decoded (zxing-cpp).
- The maker ships the lot to the warehouse.
- The warehouse clerk receives it by uploading photos of two labels (PNGs cut from the rendered page) and
  "receive all".
- The warehouse ships 10 parts to a workshop; the workshop's mechanic receives them and installs one with a VIN.
- The consumer page of that part says installed.

Each step is checked against the chain's state through the query API, not only against what the page shows. The
maker and the mechanic use the console in Chinese, the clerk in English; every page is kept as a screenshot in the
user's language, and the last pages in the other one too. No page may log a console error or a CSP violation, or
scroll sideways on a phone; axe-core reads every console page, in zh and en, in tests/test_console_security.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
import zxingcpp
from PIL import Image

from labels.digital_link import parse_uri
from ledger_service import accounts
from ledger_service.app import create_app
from partledger.ids import part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, Ledger
from tests.consolekit import launched_chromium, phone_context, scrolls_sideways, served, watch_errors
from tests.labelkit import caught_up, live_stack
from tests.servicekit import Stack, wait_command

pytestmark = pytest.mark.chain

PASSWORD = "journey-password-4b19e"
LOT = "JOURNEY-1"
SERIALS = [f"JR-{n:03d}" for n in range(1, 51)]
VIN = "1HGCM82633A004352"  # a valid ISO 3779 check digit (3)
RENDER_DPI = 200


@pytest.fixture(scope="module")
def site(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Any]]:
    with live_stack(deployed, tmp_path_factory.mktemp("console-journey")) as (stack, client):
        yield stack, client


def test_three_organisations_take_a_lot_from_registration_to_an_installed_part_on_their_phones(site: tuple[Stack, Any], artifacts_dir: Path) -> None:
    from playwright.sync_api import expect

    stack, client = site
    ledger = stack.ledger
    services = client.app.state.services
    people = {"maker": ("mei", "zh-CN"), "warehouse": ("wang", "en-GB"), "workshop": ("li", "zh-CN")}
    for org, (username, _) in people.items():
        accounts.create_user(services.service_engine, org_id=ledger.orgs[org].id, username=username, password=PASSWORD, role="operator")
    problems: list[str] = []

    def api(org: str, path: str) -> Any:
        reply = client.get(path, headers=stack.headers(org))
        assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text}"
        return reply.json()

    def confirmed(org: str, page: Any) -> dict[str, Any]:
        """The command the page shows, followed through the API to its block and the mirror."""
        shown = re.search(r"/commands/([0-9a-f-]{36})", page.url)  # the maker's command page, else the result card
        command_id = shown[1] if shown else page.locator("[data-command-id]").first.get_attribute("data-command-id")
        view = wait_command(stack, org, command_id, timeout=120)
        assert view["status"] == "confirmed", view
        assert view["actor"] == f"user:{people[org][0]}", view
        caught_up(client, ledger)
        return view

    def holdings(pids: list[bytes]) -> dict[str, tuple[int, str]]:
        """Custodian and status of each part, from the chain's mirror through the query API (as the auditor, who
        sees every part's consortium record)."""
        found = {}
        for pid in pids:
            part = api("auditor", f"/v1/parts/0x{pid.hex()}")["part"]
            found[part["part_id"]] = (part["custodian"]["id"], part["status"])
        return found

    with served(create_app(stack.settings())) as base, launched_chromium() as chromium:

        def phone(org: str) -> Any:
            username, locale = people[org]
            context = phone_context(chromium, locale=locale, accept_downloads=True)
            context.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error('CSP ' + e.violatedDirective + ' ' + e.blockedURI));")
            page = watch_errors(context.new_page(), problems, who=org)
            page.goto(f"{base}/console/sign-in")
            page.locator("#f-username").fill(username)
            page.locator("#f-password").fill(PASSWORD)
            page.locator("#sign-in").click()
            expect(page.locator("#lang-switch")).to_be_visible()
            assert "/console/sign-in" not in page.url, page.url
            return page

        def shot(page: Any, name: str) -> None:
            assert not scrolls_sideways(page), f"{name} scrolls sideways"
            page.screenshot(path=str(artifacts_dir / f"journey-{name}.png"), full_page=True)

        # 1. The maker's operator registers the lot by CSV upload.
        maker = phone("maker")
        shot(maker, "1-maker-home-zh")
        maker.goto(f"{base}/console/maker/register")
        csv_body = ("gtin,serial,lot\n" + "".join(f"{GTIN_A},{serial},{LOT}\n" for serial in SERIALS)).encode()
        maker.locator("#f-file").set_input_files(files=[{"name": "lot.csv", "mimeType": "text/csv", "buffer": csv_body}])
        maker.locator("#register-csv-submit").click()
        expect(maker.locator("#command-status")).to_have_attribute("data-status", "confirmed", timeout=120_000)
        shot(maker, "2-maker-registered-zh")
        confirmed("maker", maker)
        pids = [part_id(GTIN_A, serial) for serial in SERIALS]
        maker_id = ledger.orgs["maker"].id
        assert set(holdings(pids).values()) == {(maker_id, "in_stock")}
        lot = ledger.lot_number(ledger.orgs["maker"], LOT)

        # ... and downloads the lot's A4 label PDF, whose QR codes decode to the 50 parts' links.
        maker.locator("#lot-link").click()
        maker.locator("#make-a4").click()
        expect(maker.locator("#labels-download")).to_be_visible(timeout=120_000)
        shot(maker, "3-maker-labels-zh")
        with maker.expect_download() as download:
            maker.locator("#labels-download").click()
        pages = rendered_pages(Path(download.value.path()).read_bytes())
        codes = [(page_number, code) for page_number, image in enumerate(pages) for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
        links = {parse_uri(code.text).serial: code.text for _, code in codes}
        assert sorted(links) == SERIALS

        # 2. The maker ships the lot to the warehouse.
        maker.goto(f"{base}/console/custody/ship")
        choose_lot(maker, f"{lot}:")
        maker.locator("#f-to_org").select_option(str(ledger.orgs["warehouse"].id))
        maker.locator("#ship-submit").click()
        expect(maker.locator("#accepted")).to_be_visible()
        shot(maker, "4-maker-shipped-zh")
        confirmed("maker", maker)
        warehouse_id = ledger.orgs["warehouse"].id
        assert {status for _, status in holdings(pids).values()} == {"in_transit"}

        # 3. The warehouse clerk receives it: photos of two labels, then "receive all".
        clerk = phone("warehouse")
        clerk.goto(f"{base}/console/scan")
        photos = [label_photo(pages, codes, serial) for serial in (SERIALS[0], SERIALS[27])]
        clerk.locator("#f-photo").set_input_files(files=[{"name": f"label-{n}.png", "mimeType": "image/png", "buffer": photo} for n, photo in enumerate(photos)])
        shot(clerk, "5-warehouse-scan-en")
        clerk.locator("#upload-submit").click()
        expect(clerk.locator("#list-count")).to_have_text("2")
        shot(clerk, "6-warehouse-scanned-en")
        clerk.locator("#receive-all-1").click()
        expect(clerk.locator("#accepted")).to_be_visible()
        shot(clerk, "7-warehouse-received-en")
        confirmed("warehouse", clerk)
        assert set(holdings(pids).values()) == {(warehouse_id, "in_stock")}

        # 4. The warehouse ships 10 parts to the workshop.
        clerk.goto(f"{base}/console/custody/ship")
        choose_lot(clerk, f"{lot}:")
        clerk.locator("#f-quantity").fill("10")
        clerk.locator("#f-to_org").select_option(str(ledger.orgs["workshop"].id))
        clerk.locator("#ship-submit").click()
        expect(clerk.locator("#accepted")).to_be_visible()
        shot(clerk, "8-warehouse-shipped-en")
        confirmed("warehouse", clerk)
        now = holdings(pids)
        sent = [pid for pid in pids if now["0x" + pid.hex()][1] == "in_transit"]
        assert len(sent) == 10 and sum(1 for value in now.values() if value == (warehouse_id, "in_stock")) == 40

        # 5. The workshop's mechanic receives them and installs one with a VIN.
        mechanic = phone("workshop")
        workshop_id = ledger.orgs["workshop"].id
        mechanic.goto(f"{base}/console/custody/inbound")
        shot(mechanic, "9-workshop-inbound-zh")
        mechanic.locator("#receive-all-1").click()
        expect(mechanic.locator("#accepted")).to_be_visible()
        confirmed("workshop", mechanic)
        assert set(holdings(sent).values()) == {(workshop_id, "in_stock")}
        installed = sent[0]
        serial = next(s for s in SERIALS if part_id(GTIN_A, s) == installed)
        mechanic.goto(f"{base}/console/custody/install")
        mechanic.locator("#f-part").fill(links[serial])  # as a handheld scanner types the label's link
        mechanic.locator("#f-vin").fill(VIN)
        shot(mechanic, "10-workshop-install-zh")
        mechanic.locator("#install-submit").click()
        expect(mechanic.locator("#accepted")).to_be_visible()
        shot(mechanic, "11-workshop-installed-zh")
        confirmed("workshop", mechanic)
        assert holdings([installed]) == {"0x" + installed.hex(): (workshop_id, "installed")}
        assert ledger.status(installed)[0] == PartStatus.INSTALLED.value  # and on chain itself

        # 6. The consumer page of that part says installed, in both languages.
        for locale, expected in (("zh-CN", "已装车"), ("en-GB", "installed")):
            consumer = phone_context(chromium, locale=locale).new_page()
            consumer.goto(links[serial])
            expect(consumer.locator("body")).to_have_attribute("data-verdict", "installed")
            expect(consumer.locator("h1")).to_contain_text(expected)
            shot(consumer, f"12-consumer-installed-{locale[:2]}")

        # The clerk's desk: the same console on a desktop screen.
        desk = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB", storage_state=clerk.context.storage_state()).new_page()
        watch_errors(desk, problems, who="desk")
        for name, path in (("inventory", "/console/custody/inventory"), ("commands", "/console/commands"), ("home", "/console")):
            desk.goto(base + path)
            expect(desk.locator("#lang-switch")).to_be_visible()
            desk.screenshot(path=str(artifacts_dir / f"journey-desktop-warehouse-{name}-en.png"), full_page=True)

        # The same people's pages in their other language.
        for org, page in (("maker", maker), ("warehouse", clerk), ("workshop", mechanic)):
            page.locator("#lang-switch").click()
            expect(page.locator("html")).to_have_attribute("lang", "en" if people[org][1] == "zh-CN" else "zh-CN")
            shot(page, f"13-{org}-other-language")
    assert problems == [], problems


def choose_lot(page: Any, value_prefix: str) -> None:
    """Picks the lot whose option value starts with `value_prefix` ("<lot>:<gtin>") in the ship form."""
    if page.locator("#source-lot").count():
        page.locator("#source-lot").check()
    values = page.locator("#f-lot option").evaluate_all("options => options.map(o => o.value)")
    page.locator("#f-lot").select_option(next(value for value in values if value.startswith(value_prefix)))


def rendered_pages(pdf: bytes) -> list[Image.Image]:
    return [page.render(scale=RENDER_DPI / 72, grayscale=True).to_pil() for page in pypdfium2.PdfDocument(pdf)]


def label_photo(pages: list[Image.Image], codes: list[tuple[int, Any]], serial: str) -> bytes:
    """A PNG cut from the rendered page around one label's QR code, with a quiet margin: a photo of that label."""
    number, code = next((number, code) for number, code in codes if parse_uri(code.text).serial == serial)
    corners = [code.position.top_left, code.position.top_right, code.position.bottom_left, code.position.bottom_right]
    margin = 60
    box = (min(p.x for p in corners) - margin, min(p.y for p in corners) - margin, max(p.x for p in corners) + margin, max(p.y for p in corners) + margin)
    out = io.BytesIO()
    pages[number].crop(box).save(out, "PNG")
    return out.getvalue()

