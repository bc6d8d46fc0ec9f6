"""The manufacturer's console pages on the real stack (Anvil, the indexer, the service with its submitter, SQLite):
a lot registered by form and by CSV upload (a bad row: the row table, nothing registered), its label PDFs made in the
background, downloaded, rendered and decoded, the lots' counts against the mirror, a recall with its notice PDF
confirmed on chain with the PDF's hash, and one with a notice written in both languages, which the impact page, the
home page, the verdict and the API then show; a viewer reads but may not act, and another organisation's lot is refused.
Every outcome is checked on the chain or through the query API, not only on the page. In Chromium on a phone, the
same pages in both languages (axe-core reads them in tests/test_console_security.py)."""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from html import unescape
from pathlib import Path
from typing import Any, Iterator

import pypdfium2
import pytest
import zxingcpp
from fastapi.testclient import TestClient
from reportlab.pdfgen.canvas import Canvas
from typer.testing import CliRunner

from labels.digital_link import parse_uri
from labels.signature import label_domain, recover_signer
from ledger_service.recall_notices import canonical_bytes
from partledger.ids import ascii32, part_id
from partledger_cli.main import app as cli
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.consolekit import CSP_LISTENER, Session, create_users, axe_findings, launched_chromium, phone_context, scrolls_sideways, served, session_of, watch_errors
from tests.labelkit import JSON, caught_up, live_stack, target
from tests.servicekit import PASSPHRASE, Stack, wait_command, wait_until

pytestmark = pytest.mark.chain

PASSWORD = "maker-console-password-1"
EN, ZH = "en", "zh-CN"


@pytest.fixture(scope="module")
def site(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TestClient]]:
    with live_stack(deployed, tmp_path_factory.mktemp("console-maker"), public_rate_limit="100000/minute") as (stack, client):
        users = {"mia": ("maker", "operator"), "vic": ("maker", "viewer"), "max": ("maker2", "operator"), "wes": ("warehouse", "operator")}
        create_users(client.app.state.services.service_engine, deployed, users, password=PASSWORD)
        yield stack, client


def browser(site: tuple[Stack, TestClient], username: str, lang: str = EN) -> Session:
    return session_of(site[1], username, PASSWORD, lang=lang, where="testclient")


def form_key(user: Session, url: str, form_id: str) -> str:
    """The Idempotency-Key a form on page `url` carries."""
    page = user.get(url)
    assert page.status_code == 200, page.text
    section = page.text[page.text.index(f'id="{form_id}"') :]
    return re.search(r'name="idempotency_key" value="([^"]+)"', section)[1]


def command_of(response) -> str:
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/console/maker/commands/([0-9a-f-]{36})", response.headers["location"])
    assert match, response.headers["location"]
    return match[1]


def problem_code(response) -> str | None:
    match = re.search(r'id="error-code">([^<]+)<', response.text)
    return match[1] if match else None


def lot_number(ledger: Ledger, org: str, code: str) -> int:
    return ledger.parts.functions.lotNumber(ledger.orgs[org].id, ascii32(code)).call()


def mirror_parts(stack: Stack, lot: int) -> list[dict[str, Any]]:
    """Every part of a lot, as the query API shows it to the maker's API key."""
    items, cursor = [], None
    while True:
        answer = stack.client.get("/v1/parts", params={"lot": lot, "limit": 1000} | ({"cursor": cursor} if cursor else {}), headers=stack.headers("maker"))
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return items


def register_by_csv(site, user: Session, *, lot: str, serials: list[str], gtin: str = GTIN_A) -> int:
    """Registers a lot through the CSV form and waits until it is confirmed and indexed; its lot number."""
    stack, _ = site
    body = "gtin,serial,lot\n" + "".join(f"{gtin},{serial},{lot}\n" for serial in serials)
    command_id = command_of(user.post("/console/maker/register.csv", files={"file": ("lot.csv", body.encode(), "text/csv")}))
    assert wait_command(stack, "maker", command_id)["status"] == "confirmed"
    return lot_number(stack.ledger, "maker", lot)


def notice_pdf(text: str) -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer)
    canvas.drawString(72, 720, text)
    canvas.save()
    return buffer.getvalue()


