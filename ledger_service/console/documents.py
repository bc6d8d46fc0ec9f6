"""The console's documents area (/console/documents): propose a trade document to another member, countersign what
another member proposed (after seeing what is signed), follow one's proposals and anchored documents, and check a
file against its anchor.

Where it sits: one area of the console (ledger_service.console.web). The document is hashed here as the API's
callers hash it (partledger.documents: keccak256(salt || keccak256(file)), a fresh 32-byte salt unless the user
gives one); the file itself is neither stored nor sent anywhere. Proposing and countersigning go through the Notary
(ledger_service.evidence), the anchoring through its outbox command; the check and the proof bundles through the
proof service of the API (ledger_service.routes.proofs). An auditor's or regulator's reads here are written to the
audit log as in the audit area.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from eth_utils import keccak
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from ledger_service.accounts import SessionUser
from ledger_service.console.audit import bundle_download, decimal, hex32, logged, logged_async
from ledger_service.console.i18n import lazy
from ledger_service.console.web import (
    ConsoleUser, Operator, PageParams, checked_form, form_text, next_page_url, org_names, page_error, read_upload, render, router_for, services_of,
    see_other, status_of, translator, upload_name,
)
from ledger_service.deps import IndexReadDep, ServicesDep
from ledger_service.errors import ApiError, BadRequest, NotFound, PayloadTooLarge
from ledger_service.evidence import Notary, list_proposals
from ledger_service.outbox import request_digest
from ledger_service.read import list_documents, organisations
from ledger_service.routes.proofs import check_document, document_bundle, document_salt, proof_builder
from partledger.documents import new_salt, salted_document_hash
from partledger.model import DocType
from partledger.proofs.builder import dump_bundle

router = router_for("documents")
DOC_TYPES = [t.name.lower() for t in DocType]
BOXES = ("waiting", "issued", "anchored")
MAX_VALID_DAYS = 90
DEFAULT_VALID_DAYS = 7
# Where a refusal of the Notary or of the check belongs on the form, and its words there.
FIELD_OF = {
    "same_party": "counterparty", "unknown_counterparty": "counterparty", "document_anchored": "document",
    "unknown_previous_document": "previous", "invalid_validity": "valid_days", "invalid_doc_type": "doc_type",
    "no_site_key": "site", "invalid_salt": "salt", "salt_required": "salt", "payload_too_large": "document",
    "empty_document": "document", "document_mismatch": "document", "unknown_document": "document",
}  # fmt: skip
ERROR_TEXTS = {
    "same_party": lazy("documents.error.same_party"), "unknown_counterparty": lazy("documents.error.unknown_counterparty"),
    "document_anchored": lazy("documents.error.document_anchored"), "unknown_previous_document": lazy("documents.error.unknown_previous_document"),
    "invalid_validity": lazy("documents.error.invalid_validity"), "invalid_doc_type": lazy("documents.error.invalid_doc_type"),
    "no_site_key": lazy("documents.error.no_site_key"), "invalid_salt": lazy("documents.error.invalid_salt"),
    "salt_required": lazy("documents.error.salt_required"), "payload_too_large": lazy("documents.error.payload_too_large"),
    "empty_document": lazy("documents.error.empty_document"), "document_mismatch": lazy("documents.error.document_mismatch"),
    "unknown_document": lazy("documents.error.unknown_document"), "document_required": lazy("documents.error.document_required"),
    "invalid_previous": lazy("documents.error.invalid_previous"), "proposal_expired": lazy("documents.error.proposal_expired"),
    "read_only": lazy("documents.error.read_only"),
}  # fmt: skip


def notary_of(request: Request) -> Notary:
    notary = services_of(request).notary
    if notary is None:
        raise BadRequest("this service instance only reads (no site keys configured)", code="read_only")
    return notary


async def document_file(request: Request, form: FormData, codes: dict[str, str], *, required: bool) -> tuple[bytes | None, str]:
    """The uploaded file of field `document` and its file name; content None when none was chosen or it is refused,
    the refusal's code in `codes["document"]` (payload_too_large, empty_document; document_required when `required`)."""
    try:
        content = await read_upload(form, "document", limit=services_of(request).settings.max_body_bytes)
    except PayloadTooLarge:
        codes["document"] = "payload_too_large"
        return None, upload_name(form, "document")
    if content == b"":
        codes["document"] = "empty_document"
    elif content is None and required:
        codes["document"] = "document_required"
    return content or None, upload_name(form, "document")


