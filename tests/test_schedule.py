"""Scheduled rescans (worker_app/scheduling/): a schedule's runs start real scans on the supervisor-run workers, once
per period, never while a scan of the root is under way, and a scheduler killed and started again neither misses
nor doubles a run. `soniquebay schedule` shows them."""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.audio_factory import make_library
from tests.services import VENV_BIN, wait_for
from worker_app.db.models import Scan, ScanSchedule, ScanScheduleRun
from worker_app.scheduling import scheduler as scheduler_module
from worker_app.scheduling.scheduler import next_after, send_lost_starts, tick

pytestmark = pytest.mark.timeout(600)

ZONE = ZoneInfo("Europe/Paris")  # the stack's SONIQUEBAY_TIMEZONE (the default)
EVERY_TEN_MINUTES = "*/10 * * * *"
# Six fields: seconds last (croniter). Short enough for a test to see several runs on the real clock.
EVERY_FOUR_SECONDS = "* * * * * */4"


def runs_of(db_session_factory, root: str) -> list[ScanScheduleRun]:
    with db_session_factory() as session:
        return list(session.execute(select(ScanScheduleRun).where(ScanScheduleRun.root == root)
                                    .order_by(ScanScheduleRun.due_at)).scalars())


def scans_of(db_session_factory, root: str) -> list[Scan]:
    with db_session_factory() as session:
        return list(session.execute(select(Scan).where(Scan.root == root).order_by(Scan.id)).scalars())


def assert_never_overlapped(scans: list[Scan]) -> None:
    for earlier, later in zip(scans, scans[1:], strict=False):
        assert earlier.finished_at is not None and later.requested_at >= earlier.finished_at, (
            f"scan {later.id} was requested at {later.requested_at}, before scan {earlier.id} ended "
            f"({earlier.finished_at})")


def test_a_scheduled_scan_fires_once_per_period_and_never_overlaps(stack, library_root, db_session_factory):
    library = make_library(library_root / "scheduled", n_files=120, seed=14)
    root = os.path.realpath(library.root)
    schedules = ((root, EVERY_TEN_MINUTES),)
    # The scheduler's clock is injected: periods of ten minutes pass in a few ticks, while the scans run for real.
    start = datetime.now(UTC)
    assert tick(schedules, start, ZONE) == []  # registers the schedule; its first run is the next time
    first = next_after(EVERY_TEN_MINUTES, start, ZONE)
    assert tick(schedules, first - timedelta(seconds=1), ZONE) == []

    # Two schedulers tick at the due time together: the run starts once.
    with ThreadPoolExecutor(2) as pool:
        ticks = list(pool.map(lambda _: tick(schedules, first, ZONE), range(2)))
    started = [run for runs in ticks for run in runs]
    assert [(run.due_at, run.outcome) for run in started] == [(first, "started")]
    first_scan = started[0].scan_id
    assert tick(schedules, first + timedelta(seconds=30), ZONE) == []  # the same period again: nothing

    # The next period falls due while that scan (120 files to read) is under way: skipped, not queued behind it.
    second = next_after(EVERY_TEN_MINUTES, first, ZONE)
    [skipped] = tick(schedules, second, ZONE)
    assert (skipped.due_at, skipped.outcome, skipped.scan_id) == (second, "skipped", None)
    assert f"scan {first_scan} of this root is" in skipped.detail
    stack.wait_for_scan(first_scan, timeout=300)

    # The period after, the root is idle again: a scan starts (late ticks still start the run of its period).
    third = next_after(EVERY_TEN_MINUTES, second, ZONE)
    [again] = tick(schedules, third + timedelta(minutes=3), ZONE)
    assert (again.due_at, again.outcome) == (third, "started")
    stack.wait_for_scan(again.scan_id, timeout=300)

    assert [(run.due_at, run.outcome, run.scan_id) for run in runs_of(db_session_factory, root)] == [
        (first, "started", first_scan), (second, "skipped", None), (third, "started", again.scan_id)]
    scans = scans_of(db_session_factory, root)
    assert [scan.id for scan in scans] == [first_scan, again.scan_id]
    assert [scan.status for scan in scans] == ["complete", "complete"]
    assert scans[1].discovered == scans[0].discovered >= 120  # the rescan saw the same library
    assert_never_overlapped(scans)
    with db_session_factory() as session:
        schedule = session.get(ScanSchedule, root)
        assert (schedule.last_run_at, schedule.last_scan_id, schedule.next_run_at) == (
            third, again.scan_id, next_after(EVERY_TEN_MINUTES, third + timedelta(minutes=3), ZONE))


