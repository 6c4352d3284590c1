"""Extract stage (queue ``extract``, CPU bound): read tags, stream info and covers with mutagen.

A batch is read in one go. When its message comes back after the worker died (a poison file), it is read
carefully: the path about to be read is committed first, so the next delivery knows which file killed the worker,
records it as failed and reads the rest.

What a batch read (its records, failures and pictures) is written to PostgreSQL once (``pipeline/staging.py``, the
claim check); the batch stage's message carries the unit's key only.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from worker_app.celery_app import app
from worker_app.db.session import transaction
from worker_app.limits import EXTRACT
from worker_app.metadata.reader import read_folder_cover, read_track
from worker_app.metadata.record import CoverImage, UnreadableFileError
from worker_app.paths import PathRefused, check_task_path, display_path, printable_name
from worker_app.pipeline.backpressure import RECORDS_FEED
from worker_app.pipeline.crash_hook import crash_if_marked, hold_if_planned, install_read_faults
from worker_app.pipeline.ledger import (
    PASSING,
    VERDICT,
    Failure,
    hand_off,
    mark_current_path,
    publish,
)
from worker_app.pipeline.staging import stage_extracted
from worker_app.pipeline.unit_task import UnitTask
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


class ExtractTask(UnitTask):
    stage = "extract"
    unit_stage = 1
    unit_kind = "extract"
    # Each batch unit waiting in the batch and insert queues holds its records in staged_units: bounded with them.
    feeds = RECORDS_FEED

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        files = args[2] if len(args) > 2 else kwargs.get("files", [])
        return [entry[0] for entry in files]


@app.task(name="extract_metadata_batch", base=ExtractTask, bind=True, acks_late=True,
          **EXTRACT.options)
def extract_metadata_batch(self: ExtractTask, scan_id: int, key: str, files: list[Any],
                           folder_covers: dict[str, str]) -> dict[str, Any]:
    from worker_app.metadata import reader
    from worker_app.pipeline.batch import BATCH_STAGE, batch_entities

    install_read_faults(reader)
    kept, refused = self.refuse_outside_roots([entry[0] for entry in files] + list(folder_covers.values()))
    files = [entry for entry in files if entry[0] in kept]
    folder_covers = {folder: cover for folder, cover in folder_covers.items() if cover in kept}
    poison = self.unit_poison
    careful = self.unit_deaths > 0
    records: list[dict[str, Any]] = []
    failures = refused
    covers: dict[str, CoverImage] = {}
    folder_cover_shas: dict[str, str] = {}
    for folder, cover_path in folder_covers.items():
        try:
            cover = read_folder_cover(cover_path)
        except UnreadableFileError as error:
            log.warning("folder image %s skipped: %s", cover_path, error.reason)
            continue
        covers[cover.sha256] = cover
        folder_cover_shas[folder] = cover.sha256
    for path, size_bytes, mtime in files:
        if display_path(path) in poison:
            failures.append(Failure(path, "extract", "the worker process died while reading this file",
                                    size_bytes, mtime, PASSING))
            continue
        if careful:
            mark_current_path(scan_id, key, path)
        hold_if_planned(path)
        try:
            crash_if_marked(path)
            record = read_track(path)
        except UnreadableFileError as error:
            failures.append(Failure(path, "extract", error.reason, size_bytes, mtime,
                                    PASSING if error.passing else VERDICT))
            continue
        except MemoryError:  # the host's memory as much as the file's: tried again at the next scan
            failures.append(Failure(path, "extract", "ran out of memory while reading this file", size_bytes, mtime,
                                    PASSING))
            continue
        # The picture is staged once by its sha256 (pipeline/staging.py); the record names it.
        picture, record.cover = record.cover, None
        message = record.to_message()
        if picture is not None:
            covers.setdefault(picture.sha256, picture)
            message["cover"] = picture.sha256
        message["folder_cover"] = folder_cover_shas.get(os.path.dirname(path))
        records.append(message)
    if careful:
        mark_current_path(scan_id, key, None)
    with transaction() as session:
        stage_extracted(session, scan_id, key, records, [failure.as_message() for failure in failures], covers)
    publish(batch_entities.name, [scan_id, key])
    hand_off(scan_id, key, BATCH_STAGE)
    return {"extracted": len(records), "failed": len(failures)}


@app.task(name="extract_single_file", acks_late=True, ignore_result=False,
          **EXTRACT.options)
def extract_single_file(path: str) -> dict[str, Any]:
    """Read one file and return its record (what the catalogue would hold), or the reason it is unreadable
    (`soniquebay tags`). A name outside the library roots is refused (logged, and the reason returned): it belongs to
    no scan, so there is no scan to record the failure in."""
    try:
        check_task_path(path, get_settings().library_roots)
    except PathRefused as refusal:
        log.warning("extract_single_file refused a name its message gave: %s", refusal)
        return {"path": printable_name(path), "error": f"refused: {refusal}"}
    try:
        return {"path": path, "record": read_track(path).to_message()}
    except UnreadableFileError as error:
        return {"path": path, "error": error.reason}
