"""custodial relay: an outbox item the submitter handed to the relayer as a ForwardRequest signed with the site's key
(the relay request that carries it), so that a custodial site's single-part commands ride in executeBatch
transactions with other sites' requests instead of waiting in their key's own nonce sequence (issue 17)

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("command_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relay_request_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True))
        batch_op.add_column(sa.Column("relay_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_command_items_relay_request_id"), ["relay_request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("command_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_command_items_relay_request_id"))
        batch_op.drop_column("relay_attempts")
        batch_op.drop_column("relay_request_id")
