"""drop the GiST index on the whole 47-dimension track vector: no query uses it since the sketch index (0008)

``nearest`` finds its candidates through ``ix_track_vectors_sketch`` and ranks them by the exact distance on
``embedding`` read from those rows: nothing orders or filters by ``embedding`` alone any more. A GiST index on a
47-dimension cube is the costliest part of writing a vector (each insert picks its page by penalty over every
dimension) and takes as much room as the vectors themselves. Dropped concurrently: the workers' vector upserts go on.

Revision ID: 0010_drop_whole_vector_index
Revises: 0009_claim_check
"""
from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

revision = "0010_drop_whole_vector_index"
down_revision = "0009_claim_check"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_index_concurrently("ix_track_vectors_embedding", "track_vectors")


def downgrade() -> None:
    create_index_concurrently("ix_track_vectors_embedding", "track_vectors", ["embedding"], postgresql_using="gist")
