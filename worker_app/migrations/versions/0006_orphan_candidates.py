"""orphan candidates: the albums, artists and covers a change may have left unused, recorded by triggers

The end of a scan deletes albums without tracks, artists credited nowhere and covers nothing shows. Looking for
them over the whole catalogue costs as much as the catalogue, on every scan. Instead, statement-level triggers
(with transition tables: one INSERT per statement, not per row) record in ``orphan_candidates`` each album,
artist and cover that a deleted or changed row used to reference, and the end of a scan checks only those
(``worker_app.pipeline.deferred.delete_orphans``). Orphans made before this revision are left to
``cleanup_orphans``, which still checks the whole catalogue.

Revision ID: 0006_orphan_candidates
Revises: 0005_catalogue_indexes
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_orphan_candidates"
down_revision = "0005_catalogue_indexes"
branch_labels = None
depends_on = None

# (trigger, table, event, the candidates: SELECT kind, id FROM old_rows [JOIN new_rows])
TRIGGERS = (
    ("orphans_after_track_delete", "tracks", "DELETE", """
        SELECT 'album', album_id FROM old_rows UNION SELECT 'artist', artist_id FROM old_rows
        UNION SELECT 'cover', cover_id FROM old_rows UNION SELECT 'cover', folder_cover_id FROM old_rows"""),
    ("orphans_after_track_update", "tracks", "UPDATE", """
        SELECT 'album', o.album_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.album_id IS DISTINCT FROM n.album_id
        UNION SELECT 'artist', o.artist_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.artist_id IS DISTINCT FROM n.artist_id
        UNION SELECT 'cover', o.cover_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.cover_id IS DISTINCT FROM n.cover_id
        UNION SELECT 'cover', o.folder_cover_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.folder_cover_id IS DISTINCT FROM n.folder_cover_id"""),
    ("orphans_after_credit_delete", "track_artists", "DELETE", "SELECT 'artist', artist_id FROM old_rows"),
    ("orphans_after_album_delete", "albums", "DELETE", """
        SELECT 'artist', album_artist_id FROM old_rows UNION SELECT 'cover', cover_id FROM old_rows"""),
    ("orphans_after_album_update", "albums", "UPDATE", """
        SELECT 'artist', o.album_artist_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.album_artist_id IS DISTINCT FROM n.album_artist_id
        UNION SELECT 'cover', o.cover_id FROM old_rows o JOIN new_rows n USING (id)
              WHERE o.cover_id IS DISTINCT FROM n.cover_id"""),
)


def upgrade() -> None:
    # No key: a unique one would make two writers recording the same candidate wait on each other (and deadlock
    # when they meet in opposite orders); duplicates cost nothing, the reader takes each id once.
    op.create_table(
        "orphan_candidates",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
    )
    for name, table, event, candidates in TRIGGERS:
        op.execute(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO orphan_candidates (kind, id)
                SELECT kind, id FROM ({candidates}) AS changed (kind, id) WHERE id IS NOT NULL;
                RETURN NULL;
            END $$""")
        new_rows = " NEW TABLE AS new_rows" if event == "UPDATE" else ""
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING OLD TABLE AS old_rows{new_rows} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    for name, table, _, _ in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("orphan_candidates")
