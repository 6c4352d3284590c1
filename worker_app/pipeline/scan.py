"""Scan stage (queue ``scan``, I/O bound): walk the library with os.scandir, find new, changed and removed files.

A chunk task lists folders breadth-first until it has seen ``chunk_entries`` entries, then hands the folders it did
not reach to new chunk tasks, so no task runs long however big or deep the library. What it found goes out as
extract batches of whole folders (an album stays in one batch, which the batch stage needs to recognise
compilations), and as one cleanup unit for the files that vanished from the folders it listed.

A single folder with more entries than a chunk's budget (a flat dump of a million files) is listed by names only
(cheap) and its audio files go to slice units of the same task, each with a bounded list of names to stat and
compare; the chunk that listed it still tells which of its catalogued files vanished, since it saw every name.
"""
from __future__ import annotations

import json
import logging
import math
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.celery_app import app
from worker_app.db.models import FailedFile, Scan, ScanFolder, Track
from worker_app.db.session import transaction
from worker_app.db.statuses import ACTIVE, STARTED, ScanStatus
from worker_app.limits import SCAN
from worker_app.metadata.reader import find_folder_cover
from worker_app.paths import PathRefused, db_path, display_path, is_audio_name, is_within, resolve_scan_path
from worker_app.pipeline.backpressure import EXTRACT_FEED
from worker_app.pipeline.crash_hook import crash_if_marked
from worker_app.pipeline.ledger import (
    MAX_ARGS_BYTES,
    PASSING,
    Failure,
    Unit,
    complete_unit,
    mark_current_path,
    publish,
    record_failures,
    register_units,
    resend_unsent,
    send_after_commit,
)
from worker_app.pipeline.unit_task import PipelineTask, UnitTask
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# When a chunk runs out of budget, the folders it did not reach go to a few child chunks (each lists with the
# same budget and splits again): few, full chunks rather than many small ones, because every chunk that finds
# changed files starts its own extract -> insert -> deferred chain, whose fixed cost dominates a small rescan.
CHILD_CHUNKS = 4
# ... but no child message carries more folder paths than this (a flat library of 100,000 artist folders).
MAX_FOLDERS_PER_CHILD_CHUNK = 2000
# The part of a chunk's soft time limit it may spend listing; the rest is for comparing with the catalogue.
LISTING_SHARE_OF_TIME_LIMIT = 0.3
# A slice of a folder too big for one chunk, an extract batch (its files' entries and folders' cover names), a child
# chunk's folders and a cleanup unit's names carry at most this many bytes of names: with the message's other
# arguments they stay within what ``publish`` sends (MAX_ARGS_BYTES), and so under 64 KB in the broker.
NAME_BYTES = MAX_ARGS_BYTES - 8 * 1024


@dataclass
class FoundFile:
    path: str
    folder: str
    size_bytes: int
    mtime: float


@dataclass
class Listing:
    """What one chunk saw on disk."""

    files: list[FoundFile] = field(default_factory=list)
    listed_folders: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)
    folder_covers: dict[str, str] = field(default_factory=dict)
    unvisited: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # Audio files that are there but could not be looked at (stat failed): not removed, not read.
    unreadable_files: list[str] = field(default_factory=list)
    # Folders with more entries than the budget: their audio files' names, sorted, to be stat-ed by slice units.
    sliced: dict[str, list[str]] = field(default_factory=dict)


