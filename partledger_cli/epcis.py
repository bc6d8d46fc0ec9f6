"""`partledger epcis export`: a lot's whole history (the ledger's events and the captured ones) as one EPCIS 2.0
document, from a PartLedger service (GET /epcis/lots/{lot}/document with an API key) or straight from the databases
(the operator's view: every event; private fields only with the service's VIN key file).

The service's modules, SQLAlchemy and httpx are imported inside the command, so that `partledger --help` starts
without them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from partledger.errors import ConfigError
from partledger_cli.devnet import default_paths

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ledger_service.vault import Vault

epcis_app = typer.Typer(help="EPCIS 2.0: export a lot's history as an EPCIS document.", no_args_is_help=True)
DOCUMENT_PATH = "/epcis/lots/{lot}/document"


@dataclass
class DirectSources:
    """The databases the query reads, opened by the operator (ledger_service.epcis.query.Sources)."""

    index_engine: Engine
    service_engine: Engine
    vault: Optional[Vault]


def _from_service(url: str, key: str, lot: int) -> dict[str, Any]:
    import httpx

    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            reply = client.get(DOCUMENT_PATH.format(lot=lot), headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}") from None
    if reply.status_code != 200:
        raise ConfigError(f"the service answered {reply.status_code}: {reply.text[:300]}")
    return reply.json()


def _from_databases(index_db: str, service_db: str, vin_key_file: Optional[Path], lot: int) -> dict[str, Any]:
    from ledger_service.auth import Principal
    from ledger_service.epcis.query import lot_history_document
    from ledger_service.errors import ApiError
    from ledger_service.vault import Vault
    from partledger.db import make_engine
    from partledger.model import Role

    sources = DirectSources(make_engine(index_db), make_engine(service_db), Vault.from_key_file(vin_key_file) if vin_key_file else None)
    operator = Principal(org_id=0, roles=Role.AUDITOR | Role.REGULATOR, key_id="cli", sites=None, username="operator")
    try:
        return lot_history_document(services=sources, principal=operator, lot=lot)
    except ApiError as exc:
        raise ConfigError(f"{exc.message} ({exc.code})") from None
    finally:
        sources.index_engine.dispose()
        sources.service_engine.dispose()


@epcis_app.command("export")
def export_command(
    lot: Annotated[int, typer.Option(help="the lot number (as the chain numbers it)", min=1)],
    output: Annotated[Path, typer.Option("--output", "-o", help="the file to write; - for standard output")],
    service: Annotated[Optional[str], typer.Option(help="a PartLedger service's URL: export through its API")] = None,
    key: Annotated[Optional[str], typer.Option(help="API key for --service", envvar="PARTLEDGER_API_KEY")] = None,
    index_db: Annotated[Optional[str], typer.Option("--index-db", help="the mirror's database URL (default: the devnet's)")] = None,
    service_db: Annotated[Optional[str], typer.Option("--service-db", help="the service's database URL (default: the devnet's)")] = None,
    vin_key_file: Annotated[Optional[Path], typer.Option(help="the service's VIN key file: include captured events' private fields")] = None,
) -> None:
    """Write every event of a lot, oldest first, as one EPCIS 2.0 document (JSON-LD)."""
    if service is not None:
        if not key:
            raise ConfigError("give --key (or set PARTLEDGER_API_KEY) to export through a service")
        if index_db or service_db or vin_key_file:
            raise ConfigError("--service reads through the API: --index-db, --service-db and --vin-key-file are for reading the databases")
        document = _from_service(service, key, lot)
    else:
        run = default_paths().run
        document = _from_databases(index_db or f"sqlite:///{run / 'index.db'}", service_db or f"sqlite:///{run / 'service.db'}", vin_key_file, lot)
    text = json.dumps(document, ensure_ascii=False, indent=1)
    if str(output) == "-":
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")
        events = len(document.get("epcisBody", {}).get("eventList", []))
        typer.echo(f"lot {lot}: {events} events written to {output}", err=True)
