"""Write endpoints: every site event and trade-evidence step, accepted into the durable outbox (202).

Each endpoint parses its body and hands it to ledger_service.write_service (the console's forms call the same
functions), which pre-checks role and part states and answers 202 with the command id to follow at
GET /v1/commands/{id}. Endpoints that take parts take them as `part_ids` or, as people see them, as `parts`
(ledger_service.part_refs: Digital Link URIs, GTIN and serial, lot selections; refused per row, 422 invalid_parts). An Idempotency-Key header makes a retry safe: the same key with the same request answers
the first command again, with another request 422 idempotency_key_reused. A request repeated without a key is a new
request (two equal shipments a month apart are legitimate), yet it cannot take effect twice: every write is a
transition that cannot start from the state it leaves, so the repeat is refused at once once the first is indexed
(409 invalid_state, already_registered, batch_anchored, lot_recalled), or by the contract while the first is in
flight (the command ends rejected with the custom error).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any, Optional

import pydantic_core
from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from ledger_service.deps import CurrentPrincipal, ServicesDep
from ledger_service.errors import BadRequest, PayloadTooLarge, Unprocessable
from ledger_service.outbox import request_digest
from ledger_service.part_refs import STATUS_NAMES
from ledger_service.schemas import CommandAccepted, CommandStatus, Omittable
from ledger_service.write_service import outbox_of, submit_batch, submit_install, submit_recall, submit_register, submit_register_csv, submit_transition


class _BodyLimitedRoute(APIRoute):
    """Refuses, before FastAPI reads and parses a body: one whose Content-Length is over max_body_bytes (413
    whatever it holds; _raw_body checks bodies sent without a length once read), and JSON nested too deeply."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            await read_limited_body(request)
            return await handler(request)

        return limited


async def read_limited_body(request: Request) -> bytes:
    """The request's body, read once (FastAPI's handler reads it again from the request's cache); PayloadTooLarge
    for a Content-Length over max_body_bytes, BadRequest for a client gone before the end, Unprocessable for JSON
    nested too deeply."""
    limit = request.app.state.services.settings.max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    try:
        body = await request.body()
    except ClientDisconnect:  # nothing was accepted; the answer reaches no one, but it is not a server error
        raise BadRequest("the client closed the connection before it sent the whole body", code="client_disconnected") from None
    _refuse_deep_json(body)
    return body


def _refuse_deep_json(body: bytes) -> None:
    """The stdlib JSON parser that FastAPI uses recurses in C, and importing web3 (its py_ecc) raises Python's
    recursion limit to 100000: a body nested ~100k deep overflows the C stack and kills the process. A body with
    enough brackets to nest deeply is parsed first by pydantic-core, whose parser stops at a fixed depth."""
    if body.count(b"[") + body.count(b"{") < 256:
        return
    try:
        pydantic_core.from_json(body)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise Unprocessable("the JSON body is nested too deeply", code="invalid_request") from None


router = APIRouter(prefix="/v1", tags=["commands"], route_class=_BodyLimitedRoute)
HEX32 = r"^0x[0-9a-fA-F]{64}$"
IdempotencyKey = Annotated[Optional[str], Header(alias="Idempotency-Key", max_length=255)]
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": CommandAccepted, "description": "accepted into the outbox: follow it at GET /v1/commands/{command_id}"}}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: Optional[str] = Field(default=None, max_length=64, description="site key address or site name (default: the first)")


PART_REF_SCHEMA: dict[str, Any] = {
    "description": "a part named as people see it (ledger_service.part_refs): its id, a Digital Link URI as printed on its label "
    "(the signature, if any, is not checked), its GTIN and serial, or a selection of your own parts of a lot",
    "anyOf": [
        {"type": "string", "pattern": HEX32, "title": "PartId"},
        {"type": "string", "pattern": "^https?://", "maxLength": 2048, "title": "DigitalLink", "description": "https://{resolver}/01/{gtin}/21/{serial}[?sig=...]"},
        {
            "type": "object", "title": "GtinSerial", "required": ["gtin", "serial"], "additionalProperties": False,
            "properties": {"gtin": {"type": "string", "pattern": "^[0-9]{8,14}$", "description": "GTIN-8/12/13/14"}, "serial": {"type": "string", "minLength": 1, "maxLength": 20}},
        },
        {
            "type": "object", "title": "LogisticUnit", "required": ["sscc"], "additionalProperties": False,
            "description": "a logistic unit (carton, pallet), where the write takes one: ship, receive, cancel, pack, unpack",
            "properties": {"sscc": {"type": "string", "pattern": "^[0-9]{18}$", "description": "SSCC, GS1 AI 00"}},
        },
        {
            "type": "object", "title": "LotSelection", "required": ["lot"], "additionalProperties": False,
            "description": "your parts of a lot (those you hold; for a receipt, those shipped to you), by default in the states the write starts from",
            "properties": {
                "lot": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 20, "description": "lot code"}, {"type": "integer", "minimum": 1, "description": "lot number"}]},
                "gtin": {"type": "string", "pattern": "^[0-9]{8,14}$"},
                "status": {"type": "string", "enum": list(STATUS_NAMES)},
                "site": {"type": "string", "maxLength": 64, "description": "site name or site key address"},
            },
        },
    ],
}  # fmt: skip
# Loosely typed on purpose: an entry that is not one of the forms is refused with its row (422 invalid_parts), not as
# a schema violation of the whole body.
PartRefs = Annotated[list[Annotated[Any, WithJsonSchema(PART_REF_SCHEMA)]], Field(min_length=1, max_length=100_000)]
BOTH_PARTS = "send the parts as part_ids or as parts, not both"


