"""The auditor's web page in headless Chromium: upload a PDF and its salt, see the verdict check by check, download
the proof bundle, and verify that bundle offline."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from ledger_service.app import create_app
from tests.ports import free_port
from partledger.proofs import verifier as v
from partledger_cli.main import app
from tests.chainkit import Ledger
from tests.proofkit import anchor_document
from tests.servicekit import IndexerThread, Stack, prepare_stack

pytestmark = pytest.mark.chain
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def invoice_pdf(text: str) -> bytes:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    page.drawString(72, 760, "INVOICE 2026-0042  East China Precision Auto Parts -> South China Parts Distribution")
    page.drawString(72, 740, text)
    page.save()
    return buffer.getvalue()


@contextmanager
def served(stack: Stack) -> Iterator[tuple[str, IndexerThread]]:
    """The service on a real port (the browser needs one), with the indexer following the chain."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(stack.settings(submitter=False)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    with IndexerThread(stack.ledger, stack.index_db_url) as indexer:
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", indexer
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_an_auditor_uploads_a_pdf_sees_the_verdict_and_downloads_the_bundle(ledger: Ledger, tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium fonts-wqy-microhei)")
    from playwright.sync_api import expect, sync_playwright

    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    pdf = tmp_path / "invoice-2026-0042.pdf"
    pdf.write_bytes(invoice_pdf("120 x brake disc 04012345000016, total CNY 36,000.00"))
    doc = anchor_document(ledger, ledger.orgs["maker"], ledger.orgs["distributor"], content=pdf.read_bytes())
    forged = tmp_path / "invoice-forged.pdf"
    forged.write_bytes(invoice_pdf("120 x brake disc 04012345000016, total CNY 63,000.00"))
    with served(stack) as (base, indexer), sync_playwright() as playwright:
        indexer.wait_for(doc.block)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(f"{base}/auditor")
            page.fill("#api-key", stack.api_keys["auditor"])
            page.set_input_files("#document", str(pdf))
            page.fill("#salt", "0x" + doc.salt.hex())
            page.click("#verify")
            verdict = page.locator("#verdict")
            expect(verdict).to_contain_text("VALID — this file is the document anchored in block", timeout=30_000)
            assert verdict.get_attribute("data-state") == "valid"
            rows = page.locator("#checks tbody tr")
            expect(rows).to_have_count(10)
            assert page.locator("#checks td.failed").count() == 0
            assert "document" in rows.nth(9).inner_text()
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == f"proof-{doc.doc_hash.hex()[:12]}.json"
            bundle = json.loads(saved.read_text())
            anchors = v.TrustAnchors(blocks={doc.block: bytes(doc.receipt["blockHash"])})
            assert v.verify_bundle(saved.read_bytes(), document=pdf.read_bytes(), anchors=anchors).ok
            assert bundle["document"]["salt"] == "0x" + doc.salt.hex()

            fetched = tmp_path / "fetched.json"  # the CLI against the same service
            result = CliRunner().invoke(app, ["proof", "get", "--doc-hash", "0x" + doc.doc_hash.hex(), "--service", base, "--out", str(fetched)],
                                        env={"PARTLEDGER_API_KEY": stack.api_keys["auditor"]})  # fmt: skip
            assert result.exit_code == 0, result.output
            assert json.loads(fetched.read_text()) == {key: value for key, value in bundle.items() if key != "document"}

            page.set_input_files("#document", str(forged))  # the same salt, another file: no anchor
            page.click("#verify")
            expect(verdict).to_contain_text("NOT VERIFIED", timeout=30_000)
            assert verdict.get_attribute("data-state") == "error" and "unknown_document" in verdict.inner_text()
            assert not errors or all("404" in error for error in errors), errors
        finally:
            browser.close()