def list_folders(folders: list[str], root: str, budget: int, deadline: float | None = None,
                 poison: frozenset[str] = frozenset(),
                 before_listing: Callable[[str], None] | None = None) -> Listing:
    """List ``folders`` and their subfolders breadth-first until ``budget`` entries were seen or the monotonic
    clock passed ``deadline`` (a slow or overloaded file system must not run a chunk into its time limit); what is
    left goes to ``unvisited``. Folders in ``poison`` killed a worker before and are not listed again;
    ``before_listing(folder)`` is called before each folder is opened."""
    listing = Listing()
    queue = list(folders)
    seen_entries = 0
    while queue:
        out_of_time = deadline is not None and listing.listed_folders and time.monotonic() > deadline
        if seen_entries >= budget or out_of_time:
            listing.unvisited = queue
            break
        folder = queue.pop(0)
        if display_path(folder) in poison:
            listing.unreadable_folders.append(folder)
            listing.failures.append(Failure(folder, "scan", "the worker process died while listing this folder",
                                            kind=PASSING))
            continue
        if before_listing is not None:
            before_listing(folder)
        crash_if_marked(folder)
        try:
            with os.scandir(folder) as listed:
                entries = sorted(listed, key=lambda entry: entry.name)
        except FileNotFoundError:
            continue  # vanished since its parent was listed: its tracks are swept at the end of the scan
        except OSError as error:
            listing.unreadable_folders.append(folder)
            listing.failures.append(Failure(folder, "scan", f"cannot list folder: {error.strerror or error}",
                                            kind=PASSING))
            continue
        listing.listed_folders.append(folder)
        seen_entries += len(entries)
        image_names = []
        # Too big for one chunk: its audio files are stat-ed by slice units, not here.
        sliced = listing.sliced.setdefault(folder, []) if len(entries) > budget else None
        for entry in entries:
            kind = _entry_kind(entry, root, listing)
            if kind == "dir":
                queue.append(entry.path)
            elif kind == "file":
                if sliced is not None and is_audio_name(entry.name):
                    sliced.append(entry.name)
                elif is_audio_name(entry.name):
                    try:
                        info = entry.stat()
                    except OSError as error:
                        listing.failures.append(Failure(entry.path, "scan", f"cannot stat: {error.strerror}",
                                                        kind=PASSING))
                        listing.unreadable_files.append(entry.path)
                        continue
                    listing.files.append(FoundFile(entry.path, folder, info.st_size, info.st_mtime))
                else:
                    image_names.append(entry.name)
        cover_name = find_folder_cover(image_names)
        if cover_name:
            listing.folder_covers[folder] = os.path.join(folder, cover_name)
    return listing


def _entry_kind(entry: os.DirEntry[str], root: str, listing: Listing) -> str | None:
    """"dir", "file" or None (skipped). Only regular files are ever opened: FIFOs, sockets and devices would
    block or have no end. Symbolic links are followed only inside the scanned root, and never to a folder that
    holds the link (a loop)."""
    try:
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if not is_within(target, root):
                return None
            mode = os.stat(target).st_mode
            if stat.S_ISDIR(mode):
                return None if is_within(os.path.dirname(entry.path), target) else "dir"
            return "file" if stat.S_ISREG(mode) else None
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else None
    except OSError as error:
        listing.failures.append(Failure(entry.path, "scan", f"cannot read entry: {error.strerror or error}",
                                        kind=PASSING))
        listing.unreadable_files.append(entry.path)
        return None


def stat_names(folder: str, names: list[str], root: str) -> Listing:
    """A slice of a big folder: stat each of ``names`` in ``folder`` (a link only to a file inside ``root``, as the
    listing followed it)."""
    listing = Listing()
    for name in names:
        path = os.path.join(folder, name)
        try:
            if os.path.islink(path) and not is_within(os.path.realpath(path), root):
                continue
            info = os.stat(path)
        except FileNotFoundError:
            continue  # gone since the folder was listed: the listing chunk saw it, the next scan removes it
        except OSError as error:
            listing.failures.append(Failure(path, "scan", f"cannot stat: {error.strerror}", kind=PASSING))
            listing.unreadable_files.append(path)
            continue
        if stat.S_ISREG(info.st_mode):
            listing.files.append(FoundFile(path, folder, info.st_size, info.st_mtime))
    return listing


def slice_names(names: list[str], max_bytes: int = NAME_BYTES) -> list[list[str]]:
    """Consecutive slices of ``names`` of at most ``max_bytes`` of names each."""
    slices: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in names:
        length = _entry_bytes(name)
        if current and size + length > max_bytes:
            slices.append(current)
            current, size = [], 0
        current.append(name)
        size += length
    if current:
        slices.append(current)
    return slices


def _entry_bytes(value: Any) -> int:
    return len(json.dumps(value)) + 2  # as the message's JSON spells it, with its separator


