"""The catalogue's read queries: what a music server built on it asks (and `soniquebay search` / `recent` show).

Each one reads through an index in the order it returns rows, so its cost follows the rows it returns, not the
size of the catalogue (bench/catalogue.py measures them at 1,000,000 tracks; tests/test_catalogue_queries.py checks
their plans).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from worker_app.db import search_vector
from worker_app.db.models import Album, Artist, Track
from worker_app.paths import display_path

# How many matches a search ranks, per row it returns.
CANDIDATES = 4


@dataclass(frozen=True)
class TrackRow:
    id: int
    path: str
    title: str | None
    artist: str | None
    album: str | None
    disc_number: int | None
    track_number: int | None
    duration_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _track_rows(statement: Select[Any]) -> Select[Any]:
    return (statement.add_columns(Track.id, Track.path, Track.title, Artist.name, Album.title, Track.disc_number,
                                  Track.track_number, Track.duration_seconds)
            .outerjoin(Artist, Artist.id == Track.artist_id).outerjoin(Album, Album.id == Track.album_id))


def _run(session: Session, statement: Select[Any]) -> list[TrackRow]:
    return [TrackRow(*row) for row in session.execute(statement).all()]


def artist_albums(session: Session, artist_id: int) -> list[dict[str, Any]]:
    """An artist's albums (as album artist), oldest first."""
    rows = session.execute(
        select(Album.id, Album.title, Album.year).where(Album.album_artist_id == artist_id)
        .order_by(Album.year.nulls_last(), Album.title_key)
    ).all()
    return [{"id": row.id, "title": row.title, "year": row.year} for row in rows]


def album_tracks(session: Session, album_id: int) -> list[TrackRow]:
    """An album's tracks in disc and track order."""
    return _run(session, _track_rows(select().select_from(Track)).where(Track.album_id == album_id)
                .order_by(Track.album_id, Track.disc_number, Track.track_number))


def folder_tracks(session: Session, folder: str) -> list[TrackRow]:
    """The tracks of one folder (not below it), by file name."""
    return _run(session, _track_rows(select().select_from(Track)).where(Track.folder == display_path(folder))
                .order_by(Track.path))


def recently_added(session: Session, limit: int = 50) -> list[TrackRow]:
    """The ``limit`` tracks catalogued last."""
    return _run(session, _track_rows(select().select_from(Track)).order_by(Track.added_at.desc(), Track.id.desc())
                .limit(limit))


def search(session: Session, words: str, limit: int = 50) -> list[TrackRow]:
    """Tracks whose title, artists, album or genres contain every word; a word ending in ``*`` matches the words that
    start with it.

    The best-ranked among the first matches: ranking every match of a common word would read thousands of rows, so
    the ranking looks at ``limit`` x ``CANDIDATES`` of them (a GIN index returns matches in no order of relevance
    anyway), and only the rows returned are joined to their artist and album."""
    # Each word a quoted lexeme (quotes doubled, backslashes escaped), so no input is read as tsquery syntax. Prefix
    # matching is asked for, not implied: a GIN index serves a prefix by collecting every word that starts with it,
    # several times the cost of a word.
    terms = []
    for word in words.split():
        stem = word.rstrip("*")
        if stem:
            terms.append("'" + stem.replace("\\", "\\\\").replace("'", "''") + "'" + (":*" if stem != word else ""))
    if not terms:
        return []
    query = " & ".join(terms)
    tsquery = func.to_tsquery(literal(search_vector.CONFIG), query)
    matches = (select(Track.id, func.ts_rank(Track.search_vector, tsquery).label("rank"))
               .where(Track.search_vector.op("@@")(tsquery)).limit(limit * CANDIDATES).subquery())
    best = select(matches).order_by(matches.c.rank.desc(), matches.c.id).limit(limit).subquery()
    return _run(session, _track_rows(select().select_from(best).join(Track, Track.id == best.c.id))
                .order_by(best.c.rank.desc(), best.c.id))
