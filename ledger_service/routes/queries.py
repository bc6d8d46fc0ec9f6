"""Read endpoints over the chain mirror: parts, inventory, recall impact, evidence, organisations, health."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Path, Query

from ledger_service import read
from ledger_service.schemas import AnchoredDocument, ConsortiumPart, Health, Inventory, MirrorPage, Organisations, PartDetail, RecallImpact
from ledger_service.deps import CurrentPrincipal, IndexReadDep, ServicesDep
from ledger_service.errors import BadRequest
from ledger_service.recall_notices import notice_of
from ledger_service.replica import NOT_CONFIGURED
from partledger.ids import normalize_gtin, part_id as compute_part_id
from partledger.model import DocType, PartStatus

router = APIRouter(prefix="/v1")

PartIdPath = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="part id: 0x + 64 hex digits")]
Limit = Annotated[Optional[int], Query(ge=1, le=1000, description="page size (default 100)")]
Cursor = Annotated[Optional[str], Query(max_length=200, description="next_cursor of the previous page")]
StatusName = Annotated[Optional[str], Query(description="lifecycle status: " + ", ".join(s.name.lower() for s in PartStatus if s))]


def _bytes32(value: str, what: str) -> bytes:
    text = value.removeprefix("0x")
    if len(text) != 64:
        raise BadRequest(f"{what} must be 0x followed by 64 hex digits", code=f"invalid_{what}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{what} must be 0x followed by 64 hex digits", code=f"invalid_{what}") from None


def _status(name: str | None) -> PartStatus | None:
    if name is None:
        return None
    try:
        status = PartStatus[name.upper()]
    except KeyError:
        raise BadRequest(f"unknown status {name!r}", code="invalid_status") from None
    if status is PartStatus.NONE:
        raise BadRequest("unknown status 'none'", code="invalid_status")
    return status


def _page(services: ServicesDep, limit: int | None) -> int:
    return min(limit or services.settings.default_page_size, services.settings.max_page_size)


@router.get("/health", tags=["health"], responses={200: {"model": Health, "description": "the chain head, the indexed block and the indexer's health"}})
def health(services: ServicesDep, snapshot: IndexReadDep) -> dict[str, Any]:
    """Chain head, indexed block, lag, the indexer's own health, and the verify tier's read replica of the mirror
    (degraded while one is configured and not read). Public; 200 even when degraded."""
    state = read.indexer_state(snapshot.conn, services.manifest.chain_id)
    head = services.head()
    indexed = snapshot.block if snapshot.block >= 0 else None
    healthy = state is not None and bool(state.healthy) and head is not None
    replica = NOT_CONFIGURED if services.replica is None else services.replica.health()
    return {
        "block": snapshot.block,
        "chain_id": services.manifest.chain_id,
        "head": head,
        "indexed_block": indexed,
        "lag": None if head is None or indexed is None else max(head - indexed, 0),
        "indexer_healthy": bool(state.healthy) if state is not None else False,
        "indexer_message": state.message if state is not None else "the indexer has not started",
        "indexer_updated_at": state.updated_at if state is not None else None,
        "replica": replica,
        "status": "ok" if healthy and (replica["serving"] or not replica["configured"]) else "degraded",
        "time": time.time(),
    }


@router.get("/parts/{part_id}", tags=["parts"], responses={200: {"model": PartDetail, "description": "the part; its history if the caller may see it"}})
def get_part(part_id: PartIdPath, principal: CurrentPrincipal, snapshot: IndexReadDep) -> dict[str, Any]:
    """A part and, for organisations involved with it (and auditors, regulators), its full history."""
    return {"block": snapshot.block, **read.part_detail(snapshot.conn, principal, _bytes32(part_id, "part_id"))}


@router.get("/parts/gs1/{gtin}/{serial}", tags=["parts"], responses={200: {"model": PartDetail, "description": "the part; its history if the caller may see it"}})
def get_part_by_gs1(gtin: str, serial: str, principal: CurrentPrincipal, snapshot: IndexReadDep) -> dict[str, Any]:
    """The same, by GTIN and serial."""
    return {"block": snapshot.block, **read.part_detail(snapshot.conn, principal, compute_part_id(gtin, serial))}


@router.get("/parts", tags=["parts"], responses={200: {"model": MirrorPage[ConsortiumPart], "description": "a page of parts"}})
def list_parts(
    principal: CurrentPrincipal,
    snapshot: IndexReadDep,
    services: ServicesDep,
    lot: Annotated[Optional[int], Query(ge=1, lt=2**63)] = None,
    custodian: Annotated[Optional[int], Query(ge=1, lt=2**32)] = None,
    status: StatusName = None,
    gtin: Optional[str] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Parts by lot, custodian, status or GTIN that the caller may see (its own, those it made or is shipped;
    auditors and regulators: all), in pages."""
    page = read.list_parts(
        snapshot.conn, principal, lot=lot, custodian=custodian, status=_status(status),
        gtin=normalize_gtin(gtin) if gtin else None, limit=_page(services, limit), cursor=cursor,
    )  # fmt: skip
    return {"block": snapshot.block, **page}


