"""The scan ledger: which pieces of a scan's work exist, which are done, and when the scan is finished.

A task registers the units it creates in the same transaction in which it marks its own unit done, and sends
their messages only after that commit. So at every commit the pending units are exactly the work still to do,
a scan whose last unit is done is finished exactly once (the scan row is locked for that check), and a task
that is delivered twice finds its unit done and its children registered, and only sends again the messages of
the children that were never sent (kept with the units, with the time each was sent: the first delivery may have
died before sending them).

A unit's chain of messages (extract -> batch -> insert for a batch of files) moves through stages: each delivery is
counted at its stage (``begin_delivery``), a stage hands the unit to the next after sending its message
(``hand_off``), and a message of a stage the unit has passed is a duplicate. Every message goes out through
``publish``: no task result is ever stored, so the pipeline never waits on the result Redis.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.celery_app import app
from worker_app.db.models import FailedFile, Scan, ScanFailure, ScanUnit
from worker_app.db.session import transaction
from worker_app.paths import display_path

log = logging.getLogger(__name__)

COUNTS = ("discovered", "unchanged", "extracted", "inserted", "failed", "removed")

# Units a scan starts but does not wait for: audio analysis and what follows from it run after the catalogue is
# complete (tag reading goes first), so a scan is complete when its other units are done.
BACKGROUND_KINDS = ("analysis", "audio-vector", "audio-album")

# A failure's kind: a verdict on the content is remembered for the file's (size, mtime); a passing error is not.
VERDICT, PASSING = "verdict", "passing"


def publish(task: str, args: list) -> None:
    """Send one task message. Results are never stored (the pipeline does not wait on them), so sending needs only
    the broker: a lost or black-holed result Redis costs nothing."""
    app.send_task(task, args=args, ignore_result=True)


@dataclass(frozen=True)
class Failure:
    path: str
    stage: str
    reason: str
    # The file's size and mtime when it failed, where known: an unchanged file whose failure is a verdict is not
    # tried again.
    size_bytes: int | None = None
    mtime: float | None = None
    kind: str = VERDICT

    @property
    def remembered(self) -> bool:
        return self.kind == VERDICT and self.size_bytes is not None and self.mtime is not None

    def as_message(self) -> list:
        return [self.path, self.stage, self.reason, self.size_bytes, self.mtime, self.kind]

    def as_row(self, scan_id: int) -> dict:
        return {"scan_id": scan_id, "path": display_path(self.path), "stage": self.stage,
                "reason": self.reason.replace("\x00", "")[:2000], "kind": self.kind}


@dataclass(frozen=True)
class Unit:
    """A piece of a scan's work: its ledger key and kind, and the task message that does it."""

    key: str
    kind: str
    task: str
    args: list

    def send(self) -> None:
        publish(self.task, self.args)


def _stored_message(task: str, args: list) -> str:
    """A task message as the ledger keeps it (scan_units.message), to be sent again by ``send_stored``."""
    return json.dumps({"task": task, "args": args})


def send_stored(message: str) -> None:
    stored = json.loads(message)
    publish(stored["task"], stored["args"])


def mark_sent(session: Session, scan_id: int, keys: list[str]) -> None:
    if keys:
        session.execute(update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key.in_(keys))
                        .values(sent_at=func.now()))


def register_units(session: Session, scan_id: int, parent: str, units: list[Unit]) -> None:
    """Record units as pending, with their messages; a unit already known keeps its state. ``parent`` is the key of
    the unit whose task creates them ('' for the scan's first unit)."""
    if units:
        rows = [{"scan_id": scan_id, "key": unit.key, "kind": unit.kind, "parent": parent,
                 "message": _stored_message(unit.task, unit.args)} for unit in units]
        session.execute(insert(ScanUnit).values(rows).on_conflict_do_nothing())


