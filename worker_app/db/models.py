"""The catalogue, as SQLAlchemy 2.0 typed models. Natural keys carry unique constraints so every upsert is
``INSERT ... ON CONFLICT`` on them and a task that runs twice changes nothing."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import UserDefinedType

from worker_app.db.statuses import ScanStatus


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The model's Table, for Core statements (``model.__table__``, which SQLAlchemy's types call a FromClause)."""
    return Base.metadata.tables[model.__tablename__]


class Artist(Base):
    __tablename__ = "artists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # Case- and space-insensitive form of the name: "The Beatles" and "the  beatles" are one artist.
    name_key: Mapped[str] = mapped_column(Text, unique=True)
    mbid: Mapped[str | None] = mapped_column(String(36))


class Cover(Base):
    __tablename__ = "covers"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mime: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # where it was first seen: embedded or folder
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)


class Album(Base):
    __tablename__ = "albums"
    __table_args__ = (UniqueConstraint("album_artist_id", "title_key", name="uq_albums_artist_title"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    title_key: Mapped[str] = mapped_column(Text)
    album_artist_id: Mapped[int] = mapped_column(ForeignKey("artists.id"), index=True)
    year: Mapped[int | None] = mapped_column(SmallInteger)
    is_compilation: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    mbid: Mapped[str | None] = mapped_column(String(36))
    release_group_mbid: Mapped[str | None] = mapped_column(String(36))
    disc_total: Mapped[int | None] = mapped_column(SmallInteger)
    cover_id: Mapped[int | None] = mapped_column(ForeignKey("covers.id", ondelete="SET NULL"), index=True)


class Track(Base):
    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The file name as text: valid UTF-8 names as they are, others with \xNN escapes (raw bytes in path_bytes).
    path: Mapped[str] = mapped_column(Text, unique=True)
    path_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)
    folder: Mapped[str] = mapped_column(Text, index=True)
    title: Mapped[str | None] = mapped_column(Text)
    artist_id: Mapped[int | None] = mapped_column(ForeignKey("artists.id"), index=True)
    album_id: Mapped[int | None] = mapped_column(ForeignKey("albums.id"), index=True)
    track_number: Mapped[int | None] = mapped_column(SmallInteger)
    track_total: Mapped[int | None] = mapped_column(SmallInteger)
    disc_number: Mapped[int | None] = mapped_column(SmallInteger)
    disc_total: Mapped[int | None] = mapped_column(SmallInteger)
    date: Mapped[str | None] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(SmallInteger)
    genre: Mapped[str | None] = mapped_column(Text)
    genres: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    composers: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    bitrate: Mapped[int | None] = mapped_column(Integer)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(SmallInteger)
    bits_per_sample: Mapped[int | None] = mapped_column(SmallInteger)
    format: Mapped[str] = mapped_column(String(16))
    codec: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    # The embedded picture, or else the folder's image.
    cover_id: Mapped[int | None] = mapped_column(ForeignKey("covers.id", ondelete="SET NULL"), index=True)
    # The image of the track's folder (cover.jpg, folder.png...), which is what an album shows first.
    folder_cover_id: Mapped[int | None] = mapped_column(ForeignKey("covers.id", ondelete="SET NULL"), index=True)
    mbid: Mapped[str | None] = mapped_column(String(36))
    mb_release_track_id: Mapped[str | None] = mapped_column(String(36))
    replaygain_track_gain: Mapped[float | None] = mapped_column(Float)
    replaygain_track_peak: Mapped[float | None] = mapped_column(Float)
    replaygain_album_gain: Mapped[float | None] = mapped_column(Float)
    replaygain_album_peak: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[dict[str, list[str]]] = mapped_column(JSONB, default=dict, server_default="{}")
    # What the extractor had to clean (NUL bytes, invalid UTF-8, absurd numbers), kept for people to check.
    warnings: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    search_vector: Mapped[str | None] = mapped_column(TSVECTOR)
    scan_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When the track was first catalogued: an upsert of a changed file keeps it.
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_tracks_search_vector", "search_vector", postgresql_using="gin"),
        Index("ix_tracks_added_at", "added_at"),
        # The end-of-scan sweep's `path LIKE 'root/%'`: only a text_pattern_ops index serves it under a collation
        # other than C.
        Index("ix_tracks_path_prefix", "path", postgresql_ops={"path": "text_pattern_ops"}),
    )


