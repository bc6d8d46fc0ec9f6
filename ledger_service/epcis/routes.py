"""The EPCIS 2.0 REST binding (GS1's OpenAPI "EPCIS 2.0 REST Bindings"), mounted at /epcis, and members' GS1 identities.

    POST /epcis/capture               an EPCISDocument (application/json or application/ld+json): 202, Location of the
                                      capture job; GS1-Capture-Error-Behaviour: rollback (default) | proceed
    GET  /epcis/capture               the caller's organisation's capture jobs, newest first
    GET  /epcis/capture/{captureID}   a job: running, success, per-event errors
    POST /epcis/events                one event, captured before the answer: 201 and Location (or its error)
    GET  /epcis/events                the standard's query parameters: an EPCISQueryDocument (Link rel="next")
    GET  /epcis/events/{eventID}      one event
    GET  /epcis/events/{eventID}/proof  a captured event's proof bundle (its anchored batch and inclusion proof)
    GET  /epcis/lots/{lot}/document   a lot's whole history as one EPCISDocument (partledger epcis export)
    GET  /v1/gs1/identity             the caller's organisation's GS1 identity; PUT replaces it
    GET  /v1/gs1/identities           every member's

Every /epcis answer carries GS1-EPCIS-Version and GS1-CBV-Version. Members read consortium data, auditors and
regulators everything; without an API key, nothing (401).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from indexer.tables import Batch
from ledger_service.auth import Principal, require_may_act
from ledger_service.deps import CurrentPrincipal, Services, ServicesDep
from ledger_service.epcis import capture, query
from ledger_service.epcis.identities import all_identities, identity_of, set_identity
from ledger_service.epcis.tables import EpcisBatch, EpcisEvent
from ledger_service.epcis.worker import CaptureWorker, batch_values
from ledger_service.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from ledger_service.routes.proofs import _provable, proof_builder
from ledger_service.schemas import (
    EPCIS_DOCUMENT_SCHEMA, EPCIS_EVENT_SCHEMA, CaptureAccepted, CaptureJob, CaptureJobs, EpcisEventProofBundle, EventCaptured, Gs1Identities, Gs1Identity,
)  # fmt: skip
from partledger.epcis.schema import validate_document
from partledger.merkle import build_tree
from partledger.model import CUSTODY_ROLES, Role
from partledger.proofs.builder import BatchRecord

VERSION_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0", "GS1-Extensions": ""}
MEDIA_TYPES = ("application/json", "application/ld+json")
SINGLE_EVENT_WAIT = 30.0
T_EVENT, T_EBATCH, T_BATCH = EpcisEvent.__table__, EpcisBatch.__table__, Batch.__table__


class LdJson(Response):
    """EPCIS documents and events: JSON-LD."""

    media_type = "application/ld+json"


def _ld(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/ld+json": {"schema": schema}}}


async def _versions(response: Response) -> None:  # async: no worker thread for a header
    response.headers.update(VERSION_HEADERS)


router = APIRouter(prefix="/epcis", tags=["epcis"], dependencies=[Depends(_versions)])
identity_router = APIRouter(prefix="/v1/gs1", tags=["gs1"])


def worker_of(app: Any) -> CaptureWorker | None:
    return getattr(app.state, "epcis_worker", None)


def _capturer(principal: Principal) -> None:
    require_may_act(principal)
    if not principal.roles & (CUSTODY_ROLES | Role.REGULATOR):
        raise Forbidden("an auditor reads EPCIS events and captures none", code="missing_role")


async def _document_body(request: Request, services: Services) -> bytes:
    limit = services.settings.max_body_bytes
    length = request.headers.get("content-length", "")
    too_large = {"GS1-EPCIS-Capture-File-Size-Limit": str(limit), "GS1-EPCIS-Capture-Limit": str(capture.CAPTURE_LIMIT)}
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the document is over {limit} bytes", code="capture_too_large", headers=too_large)
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise BadRequest(f"send the document as {' or '.join(MEDIA_TYPES)}, not {media}", code="unsupported_media_type")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the document is over {limit} bytes", code="capture_too_large", headers=too_large)
    return bytes(body)


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}", code="invalid_json") from None


def _check_document(document: Any) -> int:
    """The document-level checks that refuse a capture at once (400, 413); per-event problems go to the job."""
    if not isinstance(document, dict) or document.get("type") != "EPCISDocument":
        raise BadRequest("a capture takes an EPCISDocument (a JSON object whose type is EPCISDocument)", code="not_an_epcis_document")
    events = (document.get("epcisBody") or {}).get("eventList") if isinstance(document.get("epcisBody"), dict) else None
    if not isinstance(events, list):
        raise BadRequest("an EPCISDocument carries its events in epcisBody.eventList", code="not_an_epcis_document")
    if len(events) > capture.CAPTURE_LIMIT:
        raise PayloadTooLarge(
            f"a capture takes at most {capture.CAPTURE_LIMIT} events; this document has {len(events)}", code="capture_limit",
            headers={"GS1-EPCIS-Capture-Limit": str(capture.CAPTURE_LIMIT)},
        )  # fmt: skip
    # The document's own level only: the job validates every event again (in its preparing process) and answers an
    # event's problems as its per-event errors. Validating the events here too cost 113-117 ms of the API thread's
    # CPU for a 20,000-event document (0.07 ms without them), 3 % of the service's interpreter during
    # benchmarks/epcis_bench.py's capture (py-spy --gil), for answers it threw away.
    header = {**document, "epcisBody": {**document["epcisBody"], "eventList": []}}
    problems = [p for p in validate_document(header) if p.event_index is None]
    if problems:
        raise BadRequest(
            f"the document is not valid EPCIS 2.0: {problems[0].path}: {problems[0].message}", code="invalid_document",
            details=[{"path": p.path, "message": p.message} for p in problems[:50]],
        )  # fmt: skip
    return len(events)


def _behaviour(value: Optional[str]) -> str:
    behaviour = (value or "rollback").strip().lower()
    if behaviour not in capture.BEHAVIOURS:
        raise BadRequest(f"GS1-Capture-Error-Behaviour is one of {', '.join(capture.BEHAVIOURS)}", code="invalid_capture_behaviour")
    return behaviour


CaptureBehaviour = Annotated[Optional[str], Header(alias="GS1-Capture-Error-Behaviour")]


@router.post("/capture", status_code=202, responses={202: {"model": CaptureAccepted, "description": "the capture job: follow its Location"}})
async def capture_document(request: Request, principal: CurrentPrincipal, services: ServicesDep, behaviour: CaptureBehaviour = None) -> Response:
    _capturer(principal)
    mode = _behaviour(behaviour)
    raw = await _document_body(request, services)
    document = _parse(raw)
    count = await run_in_threadpool(_check_document, document)
    job_id = await run_in_threadpool(capture.create_job, services, principal, raw=raw, event_count=count, behaviour=mode)
    _wake(request.app)
    location = f"/epcis/capture/{job_id}"
    return Response(
        orjson.dumps({"captureID": job_id, "location": location, "eventCount": count}), status_code=202, media_type="application/json",
        headers={"Location": location, **VERSION_HEADERS},
    )  # fmt: skip


@router.get("/capture", responses={200: {"model": CaptureJobs, "description": "the jobs, newest first"}})
def list_captures(principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return {"items": capture.list_jobs(services, principal)}


@router.get("/capture/{capture_id}", responses={200: {"model": CaptureJob, "description": "the job"}})
def get_capture(capture_id: Annotated[str, Path(max_length=64)], principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    view = capture.job_view(services, principal, capture_id)
    if view is None:
        raise NotFound(f"no capture job {capture_id}", code="unknown_capture")
    return view


@router.post("/events", status_code=201, responses={201: {"model": EventCaptured, "description": "captured: its Location"}, 202: {"model": CaptureAccepted, "description": "still running: the job's Location"}})
async def capture_event(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """One event, captured before the answer (the standard's synchronous single-event capture). An event that moves
    parts is answered once its command is final; past SINGLE_EVENT_WAIT seconds, 202 with the job's Location."""
    _capturer(principal)
    raw = await _document_body(request, services)
    event = _parse(raw)
    if not isinstance(event, dict) or not str(event.get("type", "")).endswith("Event"):
        raise BadRequest("POST /events takes one EPCIS event (a JSON object whose type is an event type)", code="not_an_epcis_event")
    context = event.pop("@context", None)
    document = {"@context": context, "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": capture._iso(time.time()), "epcisBody": {"eventList": [event]}}
    if context is None:
        document.pop("@context")
    body = orjson.dumps(document)
    await run_in_threadpool(_check_document, document)
    job_id = await run_in_threadpool(capture.create_job, services, principal, raw=body, event_count=1, behaviour="rollback")
    _wake(request.app)
    deadline = time.monotonic() + SINGLE_EVENT_WAIT
    view = None
    while time.monotonic() < deadline:
        view = await run_in_threadpool(capture.job_view, services, principal, job_id)
        if view is not None and not view["running"]:
            break
        await _sleep(0.05)
    location = f"/epcis/capture/{job_id}"
    if view is None or view["running"]:
        return Response(orjson.dumps({"captureID": job_id, "location": location}), status_code=202, media_type="application/json", headers={"Location": location, **VERSION_HEADERS})
    if not view["success"]:
        error = view["errors"][0]
        kind = Conflict if error["status"] == 409 else BadRequest
        raise kind(error["message"], code=error["code"], details={"captureID": job_id, "eventIndex": 0})
    event_id = await run_in_threadpool(_captured_event_id, services, job_id)
    target = f"/epcis/events/{_quote(event_id)}" if event_id else location
    return Response(orjson.dumps({"eventID": event_id, "captureID": job_id}), status_code=201, media_type="application/json", headers={"Location": target, **VERSION_HEADERS})


def _captured_event_id(services: Services, job_id: str) -> str | None:
    with services.service_engine.connect() as conn:
        return conn.execute(select(T_EVENT.c.event_id).where(T_EVENT.c.capture_id == job_id).limit(1)).scalar()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _wake(app: Any) -> None:
    worker = worker_of(app)
    if worker is not None:
        worker.wake()


@router.get("/events", response_class=LdJson, responses={200: {"description": "an EPCISQueryDocument; the next page in Link rel=next", **_ld(EPCIS_DOCUMENT_SCHEMA)}})
def get_events(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    document, next_url = query.query_events(services=services, principal=principal, params=request.query_params, base_url=str(request.url).split("?")[0], encoded=True)
    headers = dict(VERSION_HEADERS)
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return LdJson(orjson.dumps(document), headers=headers)


@router.get("/events/{event_id:path}/proof", responses={200: {"model": EpcisEventProofBundle, "description": "the bundle (docs/proof-bundle.md)"}})
def get_event_proof(request: Request, event_id: str, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    """A captured event's proof bundle: its organisation's anchored EPCIS batch, the event's leaf (event hash,
    eventID, organisation, seq) and inclusion proof, and the event itself (whose canonical hash the leaf holds)."""
    query.get_event(services=services, principal=principal, event_id=event_id)  # access, and 404 for an unknown one
    with services.service_engine.connect() as conn:
        row = conn.execute(select(T_EVENT.c.seq, T_EVENT.c.event_hash, T_EVENT.c.event_id, T_EVENT.c.org_id, T_EVENT.c.batch_id, T_EVENT.c.body).where(T_EVENT.c.event_id == event_id)).first()
        if row is None:
            raise NotFound("a ledger event's proof is its transaction's: GET /v1/proofs/events/{tx}/{log}", code="not_a_captured_event")
        if row.batch_id is None:
            raise Conflict("the event waits for its EPCIS batch (batches close within seconds)", code="not_anchored_yet")
        batch = conn.execute(select(T_EBATCH).where(T_EBATCH.c.id == row.batch_id)).first()
        members = conn.execute(select(T_EVENT.c.seq, T_EVENT.c.event_hash, T_EVENT.c.event_id).where(T_EVENT.c.batch_id == row.batch_id).order_by(T_EVENT.c.seq)).all()
    with services.index_engine.connect() as conn:
        anchored = conn.execute(select(T_BATCH.c.tx_hash, T_BATCH.c.log_index).where(T_BATCH.c.root == bytes(batch.root))).first()
    if anchored is None:
        raise Conflict(f"the event's batch is not anchored on chain yet (command {batch.command_id})", code="not_anchored_yet")
    values = [batch_values(row.org_id, member) for member in members]
    tree = build_tree(values, types=capture.BATCH_TYPES)
    mine = batch_values(row.org_id, row)
    record = BatchRecord(list(capture.BATCH_TYPES), ["0x" + mine[0].hex(), mine[1], mine[2], mine[3]], tree.proof(mine))
    bundle = _provable(proof_builder(request.app, services).batch, bytes(batch.root), record=record, located=(bytes(anchored.tx_hash), anchored.log_index))
    bundle["epcisEvent"] = orjson.loads(row.body)  # as stored and hashed: without its private fields
    return bundle


@router.get("/events/{event_id:path}", response_class=LdJson, responses={200: {"description": "the event", **_ld(EPCIS_EVENT_SCHEMA)}})
def get_event(event_id: str, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    event = query.get_event(services=services, principal=principal, event_id=event_id)
    return LdJson(orjson.dumps(event), headers=VERSION_HEADERS)


@router.get("/lots/{lot}/document", response_class=LdJson, responses={200: {"description": "the lot's history, oldest first", **_ld(EPCIS_DOCUMENT_SCHEMA)}})
def get_lot_document(lot: Annotated[int, Path(ge=1, lt=2**63)], principal: CurrentPrincipal, services: ServicesDep) -> Response:
    document = query.lot_history_document(services=services, principal=principal, lot=lot, encoded=True)
    return LdJson(orjson.dumps(document), headers=VERSION_HEADERS)


# --- GS1 identities ---------------------------------------------------------------------------------------------


class LocationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gln: str = Field(pattern=r"^[0-9]{13}$")
    extension: Optional[str] = Field(default=None, max_length=20)
    site: Optional[str] = Field(default=None, max_length=64)


class IdentityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gln: Optional[str] = Field(default=None, pattern=r"^[0-9]{13}$", description="the organisation's party GLN (AI 417)")
    party_glns: list[Annotated[str, Field(pattern=r"^[0-9]{13}$")]] = Field(default_factory=list, max_length=100, description="more party GLNs the organisation answers to")
    company_prefix: Optional[str] = Field(default=None, pattern=r"^[0-9]{6,12}$")
    locations: list[LocationBody] = Field(default_factory=list, max_length=1_000)


@identity_router.get("/identity", responses={200: {"model": Gs1Identity, "description": "the caller's organisation's"}})
def get_identity(principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return identity_of(services.service_engine, principal.org_id)


@identity_router.put("/identity", responses={200: {"model": Gs1Identity, "description": "as stored"}})
def put_identity(body: IdentityBody, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    require_may_act(principal)
    return set_identity(
        services.service_engine, services.index_engine, principal.org_id, gln=body.gln, company_prefix=body.company_prefix,
        locations=[location.model_dump() for location in body.locations], party_glns=body.party_glns,
    )  # fmt: skip


@identity_router.get("/identities", responses={200: {"model": Gs1Identities, "description": "every member's that is set"}})
def list_identities(_: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return {"items": all_identities(services.service_engine)}


def install_epcis(app: FastAPI, services: Services) -> CaptureWorker | None:
    """Mounts the EPCIS routes; the capture worker runs where the service holds site keys (started by the lifespan)."""
    app.include_router(router)
    app.include_router(identity_router)
    worker = CaptureWorker(services, batch_seconds=services.settings.epcis_batch_seconds) if services.outbox is not None else None
    app.state.epcis_worker = worker
    return worker
