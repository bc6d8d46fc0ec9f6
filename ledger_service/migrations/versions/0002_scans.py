"""scans: consumer verifications of labels, their clone-detection flags and the Merkle batches anchoring them

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scan_batches',
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('scan_count', sa.Integer(), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('root')
    )
    with op.batch_alter_table('scan_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scan_batches_org_id'), ['org_id'], unique=False)

    op.create_table('scan_flags',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scan_id', sa.LargeBinary(), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('manufacturer', sa.Integer(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('scan_flags', schema=None) as batch_op:
        batch_op.create_index('ix_scan_flags_manufacturer', ['manufacturer', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scan_flags_part_id'), ['part_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scan_flags_scan_id'), ['scan_id'], unique=False)

    op.create_table('scans',
    sa.Column('scan_id', sa.LargeBinary(), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.Column('gtin', sqlmodel.sql.sqltypes.AutoString(length=14), nullable=False),
    sa.Column('serial', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('manufacturer', sa.Integer(), nullable=True),
    sa.Column('scanned_at', sa.Float(), nullable=False),
    sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('flags', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('context', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('fingerprint', sa.LargeBinary(), nullable=False),
    sa.Column('client_ip', sqlmodel.sql.sqltypes.AutoString(length=45), nullable=True),
    sa.Column('batch_root', sa.LargeBinary(), nullable=True),
    sa.Column('proof', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('scan_id')
    )
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.create_index('ix_scans_part_time', ['part_id', 'scanned_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_scans_scanned_at'), ['scanned_at'], unique=False)
        batch_op.create_index('ix_scans_unanchored', ['manufacturer', 'batch_root'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index('ix_scans_unanchored')
        batch_op.drop_index(batch_op.f('ix_scans_scanned_at'))
        batch_op.drop_index('ix_scans_part_time')

    op.drop_table('scans')
    with op.batch_alter_table('scan_flags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scan_flags_scan_id'))
        batch_op.drop_index(batch_op.f('ix_scan_flags_part_id'))
        batch_op.drop_index('ix_scan_flags_manufacturer')

    op.drop_table('scan_flags')
    with op.batch_alter_table('scan_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scan_batches_org_id'))

    op.drop_table('scan_batches')
