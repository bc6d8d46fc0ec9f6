"""Migration 0002 creates exactly the scan tables that ledger_service.scan_tables declares, and takes them away."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from ledger_service import migrate
from ledger_service.scan_tables import Scan, ScanBatch, ScanFlag
from ledger_service.tables import SERVICE_METADATA
from partledger.db import make_engine

SCAN_TABLES = {Scan.__tablename__, ScanFlag.__tablename__, ScanBatch.__tablename__}


def test_migration_matches_the_scan_tables_and_downgrades(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    mine = MetaData()
    for name in SCAN_TABLES:
        SERVICE_METADATA.tables[name].to_metadata(mine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in SCAN_TABLES})
        assert compare_metadata(context, mine) == []
    downgrade(engine, "0001")
    assert SCAN_TABLES.isdisjoint(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert SCAN_TABLES <= set(inspect(engine).get_table_names())


def downgrade(engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.SCRIPTS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
