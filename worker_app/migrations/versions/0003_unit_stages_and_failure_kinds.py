"""units know their stage and when their message was sent; failures say whether they are a verdict; scans queue

- scan_units.stage: which stage of the unit's chain (extract -> batch -> insert) its message is at, and
  deliveries counts the deliveries at that stage only: each stage is parked after its own deaths, and a message of
  a stage the unit has passed is a duplicate. deaths counts the deliveries of the same message (same retry count)
  that came back: their worker died (a retry after a passing error is a new message, not a death).
- scan_units.sent_at: when its message was last handed to the broker (NULL: registered, not yet sent); the relay
  sends units that stay unsent, and after a broker restart those sent just before it went down.
- scan_units.last_error: the passing error (database, broker) its last delivery met, for `soniquebay status`.
- scan_failures.kind: 'verdict' (the content: corrupt, not audio) or 'passing' (I/O error, permission, time limit,
  a lost worker): only verdicts are remembered in failed_files.
- scans.started_at: what the end-of-scan sweep compares with (it removes only tracks older than the scan);
  scans.after_scan_id: a scan of the same root queued behind a running one.
- broker_epochs: the broker Redis instances seen (by run_id), to notice a restart once.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scan_units", sa.Column("stage", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column("scan_units", sa.Column("deaths", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column("scan_units", sa.Column("last_retries", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column("scan_units", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("scan_units", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("scan_failures", sa.Column("kind", sa.String(16), server_default="verdict", nullable=False))
    op.add_column("scans", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("scans", sa.Column("after_scan_id", sa.Integer(), nullable=True))
    # Units already sent keep working: they count as sent when the migration ran.
    op.execute("UPDATE scan_units SET sent_at = updated_at WHERE message IS NOT NULL")
    op.execute("UPDATE scans SET started_at = requested_at WHERE status <> 'queued'")
    # Failures remembered before kinds existed that were passing errors: forgotten, so the next scan reads those
    # files again (their tracks were deleted then; a rescan brings them back).
    op.execute("""DELETE FROM failed_files WHERE reason LIKE 'permission denied%' OR reason LIKE 'I/O error%'
                  OR reason LIKE 'took longer than%' OR reason LIKE 'the worker process died%'
                  OR reason LIKE 'file vanished%' OR reason LIKE 'ran out of memory%'""")
    create_index_concurrently("ix_scan_units_unsent", "scan_units", ["scan_id"],
                              postgresql_where="state = 'pending' AND sent_at IS NULL")
    op.create_table(
        "broker_epochs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broker_epochs")
    drop_index_concurrently("ix_scan_units_unsent", "scan_units")
    op.drop_column("scans", "after_scan_id")
    op.drop_column("scans", "started_at")
    op.drop_column("scan_failures", "kind")
    op.drop_column("scan_units", "last_error")
    op.drop_column("scan_units", "sent_at")
    op.drop_column("scan_units", "last_retries")
    op.drop_column("scan_units", "deaths")
    op.drop_column("scan_units", "stage")