def send_after_commit(scan_id: int, units: list[Unit], finished: bool) -> None:
    """Send the messages of units just committed and record that they went; then, when that commit closed the
    scan's last unit, send its end. A send that fails leaves its unit unsent, for the relay."""
    for unit in units:
        unit.send()
    if units:
        with transaction() as session:
            mark_sent(session, scan_id, [unit.key for unit in units])
    if finished:
        publish("cleanup_finish_scan", [scan_id])


def send_unsent(session: Session, *conditions, limit: int | None = None) -> dict[int, list[str]]:
    """Send the pending units matching ``conditions`` that were never sent, and record them as sent (in
    ``session``'s transaction; a unit another sender holds is skipped). Returns {scan id: keys sent}."""
    rows = session.execute(
        select(ScanUnit.scan_id, ScanUnit.key, ScanUnit.message)
        .where(*conditions, ScanUnit.state == "pending", ScanUnit.sent_at.is_(None), ScanUnit.message.is_not(None))
        .order_by(ScanUnit.scan_id, ScanUnit.key).limit(limit).with_for_update(skip_locked=True)
    ).all()
    by_scan: dict[int, list[str]] = {}
    for scan_id, key, message in rows:
        send_stored(message)
        by_scan.setdefault(scan_id, []).append(key)
    for scan_id, keys in by_scan.items():
        mark_sent(session, scan_id, keys)
    return by_scan


def resend_unsent(scan_id: int, parent: str) -> int:
    """For a task delivered again after its unit was done: send the messages of the units it registered that were
    never sent, and the scan's end if it is due. The worker that did the unit may have died after its commit and
    before sending them."""
    with transaction() as session:
        keys = send_unsent(session, ScanUnit.scan_id == scan_id, ScanUnit.parent == parent).get(scan_id, [])
        status = session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
    if status == "finalizing":
        publish("cleanup_finish_scan", [scan_id])
    if keys:
        log.warning("scan %s: sent %d unsent units of %r", scan_id, len(keys), parent or "the scan")
    return len(keys)


def reset_units(session: Session, scan_id: int, keys: list[str] | None = None) -> list[tuple[str, str]]:
    """Make pending units start their chain again from its first stage, as unsent: their stage and delivery count
    start afresh (a message sent again is no worker's death) and their clock restarts. ``keys`` None: every
    pending unit of the scan. Returns (key, stored message) to send once this transaction has committed (until
    then, or if the sender dies, they are unsent units, which the relay sends)."""
    condition = [ScanUnit.scan_id == scan_id, ScanUnit.state == "pending", ScanUnit.message.is_not(None)]
    if keys is not None:
        condition.append(ScanUnit.key.in_(keys))
    rows = session.execute(
        update(ScanUnit).where(*condition)
        .values(stage=0, deliveries=0, deaths=0, sent_at=None, updated_at=func.now())
        .returning(ScanUnit.key, ScanUnit.message)
    ).all()
    return sorted((key, message) for key, message in rows)


def send_units(scan_id: int, stored: list[tuple[str, str]]) -> None:
    """Send (key, stored message) pairs, then record them as sent."""
    for _, message in stored:
        send_stored(message)
    if stored:
        with transaction() as session:
            mark_sent(session, scan_id, [key for key, _ in stored])


