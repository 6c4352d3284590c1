"""the folders a scan could not list, found without reading the folders it did

The end-of-scan sweep keeps every track under a folder the scan could not read (``scan_folders.listed`` false). It
checks that for each candidate row against the scan's unlisted folders, with an ancestor test (the folder itself or
a prefix of it) that no b-tree lookup serves. Through the primary key, each check read every folder the scan listed:
at 1,000,000 tracks, deleting the 20 tracks of one vanished folder after a scan of the whole library (50,000
folders) read 1,000,080 rows (bench/README.md), and a reorganised library, with thousands of folders gone, would
multiply that by each of their tracks. ``ix_scan_folders_unlisted`` holds the unlisted folders only, usually none,
so each check reads those.

Revision ID: 0012_unlisted_scan_folders
Revises: 0011_backlog_cursors
"""
from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

revision = "0012_unlisted_scan_folders"
down_revision = "0011_backlog_cursors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("ix_scan_folders_unlisted", "scan_folders", ["scan_id", "folder"],
                              postgresql_where="listed IS false")


def downgrade() -> None:
    drop_index_concurrently("ix_scan_folders_unlisted", "scan_folders")
