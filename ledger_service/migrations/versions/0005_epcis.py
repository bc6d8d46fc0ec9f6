"""EPCIS 2.0: GS1 identities of members and sites, capture jobs, captured events and their EPCs, the commands capture
hands to the outbox, and the batches anchoring captured events' canonical hashes

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('epcis_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('root', name='uq_epcis_batches_root')
    )
    with op.batch_alter_table('epcis_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcis_batches_org_id'), ['org_id'], unique=False)

    op.create_table('epcis_captures',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('roles', sa.Integer(), nullable=False),
    sa.Column('sites', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('behaviour', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=True),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('captured_count', sa.Integer(), nullable=False),
    sa.Column('error_count', sa.Integer(), nullable=False),
    sa.Column('errors', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('document', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('epcis_captures', schema=None) as batch_op:
        batch_op.create_index('ix_epcis_captures_org_received', ['org_id', 'received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcis_captures_state'), ['state'], unique=False)

    op.create_table('epcis_commands',
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('capture_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.PrimaryKeyConstraint('command_id')
    )
    with op.batch_alter_table('epcis_commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcis_commands_capture_id'), ['capture_id'], unique=False)

    op.create_table('epcis_event_epcs',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('epc', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('seq', 'epc', 'role')
    )
    with op.batch_alter_table('epcis_event_epcs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcis_event_epcs_epc'), ['epc'], unique=False)
        batch_op.create_index('ix_epcis_event_epcs_part', ['part_id'], unique=False)

    op.create_table('epcis_events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_hash', sa.LargeBinary(), nullable=False),
    sa.Column('capture_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
    sa.Column('biz_step', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('disposition', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('biz_location', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('read_point', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('event_time_ms', sa.BigInteger(), nullable=False),
    sa.Column('record_time_ms', sa.BigInteger(), nullable=False),
    sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('private', sa.LargeBinary(), nullable=True),
    sa.Column('operation', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('epcis_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcis_events_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcis_events_capture_id'), ['capture_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcis_events_command_id'), ['command_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcis_events_event_hash'), ['event_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcis_events_org_id'), ['org_id'], unique=False)
        batch_op.create_index('ix_epcis_events_step', ['biz_step', 'event_time_ms'], unique=False)
        batch_op.create_index('ix_epcis_events_time', ['event_time_ms'], unique=False)

    op.create_table('gs1_locations',
    sa.Column('gln', sqlmodel.sql.sqltypes.AutoString(length=13), nullable=False),
    sa.Column('extension', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('site', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('gln', 'extension')
    )
    with op.batch_alter_table('gs1_locations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gs1_locations_org_id'), ['org_id'], unique=False)

    op.create_table('gs1_parties',
    sa.Column('org_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('company_prefix', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('org_id')
    )
    op.create_table('gs1_party_glns',
    sa.Column('gln', sqlmodel.sql.sqltypes.AutoString(length=13), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('gln')
    )
    with op.batch_alter_table('gs1_party_glns', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gs1_party_glns_org_id'), ['org_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('gs1_party_glns', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gs1_party_glns_org_id'))

    op.drop_table('gs1_party_glns')
    op.drop_table('gs1_parties')
    with op.batch_alter_table('gs1_locations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gs1_locations_org_id'))

    op.drop_table('gs1_locations')
    with op.batch_alter_table('epcis_events', schema=None) as batch_op:
        batch_op.drop_index('ix_epcis_events_time')
        batch_op.drop_index('ix_epcis_events_step')
        batch_op.drop_index(batch_op.f('ix_epcis_events_org_id'))
        batch_op.drop_index(batch_op.f('ix_epcis_events_event_hash'))
        batch_op.drop_index(batch_op.f('ix_epcis_events_command_id'))
        batch_op.drop_index(batch_op.f('ix_epcis_events_capture_id'))
        batch_op.drop_index(batch_op.f('ix_epcis_events_batch_id'))

    op.drop_table('epcis_events')
    with op.batch_alter_table('epcis_event_epcs', schema=None) as batch_op:
        batch_op.drop_index('ix_epcis_event_epcs_part')
        batch_op.drop_index(batch_op.f('ix_epcis_event_epcs_epc'))

    op.drop_table('epcis_event_epcs')
    with op.batch_alter_table('epcis_commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epcis_commands_capture_id'))

    op.drop_table('epcis_commands')
    with op.batch_alter_table('epcis_captures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epcis_captures_state'))
        batch_op.drop_index('ix_epcis_captures_org_received')

    op.drop_table('epcis_captures')
    with op.batch_alter_table('epcis_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epcis_batches_org_id'))

    op.drop_table('epcis_batches')
