"""A scan's figures: the sums of its units'."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanUnit
from worker_app.pipeline.ledger.states import COUNTS


def unit_totals(session: Session, scan_id: int) -> dict[str, int]:
    row = session.execute(
        select(*(func.coalesce(func.sum(getattr(ScanUnit, name)), 0) for name in COUNTS)).where(
            ScanUnit.scan_id == scan_id
        )
    ).one()
    return dict(zip(COUNTS, (int(value) for value in row), strict=True))


def store_totals(session: Session, scan_id: int) -> dict[str, int]:
    totals = unit_totals(session, scan_id)
    session.execute(update(Scan).where(Scan.id == scan_id).values(**totals))
    return totals