def resend_stalled(stall_timeout: int) -> dict[int, int]:
    """Send again what scans that stopped moving are waiting for; returns {scan id: messages sent}.

    A scan is stalled when none of its units changed (delivered, done) for ``stall_timeout`` seconds, or when it
    has been queued that long. It then gets again: its start if it is queued, the messages of its pending units if
    it is running (which restarts their clock, so the next check leaves them alone for another period), its end if
    it is finalizing. Concurrent checks take different scans (SKIP LOCKED)."""
    cutoff = func.now() - timedelta(seconds=stall_timeout)
    last_move = (select(func.max(ScanUnit.updated_at)).where(ScanUnit.scan_id == Scan.id)
                 .correlate(Scan).scalar_subquery())
    sent: dict[int, int] = {}
    resets: dict[int, list[tuple[str, str]]] = {}
    with transaction() as session:
        stalled = session.execute(
            select(Scan.id, Scan.status).where(or_(
                and_(Scan.status == "queued", Scan.after_scan_id.is_(None), Scan.requested_at < cutoff),
                and_(Scan.status.in_(("running", "finalizing")),
                     func.coalesce(last_move, Scan.requested_at) < cutoff),
            )).order_by(Scan.id).with_for_update(key_share=True, skip_locked=True)
        ).all()
        for scan_id, status in stalled:
            if status == "queued":
                publish("scan_directory_parallel", [scan_id])
                sent[scan_id] = 1
            elif status == "finalizing":
                publish("cleanup_finish_scan", [scan_id])
                sent[scan_id] = 1
            else:
                resets[scan_id] = reset_units(session, scan_id)
                sent[scan_id] = len(resets[scan_id])
    for scan_id, stored in resets.items():
        send_units(scan_id, stored)
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
            constraint="uq_scan_failures_scan_path_stage",
            set_={"reason": statement.excluded.reason, "kind": statement.excluded.kind},
        )
    )
    # Only a verdict on the content is remembered: a passing error must not stop the next scan from reading the
    # file again.
    known = {
        f.path: {"path": display_path(f.path), "folder": display_path(os.path.dirname(f.path)),
                 "size_bytes": f.size_bytes, "mtime": f.mtime, "stage": f.stage,
                 "reason": f.as_row(scan_id)["reason"], "scan_id": scan_id}
        for f in failures if f.remembered
    }
    if known:
        statement = insert(FailedFile).values(sorted(known.values(), key=lambda row: row["path"]))
        session.execute(statement.on_conflict_do_update(
            index_elements=["path"],
            set_={name: statement.excluded[name] for name in ("size_bytes", "mtime", "stage", "reason", "scan_id")},
        ))


@dataclass(frozen=True)
class Delivery:
    """What a delivery of a unit's message found: ``action`` is "run", "done" (the unit is done: a duplicate),
    "passed" (the unit is at a later stage: a duplicate of this stage's message) or "missing" (no such unit)."""

    action: str
    deliveries: int = 0
    deaths: int = 0


def begin_delivery(scan_id: int, key: str, stage: int, retries: int) -> Delivery:
    """Count one more delivery of a unit's message at ``stage``, committed at once so that it survives the worker
    dying. The first delivery at a stage counts 1; a message of an earlier stage than the unit's is not run. The
    same message delivered again (same ``retries``, Celery's retry count) means the worker that had it died."""
    same_stage = ScanUnit.stage == stage
    came_back = and_(same_stage, ScanUnit.deliveries > 0, ScanUnit.last_retries == retries)
    # A unit of a cancelled scan is never run, but for the follow-ups of tracks already catalogued: checked in the
    # same statement that counts the delivery (a lookup of the scan's row by its key), so that no delivery starts
    # work after the cancel committed.
    not_cancelled = or_(ScanUnit.kind.in_(FOLLOW_UPS),
                        ~exists().where(Scan.id == scan_id, Scan.status == CANCELLED))
    with transaction() as session:
        row = session.execute(
            update(ScanUnit)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key, ScanUnit.state == "pending",
                   ScanUnit.stage <= stage, not_cancelled)
            .values(deaths=case((came_back, ScanUnit.deaths + 1), (same_stage, ScanUnit.deaths), else_=0),
                    redeliveries=case((came_back, ScanUnit.redeliveries + 1), else_=ScanUnit.redeliveries),
                    deliveries=case((same_stage, ScanUnit.deliveries + 1), else_=1),
                    last_retries=retries, stage=stage, updated_at=func.now())
            .returning(ScanUnit.deliveries, ScanUnit.deaths)
        ).first()
        if row is not None:
            return Delivery("run", row.deliveries, row.deaths)
        found = session.execute(
            select(ScanUnit.state, Scan.status).join(Scan, Scan.id == ScanUnit.scan_id)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        ).first()
        if found is not None and found.state == "pending" and found.status == CANCELLED:
            # Registered after the cancel (by a unit that was running then): dropped like the others.
            _drop_pending(session, scan_id)
            return Delivery(CANCELLED)
    if found is None:
        return Delivery("missing")
    return Delivery({"done": "done", CANCELLED: CANCELLED}.get(found.state, "passed"))


