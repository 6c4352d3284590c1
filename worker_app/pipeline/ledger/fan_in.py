"""The fan-in: a unit closed with its figures, and the scan finished exactly once, when its last unit closes.

The scan row is locked for that check, so of two units closing at once exactly one sees that nothing is pending.
"""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanUnit
from worker_app.db.statuses import STARTED, ScanStatus
from worker_app.pipeline.ledger.cancel import drop_pending
from worker_app.pipeline.ledger.figures import store_totals
from worker_app.pipeline.ledger.states import BACKGROUND_KINDS, CANCELLED, COUNTS


def unit_is_done(session: Session, scan_id: int, key: str) -> bool:
    state = session.execute(
        select(ScanUnit.state).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
    ).scalar()
    return state == "done"


def complete_unit(session: Session, scan_id: int, key: str, **counts: int) -> bool:
    """Mark a pending unit done with its figures; True when that was the scan's last pending unit, in which case
    the caller sends ``cleanup_finish_scan`` after the commit. A unit already done keeps its figures (a concurrent
    duplicate closed it first), so a redelivered task never counts its work twice or overwrites it with zero."""
    unknown = set(counts) - set(COUNTS)
    if unknown:
        raise ValueError(f"unknown unit counts: {sorted(unknown)}")
    # A unit that was running when its scan was cancelled still records what it did (its tracks are catalogued):
    # the cancel marked it cancelled, and it closes as done.
    closed = session.execute(
        update(ScanUnit)
        .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key, ScanUnit.state.in_(("pending", CANCELLED)))
        # Its message goes: only a pending unit's is ever sent again.
        .values(state="done", updated_at=func.now(), last_error=None, message=None, **counts)
        .returning(ScanUnit.key)
    ).first()
    if closed is None:
        return False  # closed already, by a duplicate of this delivery: its figures stand
    # FOR NO KEY UPDATE, not FOR UPDATE: every transaction that closes a unit has already inserted rows that
    # reference the scan (units, failures, folders), which holds a KEY SHARE lock on its row; FOR UPDATE waits for
    # those, so two such transactions deadlocked on each other (seen in the fleet: chunks retried until parked).
    status = session.execute(
        select(Scan.status).where(Scan.id == scan_id).with_for_update(key_share=True)
    ).scalar()
    if status == CANCELLED:
        # Cancelled while this unit ran: the units it just registered are dropped (but for the follow-ups of the
        # tracks it wrote), and the scan's figures take in
        # what it did. Never finished: a cancelled scan has no end-of-scan sweep.
        drop_pending(session, scan_id)
        store_totals(session, scan_id)
        return False
    if status not in STARTED:
        return False
    pending = session.execute(
        select(ScanUnit.key).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending",
                                   ScanUnit.kind.not_in(BACKGROUND_KINDS)).limit(1)
    ).first()
    if pending is not None:
        return False
    session.execute(update(Scan).where(Scan.id == scan_id).values(status=ScanStatus.FINALIZING))
    return True
