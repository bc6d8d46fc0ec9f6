"""Auditor proofs over HTTP: proof bundles of documents, events and batched records; the document check an auditor
runs with a file (and its salt); the audit log of auditor reads; and the auditor's web page.

Bundles are built from the chain (partledger.proofs.builder), located through the indexer's mirror, and checked by
the offline verifier before they leave. Whoever may see an event's consortium-class data may have its bundle: the
organisations involved, auditors and regulators.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from indexer.tables import Batch, Document, PartEvent
from ledger_service import auditor_page
from ledger_service.audit import AUDIT_RECORD_FIELDS, AUDIT_RECORD_TYPES, AUDITED_ROLES, audit_log_of
from ledger_service.auth import Principal
from ledger_service.deps import CurrentPrincipal, IndexReadDep, Services, ServicesDep
from ledger_service.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from ledger_service.schemas import AuditAnchoring, AuditLogPage, BatchProofBundle, BatchRecordProofBundle, DocumentCheck, DocumentProofBundle, LogProofBundle
from partledger.proofs import verifier
from partledger.proofs.builder import BatchRecord, NotProvable, ProofBuilder, attach_document

router = APIRouter()
T_DOC, T_EVENT, T_BATCH = Document.__table__, PartEvent.__table__, Batch.__table__
HEX32 = r"^0x[0-9a-fA-F]{64}$"
Hash32 = Annotated[str, Path(pattern=HEX32, description="0x + 64 hex digits")]
ChainTo = Annotated[Optional[int], Query(ge=0, lt=2**63, description="add the block headers up to this (checkpointed) block")]
PAGE_SECURITY = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RecordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    types: list[str] = Field(min_length=1, max_length=32, description="ABI types of the record, as in StandardMerkleTree.of")
    value: list[Any] = Field(description="the record: hex for bytes, EIP-55 for addresses, numbers for integers")
    proof: list[Annotated[str, Field(pattern=HEX32)]] = Field(max_length=64, description="its StandardMerkleTree proof")


def proof_builder(app: FastAPI, services: Services) -> ProofBuilder:
    """The app's proof builder, made on first use (it talks to the service's node)."""
    builder = getattr(app.state, "proof_builder", None)
    if builder is None:
        rpc_url = services.settings.rpc_url or services.manifest.rpc_url
        builder = app.state.proof_builder = ProofBuilder(rpc_url=rpc_url, manifest=services.manifest)
    return builder


def _builder(request: Request, services: ServicesDep) -> ProofBuilder:
    return proof_builder(request.app, services)


def _bytes32(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def _provable(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Runs a builder call, turning its NotProvable into the API's error table."""
    try:
        return call(*args, **kwargs)
    except NotProvable as exc:
        if exc.code.startswith("unknown_"):
            raise NotFound(str(exc), code=exc.code) from None
        if exc.code == "not_final":
            raise Conflict(str(exc), code=exc.code) from None
        raise Unprocessable(str(exc), code=exc.code) from None


def _may_see(principal: Principal, *orgs: int | None) -> bool:
    return principal.sees_everything or principal.org_id in orgs


# --- proof bundles ----------------------------------------------------------------------------------------------


