"""The fan-in: a unit closed with its figures, and the scan finished exactly once, when its last unit closes.

The scan row is locked for that check, so of two units closing at once exactly one sees that nothing is pending.
"""
from __future__ import annotations

import functools

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanUnit, table_of
from worker_app.db.statuses import STARTED, ScanStatus
from worker_app.pipeline.ledger.cancel import drop_pending
from worker_app.pipeline.ledger.figures import store_totals
from worker_app.pipeline.ledger.states import BACKGROUND_KINDS, CANCELLED, COUNTS


def unit_is_done(session: Session, scan_id: int, key: str) -> bool:
    state = session.execute(
        select(ScanUnit.state).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
    ).scalar()
    return state == "done"


UNITS, SCANS = table_of(ScanUnit), table_of(Scan)


@functools.cache
def _close_unit(counts: tuple[str, ...]) -> Update:
    """The UPDATE that closes a unit with these figures (parameters b_scan, b_key, b_<figure>), built once per
    process as a Core statement: building it, and the ORM's bulk UPDATE path, cost more CPU than running it.
    A unit that was running when its scan was cancelled still records what it did (its tracks are catalogued): the
    cancel marked it cancelled, and it closes as done. Its message goes: only a pending unit's is ever sent again."""
    return (update(UNITS)
            .where(UNITS.c.scan_id == bindparam("b_scan"), UNITS.c.key == bindparam("b_key"),
                   UNITS.c.state.in_(("pending", CANCELLED)))
            .values(state="done", updated_at=func.now(), last_error=None, message=None,
                    **{name: bindparam(f"b_{name}") for name in counts})
            .returning(UNITS.c.key))


# FOR NO KEY UPDATE, not FOR UPDATE: every transaction that closes a unit has already inserted rows that reference
# the scan (units, failures, folders), which holds a KEY SHARE lock on its row; FOR UPDATE waits for those, so two
# such transactions deadlocked on each other (seen in the fleet: chunks retried until parked).
_LOCKED_SCAN_STATUS = select(SCANS.c.status).where(SCANS.c.id == bindparam("b_scan")).with_for_update(key_share=True)
_ANY_PENDING = (select(UNITS.c.key)
                .where(UNITS.c.scan_id == bindparam("b_scan"), UNITS.c.state == "pending",
                       UNITS.c.kind.not_in(BACKGROUND_KINDS))
                .limit(1))


def complete_unit(session: Session, scan_id: int, key: str, **counts: int) -> bool:
    """Mark a pending unit done with its figures; True when that was the scan's last pending unit, in which case
    the caller sends ``cleanup_finish_scan`` after the commit. A unit already done keeps its figures (a concurrent
    duplicate closed it first), so a redelivered task never counts its work twice or overwrites it with zero."""
    unknown = set(counts) - set(COUNTS)
    if unknown:
        raise ValueError(f"unknown unit counts: {sorted(unknown)}")
    closed = session.execute(_close_unit(tuple(sorted(counts))), {
        "b_scan": scan_id, "b_key": key, **{f"b_{name}": value for name, value in counts.items()}}).first()
    if closed is None:
        return False  # closed already, by a duplicate of this delivery: its figures stand
    status = session.execute(_LOCKED_SCAN_STATUS, {"b_scan": scan_id}).scalar()
    if status == CANCELLED:
        # Cancelled while this unit ran: the units it just registered are dropped (but for the follow-ups of the
        # tracks it wrote), and the scan's figures take in what it did. Never finished: a cancelled scan has no
        # end-of-scan sweep.
        drop_pending(session, scan_id)
        store_totals(session, scan_id)
        return False
    if status not in STARTED:
        return False
    if session.execute(_ANY_PENDING, {"b_scan": scan_id}).first() is not None:
        return False
    session.execute(update(Scan).where(Scan.id == scan_id).values(status=ScanStatus.FINALIZING))
    return True