class TrackArtist(Base):
    """Every credited artist of a track, in tag order (tracks.artist_id is the first)."""

    __tablename__ = "track_artists"

    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    artist_id: Mapped[int] = mapped_column(ForeignKey("artists.id"), index=True)


# The albums, artists and covers that a deleted or changed row used to reference, written by triggers (migration
# 0006): the end of a scan checks only these for orphans. Kind "album", "artist" or "cover"; no key, duplicates
# allowed (see the migration).
orphan_candidates = Table(
    "orphan_candidates", Base.metadata,
    Column("kind", String(8), nullable=False),
    Column("id", Integer, nullable=False),
)


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    root: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ScanStatus.QUEUED.value,
                                        server_default=ScanStatus.QUEUED.value)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    discovered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unchanged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    extracted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    inserted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    removed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # When it left the queue: the end of the scan removes only tracks written before (another scan's are newer).
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A scan of the same root waits for this one to end before it starts.
    after_scan_id: Mapped[int | None] = mapped_column(Integer)
    # When its units and failure records were deleted, past the retention (pipeline/retention.py).
    pruned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ScanUnit(Base):
    """One piece of a scan's work (a folder chunk, an extract batch, a cleanup). A unit is registered as pending
    in the same transaction that creates it and marked done by the task that does it; the scan is complete when
    none is pending. Counts live on the unit, so a redelivered task overwrites its own figures instead of adding
    them twice."""

    __tablename__ = "scan_units"

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # chunk extract cleanup enrich analysis audio-vector audio-album (vectorize: a previous release's scans)
    kind: Mapped[str] = mapped_column(String(16))
    # pending done cancelled (its scan was, before it ran; a unit running then still closes as done, and the units
    # that finish tracks already written, ledger/states.py FOLLOW_UPS, still run)
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    # The stage of the unit's chain its message is at (0: not delivered yet; extract 1 -> batch 2 -> insert 3), and
    # how many times the message of that stage was delivered.
    stage: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    deliveries: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    # Deliveries at this stage that came back as the same message (the same Celery retry count): the worker that
    # had it died. A retry after a passing error carries the next retry count: not a death.
    deaths: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    last_retries: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    # Every message of the unit's whole chain delivered again: each death (deaths starts again at each stage), and
    # each message the broker gave out again that no worker had started (held by a lost worker, or handed back).
    redeliveries: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    # When its latest message went to the broker; NULL: registered and not sent yet (the relay sends it).
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The passing error (database, broker) its latest delivery met and will be retried after.
    last_error: Mapped[str | None] = mapped_column(Text)
    # The unit whose task registered this one ('' for the scan's first unit), and the message that does it: a task
    # delivered again after its unit is done sends the messages of its children that no worker has started (it
    # may have died between its commit and sending them). The message is JSON text, not jsonb: file names that are
    # not UTF-8 travel as lone surrogate escapes, which jsonb refuses.
    parent: Mapped[str] = mapped_column(Text, default="", server_default="")
    message: Mapped[str | None] = mapped_column(Text)
    # Set while a redelivered unit reads its files (or lists its folders) one by one: the one being read when the
    # worker died.
    current_path: Mapped[str | None] = mapped_column(Text)
    poison_paths: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    discovered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unchanged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    extracted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    inserted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    removed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_scan_units_pending", "scan_id", postgresql_where="state = 'pending'"),
        Index("ix_scan_units_parent", "scan_id", "parent", postgresql_where="state = 'pending'"),
        Index("ix_scan_units_unsent", "scan_id", postgresql_where="state = 'pending' AND sent_at IS NULL"),
    )


