"""Trade evidence: propose a document as one party, countersign as the other; anchoring follows as a command."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ledger_service.deps import CurrentPrincipal, ServicesDep
from ledger_service.errors import BadRequest
from ledger_service.evidence import Notary
from ledger_service.outbox import request_digest
from ledger_service.routes.writes import HEX32, IdempotencyKey
from ledger_service.schemas import CountersignAccepted, CountersignedCommand, Proposal
from partledger.model import DocType

router = APIRouter(prefix="/v1/documents", tags=["evidence"])


class ProposalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_hash: Annotated[str, Field(pattern=HEX32, description="keccak256(salt || keccak256(content)), see partledger.documents")]
    doc_type: str = Field(description=", ".join(t.name.lower() for t in DocType))
    counterparty: int = Field(ge=1, lt=2**32)
    previous: Optional[Annotated[str, Field(pattern=HEX32)]] = None
    parts_root: Optional[Annotated[str, Field(pattern=HEX32)]] = Field(default=None, description="StandardMerkleTree root of the part ids covered")
    valid_for: int = Field(default=7 * 24 * 3600, description="seconds the counterparty has to countersign")
    site: Optional[str] = Field(default=None, max_length=64)


class CountersignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: Optional[Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]] = Field(default=None, description="your own EIP-712 signature; default: signed here with your site key")
    site: Optional[str] = Field(default=None, max_length=64)


def _notary(services: ServicesDep) -> Notary:
    if services.notary is None:
        raise BadRequest("this service instance only reads (no site keys configured)", code="read_only")
    return services.notary


def _b(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value[2:])


@router.post("/proposals", status_code=201, responses={201: {"model": Proposal, "description": "the proposal, signed by your site key"}}, summary="Propose a trade document, signed by your site key")
def propose(body: ProposalBody, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    try:
        doc_type = int(DocType[body.doc_type.upper()])
    except KeyError:
        raise BadRequest(f"unknown document type {body.doc_type!r}", code="invalid_doc_type") from None
    return _notary(services).propose(
        principal, doc_hash=bytes.fromhex(body.doc_hash[2:]), doc_type=doc_type, counterparty=body.counterparty,
        previous=_b(body.previous), parts_root=_b(body.parts_root), valid_for=body.valid_for, site=body.site,
    )  # fmt: skip


@router.get("/proposals/{proposal_id}", responses={200: {"model": Proposal, "description": "the proposal"}}, summary="A proposal, its typed data and signatures")
def get_proposal(proposal_id: str, principal: CurrentPrincipal, services: ServicesDep) -> dict[str, Any]:
    return _notary(services).view(principal, proposal_id)


@router.post(
    "/proposals/{proposal_id}/countersign",
    status_code=202,
    responses={202: {"model": Union[CountersignAccepted, CountersignedCommand], "description": "the anchoring command: accepted, or as it stands when the proposal was countersigned already"}},
    summary="Countersign as the counterparty; the document is then anchored",
)
async def countersign(proposal_id: str, request: Request, body: CountersignBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = request_digest(request.method, request.url.path, await request.body())
    return await run_in_threadpool(
        _notary(services).countersign,
        principal, proposal_id, signature=_b(body.signature), site=body.site, idempotency_key=idempotency_key, request_sha256=digest,
    )  # fmt: skip
