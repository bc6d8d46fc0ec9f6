"""Running a stage's Alembic migrations programmatically (each stage keeps its own scripts and version table)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine


def _config(connection: object, scripts: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, scripts: Path, revision: str = "head") -> None:
    """Brings the tables whose migrations live in `scripts` up to `revision`."""
    with engine.begin() as connection:
        command.upgrade(_config(connection, scripts), revision)


def new_revision(engine: Engine, scripts: Path, message: str) -> None:
    """Writes a new migration by comparing the models with the database (a developer's command)."""
    with engine.begin() as connection:
        command.revision(_config(connection, scripts), message=message, autogenerate=True)
