"""Deferred work (queue ``deferred``): ``cleanup_*`` removes what left the disk and finishes scans, ``enrich_*``
chooses album covers, ``vectorize_tracks`` builds full-text search vectors again (the insert stage writes them with
the tracks). All of it can run late without the catalogue being wrong in the meantime."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Exists,
    Text,
    Update,
    any_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql.selectable import ScalarSelect

from worker_app.celery_app import app
from worker_app.db.models import (
    Album,
    Artist,
    Cover,
    FailedFile,
    Scan,
    ScanFolder,
    Track,
    TrackArtist,
    orphan_candidates,
)
from worker_app.db.search_vector import album_title_of, names_credited_on, search_vector
from worker_app.db.session import rowcount, transaction
from worker_app.db.statuses import ScanStatus
from worker_app.limits import DEFERRED, DEFERRED_FINALIZE
from worker_app.paths import PathRefused, check_task_path, is_within
from worker_app.pipeline.ledger import PASSING, Failure, complete_unit, record_failures, send_after_commit, unit_totals
from worker_app.pipeline.scan import start_queued_after
from worker_app.pipeline.unit_task import PipelineTask, UnitTask
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


class DeferredTask(UnitTask):
    stage = "cleanup"
    unit_kind = "cleanup"


class EnrichTask(DeferredTask):
    unit_kind = "enrich"


class VectorizeTask(DeferredTask):
    unit_kind = "vectorize"


def _update_and_close(statement: Update, scan_id: int | None, key: str | None) -> int:
    """Run a bulk UPDATE and, for a scan's unit, close the unit in the same transaction; returns the row count."""
    with transaction() as session:
        updated = rowcount(session.execute(statement.execution_options(synchronize_session=False)))
        finished = complete_unit(session, scan_id, key) if scan_id is not None and key else False
    if scan_id is not None:
        send_after_commit(scan_id, [], finished)
    return updated


@app.task(name="cleanup_removed_files", base=DeferredTask, bind=True, acks_late=True,
          **DEFERRED.options)
def cleanup_removed_files(self: DeferredTask, scan_id: int, key: str, paths: list[str],
                          listed_at: str | None = None) -> dict[str, Any]:
    """Remove the tracks of files that a scan no longer found in their folder, unless a track was written after
    that listing (by another scan, which found the file). Each file is checked to be gone first (``verify_gone``):
    the message may be forged, and the disk, not the message, says what left it."""
    paths, failures = self.refuse_outside_roots(paths)
    with transaction() as session:
        candidates = select(Track.path, Track.path_bytes).where(Track.path.in_(paths))
        if listed_at is not None:
            candidates = candidates.where(Track.updated_at < datetime.fromisoformat(listed_at))
        gone: list[str] = []
        for path, path_bytes in session.execute(candidates).all():
            why_kept = verify_gone(bytes(path_bytes) if path_bytes is not None else path)
            if why_kept is None:
                gone.append(path)
            else:
                log.warning("cleanup_removed_files (scan %s, unit %s) kept %s: %s", scan_id, key, path, why_kept.reason)
                failures.append(Failure(path, self.stage, why_kept.reason, kind=why_kept.kind))
        removed = rowcount(session.execute(delete(Track).where(Track.path.in_(gone)))) if gone else 0
        record_failures(session, scan_id, failures)
        finished = complete_unit(session, scan_id, key, removed=removed, failed=len(failures))
    send_after_commit(scan_id, [], finished)
    return {"removed": removed, "kept": len(failures)}


@dataclass(frozen=True)
class Kept:
    reason: str
    kind: str


# Why an empty folder is no proof that what was under it was deleted.
UNMOUNTED = "as the mount point of a disk that is not mounted is"


def _is_empty(folder: str) -> bool:
    """Whether ``folder`` holds nothing at all (OSError when it cannot be listed)."""
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def verify_gone(name: str | bytes, what: str = "file") -> Kept | None:
    """None when the file or folder ``name`` (under a library root: ``check_task_path``) is gone: lstat says
    ENOENT, and its root is there, readable and not empty (an unmounted or unreadable library would make every file
    look gone). Else why its track stays: the file is there (a link counts, even a broken one, as the scanner keeps
    those), or something else went wrong, which is passing (the next scan looks again) and deletes nothing."""
    text = os.fsdecode(name)
    root = next(root for root in get_settings().library_roots if is_within(text, root))
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode) or not os.access(root, os.R_OK | os.X_OK):
            return Kept(f"not removed: the library root {root} is not a readable folder", PASSING)
        if _is_empty(root):
            return Kept(f"not removed: the library root {root} is empty, {UNMOUNTED}", PASSING)
    except OSError as error:
        return Kept(f"not removed: cannot read the library root {root}: {error.strerror or error}", PASSING)
    try:
        os.lstat(name)
    except FileNotFoundError:
        return None
    except OSError as error:
        return Kept(f"not removed: cannot check the {what} is gone: {error.strerror or error}", PASSING)
    return Kept(f"not removed: the {what} is still there (this cleanup was not the scanner's, or the {what} is back)",
                PASSING)


