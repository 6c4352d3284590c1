"""audio features per track, and a vector per track for nearest-neighbour search

``audio_features`` holds what ``extract_audio_features_batch`` measured (or why it could not), with the analysis
version and the file's (size, mtime) when it ran, so an unchanged file is never analysed twice at one version.
``track_vectors`` holds each track's similarity vector as a ``cube`` (postgresql-contrib, shipped with Debian's
PostgreSQL server package: no download), GiST-indexed for k-nearest-neighbour ``ORDER BY embedding <-> ...``;
cube takes at most 100 dimensions. When the server also has pgvector, it is used as well (capability check:
pg_available_extensions), as an HNSW-indexed ``embedding_pgvector`` column; nothing requires it.

Revision ID: 0004_audio_features
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_audio_features"
down_revision = "0003"
branch_labels = None
depends_on = None

# worker_app.analysis.vector.DIMENSIONS when this revision was written; pgvector columns need a fixed size.
VECTOR_DIMENSIONS = 47


def _has_pgvector() -> bool:
    return op.get_bind().execute(sa.text(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).scalar() is not None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS cube")
    op.create_table(
        "audio_features",
        sa.Column("track_id", sa.Integer(), sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("analysis_version", sa.SmallInteger(), nullable=False),
        sa.Column("analysed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("loudness_lufs", sa.Float(), nullable=True),
        sa.Column("sample_peak", sa.Float(), nullable=True),
        sa.Column("track_gain_db", sa.Float(), nullable=True),
        sa.Column("bpm", sa.Float(), nullable=True),
        sa.Column("beat_confidence", sa.Float(), nullable=True),
        sa.Column("key", sa.String(length=2), nullable=True),
        sa.Column("scale", sa.String(length=5), nullable=True),
        sa.Column("camelot", sa.String(length=3), nullable=True),
        sa.Column("key_strength", sa.Float(), nullable=True),
        sa.Column("danceability", sa.Float(), nullable=True),
        sa.Column("energy", sa.Float(), nullable=True),
        sa.Column("spectral_centroid_hz", sa.Float(), nullable=True),
        sa.Column("spectral_rolloff_hz", sa.Float(), nullable=True),
        sa.Column("spectral_flatness", sa.Float(), nullable=True),
        sa.Column("zero_crossing_rate", sa.Float(), nullable=True),
        sa.Column("mfcc_mean", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("mfcc_var", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("chroma", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default="{}", nullable=False),
    )
    # The backlog ("analysed at an older version") and the rate ("analysed in the last minutes") are read often.
    op.create_index("ix_audio_features_analysis_version", "audio_features", ["analysis_version"])
    op.create_index("ix_audio_features_analysed_at", "audio_features", ["analysed_at"])
    op.execute("""
        CREATE TABLE track_vectors (
            track_id integer PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
            vector_version smallint NOT NULL,
            embedding cube NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE INDEX ix_track_vectors_embedding ON track_vectors USING gist (embedding)")
    # Album-level figures from the tracks' (enrich_album_audio): album gain and peak, track count, duration, years.
    op.create_table(
        "album_audio",
        sa.Column("album_id", sa.Integer(), sa.ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("track_count", sa.Integer(), nullable=False),
        sa.Column("analysed_tracks", sa.Integer(), nullable=False),
        sa.Column("total_duration_seconds", sa.Float(), nullable=True),
        sa.Column("year_min", sa.SmallInteger(), nullable=True),
        sa.Column("year_max", sa.SmallInteger(), nullable=True),
        sa.Column("loudness_lufs", sa.Float(), nullable=True),
        sa.Column("album_gain_db", sa.Float(), nullable=True),
        sa.Column("album_peak", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    if _has_pgvector():
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
        op.execute(f"ALTER TABLE track_vectors ADD COLUMN embedding_pgvector vector({VECTOR_DIMENSIONS})")
        op.execute("CREATE INDEX ix_track_vectors_pgvector ON track_vectors "
                   "USING hnsw (embedding_pgvector vector_l2_ops)")


def downgrade() -> None:
    op.drop_table("album_audio")
    op.execute("DROP TABLE IF EXISTS track_vectors")
    op.drop_index("ix_audio_features_analysed_at", table_name="audio_features")
    op.drop_index("ix_audio_features_analysis_version", table_name="audio_features")
    op.drop_table("audio_features")
    # The extensions stay: other databases objects may use them, and dropping cube needs more rights.