def start_scheduler(stack, schedules: dict[str, str], log) -> subprocess.Popen:
    env = {**stack.cli_env(), "SONIQUEBAY_SCAN_SCHEDULES": json.dumps(schedules)}
    return subprocess.Popen([str(VENV_BIN / "soniquebay"), "scheduler"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def test_a_scheduler_restart_neither_misses_nor_doubles_a_run(stack, library_root, db_session_factory, tmp_path):
    library = make_library(library_root / "scheduled-often", n_files=12, seed=15)
    root = os.path.realpath(library.root)
    log = (tmp_path / "scheduler.log").open("w")
    scheduler = start_scheduler(stack, {root: EVERY_FOUR_SECONDS}, log)
    try:
        wait_for(lambda: len(runs_of(db_session_factory, root)) >= 3, 60, "three scheduled runs")
        scheduler.kill()  # SIGKILL: no chance to tidy up
        scheduler.wait()
        with db_session_factory() as session:
            planned = session.get(ScanSchedule, root).next_run_at
        # Down for longer than a period: the planned run, and the one after, fall due meanwhile.
        time.sleep(max(0.0, (planned - datetime.now(UTC)).total_seconds()) + 5)
        before = len(runs_of(db_session_factory, root))
        scheduler = start_scheduler(stack, {root: EVERY_FOUR_SECONDS}, log)
        wait_for(lambda: len(runs_of(db_session_factory, root)) >= before + 3, 60, "three more scheduled runs")
    finally:
        scheduler.terminate()
        scheduler.wait()
        log.close()
    runs = runs_of(db_session_factory, root)
    due = [run.due_at for run in runs]
    diagnostics = "\n".join(f"{run.due_at} claimed {run.claimed_at} {run.outcome} {run.scan_id} {run.detail}"
                            for run in runs) + "\n" + (tmp_path / "scheduler.log").read_text()
    # The run the killed scheduler had planned was not missed: the restarted one ran it, late.
    assert planned in due, diagnostics
    late = runs[due.index(planned)]
    assert late.claimed_at > planned + timedelta(seconds=4), diagnostics
    # Every run follows from the one before: the first time of the schedule after it was claimed. So no period
    # was passed over while a scheduler ran, and the periods missed while none ran became one run, not a burst.
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.due_at == next_after(EVERY_FOUR_SECONDS, earlier.claimed_at, ZONE), diagnostics
    # Nothing doubled: each due time once (the key), each started run its own scan, and no other scan of the root.
    started = [run.scan_id for run in runs if run.outcome == "started"]
    assert started and len(set(started)) == len(started), diagnostics
    assert [scan.id for scan in scans_of(db_session_factory, root)] == started, diagnostics
    for scan_id in started:
        stack.wait_for_scan(scan_id, timeout=120)
    assert_never_overlapped(scans_of(db_session_factory, root))
    assert {run.outcome for run in runs} <= {"started", "skipped"}, diagnostics


def test_a_start_lost_between_the_commit_and_the_send_is_sent_when_a_scheduler_starts(
        stack, library_root, db_session_factory, monkeypatch):
    library = make_library(library_root / "scheduled-lost", n_files=8, seed=16)
    root = os.path.realpath(library.root)
    schedules = ((root, EVERY_TEN_MINUTES),)
    start = datetime.now(UTC)
    tick(schedules, start, ZONE)
    due = next_after(EVERY_TEN_MINUTES, start, ZONE)
    # The scheduler dies after its transaction committed the run and the scan, before the message left.
    monkeypatch.setattr(scheduler_module, "send_start", lambda start: None)
    [run] = tick(schedules, due, ZONE)
    monkeypatch.undo()
    assert run.outcome == "started"
    with db_session_factory() as session:
        assert session.get(Scan, run.scan_id).status == "queued"
    # What a scheduler does first when it starts.
    assert send_lost_starts() == [run.scan_id]
    stack.wait_for_scan(run.scan_id, timeout=120)
    assert send_lost_starts() == []  # the scan left the queue: nothing to send again
    assert [scan.id for scan in scans_of(db_session_factory, root)] == [run.scan_id]


def test_soniquebay_schedule_lists_next_and_last_runs(stack, library_root, db_session_factory):
    root = os.path.realpath(library_root / "scheduled")  # scheduled by the first test of this module
    other = os.path.realpath(library_root / "never-run")
    os.makedirs(other, exist_ok=True)
    env = {**stack.cli_env(), "SONIQUEBAY_SCAN_SCHEDULES": json.dumps({root: EVERY_TEN_MINUTES, other: "0 3 * * *"})}

    def schedule(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "soniquebay"), "schedule", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    listed = schedule("--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["root"]: row for row in json.loads(listed.stdout)}
    runs = runs_of(db_session_factory, root)
    assert runs, "the first test of this module schedules this root"
    last = runs[-1]
    with db_session_factory() as session:
        stored = session.get(ScanSchedule, root)
    assert rows[root]["expression"] == EVERY_TEN_MINUTES
    assert datetime.fromisoformat(rows[root]["last_run_at"]) == last.due_at
    assert datetime.fromisoformat(rows[root]["next_run_at"]) == stored.next_run_at
    assert (rows[root]["last_outcome"], rows[root]["last_scan_id"], rows[root]["last_scan_status"]) == (
        "started", last.scan_id, "complete")
    assert (rows[root]["runs"], rows[root]["skipped"]) == (len(runs), sum(r.outcome == "skipped" for r in runs))
    # A root the scheduler has not seen yet: its next run as it will be planned, never run.
    assert rows[other]["last_run_at"] is None and rows[other]["runs"] == 0
    assert datetime.fromisoformat(rows[other]["next_run_at"]).astimezone(ZONE).strftime("%H:%M:%S") == "03:00:00"

    env["COLUMNS"] = "250"  # a terminal wide enough for the whole table (rich reads COLUMNS)
    table = schedule()
    assert table.returncode == 0, table.stderr
    assert root in table.stdout and "*/10 * * * *" in table.stdout and "never" in table.stdout

    env["SONIQUEBAY_SCAN_SCHEDULES"] = json.dumps({root: "every day"})
    refused = schedule()
    assert refused.returncode == 2 and "'every day'" in refused.stderr and "not a cron expression" in refused.stderr
    env["SONIQUEBAY_SCAN_SCHEDULES"] = json.dumps({"/": "0 3 * * *"})
    refused = schedule()
    assert refused.returncode == 2 and "not inside SONIQUEBAY_LIBRARY_ROOTS" in refused.stderr
