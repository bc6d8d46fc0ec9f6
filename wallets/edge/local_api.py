"""The edge agent's local HTTP API, for the site's scanners and pages: receive, install and ship parts, the local
view of a part, a queued request, and the agent's status. Every write is checked against the site's view, signed,
committed to the local queue and answered 202 with or without the link to the cloud. Errors are
{"error": {"code", "message"}} with a 4xx status (503 edge_not_synced before the first sync). With a PageKit, the same
app serves the local pages (wallets.edge.pages) under /edge/site, their errors as pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from wallets.edge.agent import MAX_PARTS, EdgeAgent, Refusal
from wallets.edge.pages import PAGES, STATIC, EdgePages, PageKit

PartId = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="part id: 0x + 64 hex digits")]
Hash32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReceiveBody(Body):
    part_ids: list[PartId] = Field(min_length=1, max_length=MAX_PARTS)
    doc_hash: Hash32 = Field(default="0x" + "00" * 32, description="salted hash of the delivery note, or zero")


class InstallItem(Body):
    part_id: PartId
    vin_hash: Hash32 = Field(description="the salted VIN hash the contract records (never the VIN itself)")


class InstallBody(Body):
    items: list[InstallItem] = Field(min_length=1, max_length=MAX_PARTS)
    doc_hash: Hash32 = Field(default="0x" + "00" * 32)


class ShipBody(Body):
    part_ids: list[PartId] = Field(min_length=1, max_length=MAX_PARTS)
    to: int = Field(ge=1, lt=2**32, description="the organisation shipped to")
    doc_hash: Hash32 = Field(default="0x" + "00" * 32)


def create_edge_app(agent: EdgeAgent, pages: PageKit | None = None) -> FastAPI:
    app = FastAPI(title="PartLedger edge agent", docs_url="/edge/docs", openapi_url="/edge/openapi.json", redoc_url=None)
    site = EdgePages(agent, pages) if pages is not None else None

    def as_page(request: Request) -> bool:
        return site is not None and request.url.path.startswith(PAGES)

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> Response:
        if as_page(request):
            return site.error_page(request, exc.status, exc.code, exc.message)  # type: ignore[union-attr]
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if as_page(request):
            return site.error_page(request, 422, "invalid_request")  # type: ignore[union-attr]
        details = [{"field": ".".join(str(part) for part in error["loc"][1:]), "message": error["msg"]} for error in exc.errors()]
        return JSONResponse({"error": {"code": "invalid_body", "message": "the request body is not valid", "details": details}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if as_page(request):
            return site.error_page(request, exc.status_code, code, str(exc.detail))  # type: ignore[union-attr]
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.post("/edge/receive", status_code=202)
    async def receive(body: ReceiveBody) -> dict[str, Any]:
        return await run_in_threadpool(agent.submit, "receive", body.part_ids, {"doc_hash": body.doc_hash})

    @app.post("/edge/install", status_code=202)
    async def install(body: InstallBody) -> dict[str, Any]:
        payload = {"doc_hash": body.doc_hash, "vin_hashes": [item.vin_hash for item in body.items]}
        return await run_in_threadpool(agent.submit, "install", [item.part_id for item in body.items], payload)

    @app.post("/edge/ship", status_code=202)
    async def ship(body: ShipBody) -> dict[str, Any]:
        return await run_in_threadpool(agent.submit, "ship", body.part_ids, {"doc_hash": body.doc_hash, "to": body.to})

    @app.get("/edge/parts/{part_id}")
    async def part(part_id: str) -> dict[str, Any]:
        return await run_in_threadpool(agent.part, part_id)

    @app.get("/edge/requests/{request_id}")
    async def request(request_id: str) -> dict[str, Any]:
        return await run_in_threadpool(agent.request, request_id)

    @app.get("/edge/status")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(agent.store.summary)

    if site is not None:
        app.include_router(site.router())
        app.mount(STATIC, StaticFiles(directory=site.kit.static_dir), name="static")
    return app
