"""Alembic environment of the indexer's tables (their own version table: alembic_version_indexer)."""

from alembic import context

from indexer.migrate import VERSION_TABLE
from indexer.tables import INDEX_METADATA

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=INDEX_METADATA,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