def form_refusal(codes: dict[str, str]) -> tuple[int, str]:
    """The status and code of a form refused on its fields: 413 payload_too_large for a file over the limit, 422
    document_mismatch for a file that is not the proposed document, else 422 invalid_form."""
    if codes.get("document") == "payload_too_large":
        return 413, "payload_too_large"
    return 422, "document_mismatch" if codes.get("document") == "document_mismatch" else "invalid_form"


def refused(request: Request, user: SessionUser, template: str, context: dict[str, Any], *, status: int, code: str) -> Response:
    """A form page again after a refusal: the errors by their fields, the code on the page with this area's words
    for it when it has some (else the core catalogue's error.<code>)."""
    problem = translator(request)(ERROR_TEXTS[code]) if code in ERROR_TEXTS else None
    return render(request, user, template, context | {"problem": problem}, status=status, code=code)


def field_errors(codes: dict[str, str]) -> dict[str, str]:
    """{field: error code} as {field: message key}."""
    return {field: ERROR_TEXTS.get(code, code) for field, code in codes.items()}


def my_sites(request: Request, user: SessionUser) -> list[str]:
    """The sites of the user's organisation whose active key this service holds and the user may use (the
    optional "sign with" choice; the Notary takes the first of them otherwise)."""
    services = services_of(request)
    held = services.outbox.signers if services.outbox is not None else {}
    with services.index_engine.connect() as conn:
        orgs = organisations(conn)
    mine = next((org for org in orgs if org["id"] == user.org_id), None)
    keys = (mine or {}).get("site_keys", [])
    sites = [key["site"] for key in keys if key["revoked_block"] is None and key["site"] and key["address"] in held and user.principal.may_use(key["address"], key["site"])]
    return sorted(set(sites))


def counterparties(request: Request, user: SessionUser) -> list[dict[str, Any]]:
    with services_of(request).index_engine.connect() as conn:
        return [org for org in organisations(conn) if org["id"] != user.org_id and not org["suspended"]]


# --- lists ----------------------------------------------------------------------------------------------------


@router.get("/documents")
def documents_home(request: Request, user: ConsoleUser, snapshot: IndexReadDep, paging: PageParams, box: str = "waiting") -> Response:
    """Proposals waiting for my countersignature, my own proposals, or the anchored documents I am a party to
    (auditors and regulators: all), one list at a time, a page at a time."""
    if box not in BOXES:
        box = "waiting"
    services = services_of(request)
    try:
        if box == "anchored":
            page = list_documents(snapshot.conn, user.principal, party=None, doc_type=None, from_time=None, to_time=None, doc_hash=None, limit=paging.limit, cursor=paging.cursor)
        else:
            side = "to_countersign" if box == "waiting" else "issued"
            page = list_proposals(services.service_engine, user.principal, side=side, waiting_only=box == "waiting", limit=paging.limit, cursor=paging.cursor)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    context = {"box": box, "boxes": BOXES, "items": page["items"], "next_url": next_page_url(request, page["next_cursor"]), "names": org_names(request)}
    return logged(request, user, render(request, user, "console/documents/list.html", context))


# --- propose --------------------------------------------------------------------------------------------------


def propose_form(request: Request, user: SessionUser, *, values: dict[str, Any], errors: dict[str, str], status: int = 200, code: str | None = None) -> Response:
    context = {
        "doc_types": DOC_TYPES, "counterparties": counterparties(request, user), "sites": my_sites(request, user),
        "values": values, "errors": errors, "max_days": MAX_VALID_DAYS,
    }  # fmt: skip
    if code is None:
        return render(request, user, "console/documents/propose.html", context, status=status)
    return refused(request, user, "console/documents/propose.html", context, status=status, code=code)


@router.get("/documents/propose")
def propose_page(request: Request, user: Operator) -> Response:
    return propose_form(request, user, values={"valid_days": str(DEFAULT_VALID_DAYS)}, errors={})


