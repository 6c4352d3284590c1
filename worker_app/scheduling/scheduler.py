"""Scheduled rescans: each configured root (SONIQUEBAY_SCAN_SCHEDULES) is scanned at the times of its cron
expression, read in SONIQUEBAY_TIMEZONE.

The state is in PostgreSQL (``scan_schedules``), not in the scheduler: each root's next run due. A tick claims a
due run with one ``UPDATE ... WHERE next_run_at = <the value it read>`` in the same transaction that records the
scan (or the skip) and the run (``scan_schedule_runs``, whose key refuses a second row for one due time). So:

- a run is started once, however many schedulers tick: the second one's UPDATE finds the row moved on;
- a scheduler restarted (or down for a while) runs what fell due meanwhile once, at its first tick, then goes on
  with the first time after now: runs missed while it was down become one run, not a burst (a rescan sees every
  change since the last one anyway);
- a run that finds a scan of its root queued or under way is skipped (recorded as such) and the next one is
  planned as usual: scheduled scans of a root never overlap and never queue up behind each other.

Scans start through the same path as `soniquebay scan` (pipeline/scan.py record_scan + send_start). The scan is
sent to the broker after the commit; a scheduler that dies between the two leaves a queued scan no message will
start, so a scheduler sends again, when it starts, the scans its runs started that are still queued and waiting
for nothing (a duplicate start message finds the scan running and changes nothing).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import OperationalError

from worker_app.db.models import Scan, ScanSchedule, ScanScheduleRun
from worker_app.db.session import rowcount, transaction
from worker_app.db.statuses import ScanStatus
from worker_app.pipeline.ledger import publish
from worker_app.pipeline.scan import StartFailed, active_scans_of, record_scan, scan_directory_parallel, send_start

log = logging.getLogger(__name__)

# The longest a scheduler sleeps between ticks (it wakes sooner for a run due sooner).
MAX_SLEEP = 60.0


@dataclass(frozen=True)
class Run:
    """What a tick did for one root: ``outcome`` is started, skipped or failed."""

    root: str
    due_at: datetime
    outcome: str
    scan_id: int | None = None
    detail: str | None = None


def next_after(expression: str, moment: datetime, zone: ZoneInfo) -> datetime:
    """The first time of ``expression`` strictly after ``moment``, in ``zone`` (daylight saving included)."""
    following: datetime = croniter(expression, moment.astimezone(zone)).get_next(datetime)
    return following


def sync(schedules: tuple[tuple[str, str], ...], now: datetime, zone: ZoneInfo) -> None:
    """Register the configured roots not yet known, and plan again those whose expression changed (from now).
    A root no longer configured keeps its row and history, and is no longer run."""
    with transaction() as session:
        for root, expression in schedules:
            first = next_after(expression, now, zone)
            session.execute(insert(ScanSchedule).values(root=root, expression=expression, next_run_at=first)
                            .on_conflict_do_nothing(index_elements=["root"]))
            session.execute(update(ScanSchedule)
                            .where(ScanSchedule.root == root, ScanSchedule.expression != expression)
                            .values(expression=expression, next_run_at=first, updated_at=func.now()))


def _run_if_due(root: str, expression: str, now: datetime, zone: ZoneInfo) -> Run | None:
    start = None
    with transaction() as session:
        row = session.execute(select(ScanSchedule.next_run_at, ScanSchedule.expression)
                              .where(ScanSchedule.root == root)).one_or_none()
        if row is None or row.expression != expression or row.next_run_at > now:
            return None
        due = row.next_run_at
        claimed = rowcount(session.execute(
            update(ScanSchedule).where(ScanSchedule.root == root, ScanSchedule.next_run_at == due)
            .values(next_run_at=next_after(expression, max(now, due), zone), last_run_at=due,
                    updated_at=func.now())
        ))
        if not claimed:
            return None  # another scheduler claimed this run first
        # Under the root's start lock (held to the commit): a `soniquebay scan` of the root cannot slip in between.
        same_root = [scan for scan in active_scans_of(session, root) if scan.root == root]
        if same_root:
            run = Run(root, due, "skipped", None,
                      f"scan {same_root[-1].id} of this root is {same_root[-1].status}")
        else:
            start = record_scan(session, root)
            run = Run(root, due, "started", start.scan_id)
        # claimed_at is the tick's clock, from which the next run was planned.
        session.add(ScanScheduleRun(root=root, due_at=due, claimed_at=now, outcome=run.outcome, scan_id=run.scan_id,
                                    detail=run.detail))
        values: dict[str, str | int] = {"last_outcome": run.outcome}
        if run.scan_id is not None:
            values["last_scan_id"] = run.scan_id
        session.execute(update(ScanSchedule).where(ScanSchedule.root == root).values(**values))
    if start is not None:
        try:
            send_start(start)
        except StartFailed as error:  # the scan is recorded as failed, with the reason
            run = Run(root, due, "failed", start.scan_id, str(error))
            with transaction() as session:
                session.execute(update(ScanScheduleRun)
                                .where(ScanScheduleRun.root == root, ScanScheduleRun.due_at == due)
                                .values(outcome="failed", detail=run.detail))
                session.execute(update(ScanSchedule).where(ScanSchedule.root == root, ScanSchedule.last_run_at == due)
                                .values(last_outcome="failed"))
    return run


def tick(schedules: tuple[tuple[str, str], ...], now: datetime, zone: ZoneInfo) -> list[Run]:
    """One look at every configured schedule at ``now`` (aware): start (or skip) each run due."""
    sync(schedules, now, zone)
    runs = []
    for root, expression in schedules:
        run = _run_if_due(root, expression, now, zone)
        if run is not None:
            runs.append(run)
    return runs


def send_lost_starts() -> list[int]:
    """Send again the scans scheduled runs started that are still queued and wait for no other scan: their
    start message may have died with a scheduler between its commit and the send."""
    with transaction() as session:
        ids = session.execute(
            select(Scan.id).join(ScanScheduleRun, ScanScheduleRun.scan_id == Scan.id)
            .where(ScanScheduleRun.outcome == "started", Scan.status == ScanStatus.QUEUED, Scan.after_scan_id.is_(None))
        ).scalars().all()
    for scan_id in ids:
        publish(scan_directory_parallel.name, [scan_id])
    return list(ids)


def seconds_to_next_run(schedules: tuple[tuple[str, str], ...], now: datetime) -> float:
    roots = [root for root, _ in schedules]
    if not roots:
        return MAX_SLEEP
    with transaction() as session:
        soonest = session.execute(select(func.min(ScanSchedule.next_run_at))
                                  .where(ScanSchedule.root.in_(roots))).scalar()
    if soonest is None:
        return MAX_SLEEP
    return min(MAX_SLEEP, max(0.0, (soonest - now).total_seconds()))


def run_forever(schedules: tuple[tuple[str, str], ...], zone: ZoneInfo,
                clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                report: Callable[[Run], None] = lambda run: None) -> None:
    """The scheduler's loop: tick, then sleep until the next run is due (at most MAX_SLEEP). While the database
    is unreachable it waits and tries again: the runs that fall due meanwhile run once when it is back."""
    resent = send_lost_starts()
    if resent:
        log.warning("sent again the start of scheduled scan(s) %s, still queued", resent)
    while True:
        try:
            for run in tick(schedules, clock(), zone):
                report(run)
            pause = seconds_to_next_run(schedules, clock())
        except OperationalError as error:
            log.warning("the catalogue database is unreachable (%s): trying again in 5 s",
                        str(error.orig).strip().splitlines()[0])
            pause = 5.0
        # Wake a little after the due time, never in a busy loop.
        time.sleep(max(0.05, pause + 0.01))


def listing(schedules: tuple[tuple[str, str], ...], now: datetime, zone: ZoneInfo) -> list[dict[str, Any]]:
    """Each configured schedule with its next and last runs (and rows of roots no longer configured)."""
    configured = dict(schedules)
    with transaction() as session:
        rows = {row.root: row for row in session.execute(
            select(ScanSchedule.root, ScanSchedule.expression, ScanSchedule.next_run_at, ScanSchedule.last_run_at,
                   ScanSchedule.last_outcome, ScanSchedule.last_scan_id, Scan.status.label("last_scan_status"))
            .outerjoin(Scan, Scan.id == ScanSchedule.last_scan_id)
        )}
        runs = dict(session.execute(select(ScanScheduleRun.root, func.count()).group_by(ScanScheduleRun.root)).all())
        skipped = dict(session.execute(select(ScanScheduleRun.root, func.count())
                                       .where(ScanScheduleRun.outcome == "skipped")
                                       .group_by(ScanScheduleRun.root)).all())

    def moment(value: datetime | None) -> str | None:
        return value.astimezone(zone).isoformat() if value is not None else None

    out = []
    for root in sorted(set(configured) | set(rows)):
        row = rows.get(root)
        expression = configured.get(root, row.expression if row else None)
        planned = row is not None and row.expression == expression
        next_run_at = None
        if root in configured:
            # Not yet seen by the scheduler (or its expression just changed): when it will be planned for.
            next_run_at = row.next_run_at if row is not None and planned else next_after(configured[root], now, zone)
        out.append({
            "root": root, "expression": expression, "configured": root in configured,
            # The scheduler has seen it (and planned its next run in the catalogue).
            "registered": planned,
            "next_run_at": moment(next_run_at),
            "last_run_at": moment(row.last_run_at) if row else None,
            "last_outcome": row.last_outcome if row else None,
            "last_scan_id": row.last_scan_id if row else None,
            "last_scan_status": row.last_scan_status if row else None,
            "runs": runs.get(root, 0), "skipped": skipped.get(root, 0),
        })
    return out
