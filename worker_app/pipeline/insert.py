"""Insert stage (queue ``insert``, DB bound): one transaction per batch, every row an upsert on its natural key
(``INSERT ... ON CONFLICT``), so a batch delivered twice leaves the catalogue as once.

Each table's rows go in one statement: ``INSERT ... SELECT`` from ``jsonb_to_recordset`` of one JSON array, so the
client serialises a batch once (``db/json_text.py``) and PostgreSQL parses it once; the statement is built once per
process. Sending the rows as bound parameters instead (an executemany, which SQLAlchemy turns into multi-row VALUES)
made psycopg2 quote every value of every row, which cost the insert worker half of its CPU (bench/README.md).

A row that PostgreSQL refuses does not sink its batch: the batch is written again track by track, each in a
savepoint, and the refused track is recorded as a passing failure (the catalogue keeps the row it had). Only an
error a single row causes (a data exception, a constraint) is handled so: one that would hit every row (a missing
privilege or column, a read-only or full database) is a passing error of the whole unit, retried, and deletes
nothing.

Within a scan the payload and its pictures come from the unit's staged row (pipeline/staging.py), which goes in the
transaction that closes the unit: the insert message carries the unit's key only.
"""
from __future__ import annotations

import base64
import functools
import logging
import os
from dataclasses import fields
from typing import Any

from sqlalchemy import Executable, Result, Select, Table, Text, bindparam, cast, column, delete, func, select
from sqlalchemy.dialects.postgresql import JSONB, Insert, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TableValuedAlias

from worker_app.celery_app import app
from worker_app.db.models import Album, Artist, Cover, FailedFile, Track, TrackArtist, table_of
from worker_app.db.search_vector import names_text, search_vector
from worker_app.db.session import transaction
from worker_app.limits import INSERT
from worker_app.metadata.record import TrackRecord
from worker_app.paths import db_path
from worker_app.pipeline.batch import payload_of
from worker_app.pipeline.ledger import (
    PASSING,
    VERDICT,
    Failure,
    Unit,
    complete_unit,
    record_failures,
    register_units,
    send_after_commit,
    unit_is_done,
)
from worker_app.pipeline.staging import (
    claim_covers,
    read_extracted,
    release,
    restart_unit,
    staged_paths,
    take_payload,
)
from worker_app.pipeline.unit_screen import screen_unit
from worker_app.pipeline.unit_task import UnitTask, is_row_error
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# The stage number of a batch unit's chain at this step (extract 1 -> batch 2 -> insert 3).
INSERT_STAGE = 3


def _json_rows(table: Table, columns: tuple[str, ...], *others: ColumnClause[Any]) -> TableValuedAlias:
    """The rows of the JSON array bound as ``rows``, typed as ``table``'s columns of these names, and ``others``
    (fields that are not columns)."""
    return func.jsonb_to_recordset(cast(bindparam("rows", type_=JSONB), JSONB)).table_valued(
        *(column(name, table.c[name].type) for name in columns), *others).render_derived(name="row", with_types=True)


def _rows_from_json(table: Table, columns: tuple[str, ...]) -> Select[Any]:
    """The rows of the JSON array bound as ``rows``, typed as ``table``'s columns of these names."""
    record = _json_rows(table, columns)
    return select(*(record.c[name] for name in columns))


def _insert_rows(table: Table, columns: tuple[str, ...]) -> Insert:
    """``INSERT INTO table (columns) SELECT ...`` of the rows bound as one JSON array (``_execute_rows``)."""
    return insert(table).from_select(list(columns), _rows_from_json(table, columns))


def _execute_rows(session: Session, statement: Executable, rows: list[dict[str, Any]]) -> Result[*tuple[Any, ...]]:
    return session.connection().execute(statement, {"rows": rows})


COVERS, ARTISTS, ALBUMS, TRACKS, TRACK_ARTISTS = (table_of(model) for model in (Cover, Artist, Album, Track,
                                                                                   TrackArtist))