def _emptied_scan_root(root: str, folders: int) -> Kept | None:
    """Why the ``folders`` the scan of ``root`` did not find stay, when ``root`` is now an empty folder: a disk
    mounted there (or as a library root: ``verify_gone``) that is not mounted leaves just that, and a scan of it
    would otherwise take the empty folder for a deletion of everything under it."""
    try:
        if not _is_empty(root):
            return None
    except OSError as error:
        return Kept(f"not removed: cannot read {root}, the folder scanned: {error.strerror or error}", PASSING)
    return Kept(f"not removed: {root}, the folder scanned, is empty, {UNMOUNTED}; the tracks of the {folders} folders "
                f"it held stay (if they were deleted, delete {root} too and scan the folder above it)", PASSING)


# In this order: deleting an album can orphan its artist and its cover.
ORPHAN_KINDS = ("album", "artist", "cover")


def _unused(kind: str) -> tuple[type[Album] | type[Artist] | type[Cover], list[ColumnElement[bool]]]:
    """The table of a kind of row, and what makes one an orphan: nothing references it any more."""
    if kind == "album":
        return Album, [~exists().where(Track.album_id == Album.id)]
    if kind == "artist":
        return Artist, [~exists().where(Track.artist_id == Artist.id),
                        ~exists().where(TrackArtist.artist_id == Artist.id),
                        ~exists().where(Album.album_artist_id == Artist.id)]
    return Cover, [~exists().where(Track.cover_id == Cover.id), ~exists().where(Track.folder_cover_id == Cover.id),
                   ~exists().where(Album.cover_id == Cover.id)]


def delete_orphans(session: Session, everywhere: bool = False) -> dict[str, int]:
    """Albums without tracks, then artists credited nowhere, then covers nothing shows (in that order: deleting an
    album can orphan its artist and cover). Only the candidates the triggers recorded since the last call are
    checked, so the cost follows what changed, not the catalogue; ``everywhere`` checks every row instead (for
    orphans older than the triggers). A candidate is taken once: a concurrent caller skips it."""
    deleted = {}
    for kind in ORPHAN_KINDS:
        model, unused = _unused(kind)
        taken = (delete(orphan_candidates).where(orphan_candidates.c.kind == kind)
                 .returning(orphan_candidates.c.id).cte(f"taken_{kind}"))
        statement = delete(model).where(*unused)
        if not everywhere:
            statement = statement.where(model.id.in_(select(taken.c.id)))
        else:
            # The candidates go all the same: every row is checked.
            statement = statement.add_cte(taken)
        deleted[f"{kind}s"] = rowcount(session.execute(statement))
    return deleted


@app.task(name="cleanup_orphans", acks_late=True, autoretry_for=(Exception,), max_retries=5, retry_backoff=2,
          **DEFERRED.options)
def cleanup_orphans() -> dict[str, int]:
    """Remove every album, artist and cover that no track uses any more, wherever it is in the catalogue (the end of
    each scan removes those its changes left)."""
    with transaction() as session:
        return delete_orphans(session, everywhere=True)


def _under_a_folder_not_read(scan_id: int, folder: ColumnElement[str] | InstrumentedAttribute[str]) -> Exists:
    """Whether ``folder``, or a folder above it, is one the scan ``scan_id`` could not read. The folder and each
    folder above it ("/a/b" gives "", "/a" and "/a/b") are looked up in ``ix_scan_folders_unlisted``: one lookup
    per level of the path, where a prefix test would compare the folder with every folder not read (a scan whose
    storage failed can leave tens of thousands, with most of the library under them: bench/README.md).
    OFFSET 0 keeps it a lookup per row: as a join, PostgreSQL would pair each row with each folder not read."""
    unreadable = aliased(ScanFolder)
    parts = func.string_to_array(folder, "/", type_=ARRAY(Text))
    depth = func.generate_series(1, func.cardinality(parts)).table_valued("n").render_derived()
    levels = select(func.array_to_string(parts[1:depth.c.n], "/")).select_from(depth).correlate_except(depth)
    return (select(literal(1))
            .where(unreadable.scan_id == scan_id, unreadable.listed.is_(False),
                   unreadable.folder == any_(func.array(levels.scalar_subquery(), type_=ARRAY(Text))))
            .offset(0).exists())


