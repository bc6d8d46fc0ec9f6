"""notifications: quality notifications, their parts and recipients, every transition as hashed, and the batches that
anchor the transitions (kind "notification", by the acting organisation's site key)

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('signer', sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
    sa.Column('root', sa.LargeBinary(), nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('root')
    )
    with op.batch_alter_table('notification_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_batches_command_id'), ['command_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notification_batches_org_id'), ['org_id'], unique=False)

    op.create_table('notification_parts',
    sa.Column('notification_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('part_id', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('notification_id', 'part_id')
    )
    op.create_table('notification_recipients',
    sa.Column('notification_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reasons', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('notification_id', 'org_id')
    )
    with op.batch_alter_table('notification_recipients', schema=None) as batch_op:
        batch_op.create_index('ix_notification_recipients_org', ['org_id', 'updated_at'], unique=False)

    op.create_table('notification_transitions',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('notification_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('recipient', sa.Integer(), nullable=False),
    sa.Column('actor', sa.Integer(), nullable=False),
    sa.Column('actor_name', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('from_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('attachments', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('parts', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('record', sa.LargeBinary(), nullable=False),
    sa.Column('record_hash', sa.LargeBinary(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('notification_transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_transitions_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index('ix_notification_transitions_notification', ['notification_id', 'seq'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('initiator', sa.Integer(), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('lots', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('part_count', sa.Integer(), nullable=False),
    sa.Column('recalled', sa.Boolean(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_initiator_created', ['initiator', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_initiator_created')

    op.drop_table('notifications')
    with op.batch_alter_table('notification_transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_transitions_notification')
        batch_op.drop_index(batch_op.f('ix_notification_transitions_batch_id'))

    op.drop_table('notification_transitions')
    with op.batch_alter_table('notification_recipients', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_recipients_org')

    op.drop_table('notification_recipients')
    op.drop_table('notification_parts')
    with op.batch_alter_table('notification_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_batches_org_id'))
        batch_op.drop_index(batch_op.f('ix_notification_batches_command_id'))

    op.drop_table('notification_batches')