@router.get("/v1/proofs/documents/{doc_hash}", tags=["proofs"], responses={200: {"model": DocumentProofBundle, "description": "the bundle (docs/proof-bundle.md)"}}, summary="Proof bundle of an anchored trade document")
def document_proof(doc_hash: Hash32, principal: CurrentPrincipal, snapshot: IndexReadDep, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> JSONResponse:
    """The bundle (docs/proof-bundle.md) of a document the caller is a party to (auditors, regulators: any). It
    carries no salt: the holder of the file adds it (`partledger proof get --salt`) or uses POST /v1/evidence/verify."""
    return JSONResponse(document_bundle(snapshot.conn, principal, _builder(request, services), _bytes32(doc_hash), chain_to=chain_to))


def document_bundle(conn: Connection, principal: Principal, builder: ProofBuilder, doc_hash: bytes, *, chain_to: int | None = None) -> dict[str, Any]:
    """The bundle of an anchored document the principal is a party to (auditors, regulators: any); 404 otherwise."""
    row = conn.execute(select(T_DOC).where(T_DOC.c.doc_hash == doc_hash)).first()
    if row is None or not _may_see(principal, row.issuer, row.counterparty):
        raise NotFound(f"no anchored document 0x{doc_hash.hex()}", code="unknown_document")
    return _provable(builder.document, doc_hash, chain_to=chain_to, located=(bytes(row.tx_hash), row.log_index))


@router.get("/v1/proofs/events/{tx_hash}/{log_index}", tags=["proofs"], responses={200: {"model": LogProofBundle, "description": "the bundle; its subject follows the log"}}, summary="Proof bundle of a lifecycle event (any PartLedger log)")
def event_proof(tx_hash: Hash32, log_index: Annotated[int, Path(ge=0, lt=2**63)], principal: CurrentPrincipal, snapshot: IndexReadDep, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> JSONResponse:
    """The bundle of the log at `log_index` (block-wide, as eth_getLogs numbers it) of a transaction, for the
    organisations it involves, auditors and regulators."""
    return JSONResponse(event_bundle(snapshot.conn, principal, _builder(request, services), _bytes32(tx_hash), log_index, chain_to=chain_to))


def event_bundle(conn: Connection, principal: Principal, builder: ProofBuilder, tx_hash: bytes, log_index: int, *, chain_to: int | None = None) -> dict[str, Any]:
    """The bundle of a log for the organisations it involves, auditors and regulators; 404 for anyone else."""
    if not principal.sees_everything and not _involved(conn, principal.org_id, tx_hash, log_index):
        raise NotFound(f"no event {log_index} of 0x{tx_hash.hex()} that you may see", code="unknown_event")
    return _provable(builder.event, tx_hash, log_index, chain_to=chain_to)


def _involved(conn: Connection, org_id: int, tx_hash: bytes, log_index: int) -> bool:
    events = select(T_EVENT.c.id).where(T_EVENT.c.tx_hash == tx_hash, T_EVENT.c.log_index == log_index, or_(T_EVENT.c.org_id == org_id, T_EVENT.c.counterparty == org_id))
    documents = select(T_DOC.c.doc_hash).where(T_DOC.c.tx_hash == tx_hash, T_DOC.c.log_index == log_index, or_(T_DOC.c.issuer == org_id, T_DOC.c.counterparty == org_id))
    batches = select(T_BATCH.c.root).where(T_BATCH.c.tx_hash == tx_hash, T_BATCH.c.log_index == log_index, T_BATCH.c.org_id == org_id)
    return any(conn.execute(query.limit(1)).first() is not None for query in (events, documents, batches))


def _batch_row(conn: Connection, principal: Principal, root: str) -> Any:
    row = conn.execute(select(T_BATCH).where(T_BATCH.c.root == _bytes32(root))).first()
    if row is None or not _may_see(principal, row.org_id):
        raise NotFound(f"no anchored batch {root}", code="unknown_batch")
    return row


@router.get("/v1/proofs/batches/{root}", tags=["proofs"], responses={200: {"model": BatchProofBundle, "description": "the bundle"}}, summary="Proof bundle of an anchored batch root")
def batch_proof(root: Hash32, principal: CurrentPrincipal, snapshot: IndexReadDep, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> JSONResponse:
    row = _batch_row(snapshot.conn, principal, root)
    return JSONResponse(_provable(_builder(request, services).batch, _bytes32(root), chain_to=chain_to, located=(bytes(row.tx_hash), row.log_index)))


@router.post("/v1/proofs/batches/{root}/records", tags=["proofs"], responses={200: {"model": BatchRecordProofBundle, "description": "the bundle with the record"}}, summary="Proof bundle of one record of an anchored batch")
def batch_record_proof(root: Hash32, body: RecordBody, principal: CurrentPrincipal, snapshot: IndexReadDep, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> JSONResponse:
    """The batch's bundle with the record and its inclusion proof; 422 record_not_in_batch when the proof does not
    lead to the root."""
    row = _batch_row(snapshot.conn, principal, root)
    try:
        leaf = verifier.leaf_hash(body.types, body.value)
    except verifier.CheckFailed as exc:
        raise Unprocessable(f"the record cannot be encoded: {exc}", code="invalid_record") from None
    proof = [_bytes32(p) for p in body.proof]
    if verifier.process_merkle_proof(leaf, proof) != _bytes32(root):
        raise Unprocessable("the record and proof do not lead to this batch root", code="record_not_in_batch")
    record = BatchRecord(body.types, body.value, proof)
    return JSONResponse(_provable(_builder(request, services).batch, _bytes32(root), record=record, chain_to=chain_to, located=(bytes(row.tx_hash), row.log_index)))


# --- the document check -----------------------------------------------------------------------------------------


@router.post(
    "/v1/evidence/verify",
    tags=["evidence"],
    responses={200: {"model": DocumentCheck, "description": "the verifier's verdict and the bundle, with the document's salt"}},
    summary="Check a document file against the chain: find its anchor, answer the verdict and the proof bundle",
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}, "required": True}},
)
async def verify_document(request: Request, principal: CurrentPrincipal, services: ServicesDep, salt: Annotated[Optional[str], Header(alias="X-Document-Salt", description="the document's 32-byte salt, 0x + 64 hex digits")] = None) -> JSONResponse:
    """The body is the document itself (any bytes: PDF, XML, ...). With its salt, the service computes
    keccak256(salt || keccak256(file)), finds the anchored document, builds its bundle (with the salt and content
    hash in it) and verifies it against its own node. 404 unknown_document when no anchor matches."""
    content = await request.body()
    if len(content) > services.settings.max_body_bytes:
        raise PayloadTooLarge(f"the document is over {services.settings.max_body_bytes} bytes")
    if not content:
        raise BadRequest("send the document as the request body", code="empty_document")
    salt_bytes = document_salt(salt)
    return JSONResponse(await run_in_threadpool(check_document, services, _builder(request, services), content, salt_bytes))


def document_salt(text: str | None) -> bytes:
    """A document's salt as given (0x + 64 hex digits): 422 salt_required when missing, 400 invalid_salt otherwise."""
    if text is None:
        raise Unprocessable("the salt is needed: the chain holds only keccak256(salt || keccak256(file)); ask the party that shared the document", code="salt_required")
    try:
        salt = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        salt = b""
    if len(salt) != 32:
        raise BadRequest("the salt is 0x followed by 64 hex digits", code="invalid_salt")
    return salt


def check_document(services: Services, builder: ProofBuilder, content: bytes, salt: bytes) -> dict[str, Any]:
    """The document check (blocking): the salted hash of the file, its anchor, the bundle with the salt and content
    hash in it, and the verifier's verdict against the service's own node. 404 unknown_document when no anchor
    matches (details: the hashes computed)."""
    content_hash = keccak(content)
    doc_hash = keccak(salt + content_hash)
    with services.index_engine.connect() as conn:
        row = conn.execute(select(T_DOC.c.tx_hash, T_DOC.c.log_index).where(T_DOC.c.doc_hash == doc_hash)).first()
    if row is None:
        raise NotFound(f"no document is anchored with hash 0x{doc_hash.hex()} (a different file, a different salt, or not anchored yet)", code="unknown_document",
                       details={"doc_hash": "0x" + doc_hash.hex(), "content_hash": "0x" + content_hash.hex()})  # fmt: skip
    bundle = _provable(builder.document, doc_hash, located=(bytes(row.tx_hash), row.log_index))
    bundle = attach_document(bundle, salt=salt, content_hash=content_hash)
    number = bundle["block"]["number"]
    node_hash = builder.rpc.call("eth_getBlockByNumber", [hex(number), False])["hash"]  # the service's node, as --rpc would ask it
    verdict = verifier.verify_bundle(bundle, document=content, anchors=verifier.TrustAnchors(blocks={number: _bytes32(node_hash)}))
    return {"doc_hash": "0x" + doc_hash.hex(), "content_hash": "0x" + content_hash.hex(), "verdict": verdict.to_dict(), "bundle": bundle}


# --- the audit log ----------------------------------------------------------------------------------------------


def _auditor(principal: Principal) -> None:
    if not principal.roles & AUDITED_ROLES:
        raise Forbidden("the audit log is for auditors and regulators", code="not_auditor")


@router.get("/v1/audit/log", tags=["audit"], responses={200: {"model": AuditLogPage, "description": "log entries in id order"}}, summary="Auditor and regulator reads: who, what, when, and the batch anchoring each")
def audit_log(principal: CurrentPrincipal, request: Request, org: Annotated[Optional[int], Query(ge=1, lt=2**32)] = None,
              after: Annotated[int, Query(ge=0, lt=2**63, description="entries after this id")] = 0,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:  # fmt: skip
    _auditor(principal)
    items = audit_log_of(request.app).entries(org_id=org, after_id=after, limit=limit)
    return {"items": items, "record_types": list(AUDIT_RECORD_TYPES), "record_fields": list(AUDIT_RECORD_FIELDS)}


@router.post("/v1/audit/anchor", tags=["audit"], responses={200: {"model": AuditAnchoring, "description": "the batches handed to the outbox"}}, summary="Close a batch of the waiting audit-log entries and anchor it now")
def anchor_audit_log(principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
    _auditor(principal)
    return {"submitted": audit_log_of(request.app).anchor_pending()}


@router.get("/v1/audit/log/{entry_id}/proof", tags=["audit"], responses={200: {"model": BatchRecordProofBundle, "description": "the bundle of the entry's batch, with the entry"}}, summary="Proof bundle of one audit-log entry (a batched record)")
def audit_entry_proof(entry_id: Annotated[int, Path(ge=1, lt=2**63)], principal: CurrentPrincipal, snapshot: IndexReadDep, request: Request, services: ServicesDep, chain_to: ChainTo = None) -> JSONResponse:
    return JSONResponse(audit_entry_bundle(request.app, snapshot.conn, principal, _builder(request, services), entry_id, chain_to=chain_to))


def audit_entry_bundle(app: FastAPI, conn: Connection, principal: Principal, builder: ProofBuilder, entry_id: int, *, chain_to: int | None = None) -> dict[str, Any]:
    """The bundle of an audit-log entry's anchored batch, with the entry and its inclusion proof (auditors and
    regulators only)."""
    _auditor(principal)
    proof = audit_log_of(app).entry_proof(entry_id)
    if proof is None:
        raise NotFound(f"no batched audit-log entry {entry_id} (entries are batched with POST /v1/audit/anchor or on their own)", code="unknown_entry")
    row = conn.execute(select(T_BATCH.c.tx_hash, T_BATCH.c.log_index).where(T_BATCH.c.root == proof.root)).first()
    if row is None:
        raise Conflict(f"the batch of entry {entry_id} is not anchored on chain yet (command {proof.command_id})", code="not_anchored_yet")
    record = BatchRecord(list(AUDIT_RECORD_TYPES), list(proof.values), proof.proof)
    return _provable(builder.batch, proof.root, record=record, chain_to=chain_to, located=(bytes(row.tx_hash), row.log_index))


# --- the auditor's page -----------------------------------------------------------------------------------------


@router.get("/auditor", include_in_schema=False)
def auditor_html() -> HTMLResponse:
    return HTMLResponse(auditor_page.HTML, headers=PAGE_SECURITY)


@router.get("/auditor.js", include_in_schema=False)
def auditor_js() -> Response:
    return Response(auditor_page.SCRIPT, media_type="text/javascript", headers=PAGE_SECURITY)
