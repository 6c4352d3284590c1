"""Extract stage (queue ``extract``, CPU bound): read tags, stream info and covers with mutagen.

A batch is read in one go. When its message comes back after the worker died (a poison file), it is read
carefully: the path about to be read is committed first, so the next delivery knows which file killed the worker,
records it as failed and reads the rest.
"""
from __future__ import annotations

import logging
import os

from sqlalchemy import select, update

from worker_app.celery_app import app
from worker_app.db.models import ScanUnit
from worker_app.db.session import transaction
from worker_app.limits import EXTRACT
from worker_app.metadata.reader import read_folder_cover, read_stream_info, read_track
from worker_app.metadata.record import UnreadableFileError
from worker_app.paths import display_path
from worker_app.pipeline.ledger import Failure
from worker_app.pipeline.unit_task import UnitTask
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


class ExtractTask(UnitTask):
    stage = "extract"

    def paths_of(self, args, kwargs):
        files = args[2] if len(args) > 2 else kwargs.get("files", [])
        return [entry[0] for entry in files]


def _poison_state(scan_id: int, key: str) -> tuple[int, str | None, list[str]]:
    with transaction() as session:
        row = session.execute(
            select(ScanUnit.deliveries, ScanUnit.current_path, ScanUnit.poison_paths)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        ).one()
        poison = list(row.poison_paths)
        if row.current_path and row.current_path not in poison:
            poison.append(row.current_path)
            session.execute(
                update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                .values(poison_paths=poison, current_path=None)
            )
    return row.deliveries, row.current_path, poison


def _mark_reading(scan_id: int, key: str, path: str | None) -> None:
    with transaction() as session:
        session.execute(
            update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
            .values(current_path=display_path(path) if path is not None else None)
        )


def _test_hook(path: str) -> None:
    """Test-only (off unless SONIQUEBAY_TEST_CRASH_MARKER is set): a file named ...MARKER-exit... kills the worker
    process, as a crash in a C library or the kernel's OOM killer would; one named ...MARKER-nomem... runs out of
    memory."""
    marker = get_settings().test_crash_marker
    if marker:
        name = os.path.basename(path)
        if f"{marker}-exit" in name:
            os._exit(70)
        if f"{marker}-nomem" in name:
            raise MemoryError(f"test hook: {name}")


@app.task(name="extract_metadata_batch", base=ExtractTask, bind=True, acks_late=True,
          **EXTRACT.options)
def extract_metadata_batch(self, scan_id: int, key: str, files: list, folder_covers: dict[str, str]) -> dict:
    from worker_app.pipeline.batch import batch_entities

    if not self.begin(scan_id, key):
        return {"skipped": key}
    deliveries, _, poison = _poison_state(scan_id, key)
    careful = deliveries > 1
    records, failures, covers = [], [], {}
    folder_cover_shas: dict[str, str] = {}
    for folder, cover_path in folder_covers.items():
        try:
            cover = read_folder_cover(cover_path)
        except UnreadableFileError as error:
            log.warning("folder image %s skipped: %s", cover_path, error.reason)
            continue
        covers[cover.sha256] = cover.to_message()
        folder_cover_shas[folder] = cover.sha256
    for path, size_bytes, mtime in files:
        if display_path(path) in poison:
            failures.append(Failure(path, "extract", "the worker process died while reading this file",
                                    size_bytes, mtime))
            continue
        if careful:
            _mark_reading(scan_id, key, path)
        try:
            _test_hook(path)
            record = read_track(path)
        except UnreadableFileError as error:
            failures.append(Failure(path, "extract", error.reason, size_bytes, mtime))
            continue
        except MemoryError:
            failures.append(Failure(path, "extract", "ran out of memory while reading this file", size_bytes, mtime))
            continue
        message = record.to_message()
        if record.cover is not None:
            covers.setdefault(record.cover.sha256, message["cover"])
            message["cover"] = record.cover.sha256
        message["folder_cover"] = folder_cover_shas.get(os.path.dirname(path))
        records.append(message)
    if careful:
        _mark_reading(scan_id, key, None)
    batch_entities.delay(
        scan_id, key, records, [failure.as_message() for failure in failures], covers,
    )
    return {"extracted": len(records), "failed": len(failures)}


@app.task(name="extract_single_file", acks_late=True,
          **EXTRACT.options)
def extract_single_file(path: str) -> dict:
    """Read one file and return its record (what the catalogue would hold), or the reason it is unreadable."""
    try:
        return {"path": path, "record": read_track(path).to_message()}
    except UnreadableFileError as error:
        return {"path": path, "error": error.reason}


@app.task(name="extract_audio_features_batch", acks_late=True,
          **EXTRACT.options)
def extract_audio_features_batch(paths: list[str]) -> list[dict]:
    """Stream information only (duration, bitrate, sample rate, channels, codec) for each file: cheaper than the
    full read when only the audio properties are wanted."""
    results = []
    for path in paths:
        try:
            results.append({"path": path, **read_stream_info(path)})
        except UnreadableFileError as error:
            results.append({"path": path, "error": error.reason})
    return results
