"""Per-task time limits and priorities, in one table.

Every task is short by design (a folder chunk, a batch of a few hundred files), so the limits are minutes, not
hours. Redis's visibility timeout is derived from them; the supervisor role's per-queue ``time_limit`` (and so
its programs' ``stopwaitsecs``) must cover the longest task routed to the queue, which tests/test_configuration.py
checks against this table.
Priorities follow Redis's emulation: 0 is served first.
"""
from __future__ import annotations

from dataclasses import dataclass

# The pipeline's five queues, in the order a file goes through them; every task is routed to one of them.
QUEUES = ("scan", "extract", "batch", "insert", "deferred")


@dataclass(frozen=True)
class TaskLimits:
    queue: str
    soft_time_limit: int
    time_limit: int
    priority: int

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"{self.queue!r} is not one of the queues {QUEUES}")

    @property
    def options(self) -> dict[str, float]:
        """The task decorator's time limits, times SONIQUEBAY_TIME_LIMIT_SCALE (tests shrink them so that a lost
        worker's message comes back within a test's patience)."""
        from worker_app.settings import get_settings

        scale = get_settings().time_limit_scale
        return {"soft_time_limit": self.soft_time_limit * scale, "time_limit": self.time_limit * scale}


# seconds
SCAN = TaskLimits("scan", soft_time_limit=540, time_limit=600, priority=3)
EXTRACT = TaskLimits("extract", soft_time_limit=540, time_limit=600, priority=3)
BATCH = TaskLimits("batch", soft_time_limit=270, time_limit=300, priority=3)
INSERT = TaskLimits("insert", soft_time_limit=540, time_limit=600, priority=0)
DEFERRED = TaskLimits("deferred", soft_time_limit=1700, time_limit=1800, priority=6)
# Audio analysis runs on the extract workers but after every waiting tag read (a higher number is served later):
# a first scan's catalogue is complete as fast as without it, and the analysis follows. Seconds per file, not
# milliseconds, so a batch stops starting files after a third of its limit and hands the rest to a new unit.
ANALYSE = TaskLimits("extract", soft_time_limit=540, time_limit=600, priority=6)
# Finishing a scan (sweeping what vanished) waits behind no enrichment work.
DEFERRED_FINALIZE = TaskLimits("deferred", soft_time_limit=1700, time_limit=1800, priority=0)

_ALL = (SCAN, EXTRACT, BATCH, INSERT, DEFERRED, DEFERRED_FINALIZE, ANALYSE)
LONGEST_TIME_LIMIT = max(limit.time_limit for limit in _ALL)
SHORTEST_SOFT_TIME_LIMIT = min(limit.soft_time_limit for limit in _ALL)

TASK_LIMITS = {
    "scan_directory_parallel": SCAN,
    "scan_directory_chunk": SCAN,
    "scan_single_file": SCAN,
    "extract_metadata_batch": EXTRACT,
    "extract_single_file": EXTRACT,
    "extract_audio_features_batch": ANALYSE,
    "batch_entities": BATCH,
    "group_by_artist": BATCH,
    "prepare_insertion_batch": BATCH,
    "insert_batch_direct": INSERT,
    "insert_artists_batch": INSERT,
    "insert_albums_batch": INSERT,
    "insert_tracks_batch": INSERT,
    "insert_covers_batch": INSERT,
    "cleanup_finish_scan": DEFERRED_FINALIZE,
    "cleanup_stalled_scans": DEFERRED_FINALIZE,
    "relay_units": DEFERRED_FINALIZE,
    "enrich_*": DEFERRED,
    "vectorize_*": DEFERRED,
    "cleanup_*": DEFERRED,
}
