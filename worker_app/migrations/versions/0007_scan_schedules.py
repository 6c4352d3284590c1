"""scheduled rescans: each root's schedule and the runs it came to

``scan_schedules`` holds, per library root, the cron expression and the next run due (what a scheduler claims),
the last run and its scan. ``scan_schedule_runs`` records each run once (started, skipped or failed), its primary
key (root, due time) refusing a second. Both are new tables: plain ``op.create_table``, nothing to lock.

Revision ID: 0007_scan_schedules
Revises: 0006_orphan_candidates
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_scan_schedules"
down_revision = "0006_orphan_candidates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_schedules",
        sa.Column("root", sa.Text(), primary_key=True),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_scan_id", sa.Integer(), nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "scan_schedule_runs",
        sa.Column("root", sa.Text(), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("scan_schedule_runs")
    op.drop_table("scan_schedules")