def sweep_vanished_folders(session: Session, scan_id: int, root: str, started_at: datetime,
                           model: type[Track] | type[FailedFile] = Track) -> tuple[int, list[Failure]]:
    """Delete the rows of ``model`` (tracks, or known failures) under the scanned root whose folder the scan did
    not find, unless the folder sits under one the scan could not read (its files may well still be there), or the
    track was written after the scan started (another scan found it, in a folder created after this one listed its
    parent). The scan's word is not enough: each such folder is checked to be gone on disk first
    (``verify_gone``), as a scan host could report a listing that leaves folders out. Returns (rows deleted, a
    passing failure for each folder kept)."""
    # The folders a scan listed are only known after its last chunk, so PostgreSQL's statistics never describe
    # them and it picks a nested loop over (tracks x folders): 1.1 s at 10,000 files, and growing as the product.
    # A hash anti-join is linear whatever the estimates say. (Without JIT: the cost that disabling nested loops
    # adds would otherwise make PostgreSQL spend 0.2 s compiling these statements.)
    session.execute(text("SET LOCAL enable_nestloop = off"))
    session.execute(text("SET LOCAL jit = off"))
    swept = _sweep(session, scan_id, root, started_at, model)
    # The rest of the transaction is planned as usual (an error ends the transaction, and these settings with it).
    session.execute(text("RESET enable_nestloop"))
    session.execute(text("RESET jit"))
    return swept


def _sweep(session: Session, scan_id: int, root: str, started_at: datetime,
           model: type[Track] | type[FailedFile]) -> tuple[int, list[Failure]]:
    walked = aliased(ScanFolder)
    prefix = root.rstrip("/") + "/"
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    newer = [model.updated_at < started_at] if model is Track else []
    unlisted = [
        *newer,
        or_(model.folder == root, model.path.like(escaped + "%", escape="\\")),
        ~exists().where(walked.scan_id == scan_id, walked.folder == model.folder),
    ]
    # A folder's name as the disk has it: a track's raw bytes when the name is not UTF-8 (tracks.path_bytes).
    raw = model.path_bytes if model is Track else literal(None)
    # Whether a folder sits under one not read is asked once per folder the scan did not list, after the anti-join
    # against those it did: a whole-library rescan asks it about the few folders gone, not about every track.
    candidates = (select(model.folder.label("folder"), raw.label("raw")).where(*unlisted)
                  .ext(distinct_on(model.folder)).order_by(model.folder, raw.is_(None)).subquery())
    named = session.execute(select(candidates.c.folder, candidates.c.raw)
                            .where(~_under_a_folder_not_read(scan_id, candidates.c.folder))).all()
    emptied = _emptied_scan_root(root, len(named)) if named else None
    if emptied is not None:
        if model is not Track:
            return 0, []
        log.warning("scan %s: kept the tracks of %d folders: %s", scan_id, len(named), emptied.reason)
        return 0, [Failure(root, "cleanup", emptied.reason, kind=emptied.kind)]
    gone, failures = [], []
    roots = get_settings().library_roots
    for folder, path_bytes in named:
        name: str | bytes = os.path.dirname(bytes(path_bytes)) if path_bytes is not None else folder
        try:
            check_task_path(name, roots)
        except PathRefused as refusal:
            kept: Kept | None = Kept(f"not removed: {refusal}", PASSING)
        else:
            kept = verify_gone(name, "folder")
        if kept is None:
            gone.append(folder)
        elif model is Track:
            log.warning("scan %s: kept the tracks of %s: %s", scan_id, folder, kept.reason)
            failures.append(Failure(folder, "cleanup", kept.reason, kind=kept.kind))
    if not gone:
        return 0, failures
    vanished = [*unlisted, ~_under_a_folder_not_read(scan_id, model.folder), model.folder.in_(gone)]
    return rowcount(session.execute(delete(model).where(*vanished))), failures


@app.task(name="cleanup_finish_scan", base=PipelineTask, bind=True, acks_late=True,
          **DEFERRED_FINALIZE.options)
