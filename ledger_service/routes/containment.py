"""Containment and remanufacturing over HTTP (issue 15): logistic units and recall impact through containers (reads),
and packing, unpacking, assembly, disassembly and remanufacturing (writes, 202 into the outbox as every write).

A part inside a container moves with it: ship, receive or cancel a logistic unit by naming it, as a part id
(GET /v1/units/{sscc} gives it) or as {"sscc": ...} in `parts`; an assembly moves, is installed, sold or scrapped as
one part. The service refuses to ship, sell or install a container holding a part of a recalled lot (409
contains_recalled), which the chain cannot see (ledger_service.containment_checks).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool

from ledger_service import read
from ledger_service.deps import CurrentPrincipal, IndexReadDep, ServicesDep
from ledger_service.routes.queries import Cursor, Limit, _page
from ledger_service.routes.writes import ACCEPTED, BOTH_PARTS, HEX32, PART_REF_SCHEMA, Body, IdempotencyKey, PartRefs, _BodyLimitedRoute, _digest, _parts
from ledger_service.schemas import ImpactContainerPage, ImpactVehicles, LogisticUnitDetail, Omittable
from ledger_service.write_service import submit_containment, submit_remanufacture

reads = APIRouter(prefix="/v1")
writes = APIRouter(prefix="/v1", tags=["commands"], route_class=_BodyLimitedRoute)
LotPath = Annotated[int, Path(ge=1, lt=2**63)]
SsccPath = Annotated[str, Path(pattern=r"^[0-9]{18}$", description="SSCC (GS1 AI 00): 18 digits, the last a check digit")]
PartRef = Annotated[Any, WithJsonSchema(PART_REF_SCHEMA)]


# --- reads ------------------------------------------------------------------------------------------------------------


@reads.get("/units/{sscc}", tags=["parts"], responses={200: {"model": LogisticUnitDetail, "description": "the unit, its contents and history"}})
def get_unit(sscc: SsccPath, principal: CurrentPrincipal, snapshot: IndexReadDep) -> dict[str, Any]:
    """A logistic unit (carton, pallet), what is inside it at any depth and its history: for the organisations
    involved with it, auditors and regulators."""
    return {"block": snapshot.block, **read.unit_detail(snapshot.conn, principal, sscc)}


@reads.get("/lots/{lot}/recall-impact/containers", tags=["recalls"], responses={200: {"model": ImpactContainerPage, "description": "a page of the containers"}})
def recall_impact_containers(lot: LotPath, principal: CurrentPrincipal, snapshot: IndexReadDep, services: ServicesDep, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """Every assembly and logistic unit holding parts of the lot at any depth, where it is and which vehicle it is
    in: for the lot's manufacturer, regulators, auditors."""
    return {"block": snapshot.block, **read.recall_impact_containers(snapshot.conn, principal, lot, limit=_page(services, limit), cursor=cursor)}


@reads.get("/lots/{lot}/recall-impact/vehicles", tags=["recalls"], responses={200: {"model": ImpactVehicles, "description": "a page of the vehicles"}})
def recall_impact_vehicles(lot: LotPath, principal: CurrentPrincipal, snapshot: IndexReadDep, services: ServicesDep, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    """The vehicles (salted VIN hashes) the lot's parts are in, directly or inside assemblies: for the lot's
    manufacturer, regulators, auditors."""
    return {"block": snapshot.block, **read.recall_impact_vehicles(snapshot.conn, principal, lot, limit=_page(services, limit), cursor=cursor)}


# --- writes -----------------------------------------------------------------------------------------------------------


class ContentsBody(Body):
    """What goes in or comes out: exactly one of part_ids and parts (any reference form; {"sscc": ...} for a unit)."""

    part_ids: Omittable[Annotated[list[Annotated[str, Field(pattern=HEX32)]], Field(min_length=1, max_length=100_000)]] = None
    parts: Omittable[PartRefs] = Field(default=None, description="instead of part_ids: parts by id, Digital Link, GTIN and serial, {sscc}, or lot selection")

    @model_validator(mode="after")
    def _one_list(self) -> ContentsBody:
        if (self.part_ids is None) == (self.parts is None):
            raise ValueError(BOTH_PARTS if self.part_ids is not None else "part_ids or parts is required")
        return self

    def named(self) -> list[Any]:
        return _parts(self.part_ids) if self.part_ids is not None else list(self.parts or ())


class UnitBody(ContentsBody):
    sscc: str = Field(pattern=r"^[0-9]{1,18}$", description="the logistic unit's SSCC (GS1 AI 00, check digit verified); packing creates it on first use")


class AssemblyBody(ContentsBody):
    parent: PartRef = Field(description="the assembly part: its id, Digital Link, or GTIN and serial")


class RemanufactureBody(Body):
    original: PartRef = Field(description="the part remanufactured (consumed): its id, Digital Link, or GTIN and serial")
    gtin: str = Field(min_length=8, max_length=14, description="the new part's GTIN")
    lot: str = Field(min_length=1, max_length=20, description="the new part's lot code")
    serial: str = Field(min_length=1, max_length=20, description="the new part's serial")

    model_config = ConfigDict(extra="forbid")


def _part_or_ref(value: Any) -> Any:
    """A part id as bytes (taken as is), any other form as a reference for part_refs."""
    if isinstance(value, str) and len(value) == 66 and value[:2].lower() == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return value
    return value


def _containment_endpoint(kind: str, body_type: type[BaseModel], summary: str) -> None:
    async def endpoint(request: Request, body: BaseModel, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
        digest = await _digest(request, services)
        container = body.sscc if kind in ("pack", "unpack") else _part_or_ref(body.parent)  # type: ignore[attr-defined]
        return await run_in_threadpool(
            partial(submit_containment, services, principal, kind=kind, container=container, parts=body.named(), site=body.site,  # type: ignore[attr-defined]
                    idempotency_key=idempotency_key, request_sha256=digest)
        )  # fmt: skip

    endpoint.__name__ = f"{kind}_parts"
    endpoint.__annotations__["body"] = body_type  # the string "body_type" otherwise (postponed annotations)
    writes.add_api_route(f"/parts/{kind}", endpoint, methods=["POST"], status_code=202, summary=summary, responses=ACCEPTED)


for _kind, _type, _summary in (
    ("pack", UnitBody, "Pack parts (or assemblies, or units) into a logistic unit, created on first use"),
    ("unpack", UnitBody, "Take parts out of a logistic unit, loose into your stock"),
    ("assemble", AssemblyBody, "Fit child parts into an assembly part (manufacturers, workshops)"),
    ("disassemble", AssemblyBody, "Take child parts out of an assembly part (manufacturers, workshops)"),
):
    _containment_endpoint(_kind, _type, _summary)


@writes.post("/parts/remanufacture", status_code=202, responses=ACCEPTED, summary="Remanufacture a returned part into a new serialised part linked to it (manufacturers)")
async def remanufacture_part(request: Request, body: RemanufactureBody, principal: CurrentPrincipal, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    digest = await _digest(request, services)
    return await run_in_threadpool(
        partial(submit_remanufacture, services, principal, original=_part_or_ref(body.original), gtin=body.gtin, lot=body.lot, serial=body.serial,
                site=body.site, idempotency_key=idempotency_key, request_sha256=digest)
    )  # fmt: skip