def hand_off(scan_id: int, key: str, stage: int) -> None:
    """Record that the unit's message for ``stage`` was just sent (the previous stage is over): its deliveries
    count from zero there. Never moves a unit back (the next stage may already have begun)."""
    with transaction() as session:
        session.execute(
            update(ScanUnit)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key, ScanUnit.state == "pending",
                   ScanUnit.stage < stage)
            .values(stage=stage, deliveries=0, deaths=0, sent_at=func.now(), updated_at=func.now())
        )


def note_passing_error(scan_id: int, key: str, error: str) -> None:
    """Keep the passing error a unit met (for `soniquebay status`); best effort, the database may be what failed."""
    with transaction() as session:
        session.execute(update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                        .values(last_error=error[:500]))


def take_poison(scan_id: int, key: str) -> list[str]:
    """The poison paths of a unit. A path still marked as being read when the unit comes back is the one
    that killed the worker last time: it joins the unit's poison list, committed at once."""
    with transaction() as session:
        row = session.execute(
            select(ScanUnit.current_path, ScanUnit.poison_paths)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        ).one()
        poison = list(row.poison_paths)
        if row.current_path and row.current_path not in poison:
            poison.append(row.current_path)
            session.execute(
                update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                .values(poison_paths=poison, current_path=None)
            )
    return poison


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
        .values(state="done", updated_at=func.now(), last_error=None, **counts)
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
        _drop_pending(session, scan_id)
        _store_totals(session, scan_id)
        return False
    if status not in ("running", "finalizing"):
        return False
    pending = session.execute(
        select(ScanUnit.key).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending",
                                   ScanUnit.kind.not_in(BACKGROUND_KINDS)).limit(1)
    ).first()
    if pending is not None:
        return False
    session.execute(update(Scan).where(Scan.id == scan_id).values(status="finalizing"))
    return True


CANCELLED = "cancelled"
# The statuses of a scan that has not ended: a scan in one of them can be cancelled.
ACTIVE = ("queued", "running", "finalizing")
# Units that finish tracks already catalogued (album covers, search vectors, audio analysis): they still run when
# their scan is cancelled, since the next scan finds those files unchanged and would never do them.
FOLLOW_UPS = ("enrich", "vectorize", *BACKGROUND_KINDS)


def _drop_pending(session: Session, scan_id: int) -> int:
    return session.execute(
        update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending",
                               ScanUnit.kind.not_in(FOLLOW_UPS))
        .values(state=CANCELLED, updated_at=func.now())
    ).rowcount


def _store_totals(session: Session, scan_id: int) -> dict[str, int]:
    totals = unit_totals(session, scan_id)
    session.execute(update(Scan).where(Scan.id == scan_id).values(**totals))
    return totals


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
    dropped = _drop_pending(session, scan_id)
    status = session.execute(
        select(Scan.status).where(Scan.id == scan_id).with_for_update(key_share=True)
    ).scalar()
    if status not in ACTIVE:
        # It ended meanwhile (its last unit closed and its end ran): it had no pending unit to drop.
        return Cancelled(scan_id, status)
    dropped += _drop_pending(session, scan_id)
    _store_totals(session, scan_id)
    session.execute(update(Scan).where(Scan.id == scan_id)
                    .values(status=CANCELLED, finished_at=func.now()))
    return Cancelled(scan_id, status, dropped)


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
    if scan.status in ("complete", "failed", CANCELLED):
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


def _now(session: Session):
    return session.execute(select(func.now())).scalar()
