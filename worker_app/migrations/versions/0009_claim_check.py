"""claim check: a batch unit's records and pictures kept in PostgreSQL, its messages carrying only its key

``staged_units`` holds, per (scan, unit key), the records the extract stage read and the payload the batch stage
made of them; ``staged_covers`` each picture not yet in ``covers``, once by its sha256. The insert stage deletes a
unit's row in the transaction that closes it; retention deletes what scans that ended left behind
(``worker_app.pipeline.staging``). Both are new tables (plain ``op.create_table``, nothing to build concurrently);
the foreign key to ``scans`` takes a short lock on it, under env.py's lock timeout.

The bodies are stored EXTERNAL (out of line, not compressed): each is written once and read once or twice, and
pglz compressing megabytes of JPEG and JSON cost the database CPU for little room.

Revision ID: 0009_claim_check
Revises: 0008_similarity_index
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_claim_check"
down_revision = "0008_similarity_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_units",
        sa.Column("scan_id", sa.Integer(), sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("records", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("cover_shas", postgresql.ARRAY(sa.String(length=64)), server_default="{}", nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "staged_covers",
        sa.Column("sha256", sa.String(length=64), primary_key=True),
        sa.Column("mime", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.execute("ALTER TABLE staged_units ALTER COLUMN records SET STORAGE EXTERNAL, "
               "ALTER COLUMN payload SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE staged_covers ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("staged_covers")
    op.drop_table("staged_units")
