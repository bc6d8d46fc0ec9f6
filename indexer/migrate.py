"""The indexer's Alembic migrations (indexer/migrations, version table alembic_version_indexer)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from indexer.tables import INDEX_METADATA
from partledger import migrations

SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version_indexer"


def upgrade(engine: Engine) -> None:
    migrations.upgrade(engine, SCRIPTS)


def drop_all(engine: Engine) -> None:
    """Drops the indexer's tables and its version table (the mirror is then rebuilt from the chain)."""
    INDEX_METADATA.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
