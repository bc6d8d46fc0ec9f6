"""The verification page in headless Chromium on a phone-sized viewport, served by a real uvicorn over the live
stack: a Chinese phone opens a label's Digital Link, reads the verdict, switches to English, checks its VIN and
shares its coarse location; a destroyed part's label reads as a copy; a recalled part's unsigned label reads as
recalled first, the missing signature second, with the recall's notice in English and, switched, in Chinese.
Screenshots go to test-artifacts/<worker>/."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn

from ledger_service.app import create_app
from tests.ports import free_port
from partledger.ids import part_id
from tests.chainkit import GTIN_A
from tests.labelkit import caught_up, label_uri, live_stack, register
from tests.servicekit import wait_command

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
VIN = "LSVAU2180N2183294"
NOTICE = {
    "title": {"zh": "刹车片批次召回", "en": "Brake pad lot recall"},
    "reason": {"zh": "摩擦材料可能开裂。", "en": "The friction material may crack."},
    "risk": {"zh": "制动距离变长。", "en": "Longer braking distances."},
    "remedy": {"zh": "免费更换刹车片。", "en": "The pads are replaced free of charge."},
    "action": {"zh": "请勿安装。\n已安装请尽快联系维修厂。", "en": "Do not fit it.\nIf it is fitted, call your workshop soon."},
    "contact": {"zh": "客服 400-000-0000", "en": "Service line +86 400 000 0000"},
}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


class Server:
    """The service app under a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def test_phone_reads_the_verdict_switches_language_and_checks_its_vin(deployed, tmp_path, artifacts_dir):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium fonts-wqy-microhei)")
    from playwright.sync_api import expect, sync_playwright

    ledger = deployed
    with live_stack(ledger, tmp_path, public_rate_limit="1000/minute") as (stack, client):
        o, fn, maker = ledger.orgs, ledger.parts.functions, ledger.orgs["maker"].key
        register(ledger, maker, gtin=GTIN_A, lot="LOT-PHONE", serials=["PHONE-1", "PHONE-SCRAP"])
        register(ledger, maker, gtin=GTIN_A, lot="LOT-PHONE-R", serials=["PHONE-R"])
        fitted, scrapped = part_id(GTIN_A, "PHONE-1"), part_id(GTIN_A, "PHONE-SCRAP")
        ledger.act(maker, fn.scrapParts([scrapped], bytes(32)))
        ledger.act(maker, fn.shipParts([fitted], o["workshop"].id, bytes(32)))
        ledger.act(o["workshop"].key, fn.receiveParts([fitted], bytes(32)))
        caught_up(client, ledger)
        installed = client.post("/v1/parts/install", headers=stack.headers("workshop"), json={"items": [{"part_id": "0x" + fitted.hex(), "vin": VIN}]})
        assert wait_command(stack, "workshop", installed.json()["command_id"])["status"] == "confirmed"
        recalled = client.post("/v1/lots/recall", headers=stack.headers("maker"), json={"lot": ledger.lot_number(o["maker"], "LOT-PHONE-R"), "notice": NOTICE})
        assert wait_command(stack, "maker", recalled.json()["command_id"])["status"] == "confirmed"
        caught_up(client, ledger)

        with Server(create_app(stack.settings(submitter=False, public_rate_limit="1000/minute"))) as server, sync_playwright() as playwright:
            resolver = f"http://127.0.0.1:{server.port}"
            url = label_uri(ledger, gtin=GTIN_A, serial="PHONE-1", key=maker, resolver=resolver)
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(**PHONE, locale="zh-CN", permissions=["geolocation"], geolocation={"latitude": 39.9042, "longitude": 116.4074})
                page = context.new_page()
                response = page.goto(url)
                assert response is not None and response.status == 200
                title = page.locator("#verdict-title")
                expect(title).to_have_text("正品配件 — 已装车", use_inner_text=True)
                assert page.locator("#verdict").get_attribute("class") == "card verdict ok"
                assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
                page.screenshot(path=str(artifacts_dir / "verify-phone-zh.png"), full_page=True)

                page.locator("#lang-switch").click()
                expect(title).to_have_text("Genuine part — installed in a vehicle", use_inner_text=True)
                expect(page.locator("#lang-switch")).to_have_text("中文", use_inner_text=True)
                assert urlsplit(page.url).query.endswith("lang=en") and page.title() == "Genuine part — installed in a vehicle"

                page.locator("#vin").fill(VIN.lower())
                page.get_by_role("button", name="Check").click()
                expect(page.locator("#vin-result")).to_have_text("The VIN matches: this is the part fitted to your vehicle.", use_inner_text=True)
                page.locator("#share-location").click()
                expect(page.locator("#location-result")).to_have_text("Nothing suspicious found.", use_inner_text=True)
                page.screenshot(path=str(artifacts_dir / "verify-phone-en.png"), full_page=True)

                page.reload()  # the choice sticks (cookie)
                expect(title).to_have_text("Genuine part — installed in a vehicle", use_inner_text=True)

                page.goto(label_uri(ledger, gtin=GTIN_A, serial="PHONE-SCRAP", key=maker, resolver=resolver))
                expect(title).to_have_text("Destroyed part", use_inner_text=True)
                expect(page.locator("#verdict-detail")).to_have_text("This part was destroyed: a label on a part in use is a copy.", use_inner_text=True)
                expect(page.locator("#suspicious")).to_be_visible()
                page.screenshot(path=str(artifacts_dir / "verify-phone-scrapped-en.png"), full_page=True)

                # A recalled part's unsigned label: recalled first, the label's fault second, the notice to act on.
                page.goto(label_uri(ledger, gtin=GTIN_A, serial="PHONE-R", key=None, resolver=resolver))
                expect(title).to_have_text("Recalled — do not use", use_inner_text=True)
                expect(page.locator("#label-warning")).to_have_text(
                    "Also: Label without manufacturer signature PartLedger labels carry the manufacturer's signature; this one has none. Ask the seller for a genuine label.",
                    use_inner_text=True,
                )  # fmt: skip
                expect(page.locator("#notice-title")).to_have_text(NOTICE["title"]["en"], use_inner_text=True)
                expect(page.locator("#notice-action p")).to_have_text(NOTICE["action"]["en"], use_inner_text=True)  # its line break kept
                expect(page.locator("#notice-contact")).to_have_text(NOTICE["contact"]["en"], use_inner_text=True)
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
                page.screenshot(path=str(artifacts_dir / "verify-phone-recalled-en.png"), full_page=True)
                page.locator("#lang-switch").click()
                expect(title).to_have_text("已召回 — 请勿使用", use_inner_text=True)
                expect(page.locator("#label-warning")).to_contain_text("标签缺少厂商签名", use_inner_text=True)
                expect(page.locator("#notice-title")).to_have_text(NOTICE["title"]["zh"], use_inner_text=True)
                expect(page.locator("#notice-action p")).to_have_text(NOTICE["action"]["zh"], use_inner_text=True)
                expect(page.locator("#notice-risk")).to_have_text(NOTICE["risk"]["zh"], use_inner_text=True)
                page.screenshot(path=str(artifacts_dir / "verify-phone-recalled-zh.png"), full_page=True)
            finally:
                browser.close()
    for name in ("verify-phone-zh.png", "verify-phone-en.png", "verify-phone-scrapped-en.png", "verify-phone-recalled-en.png", "verify-phone-recalled-zh.png"):
        assert (artifacts_dir / name).stat().st_size > 10_000