def cleanup_finish_scan(self: PipelineTask, scan_id: int) -> dict[str, Any]:
    """The end of a scan: sweep vanished folders and orphans, fix the final figures, mark the scan complete.
    Runs once per scan in effect: a second delivery finds the scan complete and does nothing."""
    with transaction() as session:
        scan = session.get(Scan, scan_id, with_for_update={"key_share": True})
        # Only a finalizing scan is swept: a cancelled one never is (its listing is incomplete: a sweep would
        # delete every track of the folders it did not reach).
        if scan is None or scan.status != ScanStatus.FINALIZING:
            return {"scan_id": scan_id, "status": scan.status if scan else None}
        # A scan leaves the queue with its start time set; were one finalizing without it, the time it was asked
        # for is the safe bound: earlier still, so the sweep could only keep more tracks, never take a newer one.
        began = scan.started_at or scan.requested_at
        swept, kept_folders = sweep_vanished_folders(session, scan_id, scan.root, began)
        sweep_vanished_folders(session, scan_id, scan.root, began, FailedFile)
        record_failures(session, scan_id, kept_folders)
        # Only the sweep needed them: the table stays the size of one scan.
        session.execute(delete(ScanFolder).where(ScanFolder.scan_id == scan_id))
        orphans = delete_orphans(session)
        totals = unit_totals(session, scan_id)
        totals["removed"] += swept
        totals["failed"] += len(kept_folders)
        for name, value in totals.items():
            setattr(scan, name, value)
        scan.status = ScanStatus.COMPLETE
        scan.finished_at = func.now()
    log.info("scan %s complete: %s; orphans removed %s", scan_id, totals, orphans)
    start_queued_after(scan_id)
    return {"scan_id": scan_id, "status": ScanStatus.COMPLETE, **totals}


# How many of an album's tracks choose its picture: the cost of a choice stays bounded however big the album
# grows (untagged files all land in one album per artist; box sets run to thousands of tracks).
ALBUM_COVER_SAMPLE = 500


def _most_shown(picture: InstrumentedAttribute[int | None]) -> ScalarSelect[Any]:
    """The picture (a tracks column) shown most among ALBUM_COVER_SAMPLE of the album's tracks (the first the
    album_id index gives). The sample is taken before tracks without one are left out: else an album whose tracks
    show none would be read whole to find that out."""
    sample = (select(picture.label("picture")).where(Track.album_id == Album.id)
              .limit(ALBUM_COVER_SAMPLE).correlate(Album).subquery())
    return (select(sample.c.picture).where(sample.c.picture.is_not(None)).group_by(sample.c.picture)
            .order_by(func.count().desc(), sample.c.picture).limit(1).scalar_subquery())


@app.task(name="enrich_album_covers", base=EnrichTask, bind=True, acks_late=True,
          **DEFERRED.options)
def enrich_album_covers(self: EnrichTask, scan_id: int | None, key: str | None, album_ids: list[int],
                        track_ids: list[int] | None = None) -> dict[str, Any]:
    """Give each album the picture its tracks show most, a folder image (cover.jpg...) before embedded art.
    ``track_ids``: the tracks just written, whose albums these are; an album is looked at again only if one of
    them shows (first) a picture other than the album's, as a track that shows the album's own picture cannot
    change the choice. So a unit costs its own tracks, and at most a sample of each album it changes."""
    return {"albums": _update_and_close(album_cover_statement(album_ids, track_ids), scan_id, key)}


def album_cover_statement(album_ids: list[int], track_ids: list[int] | None) -> Update:
    statement = update(Album).where(Album.id.in_(album_ids)).values(
        cover_id=func.coalesce(_most_shown(Track.folder_cover_id), _most_shown(Track.cover_id)))
    if track_ids is not None:
        # A track showing no picture cannot give a pictureless album one: NULL is not distinct from NULL.
        statement = statement.where(exists().where(
            Track.id.in_(track_ids), Track.album_id == Album.id,
            func.coalesce(Track.folder_cover_id, Track.cover_id).is_distinct_from(Album.cover_id)))
    return statement


@app.task(name="vectorize_tracks", base=VectorizeTask, bind=True, acks_late=True,
          **DEFERRED.options)
def vectorize_tracks(self: VectorizeTask, scan_id: int | None, key: str | None, track_ids: list[int]) -> dict[str, Any]:
    """Build these tracks' full-text search vectors again from the catalogue (db/search_vector.py). The insert
    stage writes each track's vector with the track, so a scan sends none of these: a unit of the previous release,
    which did, still completes, and a repair can send one."""
    statement = update(Track).where(Track.id.in_(track_ids)).values(search_vector=search_vector(
        Track.title, names_credited_on(Track.id), album_title_of(Track.album_id), Track.genres))
    return {"tracks": _update_and_close(statement, scan_id, key)}


# Track ids per vectorize_tracks message: about 16 KB of JSON, within publish's 48 KB.
VECTORIZE_IDS = 2000


def tracks_to_vectorize(every_track: bool) -> Iterator[list[int]]:
    """The ids of the tracks without a search vector (every track with ``every_track``), in batches of
    VECTORIZE_IDS, read a batch at a time in id order (each batch one short transaction)."""
    after = 0
    while True:
        query = select(Track.id).where(Track.id > after).order_by(Track.id).limit(VECTORIZE_IDS)
        if not every_track:
            query = query.where(Track.search_vector.is_(None))
        with transaction() as session:
            ids = list(session.scalars(query))
        if not ids:
            return
        yield ids
        after = ids[-1]
