"""`partledger org`: API keys of member organisations (stored hashed in the service's database)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from sqlalchemy import select

from ledger_service import migrate
from ledger_service.auth import create_api_key, revoke_api_key
from ledger_service.tables import ApiKey
from partledger.db import make_engine
from partledger_cli.devnet import default_paths

org_app = typer.Typer(help="Member organisations' API keys.", no_args_is_help=True)


def default_service_db() -> str:
    return f"sqlite:///{default_paths().run / 'service.db'}"


ServiceDb = Annotated[Optional[str], typer.Option("--service-db", help="service database URL (default: the devnet's)")]


@org_app.command("add-key")
def add_key(
    org_id: Annotated[int, typer.Option(help="organisation id on chain")],
    label: Annotated[str, typer.Option(help="what the key is for")] = "",
    site: Annotated[Optional[list[str]], typer.Option(help="restrict to these sites (repeatable): a site name (whichever key the site has: survives `wallet rotate`) or a site key address (that key only)")] = None,
    service_db: ServiceDb = None,
) -> None:
    """Create an API key for an organisation; the key is printed once and only its hash is kept."""
    engine = make_engine(service_db or default_service_db())
    migrate.upgrade(engine)
    typer.echo(create_api_key(engine, org_id=org_id, label=label, sites=site or None))


@org_app.command("list-keys")
def list_keys(service_db: ServiceDb = None) -> None:
    """Key ids, organisations, labels and revocation times (never the keys)."""
    engine = make_engine(service_db or default_service_db())
    migrate.upgrade(engine)
    table = ApiKey.__table__
    with engine.connect() as conn:
        for row in conn.execute(select(table.c.key_id, table.c.org_id, table.c.label, table.c.sites, table.c.revoked_at).order_by(table.c.org_id)):
            typer.echo(json.dumps(dict(row._mapping)))


@org_app.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Option(help="the key id (plk_<key id>_...)")], service_db: ServiceDb = None) -> None:
    """Revoke an API key at once."""
    engine = make_engine(service_db or default_service_db())
    migrate.upgrade(engine)
    if not revoke_api_key(engine, key_id):
        raise typer.BadParameter(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")
