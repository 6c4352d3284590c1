"""backlog cursors: where the periodic drain of the audio analysis backlog has got to

``backlog_cursors`` holds one row per drain (``analysis``): the last track id it queued, and when its last round
through the catalogue ended (tracks a passing error stopped are tried again a while after that). A new table:
plain ``op.create_table``, nothing to lock.

Revision ID: 0011_backlog_cursors
Revises: 0010_drop_whole_vector_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_backlog_cursors"
down_revision = "0010_drop_whole_vector_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backlog_cursors",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("after_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("round_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backlog_cursors")
