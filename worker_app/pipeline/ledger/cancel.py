"""Cancelling a scan: its pending units dropped, nothing undone, no end-of-scan sweep."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanUnit
from worker_app.db.session import rowcount
from worker_app.pipeline.ledger.figures import store_totals
from worker_app.pipeline.ledger.states import ACTIVE, CANCELLED, FOLLOW_UPS


def drop_pending(session: Session, scan_id: int) -> int:
    return rowcount(session.execute(
        update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending",
                               ScanUnit.kind.not_in(FOLLOW_UPS))
        .values(state=CANCELLED, updated_at=func.now())
    ))


@dataclass(frozen=True)
class Cancelled:
    scan_id: int
    status: str  # the scan's status before: queued, running or finalizing; or how it ended, if it had
    dropped: int = 0  # pending units dropped

    @property
    def cancelled(self) -> bool:
        return self.status in ACTIVE


def cancel_scan(session: Session, scan_id: int) -> Cancelled:
    """Cancel a scan that has not ended: its pending units are dropped (state 'cancelled'; not the FOLLOW_UPS of
    tracks already catalogued), its figures so far are stored on its row, and its status becomes 'cancelled'. A
    unit running meanwhile stops at its next boundary (``begin_delivery`` runs no other unit of a cancelled scan)
    and still records what it did (``complete_unit``); the
    end-of-scan sweep never runs (``cleanup_finish_scan`` runs only for a finalizing scan), so nothing is deleted.
    The caller starts the scans queued behind this one after the commit (``scan.start_queued_after``).

    The units are dropped before the scan row is locked, and again after: a task closing its unit locks the unit
    row, then the scan row (``complete_unit``); taking them in the other order would deadlock with it. Units a
    task registers after the first pass are caught by the second, or by the task itself once it sees the status."""
    status = session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
    if status is None:
        raise LookupError(f"there is no scan {scan_id}")
    if status not in ACTIVE:
        return Cancelled(scan_id, status)
    dropped = drop_pending(session, scan_id)
    status = session.execute(
        select(Scan.status).where(Scan.id == scan_id).with_for_update(key_share=True)
    ).scalar_one()
    if status not in ACTIVE:
        # It ended meanwhile (its last unit closed and its end ran): it had no pending unit to drop.
        return Cancelled(scan_id, status)
    dropped += drop_pending(session, scan_id)
    store_totals(session, scan_id)
    session.execute(update(Scan).where(Scan.id == scan_id)
                    .values(status=CANCELLED, finished_at=func.now()))
    return Cancelled(scan_id, status, dropped)
