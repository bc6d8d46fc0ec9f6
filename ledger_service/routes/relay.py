"""The relay: requests that sites signed with their own keys (ERC-2771 ForwardRequests), accepted into the relay's
durable outbox (202) and relayed in batches of many sites' requests; each followed at GET /v1/relay/{id}.

The checks and the write are ledger_service.relay's, the batches ledger_service.relayer's. Any member's API key may
post (an edge agent's, a site's own): the signature says who acts, and is checked here as the forwarder will check it
on chain. The EIP-712 domain to sign under is the forwarder's, read from the chain by its eip712Domain() (ERC-5267).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal, Optional

import orjson
from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ledger_service.auth import authenticate
from ledger_service.deps import CurrentPrincipal, Services, ServicesDep
from ledger_service.errors import BadRequest, Unprocessable
from ledger_service.relay import RelayDesk, Submitted
from ledger_service.schemas import Exact, Omittable
from ledger_service.routes.writes import _BodyLimitedRoute, read_limited_body  # the write routes' body limits apply here alike
from partledger.eip712 import ForwardRequest, checksum_address

router = APIRouter(prefix="/v1", tags=["relay"], route_class=_BodyLimitedRoute)
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_DATA_HEX = 2 + 2 * 64 * 1024  # a call of 64 KiB (a 200-part operation is under 7 KiB)
UINT63 = 2**63 - 1  # nonces and gas as SQL keeps them


class ForwardRequestIn(BaseModel):
    """A ForwardRequest as the site signed it (EIP-712 type `ForwardRequest(address from,address to,uint256 value,
    uint256 gas,uint256 nonce,uint48 deadline,bytes data)` under the forwarder's domain), and its signature."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", pattern=ADDRESS, description="the signing site key")
    to: str = Field(pattern=ADDRESS, description="PartLedger or EvidenceLedger")
    value: int = Field(default=0, ge=0, le=2**256 - 1, description="must be 0: no operation is payable")
    gas: int = Field(ge=1, le=UINT63, description="the gas the call may use")
    nonce: int = Field(ge=0, le=UINT63, description="the forwarder's nonce of the signer this request is signed for")
    deadline: int = Field(ge=0, le=2**48 - 1, description="unix time after which the request may not run")
    data: str = Field(pattern=r"^0x([0-9a-fA-F]{2})*$", min_length=10, max_length=MAX_DATA_HEX, description="the call: selector and ABI-encoded arguments")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65 bytes r || s || v")


class RelayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: Annotated[list[ForwardRequestIn], Field(min_length=1)]


RelayState = Literal["accepted", "relayed", "confirmed", "failed"]


class RelayAnswer(Exact):
    id: str
    signer: str
    nonce: int
    status: RelayState
    idempotent_replay: Omittable[Literal[True]] = Field(default=None, description="present when this request was posted before")


class RelayAccepted(Exact):
    """Every request of the post, in its order: follow each at GET /v1/relay/{id}."""

    requests: list[RelayAnswer]


class RelayError(Exact):
    error: str = Field(description="the forwarder's or the target's custom error, e.g. PartLedgerNotRecipient")
    args: list[Any]
    message: Optional[str] = None


class RelayStatus(Exact):
    id: str
    status: RelayState = Field(description="accepted → relayed (tx_hash) → confirmed (block), or failed (error)")
    signer: str
    organisation: int
    nonce: int
    to: str
    function: str
    deadline: int
    tx_hash: Optional[str] = None
    block: Optional[int] = None
    error: Optional[RelayError] = None
    accepted_at: float


def desk_of(services: Services) -> RelayDesk:
    if services.relay is None:
        raise BadRequest("this service relays nothing (no relayer key configured, or a deployment without a forwarder)", code="relay_unavailable")
    return services.relay


async def relay_requests(body: RelayBody, services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """The caller is authenticated in the same worker thread as the requests are checked and written: one thread
    hop a post, not two (a dependency on the principal would run in a thread of its own)."""
    submitted = [
        Submitted(
            ForwardRequest(
                sender=checksum_address(item.from_), to=checksum_address(item.to), value=item.value, gas=item.gas,
                nonce=item.nonce, deadline=item.deadline, data=bytes.fromhex(item.data[2:]),
            ),
            bytes.fromhex(item.signature[2:]),
        )
        for item in body.requests
    ]  # fmt: skip

    def accept() -> dict[str, Any]:
        principal = authenticate(services.service_engine, services.index_engine, authorization)
        desk = desk_of(services)
        if len(submitted) > services.settings.relay_max_requests:
            raise Unprocessable(f"at most {services.settings.relay_max_requests} requests per post", code="too_many_requests_in_post")
        return desk.accept(principal, submitted)

    return await run_in_threadpool(accept)


class _RelayRoute(_BodyLimitedRoute):
    """POST /v1/relay, the busiest post (every edge agent's flush), with its three parameters found directly rather
    than by FastAPI's dependency solving, and its answer written by orjson rather than through the response model.
    The answers are FastAPI's own (the body read and parsed as FastAPI does, validation errors with the same
    locations: tests/test_relay_api.py holds them), for about an eighth less CPU a post (a post of 5 requests, in
    process: 4.2 → 3.7 ms). The route is declared as any other, so OpenAPI documents it, and the body is checked
    against the schema before the API key, by either way in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handle(request: Request) -> Response:
            raw = await read_limited_body(request)
            try:
                body = RelayBody.model_validate(_json_body(request, raw), from_attributes=True)
            except ValidationError as exc:
                raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None
            answer = await relay_requests(body, request.app.state.services, request.headers.get("authorization"))
            return Response(orjson.dumps(answer), status_code=202, media_type="application/json")

        return handle


_MISSING: dict[str, Any] = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


def _json_body(request: Request, raw: bytes) -> Any:
    """The body as FastAPI parses it with a strict content type: JSON when the request says so (application/json or
    application/*+json), else the bytes themselves (which no model takes); no body is a missing field."""
    if not raw:
        raise RequestValidationError([_MISSING])
    content_type = request.headers.get("content-type")
    if not content_type:
        return raw
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}]) from None
    except Exception:  # noqa: BLE001 - as FastAPI: bytes that are no UTF-8 text, a number over Python's digit limit
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None


router.add_api_route(
    "/relay", relay_requests, methods=["POST"], route_class_override=_RelayRoute, status_code=202, response_model=RelayAccepted,
    response_model_exclude_none=True, summary="Relay requests signed by sites' own keys (ERC-2771 ForwardRequests), one or many",
    responses={202: {"description": "every request accepted into the relay's outbox: follow each at GET /v1/relay/{id}"}},
)  # fmt: skip


@router.get("/relay/{request_id}", response_model=RelayStatus, summary="A relayed request: accepted, relayed, confirmed or failed")
async def relay_status(request_id: str, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(desk_of(services).view, principal, request_id)
