"""The service's Alembic migrations (ledger_service/migrations, version table alembic_version_service)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from partledger import migrations

SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version_service"


def upgrade(engine: Engine) -> None:
    migrations.upgrade(engine, SCRIPTS)
