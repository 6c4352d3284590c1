"""similarity index: a low-dimension sketch of each track vector, GiST-indexed, to find candidates fast

A GiST index on the 47-dimension ``track_vectors.embedding`` cube prunes less and less as the table grows (355 ms a
``soniquebay similar`` query at a million vectors). ``sketch`` holds a fixed 6-dimension projection of each vector
(``worker_app.analysis.vector.sketch``: stated from the feature definitions, orthonormal rows); its own GiST index
fetches the few hundred nearest candidates, which ``nearest`` then ranks by the exact distance on ``embedding``.

Existing rows are filled here, by the same projection written in SQL (``vector.sketch_sql``, generated from the
one projection matrix, so stored and queried sketches agree), set-wise in ranges of track ids, each range its own
transaction: the workers' vector upserts wait at most for one range's row locks, not for the whole table's.
The column stays nullable: a row written by a worker still on the previous release has no sketch until it is
vectorised again, and is then only found by an exact query.

Revision ID: 0008_similarity_index
Revises: 0007_scan_schedules
"""
import sqlalchemy as sa
from alembic import op

from worker_app.analysis.vector import sketch_sql
from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

revision = "0008_similarity_index"
down_revision = "0007_scan_schedules"
branch_labels = None
depends_on = None

FILL_RANGE = 50_000  # track ids per UPDATE: a few seconds of row locks at most


def upgrade() -> None:
    op.execute("ALTER TABLE track_vectors ADD COLUMN IF NOT EXISTS sketch cube")
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        low, high = bind.execute(sa.text("SELECT min(track_id), max(track_id) FROM track_vectors")).one()
        if low is not None:
            for start in range(low, high + 1, FILL_RANGE):
                bind.execute(sa.text(
                    f"UPDATE track_vectors SET sketch = {sketch_sql('embedding')} "
                    "WHERE track_id >= :start AND track_id < :stop AND sketch IS NULL"),
                    {"start": start, "stop": start + FILL_RANGE})
    create_index_concurrently("ix_track_vectors_sketch", "track_vectors", ["sketch"], postgresql_using="gist")


def downgrade() -> None:
    drop_index_concurrently("ix_track_vectors_sketch", "track_vectors")
    op.execute("ALTER TABLE track_vectors DROP COLUMN IF EXISTS sketch")
