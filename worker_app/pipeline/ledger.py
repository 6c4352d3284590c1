"""The scan ledger: which pieces of a scan's work exist, which are done, and when the scan is finished.

A task registers the units it creates in the same transaction in which it marks its own unit done, and sends
their messages only after that commit. So at every commit the pending units are exactly the work still to do,
a scan whose last unit is done is finished exactly once (the scan row is locked for that check), and a task
that is delivered twice finds its unit done and its children registered, and only sends again the messages of
the children no worker has started (kept with the units: the first delivery may have died before sending them).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.celery_app import app
from worker_app.db.models import FailedFile, Scan, ScanFailure, ScanUnit
from worker_app.db.session import transaction
from worker_app.paths import display_path

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Unit:
    """A piece of a scan's work: its ledger key and kind, and the task message that does it."""

    key: str
    kind: str
    task: str
    args: list

    def send(self) -> None:
        app.send_task(self.task, args=self.args)


def _stored_message(task: str, args: list) -> str:
    """A task message as the ledger keeps it (scan_units.message), to be sent again by ``_send_stored``."""
    return json.dumps({"task": task, "args": args})


def _send_stored(message: str) -> None:
    stored = json.loads(message)
    app.send_task(stored["task"], args=stored["args"])


def register_units(session: Session, scan_id: int, parent: str, units: list[Unit]) -> None:
    """Record units as pending, with their messages; a unit already known keeps its state. ``parent`` is the key of
    the unit whose task creates them ('' for the scan's first unit)."""
    if units:
        rows = [{"scan_id": scan_id, "key": unit.key, "kind": unit.kind, "parent": parent,
                 "message": _stored_message(unit.task, unit.args)} for unit in units]
        session.execute(insert(ScanUnit).values(rows).on_conflict_do_nothing())


def send_after_commit(scan_id: int, units: list[Unit], finished: bool) -> None:
    """Send the messages of units just committed, then, when that commit closed the scan's last unit, its end."""
    for unit in units:
        unit.send()
    if finished:
        app.send_task("cleanup_finish_scan", args=[scan_id])


def resend_unstarted(scan_id: int, parent: str) -> int:
    """For a task delivered again after its unit was done: send again the messages of the units it registered
    that no worker has started, and the scan's end if it is due. The worker that did the unit may have died after
    its commit and before sending them; if it did send them, the duplicates find their units done or run
    idempotently."""
    with transaction() as session:
        rows = session.execute(
            select(ScanUnit.message).where(
                ScanUnit.scan_id == scan_id, ScanUnit.parent == parent, ScanUnit.state == "pending",
                ScanUnit.deliveries == 0, ScanUnit.message.is_not(None),
            ).order_by(ScanUnit.key)
        ).scalars().all()
        status = session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
    for message in rows:
        _send_stored(message)
    if status == "finalizing":
        app.send_task("cleanup_finish_scan", args=[scan_id])
    if rows:
        log.warning("scan %s: sent %d unstarted units of %r again", scan_id, len(rows), parent or "the scan")
    return len(rows)


def resend_stalled(stall_timeout: int) -> dict[int, int]:
    """Send again what scans that stopped moving are waiting for; returns {scan id: messages sent}.

    A scan is stalled when none of its units changed (delivered, done) for ``stall_timeout`` seconds, or when it
    has been queued that long. It then gets again: its start if it is queued, the messages of its pending units if
    it is running (which restarts their clock, so the next check leaves them alone for another period), its end if
    it is finalizing. Concurrent checks take different scans (SKIP LOCKED)."""
    cutoff = func.now() - timedelta(seconds=stall_timeout)
    last_move = (select(func.max(ScanUnit.updated_at)).where(ScanUnit.scan_id == Scan.id)
                 .correlate(Scan).scalar_subquery())
    to_send: list[tuple[int, str]] = []  # (scan id, stored message)
    with transaction() as session:
        stalled = session.execute(
            select(Scan.id, Scan.status).where(or_(
                and_(Scan.status == "queued", Scan.requested_at < cutoff),
                and_(Scan.status.in_(("running", "finalizing")),
                     func.coalesce(last_move, Scan.requested_at) < cutoff),
            )).order_by(Scan.id).with_for_update(key_share=True, skip_locked=True)
        ).all()
        for scan_id, status in stalled:
            if status == "queued":
                to_send.append((scan_id, _stored_message("scan_directory_parallel", [scan_id])))
            elif status == "finalizing":
                to_send.append((scan_id, _stored_message("cleanup_finish_scan", [scan_id])))
            else:
                messages = session.execute(
                    update(ScanUnit)
                    .where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending", ScanUnit.message.is_not(None))
                    .values(updated_at=func.now())
                    .returning(ScanUnit.message)
                ).scalars().all()
                to_send.extend((scan_id, message) for message in sorted(messages))
    sent: dict[int, int] = {}
    for scan_id, message in to_send:
        _send_stored(message)
        sent[scan_id] = sent.get(scan_id, 0) + 1
    for scan_id, count in sent.items():
        log.warning("scan %s made no progress for %d s: sent %d of its messages again (lost by the broker?)",
                    scan_id, stall_timeout, count)
    return sent


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
            .values(deliveries=ScanUnit.deliveries + 1, updated_at=func.now())
            .returning(ScanUnit.deliveries)
        ).scalar()
    return deliveries or 0


def take_poison(scan_id: int, key: str) -> tuple[int, list[str]]:
    """(deliveries, poison paths) of a unit. A path still marked as being read when the unit comes back is the one
    that killed the worker last time: it joins the unit's poison list, committed at once."""
    with transaction() as session:
        row = session.execute(
            select(ScanUnit.deliveries, ScanUnit.current_path, ScanUnit.poison_paths)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        ).one()
        poison = list(row.poison_paths)
        if row.current_path and row.current_path not in poison:
            poison.append(row.current_path)
            session.execute(
                update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                .values(poison_paths=poison, current_path=None)
            )
    return row.deliveries, poison


def mark_current_path(scan_id: int, key: str, path: str | None) -> None:
    """Commit the path a unit is about to touch (None: done touching), so that its next delivery knows which one
    killed the worker."""
    with transaction() as session:
        session.execute(
            update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
            .values(current_path=display_path(path) if path is not None else None)
        )


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
    # FOR NO KEY UPDATE, not FOR UPDATE: every transaction that closes a unit has already inserted rows that
    # reference the scan (units, failures, folders), which holds a KEY SHARE lock on its row; FOR UPDATE waits for
    # those, so two such transactions deadlocked on each other (seen in the fleet: chunks retried until parked).
    status = session.execute(
        select(Scan.status).where(Scan.id == scan_id).with_for_update(key_share=True)
    ).scalar()
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
