"""Alembic environment of the service's private tables (version table: alembic_version_service)."""

from alembic import context

from ledger_service.migrate import VERSION_TABLE
from ledger_service import audit_tables, scan_tables  # noqa: F401 - their tables join SERVICE_METADATA
from ledger_service.epcis import tables as epcis_tables  # noqa: F401
from ledger_service import link_tables, notice_tables  # noqa: F401
from ledger_service.notifications import tables as notification_tables  # noqa: F401
from ledger_service import relay_tables  # noqa: F401 - the relay's outbox (issue 17)
from ledger_service.tables import SERVICE_METADATA

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SERVICE_METADATA,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