@router.post("/documents/propose")
async def propose(request: Request, user: Operator) -> Response:
    """Hashes the uploaded file with a salt, has the Notary sign the Attestation with a site key of the user's
    organisation, and shows the proposal with the salt (shown this once: the file and the salt go to whoever must
    check the document). A refusal shows next to its field, with the code; nothing is proposed then."""
    form = await checked_form(request, user)
    values = {name: form_text(form, name) for name in ("doc_type", "counterparty", "salt", "valid_days", "previous", "site")}
    codes: dict[str, str] = {}
    content, filename = await document_file(request, form, codes, required=True)
    if values["doc_type"] not in DOC_TYPES:
        codes["doc_type"] = "invalid_doc_type"
    counterparty = int(values["counterparty"]) if decimal(values["counterparty"], 10) else None
    if counterparty is None:
        codes["counterparty"] = "unknown_counterparty"
    salt = new_salt()
    if values["salt"]:
        try:
            salt = document_salt(values["salt"] or None)
        except ApiError as exc:
            codes["salt"] = exc.code
    days = int(values["valid_days"]) if decimal(values["valid_days"], 3) else 0
    if not 1 <= days <= MAX_VALID_DAYS:
        codes["valid_days"] = "invalid_validity"
    previous = None
    if values["previous"]:
        previous = hex32(values["previous"])
        if previous is None:
            codes["previous"] = "invalid_previous"
    if codes:
        status, code = form_refusal(codes)
        return await run_in_threadpool(lambda: propose_form(request, user, values=values, errors=field_errors(codes), status=status, code=code))
    assert content is not None and counterparty is not None
    doc_hash = salted_document_hash(content, salt)
    try:
        proposal = await run_in_threadpool(
            notary_of(request).propose, user.principal, doc_hash=doc_hash, doc_type=int(DocType[values["doc_type"].upper()]),
            counterparty=counterparty, previous=previous, parts_root=None, valid_for=days * 24 * 3600, site=values["site"] or None,
        )  # fmt: skip
    except ApiError as exc:
        field = FIELD_OF.get(exc.code)
        if field is None:
            return page_error(request, user, exc)
        if field == "site" and len(await run_in_threadpool(my_sites, request, user)) < 2:
            field = "form"  # the site choice is shown only when there is one to make
        errors = field_errors({field: exc.code})
        return await run_in_threadpool(lambda: propose_form(request, user, values=values, errors=errors, status=status_of(exc), code=exc.code))
    context = {
        "proposal": proposal, "salt": "0x" + salt.hex(), "content_hash": "0x" + keccak(content).hex(),
        "filename": filename, "size": len(content), "names": org_names(request),
    }  # fmt: skip
    return render(request, user, "console/documents/proposed.html", context, status=201)


# --- one proposal, countersign --------------------------------------------------------------------------------


def proposal_context(request: Request, user: SessionUser, proposal_id: str) -> dict[str, Any]:
    """What is signed, in words: the Attestation, its EIP-712 domain, the signatures, where it stands (expired,
    countersigned, the anchoring command, anchored in block N)."""
    services = services_of(request)
    view = notary_of(request).view(user.principal, proposal_id)
    attestation = view["attestation"]
    status = view["status"]
    if status == "awaiting_countersignature" and attestation["deadline"] <= time.time():
        status = "expired"
    command = None
    if view["command_id"] is not None and services.outbox is not None:
        try:
            command = services.outbox.view(user.principal, view["command_id"])
        except ApiError:
            command = None  # the command is the counterparty's; the issuer sees the anchor once it is mined
    with services.index_engine.connect() as conn:
        anchored = list_documents(conn, user.principal, party=None, doc_type=None, from_time=None, to_time=None,
                                  doc_hash=bytes.fromhex(attestation["docHash"][2:]), limit=1, cursor=None)["items"]  # fmt: skip
    doc_type = attestation["docType"]
    return {
        "view": view, "attestation": attestation, "status": status, "command": command, "anchored": anchored[0] if anchored else None,
        "doc_type": DocType(doc_type).name.lower() if doc_type in DocType._value2member_map_ else str(doc_type),
        "names": org_names(request), "may_countersign": status == "awaiting_countersignature" and attestation["counterparty"] == user.org_id and user.principal.may_act,
        "sites": my_sites(request, user) if attestation["counterparty"] == user.org_id else [], "doc_types": DOC_TYPES,
    }  # fmt: skip


@router.get("/documents/proposals/{proposal_id}")
def proposal_page(request: Request, user: ConsoleUser, proposal_id: str) -> Response:
    try:
        context = proposal_context(request, user, proposal_id[:64])
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, render(request, user, "console/documents/proposal.html", context))


