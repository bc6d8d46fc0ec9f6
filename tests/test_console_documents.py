"""The console's documents and audit areas on the real stack (Anvil, SQLite, the indexer, the submitter): a document
proposed by one member and countersigned by the other through the console is anchored on chain; the file checks
against its anchor and a changed file does not; an auditor signed in (no API key) browses another member's parts,
downloads a proof bundle that the offline verifier and `partledger proof verify` accept, and sees the anchored log
of their own reads; nobody else enters the audit area. In Chromium on a phone, an auditor checks a PDF and browses
in both languages (axe-core reads the same pages in tests/test_console_security.py)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from typer.testing import CliRunner

from ledger_service import migrate as service_migrate
from ledger_service.auth import Principal
from ledger_service.evidence import list_proposals
from ledger_service.tables import DocumentProposal
from partledger.model import Role
from ledger_service.app import create_app
from partledger.db import make_engine
from partledger.documents import salted_document_hash
from partledger.ids import part_id
from partledger.proofs import verifier as v
from partledger_cli.main import app as cli
from tests.chainkit import GTIN_A, Ledger
from tests.consolekit import CSP_LISTENER, axe_findings, create_users, csrf, error_code, field_error, launched_chromium, phone_context, scrolls_sideways, served, signed_in_by_form, watch_errors
from tests.proofkit import anchor_document
from tests.servicekit import Stack, prepare_stack, running_service, wait_command, wait_until

PASSWORD = "correct horse battery staple"
USERS = {  # username: (organisation, role)
    "mia.maker": ("maker", "operator"),
    "dan.dist": ("distributor", "operator"),
    "vic.viewer": ("distributor", "viewer"),
    "wes.ware": ("warehouse", "operator"),
    "ada.audit": ("auditor", "operator"),
}


def invoice_pdf(total: str) -> bytes:
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, invariant=1)
    page.drawString(72, 760, "INVOICE 2026-0107  East China Precision Auto Parts -> South China Parts Distribution")
    page.drawString(72, 740, f"120 x brake disc {GTIN_A}, total CNY {total}")
    page.save()
    return buffer.getvalue()


def stack_with_users(ledger: Ledger, workdir: Path) -> Stack:
    """A test's own stack on SQLite, with the module's users."""
    stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    create_users(make_engine(stack.service_db_url), ledger, USERS, password=PASSWORD)
    return stack


def signed_in(client: TestClient, username: str) -> TestClient:
    """A browser of its own (cookie jar) on the same app, signed in as `username`."""
    return signed_in_by_form(client, username, PASSWORD)


def trusted(bundle: dict[str, Any]) -> v.TrustAnchors:
    return v.TrustAnchors(blocks={bundle["block"]["number"]: bytes.fromhex(bundle["block"]["hash"][2:])})


def propose(maker: TestClient, stack: Stack, content: bytes, **fields: str) -> Response:
    page = maker.get("/console/documents/propose")
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf(page), "doc_type": "invoice", "counterparty": str(stack.ledger.orgs["distributor"].id), "valid_days": "7"} | fields
    return maker.post("/console/documents/propose", data=data, files={"document": ("invoice-2026-0107.pdf", content, "application/pdf")})


@pytest.mark.chain
def test_a_document_proposed_and_countersigned_in_the_console_is_anchored_and_its_file_checks(ledger: Ledger, tmp_path: Path):
    stack = stack_with_users(ledger, tmp_path)
    pdf, forged = invoice_pdf("36,000.00"), invoice_pdf("63,000.00")
    with running_service(stack) as client:
        maker, dist, viewer = (signed_in(client, name) for name in ("mia.maker", "dan.dist", "vic.viewer"))

        # bad input: each error next to its field, the 4xx code on the page, nothing proposed
        refused = propose(maker, stack, pdf, counterparty=str(ledger.orgs["maker"].id), salt="0x12")
        assert refused.status_code == 422 and error_code(refused) == "invalid_form"
        assert field_error(refused, "salt") == "盐值为 0x 加 64 位十六进制数。"  # Chinese unless the browser asks otherwise
        same_party = propose(maker, stack, pdf, counterparty=str(ledger.orgs["maker"].id))
        assert same_party.status_code == 422 and error_code(same_party) == "same_party" and field_error(same_party, "counterparty")
        no_csrf = maker.post("/console/documents/propose", data={"doc_type": "invoice"}, files={"document": ("x.pdf", pdf, "application/pdf")})
        assert no_csrf.status_code == 403 and error_code(no_csrf) == "csrf_failed"
        assert viewer.get("/console/documents/propose").status_code == 403
        assert "documents-empty" in dist.get("/console/documents?box=waiting&lang=en").text  # nothing was proposed

        # the maker proposes: the page shows the salt once and the salted hash the API would compute
        proposed = propose(maker, stack, pdf)
        assert proposed.status_code == 201, proposed.text
        salt = bytes.fromhex(re.search(r'<code class="secret" id="salt">0x([0-9a-f]{64})</code>', proposed.text).group(1))
        doc_hash = "0x" + salted_document_hash(pdf, salt).hex()
        assert f'id="doc-hash">{doc_hash}<' in proposed.text
        proposal_id = re.search(r'data-proposal-id="([0-9a-f-]{36})"', proposed.text).group(1)

        # the distributor sees it waiting, with what is signed; a viewer reads it but may not countersign
        waiting = dist.get("/console/documents?box=waiting")
        assert f'data-proposal-id="{proposal_id}"' in waiting.text
        page = dist.get(f"/console/documents/proposals/{proposal_id}?lang=en")
        assert page.status_code == 200 and f'id="signed-doc-hash">{doc_hash}<' in page.text and 'id="countersign-form"' in page.text
        assert "Invoice" in page.text and ledger.orgs["maker"].name in page.text
        viewer_page = viewer.get(f"/console/documents/proposals/{proposal_id}")
        assert viewer_page.status_code == 200 and 'id="countersign-form"' not in viewer_page.text
        denied = viewer.post(f"/console/documents/proposals/{proposal_id}/countersign", data={"csrf_token": csrf(viewer_page)})
        assert denied.status_code == 403 and error_code(denied) == "read_only_role"
        assert maker.get(f"/console/documents/proposals/{proposal_id}").status_code == 200
        outsider = signed_in(client, "wes.ware").get(f"/console/documents/proposals/{proposal_id}")
        assert outsider.status_code == 404 and error_code(outsider) == "unknown_proposal"

        # a file that is not the proposed one is refused before anything is signed
        mismatch = dist.post(f"/console/documents/proposals/{proposal_id}/countersign", data={"csrf_token": csrf(page), "salt": "0x" + salt.hex()},
                             files={"document": ("invoice.pdf", forged, "application/pdf")})  # fmt: skip
        assert mismatch.status_code == 422 and error_code(mismatch) == "document_mismatch" and field_error(mismatch, "document")
        view = client.get(f"/v1/documents/proposals/{proposal_id}", headers=stack.headers("distributor")).json()
        assert view["status"] == "awaiting_countersignature" and view["command_id"] is None

        # the right file and salt: countersigned, anchored on chain
        signed = dist.post(f"/console/documents/proposals/{proposal_id}/countersign", data={"csrf_token": csrf(page), "salt": "0x" + salt.hex()},
                           files={"document": ("invoice.pdf", pdf, "application/pdf")}, follow_redirects=False)  # fmt: skip
        assert signed.status_code == 303 and signed.headers["location"] == f"/console/documents/proposals/{proposal_id}"
        view = client.get(f"/v1/documents/proposals/{proposal_id}", headers=stack.headers("distributor")).json()
        command = wait_command(stack, "distributor", view["command_id"])
        assert command["status"] == "confirmed" and command["kind"] == "anchor_document"
        anchored = client.get("/v1/evidence", params={"doc_hash": doc_hash}, headers=stack.headers("maker")).json()["items"]
        assert [(d["doc_hash"], d["issuer"]["id"], d["counterparty"]["id"]) for d in anchored] == [(doc_hash, ledger.orgs["maker"].id, ledger.orgs["distributor"].id)]
        api_bundle = client.get(f"/v1/proofs/documents/{doc_hash}", headers=stack.headers("maker")).json()
        assert v.verify_bundle(api_bundle, anchors=trusted(api_bundle)).ok
        after = maker.get(f"/console/documents/proposals/{proposal_id}")
        assert 'id="anchored"' in after.text and 'data-status="countersigned"' in after.text
        assert f'data-doc-hash="{doc_hash}"' in maker.get("/console/documents?box=anchored").text

        # the check: the file and its salt are valid, check by check; the bundle offered verifies offline
        check_form = maker.get("/console/documents/check")
        valid = maker.post("/console/documents/check", data={"csrf_token": csrf(check_form), "salt": "0x" + salt.hex()}, files={"document": ("invoice.pdf", pdf, "application/pdf")})
        assert valid.status_code == 200, valid.text
        assert 'data-state="valid"' in valid.text and 'class="check-failed"' not in valid.text
        assert len(re.findall(r'<li class="check-ok" data-check=', valid.text)) >= 10
        data_url = html.unescape(re.search(r'id="bundle-download" href="([^"]+)"', valid.text).group(1))
        bundle = json.loads(base64.b64decode(data_url.split(",", 1)[1]))
        assert bundle["document"]["salt"] == "0x" + salt.hex()
        assert v.verify_bundle(bundle, document=pdf, anchors=trusted(api_bundle)).ok
        changed = maker.post("/console/documents/check", data={"csrf_token": csrf(check_form), "salt": "0x" + salt.hex()}, files={"document": ("invoice.pdf", forged, "application/pdf")})
        assert changed.status_code == 404 and error_code(changed) == "unknown_document" and 'data-state="not_found"' in changed.text
        assert f'id="computed-doc-hash">0x{salted_document_hash(forged, salt).hex()}<' in changed.text
        no_salt = maker.post("/console/documents/check", data={"csrf_token": csrf(check_form)}, files={"document": ("invoice.pdf", pdf, "application/pdf")})
        assert no_salt.status_code == 422 and field_error(no_salt, "salt")
        api_check = client.post("/v1/evidence/verify", content=pdf, headers=stack.headers("auditor", **{"X-Document-Salt": "0x" + salt.hex()}))  # the same check
        assert api_check.status_code == 200 and api_check.json()["verdict"]["valid"] and api_check.json()["doc_hash"] == doc_hash
        assert client.post("/v1/evidence/verify", content=pdf, headers=stack.headers("auditor")).json()["error"]["code"] == "salt_required"

        # the document's proof bundle for a party; nothing for an outsider
        download = maker.get(f"/console/documents/proofs/{doc_hash}")
        assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment")
        assert v.verify_bundle(download.content, anchors=trusted(api_bundle)).ok
        assert signed_in(client, "wes.ware").get(f"/console/documents/proofs/{doc_hash}").status_code == 404


@pytest.mark.chain
def test_an_auditor_signed_in_browses_another_members_part_downloads_its_proof_and_sees_the_log_of_its_reads(ledger: Ledger, tmp_path: Path):
    stack = stack_with_users(ledger, tmp_path)
    with running_service(stack) as client:
        registered = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-AUDIT-7", "serials": ["A1", "A2"]})
        wait_command(stack, "maker", registered.json()["command_id"])
        pid = "0x" + part_id(GTIN_A, "A1").hex()
        shipped = client.post("/v1/parts/ship", headers=stack.headers("maker"), json={"part_ids": [pid], "to_org": ledger.orgs["warehouse"].id})
        wait_command(stack, "maker", shipped.json()["command_id"])
        auditor, warehouse = signed_in(client, "ada.audit"), signed_in(client, "wes.ware")
        maker_id = ledger.orgs["maker"].id

        # anyone else is refused the whole area
        for path in ("/console/audit", f"/console/audit/orgs/{maker_id}", f"/console/audit/parts/{pid}", "/console/audit/log"):
            refused = warehouse.get(path)
            assert refused.status_code == 403 and error_code(refused) == "not_auditor", path
        assert 'href="/console/audit"' not in warehouse.get("/console").text

        # the organisations, the maker's parts and lots, a part's history, its lot's recall impact
        home = auditor.get("/console/audit?lang=en")
        assert home.status_code == 200 and f'data-org-id="{maker_id}"' in home.text
        parts = auditor.get(f"/console/audit/orgs/{maker_id}?tab=parts")
        assert parts.status_code == 200 and f'data-part-id="0x{part_id(GTIN_A, "A2").hex()}"' in parts.text
        first = auditor.get(f"/console/audit/orgs/{maker_id}?tab=parts&limit=1")
        following = html.unescape(re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1))
        second = auditor.get(following)
        shown = [re.findall(r'<tr data-part-id="(0x[0-9a-f]{64})"', page.text) for page in (first, second)]
        assert sorted(shown[0] + shown[1]) == sorted("0x" + part_id(GTIN_A, serial).hex() for serial in ("A1", "A2")) and 'rel="next"' not in second.text
        lots = auditor.get(f"/console/audit/orgs/{maker_id}?tab=lots")
        lot = int(re.search(r'data-lot="(\d+)"', lots.text).group(1))
        assert "L-AUDIT-7" in lots.text
        found = auditor.get("/console/audit/find", params={"what": "part", "gtin": GTIN_A, "serial": "A1"}, follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"] == f"/console/audit/parts/{pid}"
        bad = auditor.get("/console/audit/find", params={"what": "event", "tx_hash": "0x12", "log_index": "x"})
        assert bad.status_code == 422 and field_error(bad, "tx_hash") and field_error(bad, "log_index")
        history = auditor.get(f"/console/audit/parts/{pid}")
        assert history.status_code == 200
        events = re.findall(r'data-kind="(\w+)" data-tx-hash="(0x[0-9a-f]{64})" data-log-index="(\d+)"', history.text)
        assert [kind for kind, _, _ in events] == ["registered", "shipped"]
        impact = auditor.get(f"/console/audit/lots/{lot}")
        assert impact.status_code == 200 and pid in impact.text and 'id="lot-parts"' in impact.text

        # garbage in a URL is a 4xx page, never a 500
        for path, status in [("/console/audit/parts/0x12", 400), ("/console/audit/lots/99999999999999999999999", 400), ("/console/audit/orgs/424242", 404),
                             ("/console/audit/find?what=lot&lot=%C2%B2", 422), (f"/console/audit/proofs/events/0x{'ab' * 32}/0", 404),
                             ("/console/documents/proofs/0xzz", 400), ("/console/documents/proposals/nope", 404), ("/console/audit/orgs/1?tab=parts&cursor=W10", 400)]:  # fmt: skip
            answer = auditor.get(path)
            assert answer.status_code == status and error_code(answer), (path, answer.status_code)

        # the shipment's proof bundle: the offline verifier and `partledger proof verify` accept it
        _, tx_hash, log_index = events[1]
        download = auditor.get(f"/console/audit/proofs/events/{tx_hash}/{log_index}")
        assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment")
        bundle = json.loads(download.content)
        assert bundle["event"]["name"] == "PartsShipped" and v.verify_bundle(bundle, anchors=trusted(bundle)).ok
        assert json.loads(client.get(f"/v1/proofs/events/{tx_hash}/{log_index}", headers=stack.headers("auditor")).content)["event"] == bundle["event"]
        saved = tmp_path / "shipment.json"
        saved.write_bytes(download.content)
        block_hash = "0x" + bytes(ledger.w3.eth.get_block(bundle["block"]["number"])["hash"]).hex()
        result = CliRunner().invoke(cli, ["proof", "verify", str(saved), "--trusted-block", f"{bundle['block']['number']}:{block_hash}"])
        assert result.exit_code == 0, result.output

        # the log of the auditor's own reads: each page read above, then anchored on chain with an inclusion proof
        log_page = auditor.get("/console/audit/log")
        targets = re.findall(r'<code class="mono break entry-target">GET ([^<]+)</code>', log_page.text)
        assert f"/console/audit/parts/{pid}" in targets and f"/console/audit/proofs/events/{tx_hash}/{log_index}" in targets
        anchor = auditor.post("/console/audit/log/anchor", data={"csrf_token": csrf(log_page)}, follow_redirects=False)
        assert anchor.status_code == 303
        entry = int(re.search(r'data-entry-id="(\d+)"', auditor.get("/console/audit/log").text).group(1))

        def entry_anchored() -> str | None:
            page = auditor.get("/console/audit/log?everyone=true")
            row = re.search(rf'data-entry-id="{entry}"(?:(?!</li>).)*', page.text, re.S)
            return row.group(0) if row and 'class="proof-link"' in row.group(0) else None

        wait_until(entry_anchored, "the auditor's read anchored on chain", timeout=60)
        proof = auditor.get(f"/console/audit/log/{entry}/proof")
        assert proof.status_code == 200, proof.text
        entry_bundle = json.loads(proof.content)
        assert entry_bundle["subject"] == "batch-record" and v.verify_bundle(entry_bundle, anchors=trusted(entry_bundle)).ok
        assert json.loads(client.get(f"/v1/audit/log/{entry}/proof", headers=stack.headers("auditor")).content)["batchRecord"] == entry_bundle["batchRecord"]
        assert warehouse.get(f"/console/audit/log/{entry}/proof").status_code == 403


def browser_sign_in(page: Any, base: str, path: str, username: str) -> None:
    page.goto(base + path)
    page.locator("#f-username").fill(username)
    page.locator("#f-password").fill(PASSWORD)
    page.locator("#sign-in").click()
    page.wait_for_url(base + path)


@pytest.mark.chain
def test_on_a_phone_an_auditor_checks_a_pdf_and_browses_in_both_languages_with_no_csp_violation_or_serious_axe_finding(ledger: Ledger, tmp_path: Path, artifacts_dir: Path):
    """Every page in zh and en with no sideways scrolling and no CSP violation or console error, the check's verdict
    in both, the proof bundle downloaded and verified offline. axe-core reads these pages, in zh and en, in
    tests/test_console_security.py; here it reads the check's result, a form's answer no GET reaches."""
    from playwright.sync_api import expect

    stack = stack_with_users(ledger, tmp_path)
    pdf = tmp_path / "invoice-2026-0107.pdf"
    pdf.write_bytes(invoice_pdf("36,000.00"))
    doc = anchor_document(ledger, ledger.orgs["maker"], ledger.orgs["distributor"], content=pdf.read_bytes())
    with running_service(stack) as client:
        registered = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-PHONE-1", "serials": ["P1"]})
        wait_command(stack, "maker", registered.json()["command_id"])
        client.indexer.wait_for(doc.block)  # type: ignore[attr-defined]
        pid = "0x" + part_id(GTIN_A, "P1").hex()
        maker_id = ledger.orgs["maker"].id
        pages = ["/console/audit", f"/console/audit/orgs/{maker_id}", f"/console/audit/orgs/{maker_id}?tab=lots", f"/console/audit/parts/{pid}",
                 "/console/audit/log", "/console/documents?box=anchored", "/console/documents/propose", "/console/documents/check"]  # fmt: skip
        with served(create_app(stack.settings(submitter=False))) as base, launched_chromium() as chromium:
            context = phone_context(chromium, locale="zh-CN", accept_downloads=True)
            context.add_init_script(CSP_LISTENER)
            problems: list[str] = []
            page = watch_errors(context.new_page(), problems)

            browser_sign_in(page, base, "/console/audit", "ada.audit")
            expect(page.locator("h1")).to_have_text("审计与监管")
            for lang in ("zh", "en"):
                for number, path in enumerate(pages):
                    page.goto(f"{base}{path}{'&' if '?' in path else '?'}lang={lang}")
                    assert not scrolls_sideways(page), path  # on a phone
                    assert page.evaluate("window.__csp") == [], path
                    page.screenshot(path=str(artifacts_dir / f"console-audit-{number}-phone-{lang}.png"), full_page=True)
                page.set_input_files("#f-document", str(pdf))
                page.locator("#f-salt").fill("0x" + doc.salt.hex())
                page.locator("#check-submit").click()
                expect(page.locator("#verdict")).to_have_attribute("data-state", "valid")
                expect(page.locator("#verdict")).to_contain_text("VALID" if lang == "en" else "有效")
                page.screenshot(path=str(artifacts_dir / f"console-documents-check-phone-{lang}.png"), full_page=True)
            with page.expect_download() as download:
                page.locator("#bundle-download").click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == f"proof-{doc.doc_hash.hex()[:12]}.json"
            anchors = v.TrustAnchors(blocks={doc.block: bytes(doc.receipt["blockHash"])})
            assert v.verify_bundle(saved.read_bytes(), document=pdf.read_bytes(), anchors=anchors).ok
            assert page.evaluate("window.__csp") == [] and [text for text in problems if "404" not in text] == []
            assert axe_findings(page) == []  # the check's result (en)


def test_the_proposals_waiting_for_countersignature_page_through_every_live_one_once_skipping_expired_and_countersigned(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    service_migrate.upgrade(engine)
    now = time.time()
    rows = []
    for n in range(400):  # long runs of expired ones between live ones: more than a page of rows skipped at once
        expired, countersigned = 40 <= n < 300, n % 7 == 0
        attestation = {"docHash": "0x" + f"{n:064x}", "docType": 2, "issuer": 1, "counterparty": 2, "deadline": int(now) + (-60 if expired else 3600)}
        rows.append({"id": f"p-{n:04d}", "issuer": 1, "counterparty": 2, "attestation": json.dumps(attestation), "issuer_signer": "0x" + "11" * 20,
                     "issuer_signature": b"\x01" * 65, "command_id": "c" if countersigned else None, "created_at": now - 1000 + n // 3})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(DocumentProposal.__table__.insert(), rows)
    counterparty = Principal(org_id=2, roles=Role.DISTRIBUTOR, key_id="k", sites=None)
    seen, cursor, pages = [], None, 0
    while True:
        page = list_proposals(engine, counterparty, side="to_countersign", waiting_only=True, limit=25, cursor=cursor)
        assert len(page["items"]) <= 25
        seen += [item["proposal_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    live = sorted((row for row in rows if row["command_id"] is None and json.loads(row["attestation"])["deadline"] > now), key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert seen == [row["id"] for row in live] and pages < 10
    issued = list_proposals(engine, Principal(org_id=1, roles=Role.MANUFACTURER, key_id="k", sites=None), side="issued", limit=100)
    assert len(issued["items"]) == 100 and issued["next_cursor"] is not None and {item["status"] for item in issued["items"]} == {"awaiting_countersignature", "countersigned"}
    assert list_proposals(engine, Principal(org_id=3, roles=Role.WORKSHOP, key_id="k", sites=None), side="to_countersign", limit=10)["items"] == []
