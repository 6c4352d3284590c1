"""scan units keep the message that does them, and who registered them

A task that dies between committing its children and sending their messages is delivered again, finds its unit
done, and sends the children nobody started from these stored messages.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scan_units", sa.Column("parent", sa.Text(), server_default="", nullable=False))
    op.add_column("scan_units", sa.Column("message", sa.Text(), nullable=True))
    op.create_index("ix_scan_units_parent", "scan_units", ["scan_id", "parent"], unique=False,
                    postgresql_where="state = 'pending'")


def downgrade() -> None:
    op.drop_index("ix_scan_units_parent", table_name="scan_units", postgresql_where="state = 'pending'")
    op.drop_column("scan_units", "message")
    op.drop_column("scan_units", "parent")
