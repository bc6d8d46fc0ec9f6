"""reorganisations counted: how many the indexer rolled back and how many blocks they took away, which the service's
/metrics shows (partledger_indexer_reorgs_total, partledger_indexer_reorged_blocks_total; issue 18)

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('indexer_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reorgs', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('reorged_blocks', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('indexer_state', schema=None) as batch_op:
        batch_op.drop_column('reorged_blocks')
        batch_op.drop_column('reorgs')
