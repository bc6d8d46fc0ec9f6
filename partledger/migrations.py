"""Running a stage's Alembic migrations programmatically (each stage keeps its own scripts and version table)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATION_LOCK_KEY = int.from_bytes(b"plmigrat", "big")  # a transaction advisory lock, released at its commit


def _config(connection: object, scripts: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, scripts: Path, revision: str = "head") -> None:
    """Brings the tables whose migrations live in `scripts` up to `revision`. On PostgreSQL, processes starting
    together (`serve --workers N`, `submit`) take turns: one migrates, the next finds nothing left to do."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        command.upgrade(_config(connection, scripts), revision)


def new_revision(engine: Engine, scripts: Path, message: str) -> None:
    """Writes a new migration by comparing the models with the database (a developer's command)."""
    with engine.begin() as connection:
        command.revision(_config(connection, scripts), message=message, autogenerate=True)
