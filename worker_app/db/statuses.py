"""A scan's statuses and figures: the values of ``scans.status`` and the counts that ``scans`` and ``scan_units``
both keep. Apart from the models so that the command line and the exporter can name them without loading
SQLAlchemy."""
from __future__ import annotations

from enum import StrEnum


class ScanStatus(StrEnum):
    """A scan's ``status``, in the order a scan goes through them."""

    QUEUED = "queued"  # requested; waits for a scan of the same root to end
    RUNNING = "running"
    FINALIZING = "finalizing"  # every unit done: the end-of-scan sweep
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"  # `soniquebay cancel`: its figures so far, never swept


ACTIVE = (ScanStatus.QUEUED, ScanStatus.RUNNING, ScanStatus.FINALIZING)  # not ended: a scan that can be cancelled
STARTED = (ScanStatus.RUNNING, ScanStatus.FINALIZING)  # out of the queue, not ended
ENDED = (ScanStatus.COMPLETE, ScanStatus.FAILED, ScanStatus.CANCELLED)
# The figures each unit records when it is done (columns of scan_units); a scan's (columns of scans) are their sums.
COUNTS = ("discovered", "unchanged", "extracted", "inserted", "failed", "removed")
