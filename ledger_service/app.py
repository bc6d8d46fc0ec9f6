"""create_app(settings): the whole FastAPI service, built from its settings and nothing created at import time."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import requests
from fastapi import FastAPI, Request

from ledger_service import migrate
from ledger_service.deps import Services
from ledger_service.errors import install_error_handlers
from ledger_service.routes import queries
from ledger_service.settings import ServiceSettings
from partledger.db import make_engine
from partledger.manifest import load_manifest


class ChainHead:
    """The node's head block, asked with a short timeout (health must answer even when the node is down)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = requests.Session()

    def __call__(self) -> int | None:
        try:
            reply = self._session.post(self._url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=2)
            return int(reply.json()["result"], 16)
        except (requests.RequestException, ValueError, KeyError):
            return None


def create_app(settings: ServiceSettings) -> FastAPI:
    manifest = load_manifest(settings.manifest)
    services = Services(
        settings=settings,
        manifest=manifest,
        index_engine=make_engine(settings.index_db_url),
        service_engine=make_engine(settings.service_db_url),
        head=ChainHead(settings.rpc_url or manifest.rpc_url),
    )
    migrate.upgrade(services.service_engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        services.index_engine.dispose()
        services.service_engine.dispose()

    app = FastAPI(
        title="PartLedger",
        version="1",
        description="Serialised auto parts, custody, recalls and trade evidence on a permissioned EVM chain.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(queries.router)

    @app.middleware("http")
    async def block_header(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        block = getattr(request.state, "block", None)
        if block is not None:
            response.headers["X-PartLedger-Block"] = str(block)
        return response

    return app
