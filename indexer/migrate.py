"""Alembic migrations of the indexer's tables, run programmatically (no alembic.ini to find)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the indexer's tables in the database of `engine` up to `revision`."""
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def revision(engine: Engine, message: str) -> None:
    """Writes a new migration by comparing the tables with the database (a developer's command)."""
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True, rev_id=None)


def drop_all(engine: Engine) -> None:
    """Drops the indexer's tables and its version table (the mirror is rebuilt from the chain afterwards)."""
    from sqlalchemy import text

    from indexer.tables import INDEX_METADATA

    INDEX_METADATA.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version_indexer"))