class ScanFolder(Base):
    """Folders a scan listed, so that the end of the scan can tell which catalogued folders vanished. ``listed``
    is false when the folder could not be read: its tracks are then kept, not swept as removed."""

    __tablename__ = "scan_folders"
    # The end-of-scan sweep checks each candidate row against the scan's unlisted folders (migration 0012).
    __table_args__ = (Index("ix_scan_folders_unlisted", "scan_id", "folder", postgresql_where="listed IS false"),)

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    folder: Mapped[str] = mapped_column(Text, primary_key=True)
    listed: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")


class ScanFailure(Base):
    __tablename__ = "scan_failures"
    __table_args__ = (UniqueConstraint("scan_id", "path", "stage", name="uq_scan_failures_scan_path_stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(16))  # scan extract insert
    reason: Mapped[str] = mapped_column(Text)
    # "verdict": the content (corrupt, not audio), remembered for the file's (size, mtime); "passing": an I/O error,
    # a permission, a time limit, a lost worker, which the next scan tries again.
    kind: Mapped[str] = mapped_column(String(16), default="verdict", server_default="verdict")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FailedFile(Base):
    """Files that could not be catalogued, as they were when they failed. A rescan that finds one unchanged
    reports it again without reading it again; a file that changes is tried anew."""

    __tablename__ = "failed_files"

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    folder: Mapped[str] = mapped_column(Text, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    scan_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_failed_files_path_prefix", "path", postgresql_ops={"path": "text_pattern_ops"}),)


class BrokerEpoch(Base):
    """Each broker Redis instance seen, by its run_id: a new one means the broker restarted, and whatever it lost
    (the last second of its AOF, its consumers' reservations) is sent again, once."""

    __tablename__ = "broker_epochs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())



class StagedUnit(Base):
    """The claim check of a batch unit: what its extract stage read, and what its batch stage made of it, kept here
    by (scan, unit key) while the unit's messages carry only that key. Written by the extract stage, read by the
    batch and insert stages, deleted in the transaction that closes the unit (``pipeline/staging.py``). The bodies
    are JSON text, not jsonb: file names that are not UTF-8 travel as lone surrogate escapes, which jsonb refuses."""

    __tablename__ = "staged_units"

    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # [records, failures] as the extract stage wrote them.
    records: Mapped[str] = mapped_column(Text)
    # The insert stage's payload as the batch stage wrote it (NULL until then).
    payload: Mapped[str | None] = mapped_column(Text)
    # The pictures the unit's tracks use (staged_covers or covers, by sha256).
    cover_shas: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list, server_default="{}")
    staged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StagedCover(Base):
    """A picture read by an extract stage and not yet in ``covers``: stored once by its sha256, however many tracks
    and units use it; moved into ``covers`` by the first insert that needs it."""

    __tablename__ = "staged_covers"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    # Touched by every unit that stages it: an unused picture is pruned only once no unit staged it for a while.
    staged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

# ---------------------------------------------------------------- audio analysis (migration 0004_audio_features)

class Cube(UserDefinedType[list[float]]):
    """PostgreSQL's ``cube`` (postgresql-contrib): a point of up to 100 dimensions, GiST-indexable for
    k-nearest-neighbour search with ``<->``. Python side: a list of floats."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "cube"

    def bind_processor(self, dialect: Dialect) -> Callable[[Iterable[float] | None], str | None]:
        def process(value: Iterable[float] | None) -> str | None:
            if value is None:
                return None
            return "(" + ", ".join(repr(float(v)) for v in value) + ")"
        return process

    def bind_expression(self, bindvalue: BindParameter[list[float]]) -> ColumnElement[list[float]]:
        return cast(bindvalue, self)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[str | None], list[float] | None]:
        def process(value: str | None) -> list[float] | None:
            if value is None:
                return None
            return [float(v) for v in value.strip("()").split(",")]
        return process


class AudioFeatures(Base):
    """What the audio analysis measured for a track (worker_app/analysis/), or why it could not (``error``), at
    ``analysis_version``, for the file as it was then (size, mtime): an unchanged file is not analysed again."""

    __tablename__ = "audio_features"

    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    analysis_version: Mapped[int] = mapped_column(SmallInteger, index=True)
    analysed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    sample_peak: Mapped[float | None] = mapped_column(Float)
    track_gain_db: Mapped[float | None] = mapped_column(Float)
    bpm: Mapped[float | None] = mapped_column(Float)
    beat_confidence: Mapped[float | None] = mapped_column(Float)
    key: Mapped[str | None] = mapped_column(String(2))
    scale: Mapped[str | None] = mapped_column(String(5))
    camelot: Mapped[str | None] = mapped_column(String(3))
    key_strength: Mapped[float | None] = mapped_column(Float)
    danceability: Mapped[float | None] = mapped_column(Float)
    energy: Mapped[float | None] = mapped_column(Float)
    spectral_centroid_hz: Mapped[float | None] = mapped_column(Float)
    spectral_rolloff_hz: Mapped[float | None] = mapped_column(Float)
    spectral_flatness: Mapped[float | None] = mapped_column(Float)
    zero_crossing_rate: Mapped[float | None] = mapped_column(Float)
    mfcc_mean: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    mfcc_var: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    chroma: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    # The rest of what the analysis reports (peak in dBFS, excerpt position...), for people and later versions.
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")


class TrackVector(Base):
    """A track's similarity vector (worker_app/analysis/vector.py), for ``soniquebay similar``."""

    __tablename__ = "track_vectors"

    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    vector_version: Mapped[int] = mapped_column(SmallInteger)
    embedding: Mapped[list[float]] = mapped_column(Cube)
    # vector.sketch(embedding), whose GiST index finds the candidates ``nearest`` ranks (migration 0008); None
    # only on a row a worker of the previous release wrote, until it is vectorised again. ``embedding`` itself has
    # no index: it is only read from the candidates' rows (0010 dropped its GiST index).
    sketch: Mapped[list[float] | None] = mapped_column(Cube, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_track_vectors_sketch", "sketch", postgresql_using="gist"),)


class AlbumAudio(Base):
    """Album-level figures from its tracks (``enrich_album_audio``): ReplayGain-style album gain and peak, track
    count, total duration, year range. The album loudness is the duration-weighted power mean of the analysed
    tracks' integrated loudness, an approximation of BS.1770 over the album played through."""

    __tablename__ = "album_audio"

    album_id: Mapped[int] = mapped_column(ForeignKey("albums.id", ondelete="CASCADE"), primary_key=True)
    track_count: Mapped[int] = mapped_column(Integer)
    analysed_tracks: Mapped[int] = mapped_column(Integer)
    total_duration_seconds: Mapped[float | None] = mapped_column(Float)
    year_min: Mapped[int | None] = mapped_column(SmallInteger)
    year_max: Mapped[int | None] = mapped_column(SmallInteger)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    album_gain_db: Mapped[float | None] = mapped_column(Float)
    album_peak: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BacklogCursor(Base):
    """Where a periodic drain of a backlog has got to (``pipeline/analysis_backlog.py``): the last track id it
    queued, and when its last round through the catalogue ended. One row per drain, locked by the drain that runs."""

    __tablename__ = "backlog_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    after_id: Mapped[int] = mapped_column(BigInteger, server_default="0")
    round_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScanSchedule(Base):
    """A library root's scheduled rescans (worker_app/scheduling/): the cron expression, the next run due, and the
    last one. ``next_run_at`` is what a scheduler claims (UPDATE ... WHERE next_run_at = the value it read), so a
    run is started once however many schedulers look, and a restarted scheduler goes on from here."""

    __tablename__ = "scan_schedules"

    root: Mapped[str] = mapped_column(Text, primary_key=True)
    expression: Mapped[str] = mapped_column(Text)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_scan_id: Mapped[int | None] = mapped_column(Integer)
    # started, skipped (a scan of the root was still queued or running) or failed (it could not be sent)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScanScheduleRun(Base):
    """Each run a schedule came to, once: its primary key refuses a second row for one due time."""

    __tablename__ = "scan_schedule_runs"

    root: Mapped[str] = mapped_column(Text, primary_key=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    outcome: Mapped[str] = mapped_column(String(16))
    scan_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
