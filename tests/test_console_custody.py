"""The console's site pages against the real stack (Anvil, the indexer, the service on SQLite): photos of labels
resolve their parts, "receive all" receives a shipment, a lot selection ships, a workshop installs with a VIN whose
check digit is verified before anything is sent, the inventory CSV is the mirror; a viewer reads but cannot act, and
another organisation's parts are refused. Every write is followed to its block and checked against the chain's state
through the query API, not only against the page.

Chain states a test starts from are made with the organisations' own dev keys; everything a test checks goes
through the console (signed-in users, their CSRF tokens) and the API. In Chromium on a phone, the camera reads a
label and the install form checks a VIN as it is typed (axe-core reads these pages in tests/test_console_security.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import pytest
import zxingcpp
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from labels.qr import qr_png
from ledger_service import accounts
from ledger_service.tables import Command
from partledger.documents import salted_document_hash
from partledger.errors import ValidationError
from partledger.ids import checked_vin, vin_check_digit
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.consolekit import Session, axe_findings, error_code, launched_chromium, phone_context, scrolls_sideways, served, session_of, watch_errors
from tests.labelkit import caught_up, label_uri, live_stack
from tests.servicekit import Stack, wait_command

pytestmark = pytest.mark.chain

PASSWORD = "console-password-7f3a"
VALID_VIN = "1HGCM82633A004352"
BAD_CHECK_DIGIT_VIN = "1HGCM82643A004352"  # the 9th character should be 3
PDF = b"%PDF-1.4\n% delivery note DN-4711 for the console test\n%%EOF\n"
S = PartStatus


# --- the stack, its users, and how they use the console -----------------------------------------------------


@dataclass
class Site:
    stack: Stack
    client: TestClient
    ledger: Ledger
    browsers: dict[str, Session] = field(default_factory=dict)

    def sign_in(self, org: str, role: str = "operator") -> Session:
        """The org's user of that role (made on first use), signed in; no language asked for (Chinese)."""
        key = f"{org}:{role}"
        if key not in self.browsers:
            services = self.client.app.state.services  # type: ignore[attr-defined]
            username = f"{org}-{role}"
            accounts.create_user(services.service_engine, org_id=self.ledger.orgs[org].id, username=username, password=PASSWORD, role=role)
            self.browsers[key] = session_of(self.client, username, PASSWORD, lang="", where="test")
        return self.browsers[key]

    def api(self, org: str, path: str) -> Any:
        reply = self.client.get(path, headers=self.stack.headers(org))
        assert reply.status_code == 200, reply.text
        return reply.json()

    def commands_of(self, org: str) -> int:
        engine = self.client.app.state.services.service_engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Command.__table__).where(Command.__table__.c.org_id == self.ledger.orgs[org].id)).scalar()


@pytest.fixture(scope="module")
def site(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with live_stack(deployed, tmp_path_factory.mktemp("console-custody")) as (stack, client):
        yield Site(stack, client, deployed)


def register(site: Site, org: str, *, lot: str, serials: list[str], gtin: str = GTIN_A) -> list[bytes]:
    return site.ledger.register(site.ledger.orgs[org], serials, gtin=gtin, lot=lot)


def ship(site: Site, sender: str, recipient: str, pids: list[bytes]) -> None:
    ledger = site.ledger
    ledger.act(ledger.orgs[sender].key, ledger.parts.functions.shipParts(pids, ledger.orgs[recipient].id, bytes(32)))


def settle(site: Site) -> None:
    caught_up(site.client, site.ledger)


def label_png(site: Site, serials: list[str], *, gtin: str = GTIN_A, signer: str = "maker") -> bytes:
    """A photo of labels: their QR codes (signed by the maker's dev key) side by side on white."""
    codes = [Image.open(io.BytesIO(qr_png(label_uri(site.ledger, gtin=gtin, serial=serial, key=site.ledger.orgs[signer].key), scale=6))).convert("L") for serial in serials]
    margin = 40
    sheet = Image.new("L", (sum(code.width for code in codes) + margin * (len(codes) + 1), max(code.height for code in codes) + 2 * margin), 255)
    x = margin
    for code in codes:
        sheet.paste(code, (x, margin))
        x += code.width + margin
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()


def vin_barcode_png(vin: str) -> bytes:
    image = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(vin, zxingcpp.BarcodeFormat.Code39), scale=3)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")  # type: ignore[arg-type]
    return out.getvalue()


