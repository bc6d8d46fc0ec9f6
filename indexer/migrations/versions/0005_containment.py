"""containment and remanufacturing (issue 15): logistic units, what is directly inside what (with each link's path of
containers up to the outermost, indexed by the contained part's lot for recall impact), lineage, and the related id of
a part event (the container of a packing or assembly, the new part of a remanufacturing, the container a part moved
inside)

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('related_id', sa.LargeBinary(), nullable=True))
    op.create_table(
        'logistic_units',
        sa.Column('unit_id', sa.LargeBinary(), nullable=False),
        sa.Column('sscc', sa.String(length=18), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
        sa.Column('created_site_key', sa.String(length=42), nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('custodian', sa.Integer(), nullable=False),
        sa.Column('recipient', sa.Integer(), nullable=True),
        sa.Column('vin_hash', sa.LargeBinary(), nullable=True),
        sa.Column('site_key', sa.String(length=42), nullable=False),
        sa.Column('updated_block', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('unit_id'),
        sa.UniqueConstraint('sscc'),
    )
    with op.batch_alter_table('logistic_units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_logistic_units_block_number'), ['block_number'], unique=False)
        batch_op.create_index('ix_logistic_units_custodian_status', ['custodian', 'status'], unique=False)
    op.create_table(
        'containment',
        sa.Column('part_id', sa.LargeBinary(), nullable=False),
        sa.Column('container_id', sa.LargeBinary(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('lot', sa.BigInteger(), nullable=False),
        sa.Column('path', sa.LargeBinary(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
        sa.Column('log_index', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('part_id'),
    )
    with op.batch_alter_table('containment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_containment_block_number'), ['block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_containment_container_id'), ['container_id'], unique=False)
        batch_op.create_index('ix_containment_lot_path', ['lot', 'path'], unique=False)
    op.create_table(
        'lineage',
        sa.Column('part_id', sa.LargeBinary(), nullable=False),
        sa.Column('original_id', sa.LargeBinary(), nullable=False),
        sa.Column('block_number', sa.BigInteger(), nullable=False),
        sa.Column('tx_hash', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('part_id'),
    )
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lineage_block_number'), ['block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_lineage_original_id'), ['original_id'], unique=False)


def downgrade() -> None:
    op.drop_table('lineage')
    op.drop_table('containment')
    op.drop_table('logistic_units')
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.drop_column('related_id')
