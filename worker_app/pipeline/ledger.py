"""The scan ledger: which pieces of a scan's work exist, which are done, and when the scan is finished.

A task registers the units it creates in the same transaction in which it marks its own unit done, and sends
their messages only after that commit. So at every commit the pending units are exactly the work still to do,
a scan whose last unit is done is finished exactly once (the scan row is locked for that check), and a task
that is delivered twice finds its unit done and its children registered, and only sends messages again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.db.models import FailedFile, Scan, ScanFailure, ScanUnit
from worker_app.db.session import transaction
from worker_app.paths import display_path

COUNTS = ("discovered", "unchanged", "extracted", "inserted", "failed", "removed")


@dataclass(frozen=True)
class Failure:
    path: str
    stage: str
    reason: str
    # The file's size and mtime when it failed, where known: an unchanged file is not tried again.
    size_bytes: int | None = None
    mtime: float | None = None

    def as_message(self) -> list:
        return [self.path, self.stage, self.reason, self.size_bytes, self.mtime]

    def as_row(self, scan_id: int) -> dict:
        return {"scan_id": scan_id, "path": display_path(self.path), "stage": self.stage,
                "reason": self.reason.replace("\x00", "")[:2000]}


def register_units(session: Session, scan_id: int, units: list[tuple[str, str]]) -> None:
    """Record (key, kind) units as pending; a unit already known keeps its state."""
    if units:
        rows = [{"scan_id": scan_id, "key": key, "kind": kind} for key, kind in units]
        session.execute(insert(ScanUnit).values(rows).on_conflict_do_nothing())


def record_failures(session: Session, scan_id: int, failures: list[Failure]) -> None:
    if not failures:
        return
    rows = list({(f.path, f.stage): f.as_row(scan_id) for f in failures}.values())
    statement = insert(ScanFailure).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_scan_failures_scan_path_stage", set_={"reason": statement.excluded.reason}
        )
    )
    known = {
        f.path: {"path": display_path(f.path), "folder": display_path(os.path.dirname(f.path)),
                 "size_bytes": f.size_bytes, "mtime": f.mtime, "stage": f.stage,
                 "reason": f.as_row(scan_id)["reason"], "scan_id": scan_id}
        for f in failures if f.size_bytes is not None and f.mtime is not None
    }
    if known:
        statement = insert(FailedFile).values(sorted(known.values(), key=lambda row: row["path"]))
        session.execute(statement.on_conflict_do_update(
            index_elements=["path"],
            set_={name: statement.excluded[name] for name in ("size_bytes", "mtime", "stage", "reason", "scan_id")},
        ))


def count_delivery(scan_id: int, key: str) -> int:
    """Count one more delivery of a unit's message, committed at once so that it survives the worker dying."""
    with transaction() as session:
        deliveries = session.execute(
            update(ScanUnit)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
            .values(deliveries=ScanUnit.deliveries + 1)
            .returning(ScanUnit.deliveries)
        ).scalar()
    return deliveries or 0


def unit_is_done(session: Session, scan_id: int, key: str) -> bool:
    state = session.execute(
        select(ScanUnit.state).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
    ).scalar()
    return state == "done"


def complete_unit(session: Session, scan_id: int, key: str, **counts: int) -> bool:
    """Mark a unit done with its figures; True when that was the scan's last pending unit, in which case the
    caller sends ``cleanup_finish_scan`` after the commit."""
    unknown = set(counts) - set(COUNTS)
    if unknown:
        raise ValueError(f"unknown unit counts: {sorted(unknown)}")
    session.execute(
        update(ScanUnit)
        .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        .values(state="done", updated_at=func.now(), **counts)
    )
    status = session.execute(select(Scan.status).where(Scan.id == scan_id).with_for_update()).scalar()
    if status not in ("running", "finalizing"):
        return False
    pending = session.execute(
        select(ScanUnit.key).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending").limit(1)
    ).first()
    if pending is not None:
        return False
    session.execute(update(Scan).where(Scan.id == scan_id).values(status="finalizing"))
    return True


def unit_totals(session: Session, scan_id: int) -> dict[str, int]:
    row = session.execute(
        select(*(func.coalesce(func.sum(getattr(ScanUnit, name)), 0) for name in COUNTS)).where(
            ScanUnit.scan_id == scan_id
        )
    ).one()
    return dict(zip(COUNTS, (int(value) for value in row)))


def progress(session: Session, scan_id: int) -> dict:
    """What `soniquebay status` and the progress bar show: the scan row plus live sums over its units."""
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise LookupError(f"there is no scan {scan_id}")
    if scan.status in ("complete", "failed"):
        totals = {name: getattr(scan, name) for name in COUNTS}
    else:
        totals = unit_totals(session, scan_id)
    pending = session.execute(
        select(ScanUnit.kind, func.count())
        .where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending")
        .group_by(ScanUnit.kind)
    ).all()
    failures = session.execute(select(func.count()).where(ScanFailure.scan_id == scan_id)).scalar()
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
    }


def _now(session: Session):
    return session.execute(select(func.now())).scalar()