@router.post("/documents/proposals/{proposal_id}/countersign")
async def countersign(request: Request, user: Operator, proposal_id: str) -> Response:
    """The counterparty signs the Attestation shown (with a site key of its organisation that this service holds);
    the anchoring goes to the outbox. With the file and its salt given, they must hash to the proposed document
    first (422 document_mismatch otherwise, and nothing is signed)."""
    form = await checked_form(request, user)
    proposal_id = proposal_id[:64]
    try:
        context = await run_in_threadpool(proposal_context, request, user, proposal_id)
    except ApiError as exc:
        return page_error(request, user, exc)
    values = {"salt": form_text(form, "salt"), "site": form_text(form, "site")}
    codes: dict[str, str] = {}
    content, _ = await document_file(request, form, codes, required=False)
    if content is not None:
        try:
            salt = document_salt(values["salt"] or None)
        except ApiError as exc:
            codes["salt"] = exc.code
        else:
            if "0x" + salted_document_hash(content, salt).hex() != context["attestation"]["docHash"].lower():
                codes["document"] = "document_mismatch"
    if codes:
        status, code = form_refusal(codes)
        page = context | {"values": values, "errors": field_errors(codes)}
        return refused(request, user, "console/documents/proposal.html", page, status=status, code=code)
    body = f"site={values['site']}".encode()
    try:
        await run_in_threadpool(
            notary_of(request).countersign, user.principal, proposal_id, signature=None, site=values["site"] or None,
            idempotency_key=f"console-countersign-{proposal_id}", request_sha256=request_digest("POST", request.url.path, body),
        )  # fmt: skip
    except ApiError as exc:
        field = FIELD_OF.get(exc.code)
        if field not in ("document", "salt") and not (field == "site" and len(context["sites"]) > 1):
            field = "form"  # shown above the form
        page = context | {"values": values, "errors": field_errors({field: exc.code})}
        return refused(request, user, "console/documents/proposal.html", page, status=status_of(exc), code=exc.code)
    return see_other(f"/console/documents/proposals/{proposal_id}")


# --- check a file against its anchor, proof bundles -----------------------------------------------------------


@router.get("/documents/check")
def check_page(request: Request, user: ConsoleUser) -> Response:
    return render(request, user, "console/documents/check.html", {"result": None})


@router.post("/documents/check")
async def check(request: Request, user: ConsoleUser) -> Response:
    """The file and its salt: the document hash, its anchor, the verifier's verdict check by check against the
    service's node (the API's POST /v1/evidence/verify), and the proof bundle with the salt to keep. A file that
    matches no anchor (another file, another salt, not anchored yet) answers 404 unknown_document: not verified."""
    form = await checked_form(request, user)
    values = {"salt": form_text(form, "salt")}
    codes: dict[str, str] = {}
    content, filename = await document_file(request, form, codes, required=True)
    salt = b""
    try:
        salt = document_salt(values["salt"] or None)
    except ApiError as exc:
        codes["salt"] = exc.code
    if codes:
        status, code = form_refusal(codes)
        page = refused(request, user, "console/documents/check.html", {"result": None, "values": values, "errors": field_errors(codes)}, status=status, code=code)
        return await logged_async(request, user, page)
    assert content is not None
    services = services_of(request)
    try:
        answer = await run_in_threadpool(check_document, services, proof_builder(request.app, services), content, salt)
    except NotFound as exc:
        details = exc.details or {}
        context = {"result": {"found": False, "doc_hash": details.get("doc_hash"), "content_hash": details.get("content_hash")}, "filename": filename,
                   "values": values, "errors": field_errors({"document": exc.code})}  # fmt: skip
        return await logged_async(request, user, refused(request, user, "console/documents/check.html", context, status=404, code=exc.code))
    except ApiError as exc:
        return await logged_async(request, user, page_error(request, user, exc))
    bundle = answer["bundle"]
    download = "data:application/json;base64," + base64.b64encode(dump_bundle(bundle).encode()).decode()
    result = {
        "found": True, "doc_hash": answer["doc_hash"], "content_hash": answer["content_hash"], "verdict": answer["verdict"],
        "block": bundle["block"]["number"], "block_hash": bundle["block"]["hash"], "download": download,
        "download_name": f"proof-{answer['doc_hash'][2:14]}.json",
    }  # fmt: skip
    return await logged_async(request, user, render(request, user, "console/documents/check.html", {"result": result, "filename": filename, "values": {}}))


@router.get("/documents/proofs/{doc_hash}")
def document_proof(request: Request, user: ConsoleUser, snapshot: IndexReadDep, services: ServicesDep, doc_hash: str) -> Response:
    """The proof bundle of an anchored document the user's organisation is a party to (auditors, regulators: any),
    without the salt (the holder of the file adds it: `partledger proof get --salt`, or the check above)."""
    wanted = hex32(doc_hash)
    if wanted is None:
        return logged(request, user, page_error(request, user, BadRequest("a document hash is 0x and 64 hex digits", code="invalid_doc_hash")))
    try:
        bundle = document_bundle(snapshot.conn, user.principal, proof_builder(request.app, services), wanted)
    except ApiError as exc:
        return logged(request, user, page_error(request, user, exc))
    return logged(request, user, bundle_download(bundle, f"proof-{wanted.hex()[:12]}.json"))
