"""`partledger org`: API keys of member organisations (stored hashed in the service's database).

The service's tables, SQLAlchemy and Alembic are imported inside the commands, so that `partledger --help` starts
without them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from partledger_cli.devnet import default_paths

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

org_app = typer.Typer(help="Member organisations' API keys.", no_args_is_help=True)


def default_service_db() -> str:
    return f"sqlite:///{default_paths().run / 'service.db'}"


def _migrated_engine(service_db: Optional[str]) -> Engine:
    from ledger_service import migrate
    from partledger.db import make_engine

    engine = make_engine(service_db or default_service_db())
    migrate.upgrade(engine)
    return engine


ServiceDb = Annotated[Optional[str], typer.Option("--service-db", help="service database URL (default: the devnet's)")]


@org_app.command("add-key")
def add_key(
    org_id: Annotated[int, typer.Option(help="organisation id on chain")],
    label: Annotated[str, typer.Option(help="what the key is for")] = "",
    site: Annotated[Optional[list[str]], typer.Option(help="restrict to these sites (repeatable): a site name (whichever key the site has: survives `wallet rotate`) or a site key address (that key only)")] = None,
    service_db: ServiceDb = None,
) -> None:
    """Create an API key for an organisation; the key is printed once and only its hash is kept."""
    from ledger_service.auth import create_api_key

    engine = _migrated_engine(service_db)
    typer.echo(create_api_key(engine, org_id=org_id, label=label, sites=site or None))


@org_app.command("list-keys")
def list_keys(service_db: ServiceDb = None) -> None:
    """Key ids, organisations, labels and revocation times (never the keys)."""
    from sqlalchemy import select

    from ledger_service.tables import ApiKey

    engine = _migrated_engine(service_db)
    table = ApiKey.__table__
    with engine.connect() as conn:
        for row in conn.execute(select(table.c.key_id, table.c.org_id, table.c.label, table.c.sites, table.c.revoked_at).order_by(table.c.org_id)):
            typer.echo(json.dumps(dict(row._mapping)))


@org_app.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Option(help="the key id (plk_<key id>_...)")], service_db: ServiceDb = None) -> None:
    """Revoke an API key at once."""
    from ledger_service.auth import revoke_api_key

    engine = _migrated_engine(service_db)
    if not revoke_api_key(engine, key_id):
        raise typer.BadParameter(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")
