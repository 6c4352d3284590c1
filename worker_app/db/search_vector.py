"""A track's full-text search vector (``tracks.search_vector``, read by ``catalogue_queries.search``): its title,
artists, album title and genres, each with its weight. Declared once here for both statements that write it: the
insert stage's upsert, from the names and titles it has just written (as the catalogue stores them), and
``vectorize_tracks``, from the catalogue's rows."""
from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, func, literal_column, select
from sqlalchemy.dialects.postgresql import TSVECTOR, aggregate_order_by

from worker_app.db.models import Album, Artist, TrackArtist, table_of

# No stemming and no stop words: names and titles come in every language.
CONFIG = "simple"
# Characters of each part that go into the vector. PostgreSQL refuses a tsvector above 1 MB, and the vector is made
# in the statement that writes the track: a file with a megabyte of title must not lose its track for it. Four
# parts of this many characters stay well below the limit; the track's columns keep the whole text.
PART_CHARACTERS = 32 * 1024

ALBUMS, ARTISTS, TRACK_ARTISTS = (table_of(model) for model in (Album, Artist, TrackArtist))
_SPACE: ColumnElement[str] = literal_column("' '")
_EMPTY: ColumnElement[str] = literal_column("''")


def _weighted(words: SQLColumnExpression[Any], weight: str) -> ColumnElement[Any]:
    return func.setweight(func.to_tsvector(literal_column(f"'{CONFIG}'"), func.left(words, PART_CHARACTERS)),
                          literal_column(f"'{weight}'"), type_=TSVECTOR)


def search_vector(title: SQLColumnExpression[Any], artist_names: SQLColumnExpression[Any],
                  album_title: SQLColumnExpression[Any], genres: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """The vector of a track whose title, credited artists' names (one text, in credit order), album title and
    genres are these expressions."""
    return (_weighted(func.coalesce(title, _EMPTY), "A")
            .op("||", return_type=TSVECTOR)(_weighted(func.coalesce(artist_names, _EMPTY), "B"))
            .op("||", return_type=TSVECTOR)(_weighted(func.coalesce(album_title, _EMPTY), "C"))
            .op("||", return_type=TSVECTOR)(_weighted(func.array_to_string(genres, _SPACE), "D")))


def names_credited_on(track_id: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """The names of the artists credited on the catalogue's track of this id, in credit order, as one text."""
    return (select(func.string_agg(ARTISTS.c.name, aggregate_order_by(_SPACE, TRACK_ARTISTS.c.position)))
            .select_from(TRACK_ARTISTS.join(ARTISTS, ARTISTS.c.id == TRACK_ARTISTS.c.artist_id))
            .where(TRACK_ARTISTS.c.track_id == track_id).scalar_subquery())


def album_title_of(album_id: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """The title of the catalogue's album of this id."""
    return select(ALBUMS.c.title).where(ALBUMS.c.id == album_id).scalar_subquery()


def names_text(names: list[str]) -> str:
    """Artists' names as ``names_credited_on`` joins them, for a writer that has them at hand."""
    return " ".join(names)
