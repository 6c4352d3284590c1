"""Audio analysis in the pipeline: ``extract_audio_features_batch`` (queue extract, below tag reading) measures
tracks and stores their features; ``vectorize_audio`` (queue deferred) turns features and tags into the
similarity vectors ``soniquebay similar`` searches.

Messages carry track ids only: the audio, the features and the vectors stay in the files and in PostgreSQL.
Within a scan both are units of the scan ledger (``insert_batch_direct`` registers the analysis of the tracks it
wrote; the analysis registers their vectorisation), with every unit's delivery guarantees; they are background
units (``ledger.BACKGROUND_KINDS``): the scan is complete once its catalogue is, and analysis goes on after it.
Outside a scan (``scan_id`` None) they just run. ``SONIQUEBAY_AUDIO_ANALYSIS=off`` turns it off.

Idempotent: a track already analysed at ``ANALYSIS_VERSION`` whose file has the same (size, mtime) is skipped,
including one whose analysis failed (its reason is kept; a changed file or a new version tries again).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, outerjoin, select, true
from sqlalchemy import text as text_sql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.analysis import ANALYSIS_VERSION
from worker_app.analysis import vector as vectors
from worker_app.analysis.decode import DecodeError
from worker_app.analysis.track import analyse
from worker_app.celery_app import app
from worker_app.db.models import AudioFeatures, BacklogCursor, Track, TrackVector, table_of
from worker_app.db.session import rowcount, transaction
from worker_app.limits import ANALYSE, DEFERRED
from worker_app.paths import PathRefused, check_task_path, display_path
from worker_app.pipeline.crash_hook import install_read_faults
from worker_app.pipeline.ledger import (
    PASSING,
    VERDICT,
    Failure,
    Unit,
    complete_unit,
    record_failures,
    register_units,
    send_after_commit,
)
from worker_app.pipeline.unit_task import UnitTask
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

COLUMNS = ("duration_seconds", "loudness_lufs", "sample_peak", "track_gain_db", "bpm", "beat_confidence", "key",
           "scale", "camelot", "key_strength", "danceability", "energy", "spectral_centroid_hz",
           "spectral_rolloff_hz", "spectral_flatness", "zero_crossing_rate", "mfcc_mean", "mfcc_var", "chroma")
# A batch stops starting new files after this share of its soft time limit and hands the rest to a new unit.
BATCH_TIME_SHARE = 1 / 3
# The row of backlog_cursors that the periodic drain of the backlog moves on (pipeline/analysis_backlog.py).
DRAIN_CURSOR = "analysis"


class AnalysisTask(UnitTask):
    stage = "analysis"
    unit_kind = "analysis"


class AudioVectorTask(AnalysisTask):
    unit_kind = "audio-vector"


class AudioAlbumTask(AnalysisTask):
    unit_kind = "audio-album"


def file_path(path: str, path_bytes: bytes | None) -> str | bytes:
    """The name to open: the raw bytes of a name that is not UTF-8 (tracks.path_bytes), else the text."""
    return bytes(path_bytes) if path_bytes is not None else path


def per_file_time_limit() -> float:
    """Decoding a file may take twice what reading its tags may (SONIQUEBAY_FILE_TIME_LIMIT)."""
    return 2 * get_settings().file_time_limit


def needs_analysis() -> ColumnElement[bool]:
    """The backlog's rule, over tracks outer-joined to their features: no features at this version for the file as
    it is now (never analysed, analysed by an older version, changed since, or last stopped by a passing error,
    which stores nothing). IS DISTINCT FROM: a track without a features row has NULLs there, and needs it."""
    return or_(AudioFeatures.analysis_version.is_distinct_from(ANALYSIS_VERSION),
               AudioFeatures.size_bytes.is_distinct_from(Track.size_bytes),
               AudioFeatures.mtime.is_distinct_from(Track.mtime))


def tracks_to_analyse(session: Session, track_ids: list[int], force: bool = False) -> list[Any]:
    """The tracks among ``track_ids`` that need analysis (all of them if ``force``)."""
    return list(session.execute(
        select(Track.id, Track.path, Track.path_bytes, Track.size_bytes, Track.mtime, Track.channels,
               Track.duration_seconds)
        .outerjoin(AudioFeatures, AudioFeatures.track_id == Track.id)
        .where(Track.id.in_(track_ids), *([] if force else [needs_analysis()])).order_by(Track.id)
    ).all())


def features_row(track: Track, features: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"track_id": track.id, "analysis_version": ANALYSIS_VERSION, "size_bytes": track.size_bytes,
           "mtime": track.mtime, "error": error, "analysed_at": func.now()}
    row.update({column: (features or {}).get(column) for column in COLUMNS})
    row["details"] = {k: v for k, v in (features or {}).items() if k not in COLUMNS}
    return row


def store_features(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = insert(table_of(AudioFeatures)).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=["track_id"],
        set_={column: statement.excluded[column] for column in rows[0] if column != "track_id"},
    ))


def analyse_track(track: Track) -> tuple[dict[str, Any] | None, str | None, str]:
    """(features, None, VERDICT), or (None, reason, kind): a verdict on the file (it does not decode) is stored as
    its analysis; a passing error (a permission, an I/O error, a time limit) is not, so the track stays in the
    backlog and is analysed again (`soniquebay analysis --queue-backlog`, or the next scan that finds it changed).
    A track whose file is not under the library roots is not opened: its row may come from a forged insert message
    (the insert stage opens no file, so it checks no name)."""
    name = file_path(track.path, track.path_bytes)
    try:
        check_task_path(name, get_settings().library_roots)
    except PathRefused as refusal:
        log.warning("analysis refused to open track %s: %s", track.id, refusal)
        return None, f"refused: {refusal}", VERDICT
    try:
        # ffmpeg reports a file it cannot open as one it cannot decode: opening it here first tells them apart.
        with open(name, "rb") as handle:
            handle.read(1)
        return analyse(name, channels=track.channels, duration=track.duration_seconds,
                       time_limit=per_file_time_limit()), None, VERDICT
    except DecodeError as error:
        return None, error.reason, PASSING if error.passing else VERDICT
    except (OSError, MemoryError) as error:
        return None, f"analysis failed: {type(error).__name__}: {error}", PASSING
    except ValueError as error:
        return None, f"analysis failed: {type(error).__name__}: {error}", VERDICT


@app.task(name="extract_audio_features_batch", base=AnalysisTask, bind=True, acks_late=True, **ANALYSE.options)
def extract_audio_features_batch(self: AnalysisTask, scan_id: int | None, key: str | None, track_ids: list[int],
                                 force: bool = False) -> dict[str, Any]:
    """Measure the tracks ``track_ids`` that need it and store their features; then have them vectorised."""
    install_read_faults(sys.modules[__name__])
    started = time.monotonic()
    budget = (self.soft_time_limit or ANALYSE.options["soft_time_limit"]) * BATCH_TIME_SHARE
    with transaction() as session:
        todo = tracks_to_analyse(session, track_ids, force)
    rows, failures, left = [], [], []
    for index, track in enumerate(todo):
        if index and time.monotonic() - started > budget:  # at least one file per delivery: always progress
            left = [t.id for t in todo[index:]]
            break
        features, error, kind = analyse_track(track)
        if kind == VERDICT:
            rows.append(features_row(track, features, error))
        if error:
            failures.append(Failure(track.path, "analysis", error, kind=kind))
    analysed = [row["track_id"] for row in rows if row["error"] is None]
    follow_ups = []
    with transaction() as session:
        store_features(session, rows)
        # Vectors for every track of the batch that has features: cheap, and it repairs any that went missing.
        done = [track_id for track_id in track_ids if track_id not in set(left)]
        if scan_id is not None:
            assert key is not None  # a scan's unit: its message carries both
            record_failures(session, scan_id, failures)
            if done:
                follow_ups.append(Unit(f"{key}/vectorize", "audio-vector", vectorize_audio.name,
                                       [scan_id, f"{key}/vectorize", done]))
            album_ids = sorted({album for (album,) in session.execute(
                select(Track.album_id).where(Track.id.in_(done), Track.album_id.is_not(None))) if album is not None})
            if album_ids:
                follow_ups.append(Unit(f"{key}/albums", "audio-album", enrich_album_audio.name,
                                       [scan_id, f"{key}/albums", album_ids]))
            if left:
                follow_ups.append(Unit(f"{key}/more", "analysis", extract_audio_features_batch.name,
                                       [scan_id, f"{key}/more", left]))
            register_units(session, scan_id, key, follow_ups)
            finished = complete_unit(session, scan_id, key)
    if scan_id is not None:
        send_after_commit(scan_id, follow_ups, finished)
    else:
        if done:
            vectorize_audio.delay(None, None, done)
            with transaction() as session:
                album_ids = sorted({album for (album,) in session.execute(
                    select(Track.album_id).where(Track.id.in_(done), Track.album_id.is_not(None)))
                    if album is not None})
            if album_ids:
                enrich_album_audio.delay(None, None, album_ids)
        if left:
            extract_audio_features_batch.delay(None, None, left, force)
    for failure in failures:
        log.info("analysis of %s failed: %s", failure.path, failure.reason)
    return {"analysed": len(analysed), "failed": len(failures), "skipped": len(track_ids) - len(todo),
            "deferred": len(left)}


def tags_and_features(session: Session,
                      track_ids: list[int]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    rows = session.execute(
        select(Track.id, Track.genre, Track.year, Track.duration_seconds, AudioFeatures)
        .join(AudioFeatures, AudioFeatures.track_id == Track.id)
        .where(Track.id.in_(track_ids), AudioFeatures.error.is_(None))
    ).all()
    return [(track_id, {column: getattr(features, column) for column in COLUMNS},
             {"genre": genre, "year": year, "duration_seconds": duration})
            for track_id, genre, year, duration, features in rows]


@app.task(name="vectorize_audio", base=AudioVectorTask, bind=True, acks_late=True, **DEFERRED.options)
def vectorize_audio(self: AudioVectorTask, scan_id: int | None, key: str | None,
                    track_ids: list[int]) -> dict[str, Any]:
    """Build and store the similarity vector of each track of ``track_ids`` that has audio features."""
    with transaction() as session:
        built: list[dict[str, Any]] = []
        for track_id, features, tags in tags_and_features(session, track_ids):
            embedding = vectors.build(features, tags)
            built.append({"track_id": track_id, "vector_version": vectors.VECTOR_VERSION, "embedding": embedding,
                          "sketch": vectors.sketch(embedding), "updated_at": func.now()})
        if built:
            statement = insert(TrackVector).values(built)
            session.execute(statement.on_conflict_do_update(
                index_elements=["track_id"],
                set_={name: statement.excluded[name]
                      for name in ("vector_version", "embedding", "sketch", "updated_at")},
            ))
        if built and has_pgvector_column(session):
            session.execute(text_sql(
                "UPDATE track_vectors SET embedding_pgvector = CAST(v.embedding AS vector) "
                "FROM (SELECT unnest(CAST(:ids AS integer[])) AS track_id, "
                "unnest(CAST(:vectors AS text[])) AS embedding) v WHERE track_vectors.track_id = v.track_id"),
                {"ids": [row["track_id"] for row in built],
                 "vectors": ["[" + ",".join(repr(float(x)) for x in row["embedding"]) + "]" for row in built]})
        # A track whose file can no longer be analysed keeps no stale vector.
        session.execute(delete(TrackVector).where(
            TrackVector.track_id.in_(sorted(set(track_ids) - {row["track_id"] for row in built}))))
        finished = complete_unit(session, scan_id, key) if scan_id is not None and key is not None else False
    if scan_id is not None:
        send_after_commit(scan_id, [], finished)
    return {"vectors": len(built)}


ALBUM_FIGURES = """
    INSERT INTO album_audio (album_id, track_count, analysed_tracks, total_duration_seconds, year_min, year_max,
                             loudness_lufs, album_gain_db, album_peak, updated_at)
    SELECT t.album_id, count(*), count(f.loudness_lufs), sum(t.duration_seconds), min(t.year), max(t.year),
           loud.lufs, -18 - loud.lufs, max(f.sample_peak), now()
    FROM tracks t
    LEFT JOIN audio_features f ON f.track_id = t.id AND f.error IS NULL
    CROSS JOIN LATERAL (
        -- The duration-weighted mean power of the tracks, back in LUFS: the album played through.
        SELECT 10 * log(sum(coalesce(f2.duration_seconds, t2.duration_seconds, 1) * power(10, f2.loudness_lufs / 10))
                        / sum(coalesce(f2.duration_seconds, t2.duration_seconds, 1))) AS lufs
        FROM tracks t2 JOIN audio_features f2 ON f2.track_id = t2.id AND f2.error IS NULL
        WHERE t2.album_id = t.album_id AND f2.loudness_lufs IS NOT NULL
    ) loud
    WHERE t.album_id = ANY(:album_ids)
    GROUP BY t.album_id, loud.lufs
    ON CONFLICT (album_id) DO UPDATE SET
        track_count = excluded.track_count, analysed_tracks = excluded.analysed_tracks,
        total_duration_seconds = excluded.total_duration_seconds, year_min = excluded.year_min,
        year_max = excluded.year_max, loudness_lufs = excluded.loudness_lufs, album_gain_db = excluded.album_gain_db,
        album_peak = excluded.album_peak, updated_at = excluded.updated_at
