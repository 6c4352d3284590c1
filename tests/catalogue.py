"""Read the catalogue back the way a user would look at it, one dict per track, to compare with what the audio
generator wrote."""
from __future__ import annotations

from sqlalchemy import text

TRACKS_AS_USERS_SEE_THEM = text("""
    SELECT t.path, t.title, t.track_number, t.track_total, t.disc_number, t.disc_total, t.date, t.year,
           t.genres, t.composers, t.duration_seconds, t.bitrate, t.sample_rate, t.channels, t.bits_per_sample,
           t.format, t.codec, t.size_bytes, t.mtime, t.mbid AS mb_track_id, t.mb_release_track_id,
           t.replaygain_track_gain, t.replaygain_track_peak, t.replaygain_album_gain, t.replaygain_album_peak,
           t.tags, t.warnings,
           coalesce((SELECT array_agg(a.name ORDER BY ta.position) FROM track_artists ta
                     JOIN artists a ON a.id = ta.artist_id WHERE ta.track_id = t.id), '{}') AS artists,
           coalesce((SELECT array_agg(a.mbid ORDER BY ta.position) FROM track_artists ta
                     JOIN artists a ON a.id = ta.artist_id WHERE ta.track_id = t.id), '{}') AS artist_mbids,
           al.title AS album, al.is_compilation, al.mbid AS mb_album_id, al.release_group_mbid AS mb_release_group_id,
           al.year AS album_year, aa.name AS album_artist, c.sha256 AS cover_sha256, ac.sha256 AS album_cover_sha256
    FROM tracks t
    LEFT JOIN albums al ON al.id = t.album_id
    LEFT JOIN artists aa ON aa.id = al.album_artist_id
    LEFT JOIN covers c ON c.id = t.cover_id
    LEFT JOIN covers ac ON ac.id = al.cover_id
""")


def tracks_by_path(session) -> dict[str, dict]:
    return {row["path"]: dict(row) for row in session.execute(TRACKS_AS_USERS_SEE_THEM).mappings()}


def table_counts(session) -> dict[str, int]:
    return {table: session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("artists", "albums", "tracks", "track_artists", "covers")}


def forget_library(session, root: str) -> None:
    """Remove a test library's tracks and what only they used: its artists share names (not MusicBrainz ids) with
    other test libraries', which would otherwise see them."""
    from sqlalchemy import delete

    from worker_app.db.models import Track
    from worker_app.pipeline.deferred import delete_orphans

    session.execute(delete(Track).where(Track.path.startswith(root + "/")))
    delete_orphans(session)