def command_id(page: Any) -> str:
    assert page.status_code == 202, page.text
    found = re.search(r'data-command-id="([0-9a-f-]{36})"', page.text)
    assert found, page.text
    assert f'href="/console/commands/{found.group(1)}"' in page.text
    return found.group(1)


def confirmed(site: Site, org: str, page: Any) -> dict[str, Any]:
    view = wait_command(site.stack, org, command_id(page))
    assert view["status"] == "confirmed", view
    return view


def part_of(site: Site, org: str, pid: bytes) -> dict[str, Any]:
    return site.api(org, f"/v1/parts/0x{pid.hex()}")["part"]


def on_chain(site: Site, pid: bytes) -> tuple[int, int]:
    """(status, custodian) as the contract answers it."""
    status, custodian, *_ = site.ledger.status(pid)
    return status, custodian


# --- scan, receive --------------------------------------------------------------------------------------------


def test_photos_of_two_labels_list_their_parts_and_receive_all_receives_the_whole_shipment(site: Site) -> None:
    serials = [f"RCV{index:03d}" for index in range(50)]
    pids = register(site, "maker", lot="LOT-RCV", serials=serials)
    ship(site, "maker", "warehouse", pids)
    settle(site)
    clerk = site.sign_in("warehouse")

    photos = [("photo", ("label-1.png", label_png(site, serials[:1]), "image/png")), ("photo", ("label-2.png", label_png(site, serials[7:8]), "image/png"))]
    page = clerk.post("/console/scan", files=photos)
    assert page.status_code == 200, page.text
    assert page.text.count('class="scanned-row') == 2
    assert f'data-part-id="0x{pids[0].hex()}"' in page.text and f'data-part-id="0x{pids[7].hex()}"' in page.text
    assert page.text.count("badge-signature-valid") == 2
    shipment = re.search(r'data-shipment="([^"]+)"', page.text)
    assert shipment and "50" in page.text
    assert 'name="kind" value="receive"' in page.text  # the bulk action both parts allow

    before = site.commands_of("warehouse")
    accepted = clerk.post("/console/custody/act", {"kind": "receive", "shipment": shipment.group(1)})
    confirmed(site, "warehouse", accepted)
    assert site.commands_of("warehouse") == before + 1
    warehouse = site.ledger.orgs["warehouse"].id
    assert all(on_chain(site, pid) == (S.IN_STOCK, warehouse) for pid in pids)
    assert all(part_of(site, "warehouse", pid)["custodian"]["id"] == warehouse for pid in pids[:3])
    inbound = clerk.get("/console/custody/inbound")
    assert shipment.group(1) not in inbound.text


def test_one_label_opens_its_part_with_the_actions_the_user_may_take(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-ONE", serials=["ONE-1"])
    settle(site)
    maker = site.sign_in("maker")
    opened = maker.post("/console/scan", files=[("photo", ("one.png", label_png(site, ["ONE-1"]), "image/png"))])
    assert opened.status_code == 303 and opened.headers["location"].startswith(f"/console/parts/0x{pids[0].hex()}?sig=")
    page = maker.get(opened.headers["location"])
    assert page.status_code == 200
    assert 'id="part-signature"' in page.text and "badge-signature-valid" in page.text
    for kind in ("ship", "quarantine", "scrap"):
        assert f'id="action-{kind}"' in page.text
    assert 'id="action-receive"' not in page.text and 'id="action-install"' not in page.text  # not in transit; no workshop


def test_a_photo_without_a_label_is_refused_next_to_the_field(site: Site) -> None:
    clerk = site.sign_in("warehouse")
    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, "PNG")
    page = clerk.post("/console/scan", files=[("photo", ("blank.png", blank.getvalue(), "image/png"))])
    assert page.status_code == 422 and error_code(page) == "no_qr_code"
    assert 'id="f-photo-error"' in page.text
    junk = clerk.post("/console/scan", files=[("photo", ("junk.png", b"not an image", "image/png"))])
    assert junk.status_code == 400 and error_code(junk) == "invalid_image"


# --- ship -------------------------------------------------------------------------------------------------------


