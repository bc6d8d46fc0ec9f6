"""indexes for the member console's counts on a large mirror (benchmarks/console_bench.py, issue 14)

- ix_parts_recipient: the parts in transit to an organisation (read.inventory's inbound count), which scanned the
  whole parts table;
- ix_parts_custodian_site: covers an organisation's stock per site and status (read.inventory), read from the index
  alone;
- ix_parts_lot_status: covers a lot's parts counted by status (the maker's lots page, a lot, recall impact) and the
  recalled lots' parts an organisation holds (the console's home), read from the index alone.

Revision ID: 0003
Revises: 0002
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.create_index('ix_parts_recipient', ['recipient'], unique=False)
        batch_op.create_index('ix_parts_custodian_site', ['custodian', 'site_key', 'status'], unique=False)
        batch_op.create_index('ix_parts_lot_status', ['lot', 'status', 'custodian'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.drop_index('ix_parts_lot_status')
        batch_op.drop_index('ix_parts_custodian_site')
        batch_op.drop_index('ix_parts_recipient')
