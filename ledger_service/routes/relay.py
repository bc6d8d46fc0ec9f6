"""The relay: requests that sites signed with their own keys (ERC-2771 ForwardRequests), accepted into the relay's
durable outbox (202) and relayed in batches of many sites' requests; each followed at GET /v1/relay/{id}.

The checks and the write are ledger_service.relay's, the batches ledger_service.relayer's. Any member's API key may
post (an edge agent's, a site's own): the signature says who acts, and is checked here as the forwarder will check it
on chain. The EIP-712 domain to sign under is the forwarder's, read from the chain by its eip712Domain() (ERC-5267).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ledger_service.deps import CurrentPrincipal, Services, ServicesDep
from ledger_service.errors import BadRequest, Unprocessable
from ledger_service.relay import RelayDesk, Submitted
from ledger_service.schemas import Exact, Omittable
from ledger_service.routes.writes import _BodyLimitedRoute  # the write routes' body limits apply here alike
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


@router.post(
    "/relay", status_code=202, response_model=RelayAccepted, response_model_exclude_none=True,
    summary="Relay requests signed by sites' own keys (ERC-2771 ForwardRequests), one or many",
    responses={202: {"description": "every request accepted into the relay's outbox: follow each at GET /v1/relay/{id}"}},
)  # fmt: skip
async def relay_requests(body: RelayBody, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    desk = desk_of(services)
    if len(body.requests) > services.settings.relay_max_requests:
        raise Unprocessable(f"at most {services.settings.relay_max_requests} requests per post", code="too_many_requests_in_post")
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
    return await run_in_threadpool(desk.accept, principal, submitted)


@router.get("/relay/{request_id}", response_model=RelayStatus, summary="A relayed request: accepted, relayed, confirmed or failed")
async def relay_status(request_id: str, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return await run_in_threadpool(desk_of(services).view, principal, request_id)
