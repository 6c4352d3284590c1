"""the indexes the catalogue's queries and the end-of-scan work need at millions of tracks

- ``tracks.added_at``: when the track was first catalogued (an upsert of a changed file keeps it), for "recently
  added"; existing rows get the time of this migration.
- ``ix_tracks_added_at``: the 50 most recently added read 50 index entries, not the table.
- ``ix_albums_cover_id``: deleting an unused cover looks up the albums showing it (a foreign key without an index
  makes every such check read the whole albums table).
- ``ix_tracks_path_prefix`` / ``ix_failed_files_path_prefix``: the end-of-scan sweep selects the rows under a root
  with ``path LIKE 'root/%'``; under a cluster collation other than C, only a ``text_pattern_ops`` index serves it.
- ``scans.pruned_at``: when the scan's units and failure records were deleted, past the retention.

Revision ID: 0005_catalogue_indexes
Revises: 0004_audio_features
"""
from typing import Any

import sqlalchemy as sa
from alembic import op

from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

revision = "0005_catalogue_indexes"
down_revision = "0004_audio_features"
branch_labels = None
depends_on = None

INDEXES: tuple[tuple[str, str, list[str], dict[str, Any]], ...] = (
    ("ix_tracks_added_at", "tracks", ["added_at"], {}),
    ("ix_albums_cover_id", "albums", ["cover_id"], {}),
    ("ix_tracks_path_prefix", "tracks", ["path"], {"postgresql_ops": {"path": "text_pattern_ops"}}),
    ("ix_failed_files_path_prefix", "failed_files", ["path"], {"postgresql_ops": {"path": "text_pattern_ops"}}),
)


def upgrade() -> None:
    # now() is stable, so PostgreSQL stores the default once instead of rewriting the table.
    op.add_column("tracks", sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                                      nullable=False))
    op.add_column("scans", sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True))
    for name, table, columns, options in INDEXES:
        create_index_concurrently(name, table, columns, **options)


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        drop_index_concurrently(name, table)
    op.drop_column("scans", "pruned_at")
    op.drop_column("tracks", "added_at")
