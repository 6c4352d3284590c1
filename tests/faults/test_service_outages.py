"""The services a scan needs, lost in the middle of it: the broker Redis killed (kill -9) and restarted from its
AOF, the result Redis black-holed or gone, PostgreSQL stopped for a while. Each scan completes, with the catalogue
exact, no unit closed as failed, and (the visibility and stall timeouts being an hour here) in minutes: what brings
the scan back is the relay and the retries, not a timeout."""
from __future__ import annotations

import json
import re
import signal
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.report import record
from tests.faults.stack import (
    Timer,
    assert_catalogue_exact,
    engine_of,
    finish,
    newest_scan_id,
    scan,
    scan_started_after,
    start_scan,
    unit_failures,
    wait_until_under_way,
)
from tests.services import wait_for
from worker_app.db.models import ScanUnit

N_FILES = 400


def _newest_messages(stack, queue: str, count: int) -> list[str]:
    """Take the ``count`` messages most recently pushed on a queue's lists, as a broker that lost the last second
    of its AOF would; returns their units' keys."""
    taken = []
    for priority in range(10):
        name = queue if priority == 0 else f"{queue}:{priority}"
        while len(taken) < count:
            raw = stack.broker.cli("LPOP", name)
            if not raw:
                break
            match = re.match(r"\[\d+, '([^']+)'", json.loads(raw)["headers"]["argsrepr"])
            taken.append(match.group(1))
    return taken


def test_the_broker_killed_and_restarted_mid_scan(faults, workspace):
    stack, root = faults
    engine = engine_of(stack)
    baseline_library = make_library(root / "broker-baseline", n_files=N_FILES, seed=301, odd_file_names=False)
    with Timer() as baseline:
        assert_catalogue_exact(engine, baseline_library, scan(stack, baseline_library.root))

    library = make_library(root / "broker", n_files=N_FILES, seed=302, odd_file_names=False)
    with Timer() as faulty:
        previous = newest_scan_id(engine)
        process = start_scan(stack, library.root)
        scan_id = scan_started_after(engine, previous)
        wait_until_under_way(stack, engine, scan_id, 0.3)
        lost = _newest_messages(stack, "extract", 2)  # the AOF's last second, lost with the crash
        stack.broker.crash()
        time.sleep(2)
        stack.broker.start()
        summary = finish(stack, process)
    assert_catalogue_exact(engine, library, summary)
    assert unit_failures(engine, scan_id) == []
    with Session(engine) as session:
        states = dict(session.execute(select(ScanUnit.key, ScanUnit.state).where(
            ScanUnit.scan_id == scan_id, ScanUnit.key.in_(lost))).all())
    assert states == {key: "done" for key in lost}
    record("broker Redis killed (-9) and restarted from its AOF, 2 messages lost with it", injected=1,
           completed=1, lost_tracks=0, duplicates=0, unit_failures=0, seconds=round(faulty.seconds, 1),
           baseline_seconds=round(baseline.seconds, 1), files=N_FILES)


def test_the_result_redis_black_holed_or_gone(faults):
    stack, root = faults
    engine = engine_of(stack)
    libraries = [make_library(root / f"cache-{name}", n_files=200, seed=310 + i, odd_file_names=False)
                 for i, name in enumerate(("baseline", "stopped", "gone"))]
    with Timer() as baseline:
        assert_catalogue_exact(engine, libraries[0], scan(stack, libraries[0].root))

    stack.cache.signal(signal.SIGSTOP)  # connections open, nothing answers: a black hole
    try:
        with Timer() as black_holed:
            assert_catalogue_exact(engine, libraries[1], scan(stack, libraries[1].root))
    finally:
        stack.cache.signal(signal.SIGCONT)
    stack.cache.crash()
    try:
        with Timer() as gone:
            assert_catalogue_exact(engine, libraries[2], scan(stack, libraries[2].root))
    finally:
        stack.cache.start()
    # Nothing waits on the result Redis: the scans go at the speed of the one before (ratios within this run).
    assert black_holed.seconds < 3 * baseline.seconds + 5, (black_holed.seconds, baseline.seconds)
    assert gone.seconds < 3 * baseline.seconds + 5, (gone.seconds, baseline.seconds)
    record("result Redis black-holed (SIGSTOP)", injected=1, completed=1, lost_tracks=0, duplicates=0,
           unit_failures=0, seconds=round(black_holed.seconds, 1), baseline_seconds=round(baseline.seconds, 1),
           files=200)
    record("result Redis killed", injected=1, completed=1, lost_tracks=0, duplicates=0, unit_failures=0,
           seconds=round(gone.seconds, 1), baseline_seconds=round(baseline.seconds, 1), files=200)


DATABASE_DOWN_SECONDS = 40


def test_postgresql_stopped_mid_scan_then_started(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "database-down", n_files=N_FILES, seed=320, odd_file_names=False)
    with Timer() as faulty:
        previous = newest_scan_id(engine)
        process = start_scan(stack, library.root)
        scan_id = scan_started_after(engine, previous)
        wait_until_under_way(stack, engine, scan_id, 0.3)
        engine.dispose()
        stack.postgres.stop()
        time.sleep(DATABASE_DOWN_SECONDS)
        # The command line is still waiting, and says why nothing moves.
        assert process.poll() is None
        stack.postgres.start_again()
        out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err + out + stack.diagnostics()
    assert "database is unreachable" in err and "still waiting" in err, err
    summary = json.loads(out)
    assert_catalogue_exact(engine, library, summary)
    assert unit_failures(engine, scan_id) == []
    with Session(engine) as session:
        retried = session.execute(select(func.count()).where(ScanUnit.scan_id == scan_id,
                                                             ScanUnit.last_error.is_not(None))).scalar()
    assert retried == 0, "a unit still shows a passing error after it was done"
    record(f"PostgreSQL stopped for {DATABASE_DOWN_SECONDS} s mid-scan", injected=1, completed=1, lost_tracks=0,
           duplicates=0, unit_failures=0, seconds=round(faulty.seconds, 1), files=N_FILES)
    wait_for(lambda: stack.supervisor.all_running(), 30, "every worker program RUNNING")
