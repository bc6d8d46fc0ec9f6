"""part_events by related id: a partial index over the rows that name a container (packing, unpacking, assembly,
disassembly, a part moved inside a container) or a new part (remanufacturing), for EPCIS 2.0 MATCH_parentID and
MATCH_outputEPC on the events derived from the mirror, and to tell at once whether the mirror holds any containment

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_part_events_related', ['related_id'], unique=False,
            sqlite_where=sa.text('related_id IS NOT NULL'), postgresql_where=sa.text('related_id IS NOT NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('part_events', schema=None) as batch_op:
        batch_op.drop_index('ix_part_events_related')