"""


@app.task(name="enrich_album_audio", base=AudioAlbumTask, bind=True, acks_late=True, **DEFERRED.options)
def enrich_album_audio(self: AudioAlbumTask, scan_id: int | None, key: str | None,
                       album_ids: list[int]) -> dict[str, Any]:
    """Album gain and peak, track count, total duration and year range of each album, from its tracks. Computed
    from everything the catalogue holds at the time, so whichever of an album's batches runs last leaves the
    figures of the whole album."""
    from sqlalchemy import text

    with transaction() as session:
        updated = rowcount(session.execute(text(ALBUM_FIGURES), {"album_ids": list(album_ids)}))
        finished = complete_unit(session, scan_id, key) if scan_id is not None and key is not None else False
    if scan_id is not None:
        send_after_commit(scan_id, [], finished)
    return {"albums": updated}


# ---------------------------------------------------------------- queries for the command line


_PGVECTOR: dict[str, bool] = {}


def has_pgvector_column(session: Session) -> bool:
    """Whether migration 0004 found pgvector on this server and added ``track_vectors.embedding_pgvector`` (an
    HNSW index, which stays fast where cube's GiST does not at a million vectors). Asked once per process."""
    url = str(session.get_bind().engine.url)
    if url not in _PGVECTOR:
        _PGVECTOR[url] = session.execute(text_sql(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'track_vectors' "
            "AND column_name = 'embedding_pgvector'")).scalar() is not None
    return _PGVECTOR[url]


def find_track(session: Session, path_or_id: str) -> int | None:
    """A track id from an id or a file name (as given, or resolved to the real path the catalogue keys)."""
    if path_or_id.isdigit() and session.get(Track, int(path_or_id)) is not None:
        return int(path_or_id)
    from worker_app.paths import db_path

    for candidate in (path_or_id, os.path.realpath(path_or_id)):
        found = session.execute(select(Track.id).where(Track.path == db_path(candidate)[0])).scalar()
        if found is not None:
            return found
    return None


def stored_features(session: Session, track_id: int) -> dict[str, Any] | None:
    row = session.get(AudioFeatures, track_id)
    if row is None:
        return None
    out = {"track_id": track_id, "analysis_version": row.analysis_version,
           "analysed_at": row.analysed_at.isoformat(), "error": row.error}
    out.update({column: getattr(row, column) for column in COLUMNS})
    out.update(row.details or {})
    return out


# How many candidates the sketch index hands to the exact ranking (bench/similarity.py measured the trade-off:
# query time against recall@10 at 1,000,000 vectors; README, "Audio analysis").
CANDIDATES = 300


def nearest(session: Session, embedding: list[float], limit: int, exclude: int | None = None,
            candidates: int | None = None) -> list[dict[str, Any]]:
    """The ``limit`` tracks whose vectors are nearest ``embedding``: the ``candidates`` nearest by the sketch
    (GiST k-nearest-neighbour on a 6-dimension cube, see analysis/vector.py), ranked by the exact distance on the
    whole vector, in one statement (``CANDIDATES`` unless given, and never fewer than ``limit``). With pgvector,
    its HNSW index instead."""
    from sqlalchemy import text

    if has_pgvector_column(session):
        literal = "[" + ",".join(repr(float(v)) for v in embedding) + "]"
        rows = session.execute(text("""
            SELECT v.track_id, t.path, t.title, a.name AS artist, t.genre,
                   v.embedding_pgvector <-> CAST(:query AS vector) AS distance
            FROM track_vectors v JOIN tracks t ON t.id = v.track_id LEFT JOIN artists a ON a.id = t.artist_id
            WHERE v.track_id <> :exclude
            ORDER BY v.embedding_pgvector <-> CAST(:query AS vector)
            LIMIT :limit
        """), {"query": literal, "exclude": exclude if exclude is not None else -1, "limit": limit}).mappings()
        return [{**row, "distance": round(float(row["distance"]), 4)} for row in rows]
    rows = session.execute(text("""
        WITH candidate AS MATERIALIZED (
            SELECT track_id, embedding FROM track_vectors
            WHERE track_id <> :exclude
            ORDER BY sketch <-> CAST(:sketch AS cube)
            LIMIT :candidates
        ), ranked AS MATERIALIZED (
            SELECT track_id, embedding <-> CAST(:query AS cube) AS distance FROM candidate
            ORDER BY distance, track_id
            LIMIT :limit
        )
        SELECT r.track_id, t.path, t.title, a.name AS artist, t.genre, r.distance
        FROM ranked r JOIN tracks t ON t.id = r.track_id LEFT JOIN artists a ON a.id = t.artist_id
        ORDER BY r.distance, r.track_id
    """), {"query": _cube(embedding), "sketch": _cube(vectors.sketch(embedding)),
           "exclude": exclude if exclude is not None else -1, "limit": limit,
           "candidates": max(CANDIDATES if candidates is None else candidates, limit)}).mappings()
    return [{**row, "distance": round(float(row["distance"]), 4)} for row in rows]


def fill_missing_sketches(session: Session) -> int:
    """Give every stored vector without a sketch its sketch; how many there were. A worker still on a release before
    migration 0008 writes vectors without one during an upgrade, and ``nearest`` fetches its candidates by the
    sketch's index alone, where a NULL sketch never comes up: such a track is not found until this has run
    (``soniquebay analysis --fill-sketches``). One set-wise statement, by the projection written in SQL
    (``vector.sketch_sql``), as the migration filled the rows it found."""
    return rowcount(session.execute(text_sql(
        f"UPDATE track_vectors SET sketch = {vectors.sketch_sql('embedding')} WHERE sketch IS NULL")))


def vectors_without_sketch(session: Session) -> int:
    return int(session.execute(text_sql("SELECT count(*) FROM track_vectors WHERE sketch IS NULL")).scalar() or 0)


def _cube(values: list[float]) -> str:
    return "(" + ", ".join(repr(float(v)) for v in values) + ")"


def backlog_batches(limit: int, batch_size: int, folder: str | None = None, after: int = 0) -> Iterator[list[int]]:
    """The ids of up to ``limit`` tracks of the backlog (``needs_analysis``), those under ``folder`` only if given,
    above ``after``, in id order, ``batch_size`` at a time, each batch read in a short transaction of its own."""
    where = [needs_analysis()]
    if folder is not None:
        where.append(func.starts_with(Track.path, display_path(folder).rstrip("/") + "/"))
    left = limit
    while left > 0:
        with transaction() as session:
            ids = list(session.scalars(
                select(Track.id).outerjoin(AudioFeatures, AudioFeatures.track_id == Track.id)
                .where(Track.id > after, *where).order_by(Track.id).limit(min(batch_size, left))))
        if not ids:
            return
        yield ids
        after, left = ids[-1], left - len(ids)


def queue_backlog(limit: int, folder: str | None = None, after: int = 0) -> Iterator[list[int]]:
    """Queue the analysis of up to ``limit`` tracks of the backlog (``backlog_batches``), one extract message per
    SONIQUEBAY_BATCH_SIZE ids, outside any scan; yields each batch's ids once its message went."""
    for ids in backlog_batches(limit, get_settings().batch_size, folder, after):
        extract_audio_features_batch.delay(None, None, ids)
        yield ids


def analysis_status(session: Session, window_minutes: int = 10) -> dict[str, Any]:
    """The backlog (``needs_analysis``), the tracks analysed and failed at this version, and the recent rate. One
    pass over each table, its counts as FILTERs: at 1,000,000 tracks a count a subquery read the features four times
    (bench/README.md)."""
    this_version = AudioFeatures.analysis_version == ANALYSIS_VERSION
    catalogue = select(func.count().label("tracks"), func.count().filter(needs_analysis()).label("backlog")) \
        .select_from(outerjoin(Track, AudioFeatures, AudioFeatures.track_id == Track.id)).subquery()
    features = select(
        func.count().filter(this_version, AudioFeatures.error.is_(None)).label("analysed"),
        func.count().filter(this_version, AudioFeatures.error.is_not(None)).label("failed"),
        func.count().filter(AudioFeatures.analysed_at > func.now() - timedelta(minutes=window_minutes))
        .label("recent"),
    ).subquery()
    vectors = select(func.count()).select_from(TrackVector).scalar_subquery()
    row = session.execute(select(catalogue, features, vectors.label("vectors"))
                          .select_from(catalogue.join(features, true()))).mappings().one()
    return {**row, "analysis_version": ANALYSIS_VERSION,
            "rate_per_minute": round(row["recent"] / window_minutes, 1), "window_minutes": window_minutes}


def drain_position(session: Session) -> dict[str, Any] | None:
    """Where the periodic drain of the backlog (pipeline/analysis_backlog.py) has got to; None before its first run."""
    row = session.execute(select(BacklogCursor.after_id, BacklogCursor.round_ended_at)
                          .where(BacklogCursor.name == DRAIN_CURSOR)).one_or_none()
    if row is None:
        return None
    return {"after_id": row.after_id,
            "round_ended_at": row.round_ended_at.isoformat(timespec="seconds") if row.round_ended_at else None}


def scan_analysis(session: Session, scan_id: int) -> dict[str, Any]:
    """How many of the tracks a scan wrote were analysed, and how many failed analysis (their reasons are in
    ``soniquebay failures SCAN_ID``, stage ``analysis``)."""
    from sqlalchemy import text

    row = session.execute(text("""
        SELECT
          (SELECT count(*) FROM tracks t JOIN audio_features f ON f.track_id = t.id JOIN scans s ON s.id = t.scan_id
           WHERE t.scan_id = :scan AND f.error IS NULL AND f.analysed_at >= s.requested_at) AS analysed,
          (SELECT count(*) FROM scan_failures WHERE scan_id = :scan AND stage = 'analysis') AS failed,
          (SELECT count(*) FROM scan_units WHERE scan_id = :scan AND kind = 'analysis' AND state = 'pending')
            AS pending_batches
    """), {"scan": scan_id}).mappings().one()
    return {"scan_id": scan_id, **row}