def decode_pdf(content: bytes, dpi: int = 200) -> tuple[int, list[str]]:
    document = pypdfium2.PdfDocument(content)
    texts = []
    for page in document:
        image = page.render(scale=dpi / 72, grayscale=True).to_pil()
        texts += [code.text for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
    return len(document), texts


def labels_pdf(user: Session, lot: int, layout: str) -> bytes:
    """Asks for a lot's label PDF, follows its progress fragment until it is ready, downloads it."""
    started = user.post(f"/console/maker/lots/{lot}/labels", {"layout": layout})
    assert started.status_code == 303, started.text
    job_page = started.headers["location"]
    assert user.get(job_page).status_code == 200
    ready = wait_until(lambda: 'data-phase="ready"' in (fragment := user.get(job_page + "/progress").text) and fragment, "the label PDF", timeout=120)
    assert 'data-phase="failed"' not in ready and "hx-trigger" not in ready  # the final fragment stops the polling
    download = re.search(r'id="labels-download" href="([^"]+)"', ready)[1]
    pdf = user.get(download)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    return pdf.content


# --- registering ---------------------------------------------------------------------------------------------------


def test_a_lot_registered_by_form_as_a_serial_range_is_confirmed_on_chain_and_in_the_mirror(site):
    stack, client = site
    mia = browser(site, "mia")
    form = {"gtin": GTIN_B, "lot": "FORM-1", "mode": "range", "prefix": "F-", "first": "001", "last": "005"}
    form["idempotency_key"] = form_key(mia, "/console/maker/register", "register-form")
    sent = mia.post("/console/maker/register", form)
    command_id = command_of(sent)
    assert command_of(mia.post("/console/maker/register", form)) == command_id  # a double click sends one command

    page = mia.get(f"/console/maker/commands/{command_id}")
    assert page.status_code == 200 and f'href="/console/commands/{command_id}"' in page.text
    assert wait_command(stack, "maker", command_id)["status"] == "confirmed"
    fragment = mia.get(f"/console/maker/commands/{command_id}/status")
    assert 'data-status="confirmed"' in fragment.text and "hx-trigger" not in fragment.text

    serials = [f"F-{n:03d}" for n in range(1, 6)]
    maker = stack.ledger.orgs["maker"].id
    for serial in serials:  # on chain: registered by the maker, in stock
        state = stack.ledger.parts.functions.part(part_id(GTIN_B, serial)).call()
        assert (state[0], state[1]) == (1, maker), state
    lot = lot_number(stack.ledger, "maker", "FORM-1")
    assert sorted(item["serial"] for item in mirror_parts(stack, lot)) == serials
    assert f'href="/console/maker/lots/{lot}"' in mia.get(f"/console/maker/commands/{command_id}").text


def test_a_form_with_bad_fields_shows_each_error_next_to_its_field_and_sends_nothing(site):
    stack, _ = site
    mia = browser(site, "mia", ZH)
    empty = mia.post("/console/maker/register", {"gtin": "", "lot": "", "mode": "range", "first": "x", "last": "2"})
    assert empty.status_code == 400 and problem_code(empty) == "invalid_form"
    assert 'id="f-gtin-error"' in empty.text and 'id="f-lot-error"' in empty.text and 'id="f-first-error"' in empty.text
    assert "请填写此项" in empty.text  # in the user's language

    bad_gtin = mia.post("/console/maker/register", {"gtin": "04012345000017", "lot": "BAD-1", "mode": "list", "serials": "A1"})
    assert bad_gtin.status_code == 400 and problem_code(bad_gtin) == "invalid_gtin" and 'id="f-gtin-error"' in bad_gtin.text

    rows = mia.post("/console/maker/register", {"gtin": GTIN_A, "lot": "BAD-1", "mode": "list", "serials": "OK-1\nNOT OK\nOK-2\nÜ"})
    assert rows.status_code == 422 and problem_code(rows) == "invalid_rows" and 'id="f-serials-error"' in rows.text
    table = rows.text[rows.text.index('id="row-errors"') :]
    assert re.findall(r'data-row="(\d+)" data-code="([a-z_]+)"', table) == [("2", "invalid_serial"), ("4", "invalid_serial")]
    assert "<code>NOT OK</code>" in table and "序列号无效" in table
    assert "OK-1" in rows.text  # what the user typed is kept
    assert lot_number(stack.ledger, "maker", "BAD-1") == 0


def test_a_csv_with_a_bad_row_shows_the_row_table_in_the_users_language_and_registers_nothing(site):
    stack, client = site
    mia = browser(site, "mia", ZH)
    good = [f"CSV-{n:04d}" for n in range(1, 50)]
    body = "gtin,serial,lot\n" + "".join(f"{GTIN_A},{serial},CSV-BAD\n" for serial in good) + f"{GTIN_A},BAD SERIAL,CSV-BAD\n{GTIN_B},CSV-9999,CSV-BAD\n"
    refused = mia.post("/console/maker/register.csv", files={"file": ("lot.csv", body.encode(), "text/csv")})
    assert refused.status_code == 422 and problem_code(refused) == "invalid_rows"
    table = refused.text[refused.text.index('id="csv-row-errors"') :]
    assert re.findall(r'data-row="(\d+)" data-code="([a-z_]+)"', table) == [("51", "invalid_serial"), ("52", "mixed_batch")]
    assert "序列号无效" in table and "每行的 GTIN 和批次必须与第一行相同" in table and 'id="f-file-error"' in refused.text

    english = browser(site, "mia", EN).post("/console/maker/register.csv", files={"file": ("lot.csv", b"serial,gtin\n1,2\n", "text/csv")})
    assert english.status_code == 400 and problem_code(english) == "invalid_csv" and "This CSV cannot be read" in english.text

    caught_up(client, stack.ledger)
    assert lot_number(stack.ledger, "maker", "CSV-BAD") == 0  # nothing on chain
    assert all(stack.ledger.parts.functions.part(part_id(GTIN_A, serial)).call()[0] == 0 for serial in good)
    found = client.get(f"/v1/parts/gs1/{GTIN_A}/{good[0]}", headers=stack.headers("maker"))
    assert found.status_code == 404  # nor in the mirror


# --- labels --------------------------------------------------------------------------------------------------------


def test_the_label_pdfs_of_a_lot_download_and_decode_to_links_signed_by_the_makers_site_key(site):
    stack, client = site
    mia = browser(site, "mia")
    serials = [f"LBL-{n:04d}" for n in range(1, 51)]
    lot = register_by_csv(site, mia, lot="LABELS-50", serials=serials)

    pdf = labels_pdf(mia, lot, "a4")
    pages, texts = decode_pdf(pdf)
    assert pages == 3 and len(texts) == 50  # 24 a sheet
    links = [parse_uri(text) for text in texts]
    assert sorted(link.serial for link in links) == serials and {link.gtin for link in links} == {GTIN_A}
    domain = label_domain(chain_id=stack.ledger.manifest.chain_id, part_ledger=stack.ledger.manifest.address("PartLedger"))
    assert {recover_signer(domain, link.gtin, link.serial, link.signature) for link in links} == {stack.site_keys["maker"]}
    verdict = client.get(target(texts[0]), headers=JSON).json()
    assert (verdict["verdict"], verdict["signature"]) == ("genuine", "valid")

    thermal = labels_pdf(mia, lot, "thermal")
    pages, texts = decode_pdf(thermal, dpi=300)
    assert pages == 50 and sorted(parse_uri(text).serial for text in texts) == serials


def test_labels_are_made_the_way_the_cli_makes_them(site, tmp_path):
    stack, _ = site
    mia = browser(site, "mia")
    lot = register_by_csv(site, mia, lot="LABELS-CLI", serials=["C-1", "C-2", "C-3"])
    console = labels_pdf(mia, lot, "a4")
    made = CliRunner().invoke(cli, [
        "labels", "make", "--lot", "LABELS-CLI", "--keystore", str(stack.keys_dir / "maker" / "service-site.json"),
        "--manifest", str(stack.manifest_path), "--index-db", stack.index_db_url, "--resolver", "http://testserver",
        "--workers", "1", "--out", str(tmp_path / "cli.pdf"),
    ], env={"PARTLEDGER_KEYSTORE_PASSPHRASE": PASSPHRASE})  # fmt: skip
    assert made.exit_code == 0, made.output
    assert console == (tmp_path / "cli.pdf").read_bytes()  # byte for byte: same signatures, same sheet


# --- lots and their counts -----------------------------------------------------------------------------------------


def test_the_lots_page_counts_each_lots_parts_by_status_as_the_mirror_has_them(site):
    stack, client = site
    mia = browser(site, "mia")
    lot = register_by_csv(site, mia, lot="COUNTS-1", serials=[f"K-{n}" for n in range(1, 11)])
    shipped = client.post(
        "/v1/parts/ship", json={"part_ids": ["0x" + part_id(GTIN_A, f"K-{n}").hex() for n in (1, 2, 3)], "to_org": stack.ledger.orgs["warehouse"].id},
        headers=stack.headers("maker"),
    )  # fmt: skip
    assert wait_command(stack, "maker", shipped.json()["command_id"])["status"] == "confirmed"
    scrapped = client.post("/v1/parts/scrap", json={"part_ids": ["0x" + part_id(GTIN_A, "K-4").hex()]}, headers=stack.headers("maker"))
    assert wait_command(stack, "maker", scrapped.json()["command_id"])["status"] == "confirmed"

    seen: dict[int, dict[str, int]] = {}
    url = "/console/maker/lots?limit=2"
    while url:  # every page, two lots at a time
        page = mia.get(url)
        assert page.status_code == 200, page.text
        for number, body in re.findall(r'<li class="lot" data-lot="(\d+)">(.*?)</ul>\s*</li>', page.text, re.S):
            seen[int(number)] = {status: int(count) for status, count in re.findall(r'<li data-status="([a-z_]+)">.*?<span class="count">(\d+)</span>', body, re.S)}
        found = re.search(r'href="([^"]+)" rel="next"', page.text)
        url = unescape(found[1]) if found else None
    assert lot in seen and seen[lot] == {"in_stock": 6, "in_transit": 3, "scrapped": 1}
    for number, counts in seen.items():  # every lot against the query API
        assert counts == dict(Counter(item["status"] for item in mirror_parts(stack, number))), number

    detail = mia.get(f"/console/maker/lots/{lot}?status=in_transit&limit=2")
    assert detail.status_code == 200 and detail.text.count('class="part-row"') == 2 and 'rel="next"' in detail.text


# --- recall --------------------------------------------------------------------------------------------------------


def test_a_recall_with_its_notice_pdf_is_confirmed_on_chain_with_the_pdfs_hash(site):
    stack, client = site
    mia = browser(site, "mia")
    lot = register_by_csv(site, mia, lot="RECALL-1", serials=["R-1", "R-2"])
    notice = notice_pdf("Recall notice: lot RECALL-1, brake pads, 2026-12-02")
    digest = hashlib.sha256(notice).hexdigest()

    not_pdf = mia.post(f"/console/maker/lots/{lot}/recall", files={"notice": ("notice.pdf", b"GIF89a", "application/pdf")})
    assert not_pdf.status_code == 400 and problem_code(not_pdf) == "invalid_notice" and 'id="f-notice-error"' in not_pdf.text

    review = mia.post(f"/console/maker/lots/{lot}/recall", files={"notice": ("notice.pdf", notice, "application/pdf")})
    assert review.status_code == 200 and f'<code id="notice-hash">0x{digest}</code>' in review.text
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', review.text[review.text.index('id="recall-confirm-form"') :]))
    unconfirmed = mia.post(f"/console/maker/lots/{lot}/recall/confirm", {key: unescape(value) for key, value in fields.items() if key != "csrf_token"})
    assert unconfirmed.status_code == 400 and problem_code(unconfirmed) == "not_confirmed" and 'id="f-confirm-error"' in unconfirmed.text
    assert stack.ledger.parts.functions.lot(lot).call()[1] is False  # nothing sent without the confirmation

    confirmed = mia.post(f"/console/maker/lots/{lot}/recall/confirm", {key: unescape(value) for key, value in fields.items() if key != "csrf_token"} | {"confirm": "yes"})
    view = wait_command(stack, "maker", command_of(confirmed))
    assert view["status"] == "confirmed" and view["kind"] == "recall"
    assert tuple(stack.ledger.parts.functions.lot(lot).call()) == (stack.ledger.orgs["maker"].id, True)
    (event,) = stack.ledger.parts.events.LotRecalled.get_logs(from_block=view["block"], to_block=view["block"])
    assert event["args"]["lot"] == lot and event["args"]["noticeHash"].hex().removeprefix("0x") == digest
    impact = client.get(f"/v1/lots/{lot}/recall-impact", headers=stack.headers("maker")).json()
    assert impact["recall"]["notice_hash"] == "0x" + digest

    page = mia.get(f"/console/maker/lots/{lot}/impact")
    assert page.status_code == 200 and f'<code id="impact-notice-hash">0x{digest}</code>' in page.text
    assert 'id="impact-notice-none"' in page.text  # a PDF's hash: the service holds no text to show
    assert page.text.count("<tr data-part-id=") == 2
    again = mia.post(f"/console/maker/lots/{lot}/recall", files={"notice": ("notice.pdf", notice, "application/pdf")})
    assert again.status_code == 409 and problem_code(again) == "lot_recalled"


NOTICE = {
    "title": {"zh": "离合器片批次召回", "en": "Clutch plate lot recall"},
    "reason": {"zh": "铆钉可能脱落。", "en": "The rivets may come off."},
    "risk": {"zh": "离合器打滑。", "en": "The clutch may slip."},
    "remedy": {"zh": "免费更换。", "en": "Free replacement."},
    "action": {"zh": "请勿安装。\n退回经销商。", "en": "Do not fit it.\nReturn it to your dealer."},
    "contact": {"zh": "热线 400-111-2222", "en": "Hotline +86 400 111 2222"},
}


def notice_form(notice: dict[str, dict[str, str]], *, line_break: str = "\n") -> dict[str, str]:
    return {f"notice_{name}_{lang}": text.replace("\n", line_break) for name, texts in notice.items() for lang, text in texts.items()}


def test_a_recall_with_a_written_notice_reaches_scanners_the_console_and_the_api(site):
    stack, client = site
    mia = browser(site, "mia")
    lot = register_by_csv(site, mia, lot="RECALL-TEXT", serials=["RT-1"])
    form_page = mia.get(f"/console/maker/lots/{lot}/recall").text
    assert 'id="recall-notice-form"' in form_page and 'id="recall-form"' in form_page  # written, or a PDF

    blank = mia.post(f"/console/maker/lots/{lot}/recall", {"mode": "text", **notice_form(NOTICE), "notice_risk_en": "  "})
    assert blank.status_code == 422 and problem_code(blank) == "invalid_notice" and 'id="f-notice_risk_en-error"' in blank.text
    assert NOTICE["title"]["zh"] in blank.text  # what was written stays in the form

    review = mia.post(f"/console/maker/lots/{lot}/recall", {"mode": "text", **notice_form(NOTICE, line_break="\r\n")})  # as browsers send a textarea
    digest = "0x" + hashlib.sha256(canonical_bytes(NOTICE)).hexdigest()
    assert review.status_code == 200 and f'<code id="notice-hash">{digest}</code>' in review.text, review.text
    shown = review.text[review.text.index('id="notice-review"') :]
    assert all(NOTICE[name][lang] in unescape(shown) for name in NOTICE for lang in ("zh", "en"))
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', review.text[review.text.index('id="recall-confirm-form"') :]))
    assert fields["mode"] == "text" and "notice_hash" not in fields  # the service hashes what it is sent, not a hash the page carried
    confirmed = mia.post(f"/console/maker/lots/{lot}/recall/confirm", {key: unescape(value) for key, value in fields.items() if key != "csrf_token"} | {"confirm": "yes"})
    view = wait_command(stack, "maker", command_of(confirmed))
    assert view["status"] == "confirmed" and view["kind"] == "recall"
    (event,) = stack.ledger.parts.events.LotRecalled.get_logs(from_block=view["block"], to_block=view["block"])
    assert event["args"]["lot"] == lot and "0x" + bytes(event["args"]["noticeHash"]).hex() == digest
    caught_up(client, stack.ledger)

    for user, lang in ((mia, "en"), (browser(site, "mia", lang=ZH), "zh")):
        impact = user.get(f"/console/maker/lots/{lot}/impact").text
        notice = unescape(impact[impact.index('id="impact-notice"') :])
        assert NOTICE["title"][lang] in notice and NOTICE["action"][lang] in notice and NOTICE["contact"][lang] in notice
        home = unescape(user.get("/console").text)
        assert f'data-lot="{lot}"><strong>{NOTICE["title"][lang]}</strong>' in home and NOTICE["action"][lang] in home
    scanned = client.get(f"/01/{GTIN_A}/21/RT-1", headers=JSON).json()  # a label without its signature
    assert (scanned["verdict"], scanned["label_warning"], scanned["recall"]["notice"]) == ("recalled", "unsigned", NOTICE)
    assert client.get(f"/v1/recall-notices/{digest}").json()["notice"] == NOTICE


# --- who may see and act -------------------------------------------------------------------------------------------


def test_a_viewer_reads_the_makers_pages_but_every_post_is_refused_403(site):
    stack, client = site
    mia, vic = browser(site, "mia"), browser(site, "vic")
    lot = register_by_csv(site, mia, lot="VIEWER-1", serials=["V-1"])
    for url in ("/console/maker/lots", f"/console/maker/lots/{lot}", f"/console/maker/lots/{lot}/impact", "/console/maker/register"):
        assert vic.get(url).status_code == 200, url
    assert 'id="recall-link"' not in vic.get(f"/console/maker/lots/{lot}").text  # no action offered
    attempts = [
        ("/console/maker/register", {"gtin": GTIN_A, "lot": "VIEWER-2", "mode": "list", "serials": "V-2"}, None),
        ("/console/maker/register.csv", {}, {"file": ("lot.csv", f"gtin,serial,lot\n{GTIN_A},V-3,VIEWER-2\n".encode(), "text/csv")}),
        (f"/console/maker/lots/{lot}/labels", {"layout": "a4"}, None),
        (f"/console/maker/lots/{lot}/recall", {}, {"notice": ("n.pdf", notice_pdf("n"), "application/pdf")}),
        (f"/console/maker/lots/{lot}/recall/confirm", {"notice_hash": "0x" + "11" * 32, "confirm": "yes"}, None),
    ]
    for url, data, files in attempts:
        refused = vic.post(url, data, files=files)
        assert refused.status_code == 403 and problem_code(refused) == "read_only_role", url
    caught_up(client, stack.ledger)
    assert lot_number(stack.ledger, "maker", "VIEWER-2") == 0 and stack.ledger.parts.functions.lot(lot).call()[1] is False


def test_a_form_without_the_sessions_csrf_token_is_refused_and_nothing_is_sent(site):
    stack, client = site
    mia = browser(site, "mia")
    refused = mia.post("/console/maker/register", {"gtin": GTIN_A, "lot": "CSRF-1", "mode": "list", "serials": "X-1"}, csrf=False)
    assert refused.status_code == 403 and problem_code(refused) == "csrf_failed"
    caught_up(client, stack.ledger)
    assert lot_number(stack.ledger, "maker", "CSRF-1") == 0


def test_another_organisations_lot_and_label_jobs_are_refused(site):
    stack, _ = site
    mia, max_, wes = browser(site, "mia"), browser(site, "max"), browser(site, "wes")
    lot = register_by_csv(site, mia, lot="PRIVATE-1", serials=["P-1", "P-2"])
    job = mia.post(f"/console/maker/lots/{lot}/labels", {"layout": "thermal"}).headers["location"]

    for url in (f"/console/maker/lots/{lot}", f"/console/maker/lots/{lot}/impact", f"/console/maker/lots/{lot}/recall"):
        refused = max_.get(url)
        assert refused.status_code == 403 and problem_code(refused) == "not_lot_manufacturer", url
        assert "P-1" not in refused.text and "PRIVATE-1" not in refused.text
    for url, data, files in (
        (f"/console/maker/lots/{lot}/labels", {"layout": "a4"}, None),
        (f"/console/maker/lots/{lot}/recall", {}, {"notice": ("n.pdf", notice_pdf("n"), "application/pdf")}),
        (f"/console/maker/lots/{lot}/recall/confirm", {"notice_hash": "0x" + "22" * 32, "confirm": "yes"}, None),
    ):
        refused = max_.post(url, data, files=files)
        assert refused.status_code == 403 and problem_code(refused) in ("not_lot_manufacturer",), (url, refused.text)
    for url in (job, job + "/progress", job + "/file"):
        assert max_.get(url).status_code == 404 and problem_code(max_.get(url)) == "unknown_label_job"
    lots = max_.get("/console/maker/lots")
    assert lots.status_code == 200 and "PRIVATE-1" not in lots.text and f'data-lot="{lot}"' not in lots.text
    assert max_.get("/console/maker/commands/" + command_of(mia.post("/console/maker/register", {"gtin": GTIN_B, "lot": "PRIVATE-2", "mode": "list", "serials": "P-3"}))).status_code == 404

    for url in ("/console/maker/lots", f"/console/maker/lots/{lot}", "/console/maker/register"):  # not a manufacturer at all
        refused = wes.get(url)
        assert refused.status_code == 403 and problem_code(refused) == "missing_role", url
    assert wes.post("/console/maker/register", {"gtin": GTIN_A, "lot": "WH-1", "mode": "list", "serials": "W-1"}).status_code == 403
    assert stack.ledger.parts.functions.lot(lot).call()[1] is False


# --- the catalogue -------------------------------------------------------------------------------------------------


def test_every_text_the_makers_pages_show_exists_in_chinese_and_english():
    """The literal keys (the catalogue test checks those too) and the ones these pages build from a value."""
    from labels.sheets import LAYOUTS
    from ledger_service.console import maker
    from ledger_service.console.i18n import Catalogue

    root = Path(maker.__file__).resolve().parent.parent
    sources = [Path(maker.__file__).read_text(), *(path.read_text() for path in (root / "templates" / "console" / "maker").glob("*.html"))]
    keys = {key for text in sources for key in re.findall(r"""(?:_|lazy)\(\s*["']((?:maker|status|error)\.[a-z0-9_.]+)["']""", text)}
    keys |= {f"maker.labels.{kind}_{layout}" for kind in ("make", "layout") for layout in LAYOUTS}
    keys |= {f"maker.labels.phase.{phase}" for phase in ("queued", "signing", "drawing", "ready", "failed")}
    keys |= {f"maker.command.title_{kind}" for kind in ("register", "recall")}
    keys |= set(maker.ROW_REASONS.values()) | set(maker.ERROR_TEXTS.values())
    keys |= {f"error.{code}" for code in re.findall(r'code="([a-z_]+)"', sources[0])}  # the codes these pages answer with
    keys |= {f"status.{status}" for status in maker.STATUS_NAMES} | {f"status.{status}" for status in ("accepted", "submitted", "confirmed", "rejected")}
    assert len(keys) > 120
    catalogue = Catalogue.load()
    assert catalogue.missing(keys) == {"zh": [], "en": []}
    maker_keys = {key for key in keys if key.startswith("maker.")}
    assert all(catalogue.gettext("zh", key) != catalogue.gettext("en", key) or key == "maker.register.gtin" for key in maker_keys)


def test_the_label_press_runs_one_lot_at_a_time_and_refuses_past_its_queue(tmp_path):
    """Bounded concurrency: one job runs, a few wait (at most two per organisation), more get 429 label_queue_full;
    a job is its organisation's only, and a failed one says so instead of polling forever."""
    import threading

    from ledger_service.console.maker import LabelJob, LabelPress
    from ledger_service.errors import NotFound, TooManyRequests

    press = LabelPress(running=1, waiting=2, per_org=2)
    release, running = threading.Event(), threading.Semaphore(0)
    concurrent, most = [0], [0]
    lock = threading.Lock()

    def work(job: LabelJob, path) -> None:
        with lock:
            concurrent[0] += 1
            most[0] = max(most[0], concurrent[0])
        running.release()
        release.wait(10)
        if job.lot == 13:
            raise ValueError("broken")
        path.write_bytes(b"%PDF-1.4")
        with lock:
            concurrent[0] -= 1

    jobs = [press.submit(LabelJob(id=f"{n:02x}", org_id=org, lot=lot, lot_code=f"L{lot}", layout="a4", total=1), work)
            for n, (org, lot) in enumerate([(1, 10), (1, 11), (2, 13)])]  # fmt: skip
    with pytest.raises(TooManyRequests) as same_org:
        press.submit(LabelJob(id="ff", org_id=1, lot=12, lot_code="L12", layout="a4", total=1), work)
    assert same_org.value.code == "label_queue_full"
    with pytest.raises(TooManyRequests):  # the press is full for everyone
        press.submit(LabelJob(id="fe", org_id=3, lot=14, lot_code="L14", layout="a4", total=1), work)
    assert running.acquire(timeout=10)
    assert [job.phase for job in jobs] == ["queued"] * 3  # work() sets the phases of real jobs; only one runs
    release.set()
    wait_until(lambda: all(job.finished for job in jobs), "the jobs")
    assert most[0] == 1 and [job.phase for job in jobs] == ["ready", "ready", "failed"] and jobs[2].error == "ValueError"
    assert press.get(1, jobs[0].id).path.read_bytes() == b"%PDF-1.4"
    with pytest.raises(NotFound):
        press.get(2, jobs[0].id)  # another organisation's job does not exist for it
    assert [job.lot for job in press.jobs_for(1, 11)] == [11]


# --- in Chromium, on a phone ---------------------------------------------------------------------------------------


def test_a_phone_registers_a_lot_by_csv_prints_its_labels_and_recalls_it_in_both_languages(site, artifacts_dir):
    """The pages in a real browser under the strict CSP: htmx follows the command and the label job, the PDF
    downloads, the recall's two steps; no console error, no CSP violation, no sideways scrolling. axe-core reads
    every maker page, in zh and en, in tests/test_console_security.py; here it reads the two form answers no GET
    reaches (the CSV's row table, the recall's review)."""
    from playwright.sync_api import expect

    from ledger_service.app import create_app

    stack, client = site
    serials = [f"PH-{n:03d}" for n in range(1, 31)]
    csv_body = ("gtin,serial,lot\n" + "".join(f"{GTIN_A},{serial},PHONE-1\n" for serial in serials)).encode()
    notice = notice_pdf("Recall notice: lot PHONE-1")
    with served(create_app(stack.settings())) as base, launched_chromium() as chromium:
        problems: list[str] = []

        def phone(locale: str):
            context = phone_context(chromium, locale=locale, token=browser(site, "mia").token, accept_downloads=True)
            context.add_init_script(CSP_LISTENER)
            return watch_errors(context.new_page(), problems)

        def shot(page, name: str, *, axe: bool = False) -> None:
            """Checks the page (no sideways scrolling, no CSP violation; with `axe`, nothing serious for axe-core)
            and keeps its screenshot."""
            assert not scrolls_sideways(page), name
            assert page.evaluate("window.__csp") == [], name
            if axe:
                assert axe_findings(page) == [], name
            page.screenshot(path=str(artifacts_dir / f"console-maker-{name}.png"), full_page=True)

        zh = phone("zh-CN")
        zh.goto(f"{base}/console/maker/register")
        expect(zh.locator("h1")).to_have_text("登记批次")
        shot(zh, "register-phone-zh")
        zh.locator("#f-file").set_input_files(files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": csv_body + f"{GTIN_A},BAD SERIAL,PHONE-1\n".encode()}])
        zh.locator("#register-csv-submit").click()
        expect(zh.locator("#csv-row-errors tbody tr")).to_have_count(1)
        expect(zh.locator("#error-code")).to_have_text("invalid_rows")
        shot(zh, "register-row-errors-phone-zh", axe=True)
        zh.locator("#f-file").set_input_files(files=[{"name": "lot.csv", "mimeType": "text/csv", "buffer": csv_body}])
        zh.locator("#register-csv-submit").click()
        expect(zh.locator("h1")).to_have_text("登记已受理")
        expect(zh.locator("#command-status")).to_have_attribute("data-status", "confirmed", timeout=60_000)  # htmx polled it
        shot(zh, "command-phone-zh")
        zh.locator("#lot-link").click()
        expect(zh.locator("h1")).to_have_text("批次 PHONE-1")
        expect(zh.locator("#lot-total")).to_have_text("共 30 件")
        shot(zh, "lot-phone-zh")
        zh.locator("#make-a4").click()
        expect(zh.locator("#labels-download")).to_be_visible(timeout=120_000)
        shot(zh, "labels-phone-zh")
        with zh.expect_download() as download:
            zh.locator("#labels-download").click()
        pages, texts = decode_pdf(Path(download.value.path()).read_bytes())
        assert pages == 2 and sorted(parse_uri(text).serial for text in texts) == serials

        en = phone("en-GB")
        en.goto(f"{base}/console/maker/lots")
        expect(en.locator("h1")).to_have_text("Lots")
        shot(en, "lots-phone-en")
        en.locator(".lot-link", has_text="PHONE-1").click()
        en.locator("#recall-link").click()
        shot(en, "recall-phone-en")
        en.locator("#f-notice").set_input_files(files=[{"name": "notice.pdf", "mimeType": "application/pdf", "buffer": notice}])
        en.locator("#recall-review").click()
        expect(en.locator("#notice-hash")).to_have_text("0x" + hashlib.sha256(notice).hexdigest())
        shot(en, "recall-confirm-phone-en", axe=True)
        en.locator("#f-confirm").check()
        en.locator("#recall-send").click()
        expect(en.locator("#command-status")).to_have_attribute("data-status", "confirmed", timeout=60_000)
        en.locator("#lot-link").click()
        en.locator("#impact-link").click()
        expect(en.locator("#impact-notice-hash")).to_have_text("0x" + hashlib.sha256(notice).hexdigest())
        shot(en, "impact-phone-en")
        # The one refused upload: the browser logs the page's 422 itself.
        assert problems == ["Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    lot = lot_number(stack.ledger, "maker", "PHONE-1")
    assert tuple(stack.ledger.parts.functions.lot(lot).call()) == (stack.ledger.orgs["maker"].id, True)
