"""Write endpoints: every site event and trade-evidence step, accepted into the durable outbox (202).

Each endpoint validates its body, pre-checks role and part states, and answers 202 with the command id to follow
at GET /v1/commands/{id}. An Idempotency-Key header makes a retry safe: the same key with the same request answers
the first command again, with another request 422 idempotency_key_reused. A request repeated without a key is a new
request (two equal shipments a month apart are legitimate), yet it cannot take effect twice: every write is a
transition that cannot start from the state it leaves, so the repeat is refused at once once the first is indexed
(409 invalid_state, already_registered, batch_anchored, lot_recalled), or by the contract while the first is in
flight (the command ends rejected with the custom error).
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Optional

import pydantic_core
from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert

from ledger_service.auth import Principal
from ledger_service.deps import CurrentPrincipal, ServicesDep
from ledger_service.errors import BadRequest, PayloadTooLarge, Unprocessable
from ledger_service.operations import OPERATIONS
from ledger_service.outbox import Draft, Outbox, request_digest
from ledger_service.schemas import CommandAccepted, CommandStatus
from ledger_service.tables import PrivateVin
from partledger.errors import ValidationError
from partledger.ids import normalize_gtin, normalize_vin, part_id, validate_lot, validate_serial, vin_hash


class _BodyLimitedRoute(APIRoute):
    """Refuses, before FastAPI reads and parses a body: one whose Content-Length is over max_body_bytes (413
    whatever it holds; _raw_body checks bodies sent without a length once read), and JSON nested too deeply."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            limit = request.app.state.services.settings.max_body_bytes
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            _refuse_deep_json(await request.body())
            return await handler(request)

        return limited


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


class PartsBody(Body):
    part_ids: list[Annotated[str, Field(pattern=HEX32)]] = Field(min_length=1, max_length=100_000)
    doc_hash: Optional[Annotated[str, Field(pattern=HEX32)]] = Field(default=None, description="hash of a delivery note, QC report, ...")


class ShipBody(PartsBody):
    to_org: int = Field(ge=1, lt=2**32, description="the organisation that must receive the parts")


class RegisterBody(Body):
    gtin: str = Field(min_length=8, max_length=14)
    lot: str = Field(min_length=1, max_length=20)
    serials: list[str] = Field(min_length=1, max_length=100_000)


class InstallItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part_id: Annotated[str, Field(pattern=HEX32)]
    vin: str = Field(min_length=17, max_length=17, description="in clear; only a salted hash goes on chain")


class InstallBody(Body):
    items: list[InstallItem] = Field(min_length=1, max_length=10_000)
    doc_hash: Optional[Annotated[str, Field(pattern=HEX32)]] = None


class RecallBody(Body):
    lot: int = Field(ge=1, lt=2**63, description="the lot number (see GET /v1/parts?lot=...)")
    notice_hash: Annotated[str, Field(pattern=HEX32)]


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


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def _outbox(services: ServicesDep) -> Outbox:
    if services.outbox is None:
        raise BadRequest("this service instance only reads (no site keys configured)", code="read_only")
    return services.outbox