# The record's fields that a tracks column of the same name stores as they are: the table and the record say which;
# the path is stored as text and bytes (db_path), the rest of the row comes from the batch (ids, folder, mbid).
TRACK_FIELDS = tuple(column.name for column in TRACKS.columns
                     if column.name in {field.name for field in fields(TrackRecord)} and column.name != "path")


# The upserts, built once per process. An artist's MusicBrainz id is set once known, never changed; an album takes
# the figures of its latest tracks.
_artists = _insert_rows(ARTISTS, ("name", "name_key", "mbid"))
_ARTISTS_UPSERT = _artists.on_conflict_do_update(
    index_elements=["name_key"],
    set_={"mbid": _artists.excluded.mbid},
    where=ARTISTS.c.mbid.is_(None) & _artists.excluded.mbid.is_not(None),
)
_ALBUM_FIGURES = ("title", "year", "is_compilation", "mbid", "release_group_mbid", "disc_total")
_albums = _insert_rows(ALBUMS, ("title_key", "album_artist_id", *_ALBUM_FIGURES))
_ALBUMS_UPSERT = _albums.on_conflict_do_update(
    constraint="uq_albums_artist_title",
    set_={name: _albums.excluded[name] for name in _ALBUM_FIGURES},
).returning(ALBUMS.c.id, ALBUMS.c.album_artist_id, ALBUMS.c.title_key)
_TRACK_ARTISTS_INSERT = _insert_rows(TRACK_ARTISTS, ("track_id", "position", "artist_id")).on_conflict_do_nothing()


def upsert_covers(session: Session, covers: list[dict[str, Any]]) -> dict[str, int]:
    if not covers:
        return {}
    # Bound as parameters, not JSON: a picture is bytes, up to 16 MiB. Only a batch sent outside a scan carries them.
    # RETURNING keeps SQLAlchemy's batching of the rows into multi-row INSERTs (without it, one statement a row).
    rows = [{**cover, "data": base64.b64decode(cover["data"])} for cover in covers]
    session.connection().execute(insert(COVERS).on_conflict_do_nothing(index_elements=["sha256"])
                                 .returning(COVERS.c.id), rows)
    found = session.execute(select(Cover.id, Cover.sha256).where(Cover.sha256.in_([c["sha256"] for c in covers])))
    return {sha: cover_id for cover_id, sha in found}


def upsert_artists(session: Session, artists: list[dict[str, Any]]) -> dict[str, int]:
    """Ids by natural key."""
    return _ids(_upsert_artists(session, artists))


def _ids(stored: dict[str, tuple[int, str]]) -> dict[str, int]:
    """The ids of (id, name as stored) by natural key."""
    return {key: row_id for key, (row_id, _) in stored.items()}


