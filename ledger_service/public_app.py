"""create_public_app(settings): the public verification tier alone — the Digital Link resolver, /v1/scan and
/v1/scan/image — as its own app, for the internet-facing replicas.

The same routes and the same verdicts as the service (ledger_service.routes.resolver), without anything a member
uses: no API keys, no outbox, no site keys, no write endpoints, no audit middleware. What reaches the internet is
then only what the public may do (least privilege), and a scan costs no more than its own work. It reads the
indexer's mirror and writes scans into the service's database; the full service (create_app, holding the
manufacturers' site keys) anchors those scans. Run it with
`uvicorn ledger_service.public_app:public_app_from_env --factory --workers N` and PARTLEDGER_* settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ledger_service import migrate
from ledger_service.deps import Services, settled_heap
from ledger_service.errors import install_error_handlers
from ledger_service.replica import read_replica
from ledger_service.metrics import install_metrics
from ledger_service.routes import resolver
from ledger_service.settings import ServiceSettings
from ledger_service.vault import Vault
from partledger.db import make_engine
from partledger.manifest import load_manifest


def create_public_app(settings: ServiceSettings) -> FastAPI:
    services = Services(
        settings=settings,
        manifest=load_manifest(settings.manifest),
        index_engine=make_engine(settings.index_db_url),
        service_engine=make_engine(settings.service_db_url, durable=True),
        head=lambda: None,
    )
    services.replica = read_replica(settings, services.index_engine)  # the verify tier's reads (its lifespan runs the monitor)
    migrate.upgrade(services.service_engine)
    if settings.vin_key_file is not None:
        services.vault = Vault.from_key_file(settings.vin_key_file)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with settled_heap():
            yield
        services.index_engine.dispose()
        services.service_engine.dispose()

    app = FastAPI(title="PartLedger verification", version="1", description="Scan a part's label: is it genuine?", lifespan=lifespan,
                  telemetry=settings.telemetry_config())
    app.state.services = services
    install_error_handlers(app)
    app.include_router(resolver.public_router)
    app.add_middleware(resolver.ResolverFastPath)
    install_metrics(app, services)  # GET /metrics (this host or a token only), X-Request-ID; no node: the indexer's head
    return app


def public_app_from_env() -> FastAPI:
    return create_public_app(ServiceSettings())  # type: ignore[call-arg]
