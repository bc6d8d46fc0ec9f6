"""service private tables

Revision ID: 0001
Revises: (none)
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('secret_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sites', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('key_id')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_org_id'), ['org_id'], unique=False)

    op.create_table('chain_transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('part_count', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('gas_used', sa.Integer(), nullable=True),
    sa.Column('error_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('signer', 'nonce', name='uq_chain_transactions_signer_nonce')
    )
    with op.batch_alter_table('chain_transactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chain_transactions_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_chain_transactions_tx_hash'), ['tx_hash'], unique=False)

    op.create_table('command_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('pack_key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('payload', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('part_count', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('tx_id', sa.Integer(), nullable=True),
    sa.Column('not_before', sa.Float(), nullable=False),
    sa.Column('error_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error_args', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('command_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_command_items_command_id'), ['command_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_command_items_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_command_items_tx_id'), ['tx_id'], unique=False)

    op.create_table('commands',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('part_count', sa.Integer(), nullable=False),
    sa.Column('summary', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commands_org_id'), ['org_id'], unique=False)

    op.create_table('document_proposals',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('issuer', sa.Integer(), nullable=False),
    sa.Column('counterparty', sa.Integer(), nullable=False),
    sa.Column('attestation', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('issuer_signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('issuer_signature', sa.LargeBinary(), nullable=False),
    sa.Column('counterparty_signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=True),
    sa.Column('counterparty_signature', sa.LargeBinary(), nullable=True),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('document_proposals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_document_proposals_counterparty'), ['counterparty'], unique=False)
        batch_op.create_index(batch_op.f('ix_document_proposals_issuer'), ['issuer'], unique=False)

    op.create_table('idempotency_records',
    sa.Column('org_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('request_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('org_id', 'key')
    )
    op.create_table('private_vins',
    sa.Column('vin_hash', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('vin_hash')
    )
    with op.batch_alter_table('private_vins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_private_vins_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_private_vins_part_id'), ['part_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('private_vins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_private_vins_part_id'))
        batch_op.drop_index(batch_op.f('ix_private_vins_org_id'))

    op.drop_table('private_vins')
    op.drop_table('idempotency_records')
    with op.batch_alter_table('document_proposals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_document_proposals_issuer'))
        batch_op.drop_index(batch_op.f('ix_document_proposals_counterparty'))

    op.drop_table('document_proposals')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commands_org_id'))

    op.drop_table('commands')
    with op.batch_alter_table('command_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_command_items_tx_id'))
        batch_op.drop_index(batch_op.f('ix_command_items_state'))
        batch_op.drop_index(batch_op.f('ix_command_items_command_id'))

    op.drop_table('command_items')
    with op.batch_alter_table('chain_transactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chain_transactions_tx_hash'))
        batch_op.drop_index(batch_op.f('ix_chain_transactions_state'))

    op.drop_table('chain_transactions')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_org_id'))

    op.drop_table('api_keys')