class PartsBody(Body):
    """Exactly one of part_ids (as before) and parts (any reference form)."""

    part_ids: Omittable[Annotated[list[Annotated[str, Field(pattern=HEX32)]], Field(min_length=1, max_length=100_000)]] = None
    parts: Omittable[PartRefs] = Field(default=None, description="instead of part_ids: parts by id, Digital Link, GTIN and serial, or lot selection; refused per row (422 invalid_parts)")
    doc_hash: Optional[Annotated[str, Field(pattern=HEX32)]] = Field(default=None, description="hash of a delivery note, QC report, ...")

    @model_validator(mode="after")
    def _one_list(self) -> PartsBody:
        if (self.part_ids is None) == (self.parts is None):
            raise ValueError(BOTH_PARTS if self.part_ids is not None else "part_ids or parts is required")
        return self

    def named(self) -> list[Any]:
        return _parts(self.part_ids) if self.part_ids is not None else list(self.parts or ())


class ShipBody(PartsBody):
    to_org: int = Field(ge=1, lt=2**32, description="the organisation that must receive the parts")


class RegisterBody(Body):
    gtin: str = Field(min_length=8, max_length=14)
    lot: str = Field(min_length=1, max_length=20)
    serials: list[str] = Field(min_length=1, max_length=100_000)


class InstallItem(BaseModel):
    """One part (part_id, or part in any reference form but a selection) and the vehicle it goes into."""

    model_config = ConfigDict(extra="forbid")
    part_id: Omittable[Annotated[str, Field(pattern=HEX32)]] = None
    part: Omittable[Annotated[Any, WithJsonSchema(PART_REF_SCHEMA)]] = Field(default=None, description="instead of part_id: the part by Digital Link or GTIN and serial")
    vin: str = Field(min_length=17, max_length=17, description="in clear; only a salted hash goes on chain")

    @model_validator(mode="after")
    def _one_part(self) -> InstallItem:
        if (self.part_id is None) == (self.part is None):
            raise ValueError("name the part as part_id or as part, not both" if self.part_id is not None else "part_id or part is required")
        return self

    def named(self) -> Any:
        return bytes.fromhex(self.part_id[2:]) if self.part_id is not None else self.part


class InstallBody(Body):
    items: list[InstallItem] = Field(min_length=1, max_length=10_000)
    doc_hash: Optional[Annotated[str, Field(pattern=HEX32)]] = None


class NoticeText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zh: str = Field(description="in Chinese")
    en: str = Field(description="in English")


class RecallNoticeIn(BaseModel):
    """What the recall says, in both languages (ledger_service.recall_notices: not blank; title up to 200 characters,
    contact 500, the others 4000; line breaks as \\n). The service keeps it and puts its SHA-256 on chain."""

    model_config = ConfigDict(extra="forbid")
    title: NoticeText
    reason: NoticeText = Field(description="what is wrong")
    risk: NoticeText = Field(description="what can happen")
    remedy: NoticeText = Field(description="what the manufacturer does about it")
    action: NoticeText = Field(description="what to do now")
    contact: NoticeText


class RecallBody(Body):
    lot: int = Field(ge=1, lt=2**63, description="the lot number (see GET /v1/parts?lot=...)")
    notice: Omittable[RecallNoticeIn] = Field(
        default=None, description="the notice people read (the verification page, GET /v1/recall-notices/{notice_hash}); its hash goes on chain"
    )
    notice_hash: Omittable[Annotated[str, Field(pattern=HEX32)]] = Field(
        default=None, description="the hash of a notice kept elsewhere (a PDF's SHA-256, say); with `notice`, it must be that notice's hash"
    )

    @model_validator(mode="after")
    def _some_notice(self) -> RecallBody:
        if self.notice is None and self.notice_hash is None:
            raise ValueError("notice or notice_hash is required")
        return self


