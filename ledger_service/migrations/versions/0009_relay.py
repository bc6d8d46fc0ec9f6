"""relay: ForwardRequests signed by sites, accepted by POST /v1/relay, and the executeBatch transactions that carry
them (issue 17)

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('relay_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('relayer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('request_count', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('gas_used', sa.Integer(), nullable=True),
    sa.Column('error_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('relayer', 'nonce', name='uq_relay_batches_relayer_nonce')
    )
    with op.batch_alter_table('relay_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_relay_batches_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_relay_batches_tx_hash'), ['tx_hash'], unique=False)

    op.create_table('relay_requests',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('digest', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('submitted_by', sa.Integer(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('function', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('gas', sa.BigInteger(), nullable=False),
    sa.Column('deadline', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error_args', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    with op.batch_alter_table('relay_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_relay_requests_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_relay_requests_org_id'), ['org_id'], unique=False)
        batch_op.create_index('ix_relay_requests_signer_nonce', ['signer', 'nonce'], unique=False)
        batch_op.create_index(batch_op.f('ix_relay_requests_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('relay_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_relay_requests_state'))
        batch_op.drop_index('ix_relay_requests_signer_nonce')
        batch_op.drop_index(batch_op.f('ix_relay_requests_org_id'))
        batch_op.drop_index(batch_op.f('ix_relay_requests_batch_id'))

    op.drop_table('relay_requests')
    with op.batch_alter_table('relay_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_relay_batches_tx_hash'))
        batch_op.drop_index(batch_op.f('ix_relay_batches_state'))

    op.drop_table('relay_batches')
