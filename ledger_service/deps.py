"""Request dependencies, as named Annotated aliases: the caller, a consistent read of the mirror."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Connection, Engine

from ledger_service.auth import Principal, authenticate
from ledger_service.read import indexed_block
from ledger_service.evidence import Notary
from ledger_service.outbox import Outbox
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
    outbox: Optional[Outbox] = None  # None: a read-only instance
    vault: Optional[Vault] = None
    notary: Optional[Notary] = None


@dataclass
class IndexRead:
    """A read of the mirror inside one transaction (one snapshot), and the block that snapshot reflects."""

    conn: Connection
    block: int


def get_services(request: Request) -> Services:
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
