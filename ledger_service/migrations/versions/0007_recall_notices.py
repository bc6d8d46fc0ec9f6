"""recall_notices: the text of each recall notice (zh and en) as its canonical bytes, whose SHA-256 is on chain

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recall_notices',
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('notice_hash', sa.LargeBinary(), nullable=False),
    sa.Column('canonical', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('lot', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('command_id')
    )
    with op.batch_alter_table('recall_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recall_notices_notice_hash'), ['notice_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recall_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recall_notices_notice_hash'))
    op.drop_table('recall_notices')