async def _accept(
    request: Request, services: ServicesDep, principal: Principal, draft: Draft, site: str | None, idempotency_key: str | None,
    precheck: Callable[[], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    outbox = _outbox(services)
    digest = request_digest(request.method, request.url.path, await request.body())
    # SQL and the pre-checks block: in the thread pool, so that one large command never stalls the event loop.
    return await run_in_threadpool(_accept_blocking, outbox, principal, draft, site, idempotency_key, digest, precheck)


def _accept_blocking(
    outbox: Outbox, principal: Principal, draft: Draft, site: str | None, idempotency_key: str | None, digest: str,
    precheck: Callable[[], None] | None,
) -> dict[str, Any]:  # fmt: skip
    if idempotency_key is not None:
        # A retry gets the first answer even when the command took effect meanwhile and the pre-checks below
        # would now refuse it (the parts have moved, the lot is recalled).
        replay = outbox.replay(principal.org_id, idempotency_key, digest)
        if replay is not None:
            return replay
    signer = outbox.signer_for(principal, site)
    outbox.precheck(principal, OPERATIONS[draft.kind], draft.part_ids, to=draft.summary.get("to"))
    if precheck is not None:
        precheck()
    return outbox.accept(principal, draft, signer=signer, idempotency_key=idempotency_key, request_sha256=digest)


def _part_draft(kind: str, body: PartsBody, services: ServicesDep, **shared: Any) -> Draft:
    ids = _parts(body.part_ids)
    summary = {"doc_hash": body.doc_hash, **shared}
    items = [{"parts": chunk, **summary} for chunk in _chunks(body.part_ids, services.settings.max_parts_per_tx)]
    return Draft(kind=kind, summary=summary, part_ids=ids, items=items, part_count=len(ids))


def _part_endpoint(kind: str, summary: str) -> None:
    async def endpoint(request: Request, body: PartsBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
        await _raw_body(request, services)
        return await _accept(request, services, principal, _part_draft(kind, body, services), body.site, idempotency_key)

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
    await _raw_body(request, services)
    draft = _part_draft("ship", body, services, to=body.to_org)
    return await _accept(request, services, principal, draft, body.site, idempotency_key)


def _registration_draft(gtin: str, lot: str, serials: list[str], services: ServicesDep) -> Draft:
    if len(serials) > services.settings.max_rows_per_request:
        raise PayloadTooLarge(f"at most {services.settings.max_rows_per_request} parts per request")
    gtin14 = normalize_gtin(gtin)
    validate_lot(lot)
    errors = []
    for row, serial in enumerate(serials, start=1):
        try:
            validate_serial(serial)
        except ValidationError as exc:
            errors.append({"row": row, "serial": serial[:40], "code": exc.code, "message": str(exc)})
    if errors:
        raise Unprocessable(f"{len(errors)} row(s) are invalid", code="invalid_rows", details=errors[:1000])
    if len(set(serials)) != len(serials):
        raise Unprocessable("a serial appears twice in the request", code="duplicate_parts")
    pids = [part_id(gtin14, serial) for serial in serials]
    ids = ["0x" + pid.hex() for pid in pids]
    size = services.settings.max_parts_per_tx
    items = [{"gtin": gtin14, "lot": lot, "serials": chunk, "part_ids": id_chunk} for chunk, id_chunk in zip(_chunks(serials, size), _chunks(ids, size))]
    return Draft(kind="register", summary={"gtin": gtin14, "lot": lot}, part_ids=pids, items=items, part_count=len(serials))


@router.post("/parts/register", status_code=202, responses=ACCEPTED, summary="Register serialised parts of one GTIN and lot (JSON)")
async def register_parts(request: Request, body: RegisterBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    await _raw_body(request, services)
    draft = await run_in_threadpool(_registration_draft, body.gtin, body.lot, body.serials, services)  # a keccak per serial
    return await _accept(request, services, principal, draft, body.site, idempotency_key)


@router.post(
    "/parts/register.csv",
    status_code=202,
    responses=ACCEPTED,
    summary="Register parts from CSV (header gtin,serial,lot; one GTIN and lot per upload)",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def register_parts_csv(request: Request, principal: CurrentPrincipal, services: ServicesDep, site: Optional[str] = None, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    raw = await _raw_body(request, services)
    draft = await run_in_threadpool(_csv_draft, raw, services)
    return await _accept(request, services, principal, draft, site, idempotency_key)


def _csv_draft(raw: bytes, services: ServicesDep) -> Draft:
    """The registration a CSV upload describes, or every invalid row at once."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV must be UTF-8", code="invalid_csv") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))  # newline="": the csv module reads line ends itself
    try:
        if reader.fieldnames is None or [name.strip().lower() for name in reader.fieldnames] != ["gtin", "serial", "lot"]:
            raise BadRequest("the CSV header must be: gtin,serial,lot", code="invalid_csv")
        rows = [(reader.line_num, row) for row in reader]  # the line in the file: the reader skips blank lines
    except csv.Error as exc:  # e.g. a NUL byte, or a field the csv module cannot read
        raise BadRequest(f"the CSV cannot be read at line {reader.line_num}: {exc}", code="invalid_csv") from None
    if not rows:
        raise BadRequest("the CSV has no rows", code="invalid_csv")
    errors = []
    first: dict[str, Any] | None = None  # the first valid row, whose GTIN and lot every other row must have
    for number, row in rows:
        if None in row or any(value is None for value in row.values()):
            errors.append({"row": number, "code": "invalid_row", "message": "wrong number of columns"})
            continue
        try:
            normalize_gtin(row["gtin"])
            validate_serial(row["serial"])
            validate_lot(row["lot"])
        except ValidationError as exc:
            errors.append({"row": number, "code": exc.code, "message": str(exc)})
            continue
        if first is None:
            first = row
        elif normalize_gtin(row["gtin"]) != normalize_gtin(first["gtin"]) or row["lot"] != first["lot"]:
            errors.append({"row": number, "code": "mixed_batch", "message": "every row of one upload must have the GTIN and lot of the first row"})
    if errors or first is None:
        raise Unprocessable(f"{len(errors)} CSV row(s) are invalid", code="invalid_rows", details=errors[:1000])
    return _registration_draft(first["gtin"], first["lot"], [row["serial"] for _, row in rows], services)


@router.post("/parts/install", status_code=202, responses=ACCEPTED, summary="Install parts in vehicles (VIN in clear; stored encrypted, hashed on chain)")
async def install_parts(request: Request, body: InstallBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    await _raw_body(request, services)
    vault = services.vault
    if vault is None:
        raise BadRequest("no VIN encryption key is configured on this service", code="read_only")
    sealed: list[dict[str, Any]] = []
    part_hex, vin_hashes = [], []
    for item in body.items:
        vin = normalize_vin(item.vin)
        salt = secrets.token_bytes(32)
        hashed = vin_hash(vin, salt)
        part_hex.append(item.part_id)
        vin_hashes.append("0x" + hashed.hex())
        sealed.append({"vin_hash": hashed, "part_id": bytes.fromhex(item.part_id[2:]), "ciphertext": vault.seal(vin.encode() + salt, hashed)})
    size = services.settings.max_parts_per_tx
    items = [{"parts": parts, "vin_hashes": vins, "doc_hash": body.doc_hash} for parts, vins in zip(_chunks(part_hex, size), _chunks(vin_hashes, size))]

    def store_vins(conn: Any, command_id: str) -> None:
        now = time.time()
        conn.execute(insert(PrivateVin.__table__), [row | {"org_id": principal.org_id, "command_id": command_id, "created_at": now} for row in sealed])

    draft = Draft(kind="install", summary={"doc_hash": body.doc_hash}, part_ids=_parts(part_hex), items=items, part_count=len(part_hex), after_write=store_vins)
    return await _accept(request, services, principal, draft, body.site, idempotency_key)


@router.post("/lots/recall", status_code=202, responses=ACCEPTED, summary="Recall a lot (its manufacturer or a regulator)")
async def recall_lot(request: Request, body: RecallBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    await _raw_body(request, services)
    outbox = _outbox(services)
    payload = {"lot": body.lot, "notice_hash": body.notice_hash}
    draft = Draft(kind="recall", summary=payload, part_ids=[], items=[payload], part_count=0)
    return await _accept(request, services, principal, draft, body.site, idempotency_key, precheck=lambda: outbox.precheck_recall(principal, body.lot))


@router.post("/batches", status_code=202, responses=ACCEPTED, summary="Anchor the Merkle root of a batch of records", tags=["evidence"])
async def anchor_batch(request: Request, body: BatchBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    await _raw_body(request, services)
    payload = {"root": body.root, "record_count": body.record_count, "batch_kind": body.kind}
    draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0)
    outbox = _outbox(services)
    return await _accept(request, services, principal, draft, body.site, idempotency_key, precheck=lambda: outbox.precheck_batch(bytes.fromhex(body.root[2:])))


@router.get("/commands/{command_id}", responses={200: {"model": CommandStatus, "description": "the command and how it stands"}}, summary="Follow a command: accepted → submitted (tx) → confirmed (block) or rejected (contract error)")
def get_command(command_id: Annotated[str, Field(max_length=36)], principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return _outbox(services).view(principal, command_id)


