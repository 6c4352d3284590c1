"""Retention: a scan's working records go once it has ended long enough ago; the scan row and its figures stay.

Each unit of a scan keeps a row in ``scan_units`` (its message is dropped when it closes: nothing reads it again)
and each failure a row in ``scan_failures``. Both are read while the scan runs and by `soniquebay status` and
`soniquebay failures` after it; kept for ever, every rescan of a large library would add thousands of rows that
nobody reads. ``cleanup_old_scans`` deletes them for scans that ended more than ``SONIQUEBAY_SCAN_RETENTION_DAYS``
ago, a bounded number of scans per run; the deferred workers send it every hour. ``failed_files`` is not touched:
it is one row per file, the verdicts a rescan must remember.

The same run drops the claim checks (``staged_units``, ``staged_covers``: pipeline/staging.py) of scans that ended
without inserting them (cancelled, or a unit closed in a way that skipped its insert), whatever their age.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from worker_app.celery_app import app
from worker_app.db.models import Scan, ScanFailure, ScanUnit
from worker_app.db.session import rowcount, transaction
from worker_app.limits import DEFERRED
from worker_app.pipeline.ledger import ACTIVE
from worker_app.pipeline.periodic import PeriodicSend
from worker_app.pipeline.staging import prune_staging
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# Scans pruned per run: each one's rows go in one transaction, and a backlog (retention shortened, first run after
# an upgrade) is worked off over the following runs.
SCANS_PER_RUN = 50
INTERVAL = 3600


def prune_old_scans(retention_days: int, limit: int = SCANS_PER_RUN) -> dict[str, int]:
    """Delete the units and failure records of up to ``limit`` scans that ended more than ``retention_days`` ago
    and still have some; mark each as pruned. Returns what went."""
    cutoff = func.now() - timedelta(days=retention_days)
    pruned = {"scans": 0, "units": 0, "failures": 0}
    with transaction() as session:
        scan_ids = session.execute(
            select(Scan.id).where(Scan.status.not_in(ACTIVE), Scan.finished_at < cutoff, Scan.pruned_at.is_(None))
            .order_by(Scan.id).limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        if not scan_ids:
            return pruned
        pruned["units"] = rowcount(session.execute(delete(ScanUnit).where(ScanUnit.scan_id.in_(scan_ids))))
        pruned["failures"] = rowcount(session.execute(delete(ScanFailure).where(ScanFailure.scan_id.in_(scan_ids))))
        session.execute(update(Scan).where(Scan.id.in_(scan_ids)).values(pruned_at=func.now()))
        pruned["scans"] = len(scan_ids)
    log.info("pruned the records of %d scans ended over %d days ago: %d units, %d failure records",
             pruned["scans"], retention_days, pruned["units"], pruned["failures"])
    return pruned


@app.task(name="cleanup_old_scans", acks_late=True, ignore_result=True, **DEFERRED.options)
def cleanup_old_scans() -> dict[str, int]:
    """Prune the working records of scans ended longer ago than the retention, and the staged records of every
    scan that ended (nothing reads them once it has)."""
    return prune_old_scans(get_settings().scan_retention_days) | prune_staging()


class RetentionWatch(PeriodicSend):
    """The clock of the pruning."""

    what = "pruning the records of old scans"
    expires_periods = 1

    def task(self) -> Any:
        return cleanup_old_scans

    def interval(self) -> int:
        return INTERVAL


app.steps["worker"].add(RetentionWatch)
