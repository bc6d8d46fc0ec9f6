"""initial indexer tables

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
    op.create_table('batches',
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('root')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_block_number'), ['block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_batches_org_id'), ['org_id'], unique=False)

    op.create_table('cancelled_nonces',
    sa.Column('org_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('org_id', 'nonce')
    )
    with op.batch_alter_table('cancelled_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cancelled_nonces_block_number'), ['block_number'], unique=False)

    op.create_table('documents',
    sa.Column('doc_hash', sa.LargeBinary(), nullable=False),
    sa.Column('doc_type', sa.Integer(), nullable=False),
    sa.Column('issuer', sa.Integer(), nullable=False),
    sa.Column('counterparty', sa.Integer(), nullable=False),
    sa.Column('previous', sa.LargeBinary(), nullable=True),
    sa.Column('parts_root', sa.LargeBinary(), nullable=True),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('deadline', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('issuer_signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('counterparty_signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('issuer_signature', sa.LargeBinary(), nullable=False),
    sa.Column('counterparty_signature', sa.LargeBinary(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_time', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('doc_hash')
    )
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_documents_block_number'), ['block_number'], unique=False)
        batch_op.create_index('ix_documents_counterparty', ['counterparty', 'block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_documents_doc_type'), ['doc_type'], unique=False)
        batch_op.create_index('ix_documents_issuer', ['issuer', 'block_number'], unique=False)

    op.create_table('indexed_blocks',
    sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.Column('parent_hash', sa.LargeBinary(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )
    op.create_table('indexer_state',
    sa.Column('chain_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.LargeBinary(), nullable=False),
    sa.Column('head_seen', sa.BigInteger(), nullable=False),
    sa.Column('healthy', sa.Boolean(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('chain_id')
    )
    op.create_table('installations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('vin_hash', sa.LargeBinary(), nullable=False),
    sa.Column('installed_block', sa.BigInteger(), nullable=False),
    sa.Column('installed_tx', sa.LargeBinary(), nullable=False),
    sa.Column('removed_block', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('installations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_installations_installed_block'), ['installed_block'], unique=False)
        batch_op.create_index(batch_op.f('ix_installations_org_id'), ['org_id'], unique=False)
        batch_op.create_index('ix_installations_part', ['part_id', 'installed_block'], unique=False)
        batch_op.create_index(batch_op.f('ix_installations_vin_hash'), ['vin_hash'], unique=False)

    op.create_table('lots',
    sa.Column('lot', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('manufacturer', sa.Integer(), nullable=False),
    sa.Column('lot_code', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('opened_block', sa.BigInteger(), nullable=False),
    sa.Column('recalled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('lot')
    )
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lots_lot_code'), ['lot_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_lots_manufacturer'), ['manufacturer'], unique=False)

    op.create_table('organisations',
    sa.Column('org_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('roles', sa.Integer(), nullable=False),
    sa.Column('suspended', sa.Boolean(), nullable=False),
    sa.Column('registered_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('org_id')
    )
    op.create_table('part_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chain_id', sa.Integer(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('counterparty', sa.Integer(), nullable=True),
    sa.Column('doc_hash', sa.LargeBinary(), nullable=True),
    sa.Column('vin_hash', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chain_id', 'tx_hash', 'log_index', 'position', name='uq_part_events_natural_key')
    )
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_part_events_block_number'), ['block_number'], unique=False)
        batch_op.create_index('ix_part_events_part', ['part_id', 'block_number'], unique=False)

    op.create_table('parts',
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('gtin', sqlmodel.sql.sqltypes.AutoString(length=14), nullable=False),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
    sa.Column('lot', sa.BigInteger(), nullable=False),
    sa.Column('manufacturer', sa.Integer(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('custodian', sa.Integer(), nullable=False),
    sa.Column('recipient', sa.Integer(), nullable=True),
    sa.Column('recalled', sa.Boolean(), nullable=False),
    sa.Column('vin_hash', sa.LargeBinary(), nullable=True),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('registered_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('part_id')
    )
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.create_index('ix_parts_custodian_status', ['custodian', 'status', 'part_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_parts_gtin'), ['gtin'], unique=False)
        batch_op.create_index('ix_parts_lot', ['lot', 'part_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_parts_manufacturer'), ['manufacturer'], unique=False)
        batch_op.create_index('ix_parts_site_key_status', ['site_key', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_parts_status'), ['status'], unique=False)

    op.create_table('recalls',
    sa.Column('lot', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('site_key', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('notice_hash', sa.LargeBinary(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('lot')
    )
    with op.batch_alter_table('recalls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recalls_block_number'), ['block_number'], unique=False)

    op.create_table('shipments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('from_org', sa.Integer(), nullable=False),
    sa.Column('to_org', sa.Integer(), nullable=False),
    sa.Column('doc_hash', sa.LargeBinary(), nullable=True),
    sa.Column('shipped_block', sa.BigInteger(), nullable=False),
    sa.Column('shipped_tx', sa.LargeBinary(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=9), nullable=True),
    sa.Column('closed_block', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipments_from_org'), ['from_org'], unique=False)
        batch_op.create_index('ix_shipments_part', ['part_id', 'shipped_block'], unique=False)
        batch_op.create_index(batch_op.f('ix_shipments_shipped_block'), ['shipped_block'], unique=False)
        batch_op.create_index('ix_shipments_to_open', ['to_org', 'outcome'], unique=False)

    op.create_table('site_keys',
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('site', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('added_block', sa.BigInteger(), nullable=False),
    sa.Column('revoked_block', sa.BigInteger(), nullable=True),
    sa.Column('revoked_by', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=True),
    sa.PrimaryKeyConstraint('address')
    )
    with op.batch_alter_table('site_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_site_keys_org_id'), ['org_id'], unique=False)

    op.create_table('undo_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('table_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('before', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('undo_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_undo_log_block_number'), ['block_number'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('undo_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_undo_log_block_number'))

    op.drop_table('undo_log')
    with op.batch_alter_table('site_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_site_keys_org_id'))

    op.drop_table('site_keys')
    with op.batch_alter_table('shipments', schema=None) as batch_op:
        batch_op.drop_index('ix_shipments_to_open')
        batch_op.drop_index(batch_op.f('ix_shipments_shipped_block'))
        batch_op.drop_index('ix_shipments_part')
        batch_op.drop_index(batch_op.f('ix_shipments_from_org'))

    op.drop_table('shipments')
    with op.batch_alter_table('recalls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recalls_block_number'))

    op.drop_table('recalls')
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_parts_status'))
        batch_op.drop_index('ix_parts_site_key_status')
        batch_op.drop_index(batch_op.f('ix_parts_manufacturer'))
        batch_op.drop_index('ix_parts_lot')
        batch_op.drop_index(batch_op.f('ix_parts_gtin'))
        batch_op.drop_index('ix_parts_custodian_status')

    op.drop_table('parts')
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.drop_index('ix_part_events_part')
        batch_op.drop_index(batch_op.f('ix_part_events_block_number'))

    op.drop_table('part_events')
    op.drop_table('organisations')
    with op.batch_alter_table('lots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lots_manufacturer'))
        batch_op.drop_index(batch_op.f('ix_lots_lot_code'))

    op.drop_table('lots')
    with op.batch_alter_table('installations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_installations_vin_hash'))
        batch_op.drop_index('ix_installations_part')
        batch_op.drop_index(batch_op.f('ix_installations_org_id'))
        batch_op.drop_index(batch_op.f('ix_installations_installed_block'))

    op.drop_table('installations')
    op.drop_table('indexer_state')
    op.drop_table('indexed_blocks')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_issuer')
        batch_op.drop_index(batch_op.f('ix_documents_doc_type'))
        batch_op.drop_index('ix_documents_counterparty')
        batch_op.drop_index(batch_op.f('ix_documents_block_number'))

    op.drop_table('documents')
    with op.batch_alter_table('cancelled_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cancelled_nonces_block_number'))

    op.drop_table('cancelled_nonces')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_org_id'))
        batch_op.drop_index(batch_op.f('ix_batches_block_number'))

    op.drop_table('batches')
