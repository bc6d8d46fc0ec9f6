"""Request dependencies, as named Annotated aliases: the caller, a consistent read of the mirror."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Connection, Engine

from ledger_service.auth import Principal, authenticate
from ledger_service.read import indexed_block
from ledger_service.evidence import Notary
from ledger_service.outbox import Outbox
from ledger_service.relay import RelayDesk
from ledger_service.replica import ReadReplica
from ledger_service.settings import ServiceSettings
from ledger_service.vault import Vault
from partledger.manifest import Manifest


@dataclass
class Services:
    """What create_app builds once and every request shares."""

    settings: ServiceSettings
    manifest: Manifest
    index_engine: Engine
    service_engine: Engine
    head: Callable[[], int | None]  # the node's head block, None when it does not answer
    block_time: Optional[Callable[[int], int | None]] = None  # a block's timestamp from the node (the indexer's lag in seconds)
    outbox: Optional[Outbox] = None  # None: a read-only instance
    vault: Optional[Vault] = None
    notary: Optional[Notary] = None
    relay: Optional[RelayDesk] = None  # None: no relayer key configured, or a manifest without a forwarder
    replica: Optional[ReadReplica] = None  # the mirror's read replica for the verify tier (settings.index_replica_url)


@dataclass
class IndexRead:
    """A read of the mirror inside one transaction (one snapshot), and the block that snapshot reflects."""

    conn: Connection
    block: int


async def get_services(request: Request) -> Services:
    """Async although it waits for nothing: FastAPI runs a plain function dependency in a worker thread, and this one
    is in nearly every route (a thread hop per request for an attribute read)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return authenticate(services.service_engine, services.index_engine, authorization)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_index_read(services: ServicesDep, request: Request) -> Iterator[IndexRead]:
    engine = services.index_engine
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        block = indexed_block(conn, services.manifest.chain_id)
        request.state.block = block
        yield IndexRead(conn, block)


IndexReadDep = Annotated[IndexRead, Depends(get_index_read)]


SERVICE_GC_THRESHOLD = (50_000, 20, 10)  # gc.set_threshold while a service runs (settled_heap)
_collected = False  # whether a service of this process collected the heap before freezing it (settled_heap)


@contextmanager
def settled_heap() -> Iterator[None]:
    """While the service runs, what it holds once started (modules, routes, ABIs, engines: some 200,000 objects) is
    out of the garbage collector's reach (gc.freeze). Otherwise every full collection walks them all, about 100 ms
    in which the worker answers nothing; under load the scan records waiting for their write set one off every few
    seconds, and the verify benchmark's p99 moved between 5 and 40 ms with them. Unfrozen when the service stops,
    so that a process starting many services (the tests) can collect the ones that stopped.

    Only the first service of a process collects before it freezes (its start-up garbage is not kept for life). A
    later one in the same process freezes what is there: a full collection would walk that process's whole heap
    again on each start (in a test worker, a second and more each time: an eighth of the test suite's CPU); what it
    freezes that is not its own is unfrozen, collectable again, when it stops.

    Meanwhile the collector runs a young collection every SERVICE_GC_THRESHOLD[0] allocations instead of 700: a
    capture job holds its 20,000 prepared events (some 300,000 objects) for seconds, and with the default every few
    young collections ended in a full one walking them all. In benchmarks/epcis_bench.py the service made 25-29 full
    collections (3.8-3.9 s of its interpreter's time, 0.2-0.5 s each) during the capture of 80,000 events; with
    this, one (0.18 s). Cycles wait longer to be freed (reference counting frees everything else at once). The
    thresholds are put back when the service stops."""
    global _collected
    if not _collected:
        gc.collect()
        _collected = True
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*SERVICE_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