@router.get("/inventory", tags=["parts"], responses={200: {"model": Inventory, "description": "parts held, per site and status"}})
def inventory(principal: CurrentPrincipal, snapshot: IndexReadDep, org: Annotated[Optional[int], Query(ge=1, lt=2**32)] = None) -> dict[str, Any]:
    """Parts held per site of the caller's organisation (auditors, regulators: any organisation's)."""
    return {"block": snapshot.block, **read.inventory(snapshot.conn, principal, org)}


@router.get("/lots/{lot}/recall-impact", tags=["recalls"], responses={200: {"model": RecallImpact, "description": "the lot, its recall and a page of its parts"}})
def recall_impact(
    lot: Annotated[int, Path(ge=1, lt=2**63)], principal: CurrentPrincipal, snapshot: IndexReadDep, services: ServicesDep,
    limit: Limit = None, cursor: Cursor = None,
) -> dict[str, Any]:  # fmt: skip
    """Every part of a lot, where it is and which vehicles it is in: for its manufacturer, regulators, auditors."""
    impact = read.recall_impact(snapshot.conn, principal, lot, limit=_page(services, limit), cursor=cursor)
    if impact.get("recall") is not None:
        impact["recall"]["notice"] = notice_of(services.service_engine, impact["recall"]["notice_hash"])
    return {"block": snapshot.block, **impact}


@router.get("/evidence", tags=["evidence"], responses={200: {"model": MirrorPage[AnchoredDocument], "description": "a page of anchored documents, newest first"}})
def list_evidence(
    principal: CurrentPrincipal,
    snapshot: IndexReadDep,
    services: ServicesDep,
    party: Annotated[Optional[int], Query(ge=1, lt=2**32)] = None,
    doc_type: Annotated[Optional[str], Query(description="purchase_order, invoice, delivery_note, ...")] = None,
    from_time: Annotated[Optional[int], Query(ge=0, lt=2**63, description="unix time, inclusive")] = None,
    to_time: Annotated[Optional[int], Query(ge=0, lt=2**63, description="unix time, exclusive")] = None,
    doc_hash: Optional[str] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Anchored trade documents by party, type, date or hash, newest first (the caller's own; auditors: all)."""
    type_number = None
    if doc_type is not None:
        try:
            type_number = int(DocType[doc_type.upper()])
        except KeyError:
            raise BadRequest(f"unknown document type {doc_type!r}", code="invalid_doc_type") from None
    page = read.list_documents(
        snapshot.conn, principal, party=party, doc_type=type_number, from_time=from_time, to_time=to_time,
        doc_hash=_bytes32(doc_hash, "doc_hash") if doc_hash else None, limit=_page(services, limit), cursor=cursor,
    )  # fmt: skip
    return {"block": snapshot.block, **page}


@router.get("/organisations", tags=["organisations"], responses={200: {"model": Organisations, "description": "the consortium's members"}})
def list_organisations(_: CurrentPrincipal, snapshot: IndexReadDep) -> dict[str, Any]:
    """The consortium's members, their roles and site keys with validity intervals."""
    return {"block": snapshot.block, "items": read.organisations(snapshot.conn)}