class BatchBody(Body):
    root: Annotated[str, Field(pattern=HEX32)]
    record_count: int = Field(ge=1, lt=2**32)
    kind: str = Field(min_length=1, max_length=32, pattern=r"^[ -~]+$")


async def _raw_body(request: Request, services: ServicesDep) -> bytes:
    body = await request.body()
    if len(body) > services.settings.max_body_bytes:
        raise PayloadTooLarge(f"request body over {services.settings.max_body_bytes} bytes")
    return body


def _parts(part_ids: list[str]) -> list[bytes]:
    return [bytes.fromhex(value[2:]) for value in part_ids]


async def _digest(request: Request, services: ServicesDep) -> str:
    """The request's digest for its Idempotency-Key: method, path and body as sent."""
    return request_digest(request.method, request.url.path, await _raw_body(request, services))


def _part_endpoint(kind: str, summary: str) -> None:
    async def endpoint(request: Request, body: PartsBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
        digest = await _digest(request, services)
        return await run_in_threadpool(
            partial(submit_transition, services, principal, kind=kind, parts=body.named(), site=body.site, doc_hash=body.doc_hash,
                    idempotency_key=idempotency_key, request_sha256=digest)
        )  # fmt: skip

    endpoint.__name__ = f"{kind}_parts"
    router.add_api_route(f"/parts/{kind}", endpoint, methods=["POST"], status_code=202, summary=summary, responses=ACCEPTED)


for _kind, _summary in (
    ("receive", "Receive parts shipped to your organisation"),
    ("cancel", "Cancel shipments you sent that were not received yet"),
    ("sell", "Record an over-the-counter sale"),
    ("remove", "Remove installed parts from their vehicles"),
    ("quarantine", "Hold parts back from use (doc_hash: the QC report)"),
    ("release", "Release quarantined parts"),
    ("scrap", "Scrap parts (terminal)"),
    ("recycle", "Recycle parts (terminal; recyclers)"),
):
    _part_endpoint(_kind, _summary)


@router.post("/parts/ship", status_code=202, responses=ACCEPTED, summary="Ship parts to another organisation, which must receive them")
async def ship_parts(request: Request, body: ShipBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(
        partial(submit_transition, services, principal, kind="ship", parts=body.named(), site=body.site, to_org=body.to_org,
                doc_hash=body.doc_hash, idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip


@router.post("/parts/register", status_code=202, responses=ACCEPTED, summary="Register serialised parts of one GTIN and lot (JSON)")
async def register_parts(request: Request, body: RegisterBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(  # a keccak per serial
        partial(submit_register, services, principal, gtin=body.gtin, lot=body.lot, serials=body.serials, site=body.site,
                idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip


@router.post(
    "/parts/register.csv",
    status_code=202,
    responses=ACCEPTED,
    summary="Register parts from CSV (header gtin,serial,lot; one GTIN and lot per upload)",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def register_parts_csv(request: Request, principal: CurrentPrincipal, services: ServicesDep, site: Optional[str] = None, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    raw = await _raw_body(request, services)
    digest = request_digest(request.method, request.url.path, raw)
    return await run_in_threadpool(partial(submit_register_csv, services, principal, csv_bytes=raw, site=site, idempotency_key=idempotency_key, request_sha256=digest))


@router.post("/parts/install", status_code=202, responses=ACCEPTED, summary="Install parts in vehicles (VIN in clear; stored encrypted, hashed on chain)")
async def install_parts(request: Request, body: InstallBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    items = [(item.named(), item.vin) for item in body.items]
    return await run_in_threadpool(
        partial(submit_install, services, principal, items=items, site=body.site, doc_hash=body.doc_hash, idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip


@router.post("/lots/recall", status_code=202, responses=ACCEPTED, summary="Recall a lot (its manufacturer or a regulator) with its notice in zh and en, or a notice's hash")
async def recall_lot(request: Request, body: RecallBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(
        partial(submit_recall, services, principal, lot=body.lot, notice_hash=body.notice_hash, notice=body.notice.model_dump() if body.notice is not None else None,
                site=body.site, idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip


@router.post("/batches", status_code=202, responses=ACCEPTED, summary="Anchor the Merkle root of a batch of records", tags=["evidence"])
async def anchor_batch(request: Request, body: BatchBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(
        partial(submit_batch, services, principal, root=body.root, record_count=body.record_count, batch_kind=body.kind, site=body.site,
                idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip


@router.get("/commands/{command_id}", responses={200: {"model": CommandStatus, "description": "the command and how it stands"}}, summary="Follow a command: accepted → submitted (tx) → confirmed (block) or rejected (contract error)")
def get_command(command_id: Annotated[str, Field(max_length=36)], principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return outbox_of(services).view(principal, command_id)


