"""command stages: each command's request id (X-Request-ID, carried by the submitter's log lines) and when it was
submitted, confirmed (and in which block), rejected, and shown by the mirror, for the latency metrics (issue 18);
indexes for the operations dashboard's figures per day

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column("submitted_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_block", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("rejected_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("mirrored_at", sa.Float(), nullable=True))
        batch_op.create_index("ix_commands_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_commands_mirror_wait", ["mirrored_at", "confirmed_block"], unique=False)
    with op.batch_alter_table("scan_flags", schema=None) as batch_op:
        batch_op.create_index("ix_scan_flags_created_at", ["created_at"], unique=False)
    # Commands that ended before this migration are not measured: mark them as past every stage they can reach,
    # so that the stage watcher does not take them for new ones (their times stay unknown: the acceptance time).
    op.execute(
        "UPDATE commands SET mirrored_at = created_at, confirmed_at = created_at WHERE NOT EXISTS "
        "(SELECT 1 FROM command_items WHERE command_items.command_id = commands.id AND command_items.state <> 'confirmed')"
    )
    op.execute(
        "UPDATE commands SET rejected_at = created_at WHERE EXISTS "
        "(SELECT 1 FROM command_items WHERE command_items.command_id = commands.id AND command_items.state = 'rejected')"
    )
    op.execute(
        "UPDATE commands SET submitted_at = created_at WHERE EXISTS "
        "(SELECT 1 FROM command_items WHERE command_items.command_id = commands.id AND command_items.state IN ('sent', 'mined', 'confirmed'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("scan_flags", schema=None) as batch_op:
        batch_op.drop_index("ix_scan_flags_created_at")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_mirror_wait")
        batch_op.drop_index("ix_commands_created_at")
        for name in ("mirrored_at", "rejected_at", "confirmed_block", "confirmed_at", "submitted_at", "request_id"):
            batch_op.drop_column(name)
