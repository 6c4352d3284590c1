"""What `soniquebay status`, the progress bar and the exporter show of a scan."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanFailure, ScanUnit
from worker_app.db.statuses import ENDED
from worker_app.pipeline.ledger.figures import unit_totals
from worker_app.pipeline.ledger.states import COUNTS


def progress(session: Session, scan_id: int) -> dict[str, Any]:
    """What `soniquebay status` and the progress bar show: the scan row plus live sums over its units."""
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise LookupError(f"there is no scan {scan_id}")
    if scan.status in ENDED:
        totals = {name: getattr(scan, name) for name in COUNTS}
    else:
        totals = unit_totals(session, scan_id)
    pending = session.execute(
        select(ScanUnit.kind, func.count())
        .where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending")
        .group_by(ScanUnit.kind)
    ).all()
    failures = session.execute(select(func.count()).where(ScanFailure.scan_id == scan_id)).scalar()
    retrying = session.execute(
        select(ScanUnit.last_error, func.count())
        .where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending", ScanUnit.last_error.is_not(None))
        .group_by(ScanUnit.last_error).order_by(func.count().desc()).limit(5)
    ).all()
    end = scan.finished_at
    return {
        "scan_id": scan.id,
        "root": scan.root,
        "status": scan.status,
        "error": scan.error,
        "requested_at": scan.requested_at.isoformat(),
        "finished_at": end.isoformat() if end else None,
        "seconds": round(((end or _now(session)) - scan.requested_at).total_seconds(), 3),
        **totals,
        "failure_records": failures,
        "pending_units": {kind: count for kind, count in pending},
        # Passing errors pending units met and are retried after: {error: units}.
        "retrying": {error: count for error, count in retrying},
        "after_scan_id": scan.after_scan_id,
    }


def _now(session: Session) -> datetime:
    return session.execute(select(func.now())).scalar_one()
