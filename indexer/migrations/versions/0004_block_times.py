"""block_times: the time of every block holding a part event or a recall, kept beyond the reorg window
(indexed_blocks keeps only that window), for the eventTime of ledger events derived as EPCIS 2.0. Blocks indexed
before this table are dated from indexed_blocks here where it still has them, and by the indexer from the node at
its next start (Indexer._date_old_blocks).

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'block_times',
        sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('timestamp', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('number'),
    )
    with op.batch_alter_table('block_times', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_block_times_timestamp'), ['timestamp'], unique=False)
    op.execute(
        "INSERT INTO block_times (number, timestamp) SELECT number, timestamp FROM indexed_blocks"
        " WHERE number IN (SELECT block_number FROM part_events UNION SELECT block_number FROM recalls)"
    )


def downgrade() -> None:
    op.drop_table('block_times')