def test_ship_with_a_lot_selection_sends_the_first_n_parts_with_the_delivery_note_hash(site: Site) -> None:
    serials = [f"SHP{index:03d}" for index in range(20)]
    pids = register(site, "maker", lot="LOT-SHIP", serials=serials, gtin=GTIN_B)
    ship(site, "maker", "distributor", pids)
    settle(site)
    seller = site.sign_in("distributor")
    confirmed(site, "distributor", seller.post("/console/custody/act", {"kind": "receive", "shipment": _shipment_of(seller)}))

    form = seller.get("/console/custody/ship")
    assert form.status_code == 200
    lot_number = site.ledger.lot_number(site.ledger.orgs["maker"], "LOT-SHIP")
    choice = f"{lot_number}:{GTIN_B}"
    assert f'value="{choice}"' in form.text and f'value="{site.ledger.orgs["workshop"].id}"' in form.text

    missing = seller.post("/console/custody/ship", {"step": "submit", "source": "lot", "lot": choice, "quantity": "10"})
    assert missing.status_code == 400 and 'id="f-to_org-error"' in missing.text

    workshop = site.ledger.orgs["workshop"].id
    key = re.search(r'name="form_key" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    fields = {"step": "submit", "source": "lot", "lot": choice, "quantity": "10", "to_org": str(workshop), "form_key": key}
    page = seller.post("/console/custody/ship", fields, files=[("doc", ("DN-4711.pdf", PDF, "application/pdf"))])
    again = seller.post("/console/custody/ship", fields, files=[("doc", ("DN-4711.pdf", PDF, "application/pdf"))])  # a double tap
    assert command_id(again) == command_id(page) and 'id="doc-salt"' in again.text
    assert re.search(r'id="doc-salt">([^<]+)<', again.text).group(1) == re.search(r'id="doc-salt">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    view = confirmed(site, "distributor", page)
    salt = re.search(r'id="doc-salt">(0x[0-9a-f]{64})<', page.text).group(1)  # type: ignore[union-attr]
    doc_hash = "0x" + salted_document_hash(PDF, bytes.fromhex(salt[2:])).hex()
    assert view["kind"] == "ship" and view["parts"] == 10 and view["summary"] == {"doc_hash": doc_hash, "to": workshop}
    shipped = sorted(pids, key=bytes)[:10]
    assert all(on_chain(site, pid) == (S.IN_TRANSIT, site.ledger.orgs["distributor"].id) for pid in shipped)
    assert all(on_chain(site, pid)[0] == S.IN_STOCK for pid in sorted(pids, key=bytes)[10:])
    history = site.api("distributor", f"/v1/parts/0x{shipped[0].hex()}")["history"]
    assert history[-1]["kind"] == "shipped" and history[-1]["doc_hash"] == doc_hash and history[-1]["counterparty"]["id"] == workshop


def _shipment_of(browser: Session) -> str:
    page = browser.get("/console/custody/inbound")
    found = re.search(r'data-shipment="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def test_shipping_to_yourself_is_refused_next_to_the_recipient_and_nothing_is_sent(site: Site) -> None:
    register(site, "maker", lot="LOT-SELF", serials=["SELF-1"])
    settle(site)
    maker = site.sign_in("maker")
    lot_number = site.ledger.lot_number(site.ledger.orgs["maker"], "LOT-SELF")
    before = site.commands_of("maker")
    page = maker.post("/console/custody/ship", {"step": "submit", "source": "lot", "lot": f"{lot_number}:{GTIN_A}", "to_org": str(site.ledger.orgs["maker"].id)})
    assert page.status_code == 422 and error_code(page) == "shipment_to_self"
    assert 'id="f-to_org-error"' in page.text
    assert site.commands_of("maker") == before


# --- workshop ----------------------------------------------------------------------------------------------------


def test_install_checks_the_vin_check_digit_before_sending_then_installs_with_a_valid_vin(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-FIT", serials=["FIT-1", "FIT-2"])
    ship(site, "maker", "workshop2", pids)
    settle(site)
    mechanic = site.sign_in("workshop2")
    confirmed(site, "workshop2", mechanic.post("/console/custody/act", {"kind": "receive", "shipment": _shipment_of(mechanic)}))
    item = f"/01/{GTIN_A}/21/FIT-1"

    form = mechanic.get(f"/console/custody/install?item={item}")
    assert form.status_code == 200 and f'value="{item}"' in form.text
    before = site.commands_of("workshop2")
    refused = mechanic.post("/console/custody/install", {"part": item, "vin": BAD_CHECK_DIGIT_VIN})
    assert refused.status_code == 400 and error_code(refused) == "vin_check_digit"
    assert re.search(r'id="f-vin-error">[^<]+<', refused.text)
    assert site.commands_of("workshop2") == before  # nothing was sent
    assert on_chain(site, pids[0])[0] == S.IN_STOCK

    read_vin = mechanic.post("/console/custody/install", {"part": item, "vin": ""}, files=[("vin_photo", ("vin.png", vin_barcode_png(VALID_VIN), "image/png"))])
    assert read_vin.status_code == 200 and f'value="{VALID_VIN}"' in read_vin.text and 'id="install-note"' in read_vin.text
    assert site.commands_of("workshop2") == before  # reading the barcode sends nothing either

    page = mechanic.post("/console/custody/install", {"part": item, "vin": VALID_VIN.lower()})
    view = confirmed(site, "workshop2", page)
    assert view["kind"] == "install" and view["parts"] == 1
    assert on_chain(site, pids[0]) == (S.INSTALLED, site.ledger.orgs["workshop2"].id)
    assert part_of(site, "workshop2", pids[0])["status"] == "installed"
    assert on_chain(site, pids[1])[0] == S.IN_STOCK

    removed = mechanic.post("/console/custody/act", {"kind": "remove", "item": item})
    confirmed(site, "workshop2", removed)
    assert on_chain(site, pids[0])[0] == S.IN_STOCK
    sold = mechanic.post("/console/custody/act", {"kind": "sell", "item": [item, f"/01/{GTIN_A}/21/FIT-2"]})
    confirmed(site, "workshop2", sold)
    assert [on_chain(site, pid)[0] for pid in pids] == [S.SOLD, S.SOLD]


def test_the_vin_check_digit_follows_49_cfr_565() -> None:
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert checked_vin(" 1hgcm82633a004352 ") == VALID_VIN
    for vin, code in ((BAD_CHECK_DIGIT_VIN, "vin_check_digit"), ("1HGCM82633A00435", "invalid_vin"), ("1HGCM82633AO04352", "invalid_vin")):
        with pytest.raises(ValidationError) as caught:
            checked_vin(vin)
        assert caught.value.code == code


# --- inventory -----------------------------------------------------------------------------------------------------


def test_inventory_csv_equals_the_mirror(site: Site) -> None:
    serials = [f"INV{index:04d}" for index in range(30)] + ["=1+2"]
    pids = register(site, "maker", lot="LOT-INV", serials=serials)
    ship(site, "maker", "recycler", pids)
    settle(site)
    recycler = site.sign_in("recycler")
    confirmed(site, "recycler", recycler.post("/console/custody/act", {"kind": "receive", "shipment": _shipment_of(recycler)}))
    confirmed(site, "recycler", recycler.post("/console/custody/act", {"kind": "quarantine", "item": [f"/01/{GTIN_A}/21/INV0000", f"/01/{GTIN_A}/21/INV0001"]}))

    page = recycler.get("/console/custody/inventory")
    assert page.status_code == 200 and 'data-status="in_stock"' in page.text
    exported = recycler.get("/console/custody/inventory.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))

    mirror, cursor = [], None
    while True:
        found = site.api("recycler", f"/v1/parts?custodian={site.ledger.orgs['recycler'].id}&limit=7" + (f"&cursor={cursor}" if cursor else ""))
        mirror += found["items"]
        cursor = found["next_cursor"]
        if cursor is None:
            break
    as_exported = [(row["part_id"], row["gtin"], row["serial"].removeprefix("'"), row["lot"], row["status"], row["site_key"]) for row in rows]
    as_mirrored = [(part["part_id"], part["gtin"], part["serial"], part["lot"]["code"], part["status"], part["site_key"]) for part in mirror]
    assert as_exported == as_mirrored and len(rows) == len(serials)
    assert [row["serial"] for row in rows if row["serial"].startswith("'")] == ["'=1+2"]  # not a formula in a spreadsheet
    statuses = {row["status"] for row in rows}
    assert statuses == {"in_stock", "quarantined"}

    quarantined = recycler.get("/console/custody/inventory/parts?status=quarantined&limit=1")
    assert quarantined.status_code == 200 and quarantined.text.count('class="part-row"') == 1 and 'rel="next"' in quarantined.text


# --- who may see and do what -----------------------------------------------------------------------------------------


def test_a_viewer_reads_but_cannot_act(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-VIEW", serials=["VIEW-1"])
    settle(site)
    viewer = site.sign_in("maker", role="viewer")
    page = viewer.get(f"/console/parts/0x{pids[0].hex()}")
    assert page.status_code == 200 and 'id="part-custodian"' in page.text
    assert 'id="action-' not in page.text
    before = site.commands_of("maker")
    refused = viewer.post("/console/custody/act", {"kind": "quarantine", "item": f"/01/{GTIN_A}/21/VIEW-1"})
    assert refused.status_code == 403 and error_code(refused) == "read_only_role"
    ship_refused = viewer.post("/console/custody/ship", {"step": "submit", "source": "list", "item": f"/01/{GTIN_A}/21/VIEW-1", "to_org": str(site.ledger.orgs["warehouse"].id)})
    assert ship_refused.status_code == 403 and error_code(ship_refused) == "read_only_role"
    assert site.commands_of("maker") == before
    assert on_chain(site, pids[0])[0] == S.IN_STOCK


def test_another_organisations_parts_are_refused(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-OTHER", serials=["OTHER-1", "OTHER-2"])
    ship(site, "maker", "warehouse", pids[:1])
    settle(site)
    outsider = site.sign_in("distributor")

    page = outsider.get(f"/console/parts/0x{pids[1].hex()}")
    assert page.status_code == 200 and 'data-classification="public"' in page.text
    assert 'id="part-custodian"' not in page.text and 'id="history"' not in page.text and 'id="action-' not in page.text

    before = site.commands_of("distributor")
    refused = outsider.post("/console/custody/act", {"kind": "quarantine", "item": [f"/01/{GTIN_A}/21/OTHER-1", f"/01/{GTIN_A}/21/OTHER-2"]})
    assert refused.status_code == 422 and error_code(refused) == "invalid_parts"
    assert refused.text.count('class="field-error row-error"') == 2
    assert site.commands_of("distributor") == before
    assert on_chain(site, pids[1]) == (S.IN_STOCK, site.ledger.orgs["maker"].id)

    warehouse_shipment = f"{site.ledger.orgs['maker'].id}-0x"  # the warehouse's inbound consignment, seen from outside
    clerk = site.sign_in("warehouse")
    key = next(k for k in re.findall(r'data-shipment="([^"]+)"', clerk.get("/console/custody/inbound").text) if k.startswith(warehouse_shipment))
    assert outsider.get(f"/console/custody/inbound/{key}").status_code == 404
    stolen = outsider.post("/console/custody/act", {"kind": "receive", "shipment": key})
    assert stolen.status_code == 404 and error_code(stolen) == "unknown_shipment"
    exported = outsider.get("/console/custody/inventory.csv").text
    assert f"0x{pids[0].hex()}" not in exported and f"0x{pids[1].hex()}" not in exported
    assert site.commands_of("distributor") == before
    assert on_chain(site, pids[0])[0] == S.IN_TRANSIT


def test_a_form_without_its_csrf_token_changes_nothing(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-CSRF", serials=["CSRF-1"])
    settle(site)
    maker = site.sign_in("maker")
    before = site.commands_of("maker")
    page = maker.post("/console/custody/act", {"kind": "quarantine", "item": f"/01/{GTIN_A}/21/CSRF-1"}, csrf=False)
    assert page.status_code == 403 and error_code(page) == "csrf_failed"
    assert site.commands_of("maker") == before and on_chain(site, pids[0])[0] == S.IN_STOCK


def test_a_scanned_list_ships_to_the_chosen_member(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-LIST", serials=["LIST-1", "LIST-2", "LIST-3"])
    settle(site)
    maker = site.sign_in("maker")
    listed = maker.post("/console/scan", files=[("photo", ("two.png", label_png(site, ["LIST-1", "LIST-3"]), "image/png"))])
    assert listed.status_code == 200 and 'id="bulk-ship"' in listed.text
    items = [unescape(value) for value in re.findall(r'name="item" value="([^"]+)"', listed.text)]
    assert len(items) == 2 and all("?sig=" in item for item in items)

    prepared = maker.post("/console/custody/ship", [("step", "prepare")] + [("item", item) for item in items])
    assert prepared.status_code == 200 and prepared.text.count('name="item"') == 2 and 'id="source-list" checked' in prepared.text
    warehouse = site.ledger.orgs["warehouse"].id
    page = maker.post("/console/custody/ship", [("step", "submit"), ("source", "list"), ("to_org", str(warehouse))] + [("item", item) for item in items])
    view = confirmed(site, "maker", page)
    assert view["parts"] == 2 and view["summary"] == {"doc_hash": None, "to": warehouse}
    assert [on_chain(site, pid)[0] for pid in pids] == [S.IN_TRANSIT, S.IN_STOCK, S.IN_TRANSIT]
    assert part_of(site, "maker", pids[0])["recipient"]["id"] == warehouse


def test_camera_frames_are_decoded_for_browsers_without_a_barcode_detector(site: Site) -> None:
    pids = register(site, "maker", lot="LOT-CAM", serials=["CAM-1"])
    settle(site)
    clerk = site.sign_in("maker")
    answer = clerk.post("/console/scan/frame", {"kind": "label"}, files=[("image", ("frame.jpg", label_png(site, ["CAM-1"]), "image/png"))])
    assert answer.status_code == 200
    [code] = answer.json()["codes"]
    assert code["serial"] == "CAM-1" and code["url"].startswith(f"/console/parts/0x{pids[0].hex()}?sig=")
    vin = clerk.post("/console/scan/frame", {"kind": "vin"}, files=[("image", ("vin.png", vin_barcode_png(VALID_VIN), "image/png"))])
    assert vin.json() == {"vins": [VALID_VIN]}
    opened = clerk.get("/console/scan/open", params={"code": code["text"]})
    assert opened.status_code == 303 and opened.headers["location"] == code["url"]
    not_a_label = clerk.get("/console/scan/open", params={"code": "https://example.com/hello"})
    assert not_a_label.status_code == 400 and error_code(not_a_label) == "invalid_digital_link" and 'id="f-code-error"' in not_a_label.text
    assert clerk.post("/console/scan/frame", {"kind": "label"}, files=[("image", ("f.jpg", b"x", "image/jpeg"))], csrf=False).status_code == 403


# --- the camera, in Chromium --------------------------------------------------------------------------------------


def fake_camera(path: Any, photo: bytes) -> None:
    """A Y4M video (what Chromium's fake camera plays) of a photo, centred on a 640x480 grey frame."""
    frame = Image.new("L", (640, 480), 200)
    label = Image.open(io.BytesIO(photo)).convert("L")
    label.thumbnail((440, 440))
    frame.paste(label, ((640 - label.width) // 2, (480 - label.height) // 2))
    chroma = bytes([128]) * (320 * 240)
    with open(path, "wb") as out:
        out.write(b"YUV4MPEG2 W640 H480 F5:1 Ip A1:1 C420jpeg\n")
        for _ in range(2):
            out.write(b"FRAME\n" + frame.tobytes() + chroma + chroma)


def test_the_phone_camera_reads_a_label_and_opens_its_part(site: Site, tmp_path: Any, artifacts_dir: Any) -> None:
    """Chromium's fake camera plays a label: scan.js reads it and opens its part; the install form checks a VIN's
    check digit as it is typed; a photo uploaded for a list shows it; no console error, no sideways scrolling.
    axe-core reads every site page, in zh and en, in tests/test_console_security.py; here it reads the scanned list,
    a form's answer no GET reaches."""
    from playwright.sync_api import expect

    from ledger_service.app import create_app

    pids = register(site, "maker", lot="LOT-PHONE-CAM", serials=["PHONECAM-1"])
    settle(site)
    camera = tmp_path / "label.y4m"
    fake_camera(camera, label_png(site, ["PHONECAM-1"]))
    services = site.client.app.state.services  # type: ignore[attr-defined]
    accounts.create_user(services.service_engine, org_id=site.ledger.orgs["maker"].id, username="maker-phone", password=PASSWORD, role="operator")
    accounts.create_user(services.service_engine, org_id=site.ledger.orgs["workshop"].id, username="mechanic-phone", password=PASSWORD, role="operator")
    token = session_of(site.client, "maker-phone", PASSWORD, where="phone").token
    mechanic = session_of(site.client, "mechanic-phone", PASSWORD, where="phone").token
    camera_args = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}")
    with served(create_app(site.stack.settings(submitter=False))) as base, launched_chromium(*camera_args) as browser:
        problems: list[str] = []
        page = watch_errors(phone_context(browser, locale="zh-CN", token=token, permissions=["camera"]).new_page(), problems)
        assert page.goto(base + "/console/scan").status == 200
        expect(page.locator("#camera")).to_be_visible()  # shown by scan.js
        page.screenshot(path=str(artifacts_dir / "console-scan-phone-zh.png"), full_page=True)
        page.get_by_role("button", name="打开相机").click()
        page.wait_for_url(re.compile(rf"/console/parts/0x{pids[0].hex()}\?sig="), timeout=30_000)
        expect(page.locator("#part-signature")).to_have_text("制造商签名有效", use_inner_text=True)
        expect(page.locator("#action-ship")).to_be_visible()
        assert not scrolls_sideways(page)
        page.screenshot(path=str(artifacts_dir / "console-part-phone-zh.png"), full_page=True)

        page = watch_errors(phone_context(browser, locale="en-GB", token=mechanic).new_page(), problems)
        assert page.goto(base + "/console/custody/install?lang=en").status == 200
        vin = page.locator("#f-vin")
        vin.fill(BAD_CHECK_DIGIT_VIN)
        vin.blur()
        expect(page.locator("#vin-live-error")).to_have_text("The check digit (9th character) does not match this VIN: check for a typo.", use_inner_text=True)
        vin.fill(VALID_VIN)
        vin.blur()
        expect(page.locator("#vin-live-error")).to_be_hidden()
        expect(page.locator("#vin-camera")).to_be_visible()
        expect(page.locator("[data-camera-stop]")).to_be_hidden()
        page.screenshot(path=str(artifacts_dir / "console-install-phone-en.png"), full_page=True)

        page.goto(base + "/console/scan?lang=zh")
        photo = tmp_path / "labels.png"
        photo.write_bytes(label_png(site, ["PHONECAM-1"]))
        page.locator("#f-photo").set_input_files(str(photo))
        page.locator("#f-many").check()
        page.locator("#upload-submit").click()
        expect(page.locator("#scanned")).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "console-scan-list-phone-zh.png"), full_page=True)
        assert axe_findings(page) == []
        assert problems == [], problems


def test_inbound_shipments_are_grouped_by_sender_and_paginated(site: Site) -> None:
    first = register(site, "maker", lot="LOT-IN-A", serials=["INA-1", "INA-2"])
    second = register(site, "maker2", lot="LOT-IN-B", serials=["INB-1"], gtin=GTIN_B)
    ship(site, "maker", "workshop", first)
    ship(site, "maker2", "workshop", second)
    settle(site)
    mechanic = site.sign_in("workshop")
    page = mechanic.get("/console/custody/inbound?limit=1")
    assert page.status_code == 200 and page.text.count('class="consignment"') == 1
    newest = re.search(r'data-shipment="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert newest.startswith(f"{site.ledger.orgs['maker2'].id}-") and "1 个配件" in page.text
    following = unescape(re.search(r'href="([^"]+)" rel="next"', page.text).group(1))  # type: ignore[union-attr]
    older = mechanic.get(following)
    assert older.status_code == 200 and older.text.count('class="consignment"') == 1
    assert re.search(r'data-shipment="([^"]+)"', older.text).group(1).startswith(f"{site.ledger.orgs['maker'].id}-")  # type: ignore[union-attr]

    picked = mechanic.get(f"/console/custody/inbound/{newest}")
    assert picked.status_code == 200 and picked.text.count('name="part"') == 1
    nothing = mechanic.post("/console/custody/act", {"kind": "receive", "from_shipment": newest})
    assert nothing.status_code == 400 and 'id="f-part-error"' in nothing.text and error_code(nothing) == "invalid_form"
    received = mechanic.post("/console/custody/act", {"kind": "receive", "part": f"0x{second[0].hex()}"})
    confirmed(site, "workshop", received)
    assert on_chain(site, second[0]) == (S.IN_STOCK, site.ledger.orgs["workshop"].id)
    assert all(on_chain(site, pid)[0] == S.IN_TRANSIT for pid in first)
    assert mechanic.get(f"/console/custody/inbound/{newest}").status_code == 404