def _upsert_artists(session: Session, artists: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """(id, name as the catalogue stores it: an artist keeps the first spelling of its name) by natural key."""
    if not artists:
        return {}
    rows = [{"name": a["name"], "name_key": a["name_key"], "mbid": a["mbid"]} for a in artists]
    _execute_rows(session, _ARTISTS_UPSERT, rows)
    found = session.execute(select(Artist.id, Artist.name_key, Artist.name).where(
        Artist.name_key.in_([a["name_key"] for a in artists])))
    return {key: (artist_id, name) for artist_id, key, name in found}


def upsert_albums(session: Session, albums: list[dict[str, Any]], artist_ids: dict[str, int]) -> dict[str, int]:
    if not albums:
        return {}
    rows = [{
        "title": a["title"], "title_key": a["title_key"], "album_artist_id": artist_ids[a["album_artist_key"]],
        "year": a["year"], "is_compilation": a["is_compilation"], "mbid": a["mbid"],
        "release_group_mbid": a["release_group_mbid"], "disc_total": a["disc_total"],
    } for a in albums]
    result = _execute_rows(session, _ALBUMS_UPSERT, rows)
    ids = {(artist_id, title_key): album_id for album_id, artist_id, title_key in result}
    return {a["key"]: ids[(artist_ids[a["album_artist_key"]], a["title_key"])] for a in albums}


# Fields of a track's row that are no column: the texts its search vector is made of.
_SEARCH_TEXTS = ("artist_names", "album_title")


@functools.cache
def _tracks_upsert(columns: tuple[str, ...]) -> Executable:
    """The tracks upsert for rows of these columns, built once per process: every column but the path is the
    file's as read now. The search vector is made in the same statement (so that no later one writes each row
    again) from the row and its ``artist_names`` and ``album_title``, as the catalogue stores them."""
    record = _json_rows(TRACKS, columns, *(column(name, Text) for name in _SEARCH_TEXTS))
    vector = search_vector(record.c.title, record.c.artist_names, record.c.album_title, record.c.genres)
    statement = insert(TRACKS).from_select([*columns, "search_vector"],
                                           select(*(record.c[name] for name in columns), vector))
    updated = {column: statement.excluded[column] for column in (*columns, "search_vector") if column != "path"}
    return statement.on_conflict_do_update(
        index_elements=["path"], set_={**updated, "updated_at": statement.excluded.updated_at},
    ).returning(TRACKS.c.id, TRACKS.c.path)


def upsert_tracks(session: Session, scan_id: int | None, tracks: list[dict[str, Any]],
                  artists: dict[str, tuple[int, str]], albums: dict[str, tuple[int, str]],
                  cover_ids: dict[str, int]) -> dict[str, int]:
    """``artists`` and ``albums``: (id, name or title as stored) by natural key."""
    if not tracks:
        return {}
    artist_ids = _ids(artists)
    rows = []
    for track in tracks:
        path, path_bytes = db_path(track["path"])
        folder = db_path(os.path.dirname(track["path"]))[0]
        cover_sha = track.get("cover") or track.get("folder_cover")
        rows.append({
            **{field: track[field] for field in TRACK_FIELDS},
            "path": path, "folder": folder,
            # bytea's input form, "\\x" and hex: JSON has no bytes
            "path_bytes": "\\x" + path_bytes.hex() if path_bytes is not None else None,
            "artist_id": artist_ids[track["artist_keys"][0]] if track["artist_keys"] else None,
            "album_id": albums[track["album_key"]][0] if track.get("album_key") else None,
            "genre": track["genres"][0] if track["genres"] else None,
            "cover_id": cover_ids.get(cover_sha) if cover_sha else None,
            "folder_cover_id": cover_ids.get(track["folder_cover"]) if track.get("folder_cover") else None,
            "mbid": track["mb_track_id"],
            "scan_id": scan_id,
            "artist_names": names_text([artists[key][1] for key in dict.fromkeys(track["artist_keys"])]),
            "album_title": albums[track["album_key"]][1] if track.get("album_key") else None,
        })
    result = _execute_rows(session, _tracks_upsert(tuple(name for name in rows[0] if name not in _SEARCH_TEXTS)), rows)
    track_ids = dict((path, track_id) for track_id, path in result)
    session.connection().execute(delete(TRACK_ARTISTS).where(TRACK_ARTISTS.c.track_id.in_(list(track_ids.values()))))
    credits = [
        {"track_id": track_ids[db_path(track["path"])[0]], "position": position, "artist_id": artist_ids[key]}
        for track in tracks for position, key in enumerate(dict.fromkeys(track["artist_keys"]))
    ]
    if credits:
        _execute_rows(session, _TRACK_ARTISTS_INSERT, credits)
    return track_ids


def write_payload(session: Session, scan_id: int | None, payload: dict[str, Any],
                  cover_ids: dict[str, int] | None = None) -> dict[str, int]:
    """Every row of a batch payload, in dependency order; returns the track ids by path. ``cover_ids``: the
    pictures' ids, already in the catalogue (a scan's, ``staging.claim_covers``); None: the payload carries its
    pictures, upserted here."""
    if cover_ids is None:
        cover_ids = upsert_covers(session, payload["covers"])
    artists = _upsert_artists(session, payload["artists"])
    album_ids = upsert_albums(session, payload["albums"], _ids(artists))
    # An album takes the title of its latest tracks (_ALBUMS_UPSERT): the payload's is the one stored now.
    albums = {a["key"]: (album_ids[a["key"]], a["title"]) for a in payload["albums"]}
    return upsert_tracks(session, scan_id, payload["tracks"], artists, albums, cover_ids)


def _payload_for(payload: dict[str, Any], tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of a payload these tracks need."""
    covers = {track.get(name) for track in tracks for name in ("cover", "folder_cover")}
    album_keys = {track.get("album_key") for track in tracks}
    albums = [a for a in payload["albums"] if a["key"] in album_keys]
    artist_keys = {key for track in tracks for key in track["artist_keys"]} | {a["album_artist_key"] for a in albums}
    return {
        **payload,
        "covers": [c for c in payload.get("covers", []) if c["sha256"] in covers],
        "cover_shas": [sha for sha in payload.get("cover_shas", []) if sha in covers],
        "artists": [a for a in payload["artists"] if a["name_key"] in artist_keys],
        "albums": albums,
        "tracks": tracks,
    }


class InsertTask(UnitTask):
    stage = "insert"
    unit_stage = INSERT_STAGE
    unit_kind = "insert"

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        return staged_paths(args[0], args[1]) if len(args) >= 2 else []


@app.task(name="insert_batch_direct", base=InsertTask, bind=True, acks_late=True,
          **INSERT.options)
def insert_batch_direct(self: InsertTask, scan_id: int, key: str, *previous_release: Any) -> dict[str, Any]:
    """Write a unit's staged payload to the catalogue; close the unit and drop its staged row in the same
    transaction. (A message of the previous release carried the payload after the key: its unit has no staged row
    and starts again.)"""
    from worker_app.pipeline.analysis import extract_audio_features_batch
    from worker_app.pipeline.deferred import enrich_album_covers

    with transaction() as session:
        payload, found = take_payload(session, scan_id, key)
        if found and payload is None:
            # Records staged again by a redelivered extract stage after its batch stage ran: made here instead.
            staged = read_extracted(session, scan_id, key)
            payload = payload_of(staged) if staged is not None else None
        if payload is None:
            done = unit_is_done(session, scan_id, key)
        else:
            follow_ups, finished, figures = _write_unit(
                session, scan_id, key, payload,
                (enrich_album_covers.name, extract_audio_features_batch.name))
    if payload is None:
        if done:  # a duplicate delivery that waited for the row lock of the one that did it
            return {"skipped": key, "why": "done"}
        restart_unit(scan_id, key, "the insert stage found no staged payload")
        return {"skipped": key, "why": "no staged payload"}
    send_after_commit(scan_id, follow_ups, finished)
    return figures


def _write_unit(session: Session, scan_id: int, key: str, payload: dict[str, Any],
                follow_up_tasks: tuple[str, str]) -> tuple[list[Unit], bool, dict[str, Any]]:
    """The catalogue rows of a unit's payload, its failure records and follow-up units, the unit closed and its
    staged row dropped: (follow-ups to send after the commit, whether the scan is finished, figures)."""
    enrich_task, analysis_task = follow_up_tasks
    extracted = len(payload["tracks"])
    believed, failures = screen_unit(session, f"{scan_id}/{key}", payload["tracks"],
                                     [Failure(*failure) for failure in payload["failures"]])
    if len(believed) < extracted:
        payload = _payload_for(payload, believed)
    cover_ids = claim_covers(session, payload["cover_shas"])
    try:
        with session.begin_nested():
            track_ids = write_payload(session, scan_id, payload, cover_ids)
    except Exception as error:
        if not is_row_error(error):
            raise  # the whole statement: a passing error of the unit, retried (unit_task.py)
        log.warning("batch %s of scan %s refused as a whole (%s): writing it track by track",
                    key, scan_id, getattr(error, "orig", error))
        track_ids = {}
        for track in payload["tracks"]:
            try:
                with session.begin_nested():
                    track_ids |= write_payload(session, scan_id, _payload_for(payload, [track]), cover_ids)
            except Exception as row_error:
                if not is_row_error(row_error):
                    raise
                # Passing, not a verdict: the file may be sound and the record a fault of the extractor's (it
                # bounds what it writes), so the track the catalogue holds stays, and the next scan tries again.
                failures.append(Failure(track["path"], "insert",
                                        f"refused by PostgreSQL: {getattr(row_error, 'orig', row_error)}",
                                        kind=PASSING))
    # A file whose content is no longer audio leaves the catalogue with its stale row; a passing error (a
    # permission, an I/O error, a time limit) leaves the row as it is. One that reads again is no longer a
    # known failure.
    verdicts = [db_path(f.path)[0] for f in failures if f.kind == VERDICT]
    if verdicts:
        session.execute(delete(Track).where(Track.path.in_(verdicts)))
    session.execute(delete(FailedFile).where(FailedFile.path.in_(list(track_ids))))
    record_failures(session, scan_id, failures)
    album_ids = sorted({album_id for (album_id,) in session.execute(
        select(Track.album_id).where(Track.id.in_(list(track_ids.values())), Track.album_id.is_not(None)))
        if album_id is not None})
    follow_ups = []
    if album_ids:
        follow_ups.append(Unit(f"{key}/enrich", "enrich", enrich_task,
                               [scan_id, f"{key}/enrich", album_ids, sorted(track_ids.values())]))
    if track_ids and get_settings().audio_analysis:
        # Audio analysis of the new and changed tracks (extract queue, after every waiting tag read).
        follow_ups.append(Unit(f"{key}/analyse", "analysis", analysis_task,
                               [scan_id, f"{key}/analyse", sorted(track_ids.values())]))
    register_units(session, scan_id, key, follow_ups)
    release(session, scan_id, key)
    finished = complete_unit(
        session, scan_id, key,
        extracted=extracted, inserted=len(track_ids), failed=len(failures),
    )
    return follow_ups, finished, {"inserted": len(track_ids), "failed": len(failures)}


@app.task(name="insert_covers_batch", acks_late=True, ignore_result=False,
          **INSERT.options)
def insert_covers_batch(shas: list[str]) -> dict[str, int]:
    """Move pictures that ``soniquebay db load`` staged (by sha256, in ``staged_covers``) into the catalogue;
    returns their ids by sha256. The staged rows stay: each tracks message of the load claims its pictures again
    (``insert_tracks_batch``), and the load drops them at its end."""
    with transaction() as session:
        return claim_covers(session, shas, keep_staged=True)


@app.task(name="insert_artists_batch", acks_late=True, ignore_result=False,
          **INSERT.options)
def insert_artists_batch(artists: list[dict[str, Any]]) -> dict[str, int]:
    """Upsert artists ({name, name_key, mbid}); returns their ids by natural key."""
    with transaction() as session:
        return upsert_artists(session, sorted(artists, key=lambda a: a["name_key"]))


@app.task(name="insert_albums_batch", acks_late=True, ignore_result=False,
          **INSERT.options)
def insert_albums_batch(albums: list[dict[str, Any]], artists: list[dict[str, Any]]) -> dict[str, int]:
    """Upsert albums (as ``prepare_insertion_batch`` gives them) with their album artists; ids by album key."""
    with transaction() as session:
        artist_ids = upsert_artists(session, sorted(artists, key=lambda a: a["name_key"]))
        return upsert_albums(session, sorted(albums, key=lambda a: a["key"]), artist_ids)


@app.task(name="insert_tracks_batch", acks_late=True, ignore_result=False,
          **INSERT.options)
def insert_tracks_batch(payload: dict[str, Any]) -> dict[str, int]:
    """Upsert a whole ``prepare_insertion_batch`` payload outside any scan; returns track ids by path. Its pictures
    are named by sha256 (``cover_shas``) and claimed again here, from ``staged_covers`` or ``covers``: an orphan
    cleanup between the load's covers step and this one may have deleted a picture no track used yet. A payload
    that carries its pictures themselves (``covers``) upserts them instead."""
    with transaction() as session:
        cover_ids = None if payload.get("covers") else claim_covers(session, payload["cover_shas"], keep_staged=True)
        return write_payload(session, None, payload, cover_ids)
