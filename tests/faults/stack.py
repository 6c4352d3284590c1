"""The fault tests' stack and the checks they share.

The stack is the single-host system of tests/services.py with the timeouts shrunk so that each fault plays out in
seconds, except the two that would hide a missing fast path: the visibility timeout and the stall timeout stay at an
hour, so a scan that completes in minutes after a fault did not wait for them. The workers and the command line
connect with their duty's role (worker_app/db/privileges.py, created by tests/services.py), so that a test can take
a right away from one; migrations run as the owner."""
from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from tests.services import VENV_BIN, Stack, wait_for

# The insert workers' duty: the role a test takes a right away from.
CATALOGUE_DUTY = "catalogue"

FAULT_ENV = {
    "SONIQUEBAY_BATCH_SIZE": "20",
    # The longest task time limit becomes 90 s, the shortest soft one 13.5 s, the per-file time limit 3 s.
    "SONIQUEBAY_TIME_LIMIT_SCALE": "0.05",
    "SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT": "5",
    "SONIQUEBAY_MAX_DELIVERIES": "3",
    "SONIQUEBAY_RELAY_INTERVAL": "1",
    # Audio analysis runs after a scan, on the extract workers: not what these tests are about.
    "SONIQUEBAY_AUDIO_ANALYSIS": "off",
    # An hour each: what completes a scan within a test's minutes is never one of them.
    "SONIQUEBAY_VISIBILITY_TIMEOUT": "3600",
    "SONIQUEBAY_STALL_TIMEOUT": "3700",
}


@contextmanager
def fault_stack(base: Path, roots: list[Path], role_vars: dict | None = None, **extra_env: str):
    """A started stack (services, schema at head, each duty's role, supervisor with every worker program and the
    supervisor role's variables ``role_vars`` over the test host's)."""
    plan = base / "crash-plan"
    stack = Stack(base, roots, extra_env={**FAULT_ENV, "SONIQUEBAY_TEST_CRASH_PLAN": str(plan), **extra_env})
    stack.crash_plan = plan
    # PostgreSQL is crashed here (stopped -m immediate): it must not lose commits it acknowledged, as a production
    # server (synchronous_commit on) does not.
    stack.postgres.synchronous_commit = True
    stack.start_services()
    try:
        stack.soniquebay("db", "upgrade")
        stack.owner_url = stack.postgres.url
        stack.start_workers(role_vars=role_vars)
        yield stack
    finally:
        stack.stop()


def engine_of(stack):
    return create_engine(stack.owner_url, pool_size=2, pool_pre_ping=True)


def start_scan(stack, root: Path, timeout: float = 600, *args: str) -> subprocess.Popen:
    # These tests stop workers on purpose: waiting for them is part of the test, not a reason for the command line
    # to give up (tests/faults/test_failed_start.py tests the give-up).
    return subprocess.Popen(
        [str(VENV_BIN / "soniquebay"), "scan", str(root), "--wait", "--json", "--timeout", str(timeout),
         "--no-worker-grace", str(timeout), *args],
        env=stack.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(stack, process: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"rc {process.returncode}\n{err}\n{out}\n{stack.diagnostics()}"
    return json.loads(out)


def scan(stack, root: Path, timeout: float = 600) -> dict:
    return finish(stack, start_scan(stack, root, timeout), timeout + 30)


def newest_scan_id(engine) -> int:
    with Session(engine) as session:
        return session.execute(text("SELECT coalesce(max(id), 0) FROM scans")).scalar()


def scan_started_after(engine, previous: int) -> int:
    """The id of the scan a `soniquebay scan` just started (the first one newer than ``previous``)."""
    def newer():
        with Session(engine) as session:
            return session.execute(text("SELECT min(id) FROM scans WHERE id > :id"), {"id": previous}).scalar()

    return wait_for(newer, 60, "the new scan's row")


def units_done_share(engine, scan_id: int) -> tuple[int, int]:
    from worker_app.db.models import ScanUnit

    with Session(engine) as session:
        done, known = session.execute(
            select(func.count().filter(ScanUnit.state == "done"), func.count()).where(ScanUnit.scan_id == scan_id)
        ).one()
    return done, known


def wait_until_under_way(stack, engine, scan_id: int, share: float, minimum_units: int = 10,
                         timeout: float = 180) -> None:
    def far_enough():
        done, known = units_done_share(engine, scan_id)
        return known >= minimum_units and done >= share * known

    try:
        wait_for(far_enough, timeout, f"{share:.0%} of scan {scan_id}'s units done", interval=0.05)
    except TimeoutError as error:
        raise AssertionError(stack.diagnostics()) from error


def catalogue_under(engine, root: Path) -> list[str]:
    from worker_app.db.models import Track

    prefix = os.fsdecode(root).rstrip("/") + "/"
    with Session(engine) as session:
        return session.execute(select(Track.path).where(Track.path.startswith(prefix))).scalars().all()


def expected_paths(library) -> list[str]:
    from worker_app.paths import db_path

    return sorted(db_path(path)[0] for path in library.by_path)


def assert_catalogue_exact(engine, library, summary: dict | None = None) -> None:
    """Every readable file of the library once, nothing else; with the scan's summary, exact figures."""
    catalogued = catalogue_under(engine, library.root)
    assert len(catalogued) == len(set(catalogued)), "a track is catalogued twice"
    expected = expected_paths(library)
    lost = sorted(set(expected) - set(catalogued))
    assert lost == [], f"{len(lost)} tracks lost of {len(expected)} (scan {summary}): {lost[:5]}"
    extra = sorted(set(catalogued) - set(expected))
    assert extra == [], f"{len(extra)} tracks that are not in the library: {extra[:5]}"
    if summary is not None:
        assert summary["status"] == "complete", summary
        assert summary["failed"] == len(library.corrupt), summary


def unit_failures(engine, scan_id: int) -> list[tuple[str, str, str]]:
    """Failure records of the passing kind: work a fault made fail (there must be none when the fault passed)."""
    from worker_app.db.models import ScanFailure

    with Session(engine) as session:
        return session.execute(select(ScanFailure.path, ScanFailure.stage, ScanFailure.reason).where(
            ScanFailure.scan_id == scan_id, ScanFailure.kind == "passing")).all()


def set_plan(stack, *lines: str) -> None:
    stack.crash_plan.write_text("".join(line + "\n" for line in lines))


def plan_left(stack) -> dict[str, int]:
    if not stack.crash_plan.exists():
        return {}
    return {fields[0]: int(fields[1]) for fields in (line.split() for line in stack.crash_plan.read_text()
                                                     .splitlines()) if len(fields) == 2}


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.start
        return False
