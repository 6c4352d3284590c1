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


ROWS_UNDER_ROOT = text("""
    WITH t AS (SELECT id, album_id, cover_id FROM tracks WHERE path LIKE :prefix ESCAPE '\\'),
         al AS (SELECT id, album_artist_id, cover_id FROM albums WHERE id IN (SELECT album_id FROM t))
    SELECT (SELECT count(*) FROM t) AS tracks,
           (SELECT count(*) FROM track_artists WHERE track_id IN (SELECT id FROM t)) AS track_artists,
           (SELECT count(*) FROM al) AS albums,
           (SELECT count(DISTINCT artist_id) FROM (
                SELECT artist_id FROM track_artists WHERE track_id IN (SELECT id FROM t)
                UNION SELECT album_artist_id FROM al) AS used) AS artists,
           (SELECT count(DISTINCT cover) FROM (
                SELECT cover_id FROM t UNION SELECT cover_id FROM al) AS used(cover)) AS covers
""")


def catalogue_counts(session, root: str) -> dict[str, int]:
    """The catalogue rows a library root's tracks hold: tracks, their artist links, and the albums, artists and
    covers they reach. Counted for one root, not whole tables, so work another test left running (a deferred
    cleanup, a late redelivery) cannot change the figure."""
    prefix = root.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    return dict(session.execute(ROWS_UNDER_ROOT, {"prefix": prefix}).mappings().one())


def forget_library(session, root: str) -> None:
    """Remove a test library's tracks and what only they used: its artists share names (not MusicBrainz ids) with
    other test libraries', which would otherwise see them."""
    from sqlalchemy import delete

    from worker_app.db.models import Track
    from worker_app.pipeline.deferred import delete_orphans

    session.execute(delete(Track).where(Track.path.startswith(root + "/")))
    delete_orphans(session)
