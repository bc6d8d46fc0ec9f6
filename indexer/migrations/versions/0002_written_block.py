"""the high-water mark of written rows, so that a replayed range is rolled back and re-applied

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('indexer_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('written_block', sa.BigInteger(), nullable=False, server_default='0'))
    op.execute('UPDATE indexer_state SET written_block = block_number')


def downgrade() -> None:
    with op.batch_alter_table('indexer_state', schema=None) as batch_op:
        batch_op.drop_column('written_block')