def plan_batches(files: list[FoundFile], batch_size: int, folder_covers: dict[str, str] | None = None,
                 max_bytes: int = NAME_BYTES) -> list[list[FoundFile]]:
    """Pack whole folders into batches of at most ``batch_size`` files whose extract message (the files' entries
    and their folders' cover names) holds at most ``max_bytes``; a bigger folder is split."""
    folder_covers = folder_covers or {}
    by_folder: dict[str, list[FoundFile]] = defaultdict(list)
    for found in files:
        by_folder[found.folder].append(found)
    batches: list[list[FoundFile]] = []
    current: list[FoundFile] = []
    current_bytes = 0
    for folder, folder_files in by_folder.items():
        cover = _entry_bytes(folder) + _entry_bytes(folder_covers[folder]) if folder in folder_covers else 0
        costs = [_entry_bytes([found.path, found.size_bytes, found.mtime]) for found in folder_files]
        if current and (len(current) + len(folder_files) > batch_size
                        or current_bytes + cover + sum(costs) > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        piece: list[FoundFile] = []
        piece_bytes = cover
        for found, cost in zip(folder_files, costs, strict=True):
            if piece and (len(piece) == batch_size or piece_bytes + cost > max_bytes):
                batches.append(piece)
                piece, piece_bytes = [], cover
            piece.append(found)
            piece_bytes += cost
        if current and (len(current) + len(piece) > batch_size or current_bytes + piece_bytes > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.extend(piece)
        current_bytes += piece_bytes
    if current:
        batches.append(current)
    return batches


def _scan_root(session: Session, scan_id: int) -> tuple[str, datetime]:
    """The scan's root, and the database's clock now: the catalogue's rows older than this are the ones the
    listing that follows may find gone (a row written later is another scan's, of a file this listing missed)."""
    root, now = session.execute(select(Scan.root, func.now()).where(Scan.id == scan_id)).one()
    return root, now


class ScanChunkTask(UnitTask):
    """A chunk's paths are folders. One that cannot be listed (the chunk hit its time limit, or killed its worker
    too often) is recorded as not scanned, with everything under it: the end of the scan then keeps their tracks
    instead of sweeping them as removed, and the next scan lists them again."""

    stage = "scan"
    feeds = EXTRACT_FEED

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        return list(args[2] if len(args) > 2 else kwargs.get("folders", []))

    def record_unit_failure(self, session: Session, scan_id: int, key: str, paths: list[str], reason: str) -> int:
        if not paths:
            return super().record_unit_failure(session, scan_id, key, paths, reason)
        reason = f"this folder and everything under it were not scanned: {reason}"
        record_failures(session, scan_id, [Failure(folder, self.stage, reason, kind=PASSING) for folder in paths])
        session.execute(insert(ScanFolder).values(
            [{"scan_id": scan_id, "folder": db_path(folder)[0], "listed": False} for folder in paths]
        ).on_conflict_do_nothing())
        return 0


class ScanFileTask(UnitTask):
    stage = "scan"

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        return [args[2] if len(args) > 2 else kwargs["path"]]


@app.task(name="scan_directory_parallel", base=PipelineTask, bind=True, acks_late=True,
          **SCAN.options)
def scan_directory_parallel(self: PipelineTask, scan_id: int) -> dict[str, Any]:
    """Start a scan: check its root against the library roots and send the first chunk (or the single file)."""
    settings = get_settings()
    first: Unit | None = None
    with transaction() as session:
        scan = session.get(Scan, scan_id, with_for_update={"key_share": True})
        if scan is None:
            raise LookupError(f"there is no scan {scan_id}")
        status = scan.status
        if status == ScanStatus.QUEUED and scan.after_scan_id is None:
            try:
                real, _ = resolve_scan_path(scan.root, settings.library_roots)
            except PathRefused as refusal:
                scan.status, scan.error, scan.finished_at = ScanStatus.FAILED, str(refusal), func.now()
                return {"scan_id": scan_id, "status": ScanStatus.FAILED, "error": str(refusal)}
            scan.status, scan.started_at = ScanStatus.RUNNING, func.now()
            if os.path.isfile(real):
                first = Unit("c", "chunk", scan_single_file.name, [scan_id, "c", real])
            else:
                first = Unit("c", "chunk", scan_directory_chunk.name, [scan_id, "c", [real]])
            register_units(session, scan_id, "", [first])
    if first is not None:
        send_after_commit(scan_id, [first], False)
        return {"scan_id": scan_id, "status": ScanStatus.RUNNING}
    if status == ScanStatus.RUNNING:
        # A redelivery: the scan is under way, but the first delivery may have died before sending its first unit.
        resend_unsent(scan_id, "")
    return {"scan_id": scan_id, "status": status}


@app.task(name="scan_directory_chunk", base=ScanChunkTask, bind=True, acks_late=True,
          **SCAN.options)
def scan_directory_chunk(self: ScanChunkTask, scan_id: int, key: str, folders: list[str],
                         names: list[str] | None = None, cover: str | None = None) -> dict[str, Any]:
    """List ``folders`` (and below, within the chunk's budget); or, with ``names``, stat those files of the one
    folder in ``folders`` (a slice of a folder too big for one chunk; ``cover`` is that folder's image)."""
    settings = get_settings()
    with transaction() as session:
        root, listed_at = _scan_root(session, scan_id)
    if names is not None:
        # A slice of a big folder: the folder, each file and the folder's image are all names the message gave.
        folder = folders[0]
        paths = {os.path.join(folder, name): name for name in names}
        checked, refused = self.refuse_outside_roots([folder, *paths, *([cover] if cover is not None else [])])
        kept = set(checked) if folder in checked else set()  # a slice has thousands of names: sets, not lists
        listing = stat_names(folder, [name for path, name in paths.items() if path in kept], root)
        if cover is not None and cover in kept:
            listing.folder_covers[folder] = cover
        # What was refused was not looked at, so it is not removed from the catalogue either.
        listing.failures += refused
        listing.unreadable_files += [path for path in paths if path not in kept]
        return _commit_listing(scan_id, key, listing, settings.batch_size, listed_at, only_paths=list(paths))
    folders, refused = self.refuse_outside_roots(folders)
    poison = self.unit_poison
    # Redelivered: an earlier delivery may have died on a folder. List carefully, committing each folder before
    # opening it, so that the next delivery can leave that one folder out.
    careful = self.unit_deaths > 0
    listing = list_folders(
        folders, root, settings.chunk_entries,
        deadline=time.monotonic() + SCAN.options["soft_time_limit"] * LISTING_SHARE_OF_TIME_LIMIT,
        poison=frozenset(poison),
        before_listing=(lambda folder: mark_current_path(scan_id, key, folder)) if careful else None,
    )
    if careful:
        mark_current_path(scan_id, key, None)
    # Not listed, so nothing under them is swept as removed; not files, so not counted as failed ones.
    listing.failures += refused
    listing.unreadable_folders += [failure.path for failure in refused]
    return _commit_listing(scan_id, key, listing, settings.batch_size, listed_at)


@app.task(name="scan_single_file", base=ScanFileTask, bind=True, acks_late=True,
          **SCAN.options)
def scan_single_file(self: ScanFileTask, scan_id: int, key: str, path: str) -> dict[str, Any]:
    """Re-index one file: catalogue it if it is new or changed, remove it from the catalogue if it is gone."""
    with transaction() as session:
        _, listed_at = _scan_root(session, scan_id)
    listing = Listing()
    _, refused = self.refuse_outside_roots([path])
    if refused:
        # Not looked at, so not removed from the catalogue either.
        listing.failures += refused
        listing.unreadable_files.append(refused[0].path)
        return _commit_listing(scan_id, key, listing, get_settings().batch_size, listed_at,
                               only_paths=[refused[0].path])
    folder = os.path.dirname(path)
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and is_audio_name(os.path.basename(path)):
            listing.files.append(FoundFile(path, folder, info.st_size, info.st_mtime))
        else:
            listing.failures.append(Failure(path, "scan", "not a regular audio file"))
    except FileNotFoundError:
        pass
    except OSError as error:
        listing.failures.append(Failure(path, "scan", f"cannot stat: {error.strerror}", kind=PASSING))
        listing.unreadable_files.append(path)
    return _commit_listing(scan_id, key, listing, get_settings().batch_size, listed_at, only_paths=[path])


def _commit_listing(scan_id: int, key: str, listing: Listing, batch_size: int, listed_at: datetime,
                    only_paths: list[str] | None = None) -> dict[str, Any]:
    """Compare what is on disk with the catalogue, register the follow-up units and close this one.

    A catalogued file is removed only if the listing did not find it, it was not merely unreadable, and its row is
    older than the listing (a newer row is another scan's, of a file created after this listing). ``only_paths``:
    the listing is about these files only (one file, a slice of a big folder), not whole folders."""
    from worker_app.pipeline.deferred import cleanup_removed_files
    from worker_app.pipeline.extract import extract_metadata_batch

    with transaction() as session:
        if only_paths is not None:
            keys = [db_path(path)[0] for path in only_paths]
            in_scope = [Track.path.in_(keys)], [FailedFile.path.in_(keys)]
        else:
            folders = [db_path(folder)[0] for folder in listing.listed_folders]
            in_scope = [Track.folder.in_(folders)], [FailedFile.folder.in_(folders)]
        known, written_since = {}, set()
        for row in session.execute(select(Track.path, Track.size_bytes, Track.mtime, Track.updated_at)
                                   .where(*in_scope[0])):
            known[row.path] = (row.size_bytes, row.mtime)
            if row.updated_at >= listed_at:
                written_since.add(row.path)
        known_failed = {row.path: row for row in session.execute(
            select(FailedFile.path, FailedFile.size_bytes, FailedFile.mtime, FailedFile.stage, FailedFile.reason)
            .where(*in_scope[1]))}
        on_disk = {db_path(found.path)[0] for found in listing.files}
        # A big folder's files are looked at by its slices, but they are there: not removed.
        on_disk |= {db_path(os.path.join(folder, name))[0] for folder, names in listing.sliced.items()
                    for name in names}
        to_extract, still_failing = [], []
        for found in listing.files:
            key_path = db_path(found.path)[0]
            state = (found.size_bytes, found.mtime)
            failed_before = known_failed.get(key_path)
            if known.get(key_path) == state:
                continue
            if failed_before is not None and (failed_before.size_bytes, failed_before.mtime) == state:
                still_failing.append(Failure(found.path, failed_before.stage, failed_before.reason))  # a verdict
            else:
                to_extract.append(found)
        listing.failures.extend(still_failing)
        present = on_disk | {db_path(path)[0] for path in listing.unreadable_files}
        gone_failures = set(known_failed) - present
        if gone_failures:
            session.execute(delete(FailedFile).where(FailedFile.path.in_(sorted(gone_failures))))
        removed = sorted(set(known) - present - written_since)
        if only_paths is None:
            folder_rows = [{"scan_id": scan_id, "folder": db_path(f)[0], "listed": True}
                           for f in listing.listed_folders]
            folder_rows += [{"scan_id": scan_id, "folder": db_path(f)[0], "listed": False}
                            for f in listing.unreadable_folders]
            if folder_rows:
                session.execute(insert(ScanFolder).values(folder_rows).on_conflict_do_nothing())

        units = [
            Unit(f"{key}.{i}", "chunk", scan_directory_chunk.name, [scan_id, f"{key}.{i}", child])
            for i, child in enumerate(piece for chunk in _child_chunks(listing.unvisited)
                                      for piece in slice_names(chunk))
        ]
        for n, (folder, names) in enumerate(listing.sliced.items()):
            for i, piece in enumerate(slice_names(names)):
                slice_key = f"{key}/s{n}.{i}"
                units.append(Unit(slice_key, "chunk", scan_directory_chunk.name,
                                  [scan_id, slice_key, [folder], piece, listing.folder_covers.get(folder)]))
        for i, batch in enumerate(plan_batches(to_extract, batch_size, listing.folder_covers)):
            covers = {found.folder: listing.folder_covers[found.folder]
                      for found in batch if found.folder in listing.folder_covers}
            files = [[found.path, found.size_bytes, found.mtime] for found in batch]
            units.append(Unit(f"{key}/b{i}", "extract", extract_metadata_batch.name,
                              [scan_id, f"{key}/b{i}", files, covers]))
        for i, gone in enumerate(slice_names(removed)):
            rm_key = f"{key}/rm" if i == 0 else f"{key}/rm{i}"
            units.append(Unit(rm_key, "cleanup", cleanup_removed_files.name,
                              [scan_id, rm_key, gone, listed_at.isoformat()]))
        register_units(session, scan_id, key, units)
        record_failures(session, scan_id, listing.failures)
        file_failures = sum(1 for failure in listing.failures if failure.path not in listing.unreadable_folders)
        # A file whose failure is remembered (a verdict) is counted once, as discovered and failed.
        finished = complete_unit(
            session, scan_id, key,
            discovered=len(listing.files) + file_failures - len(still_failing),
            unchanged=len(listing.files) - len(to_extract) - len(still_failing),
            failed=file_failures,
        )

    send_after_commit(scan_id, units, finished)
    kinds = [unit.kind for unit in units]
    return {"folders": len(listing.listed_folders), "files": len(listing.files), "to_extract": len(to_extract),
            "removed": len(removed), "chunks": kinds.count("chunk"), "batches": kinds.count("extract")}


def _child_chunks(unvisited: list[str]) -> list[list[str]]:
    """Contiguous slices (sibling folders stay together, and so do an album's discs)."""
    if not unvisited:
        return []
    count = max(min(CHILD_CHUNKS, len(unvisited)), math.ceil(len(unvisited) / MAX_FOLDERS_PER_CHILD_CHUNK))
    size = math.ceil(len(unvisited) / count)
    return [unvisited[i:i + size] for i in range(0, len(unvisited), size)]


@dataclass(frozen=True)
class ScanStart:
    """What `soniquebay scan` started: ``how`` is "started", "joined" (a queued scan of the same root, not yet
    started, will do) or "queued" (a scan of the same root is running: this one starts when it ends, so that it
    sees every change made meanwhile). ``beside`` lists running scans of overlapping roots, which run alongside:
    neither removes what the other adds."""

    scan_id: int
    how: str
    after_scan_id: int | None = None
    beside: tuple[tuple[int, str], ...] = ()


class StartFailed(Exception):
    """The scan could not be handed to the broker; it is recorded as failed, and nothing will start it later."""


def start_scan(path: str) -> ScanStart:
    """Record a scan of ``path`` and send it to the scan queue. Refuses paths outside the library roots before
    anything is queued. A scan whose message cannot be sent is marked failed, with the reason (StartFailed)."""
    real, _ = resolve_scan_path(path, get_settings().library_roots)
    with transaction() as session:
        start = record_scan(session, real)
    send_start(start)
    return start


def active_scans_of(session: Session, real: str) -> Sequence[Row[int, str, str, int | None]]:
    """The scans of the root ``real`` (resolved) that are queued or under way. Takes the root's start lock, held
    until the transaction ends: concurrent starts of one root see each other's rows."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext(real))))
    return session.execute(
        select(Scan.id, Scan.root, Scan.status, Scan.after_scan_id)
        .where(Scan.status.in_(ACTIVE)).order_by(Scan.id)
    ).all()


def record_scan(session: Session, real: str) -> ScanStart:
    """The start of a scan of the root ``real`` (resolved), in the caller's transaction: join a queued scan of
    the same root, queue behind a running one, or start. Nothing is sent: send_start, once committed."""
    active = active_scans_of(session, real)
    same = [row for row in active if row.root == real]
    waiting = [row for row in same if row.status == ScanStatus.QUEUED]
    if waiting:
        return ScanStart(waiting[-1].id, "joined", waiting[-1].after_scan_id)
    running = [row for row in same if row.status in STARTED]
    beside = tuple((row.id, row.root) for row in active
                   if row.root != real and (is_within(real, row.root) or is_within(row.root, real)))
    scan = Scan(root=real, status=ScanStatus.QUEUED, after_scan_id=running[-1].id if running else None)
    session.add(scan)
    session.flush()
    return ScanStart(scan.id, "queued" if running else "started", scan.after_scan_id, beside)


def send_start(start: ScanStart) -> None:
    """Hand a started scan (committed by record_scan) to the broker; one that cannot be sent is marked failed."""
    if start.how != "started":
        return
    try:
        publish(scan_directory_parallel.name, [start.scan_id])
    except Exception as error:
        reason = f"could not send the scan to the broker: {type(error).__name__}: {error}"
        with transaction() as session:
            session.execute(update(Scan).where(Scan.id == start.scan_id)
                            .values(status=ScanStatus.FAILED, error=reason, finished_at=func.now()))
        raise StartFailed(reason) from error


def start_queued_after(scan_id: int) -> list[int]:
    """A scan ended: the scans of the same root queued behind it start now. Returns their ids."""
    with transaction() as session:
        ids = session.execute(
            update(Scan).where(Scan.after_scan_id == scan_id, Scan.status == ScanStatus.QUEUED)
            .values(after_scan_id=None).returning(Scan.id)
        ).scalars().all()
    for queued in sorted(ids):
        publish(scan_directory_parallel.name, [queued])
    return sorted(ids)
