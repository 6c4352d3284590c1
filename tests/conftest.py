"""Fixtures that start the real services once per test session: PostgreSQL, the broker and cache Redis, and
supervisord with one Celery worker program per queue.

The stack's ports and secrets are chosen when this file is imported and exported to the environment at once, so
that a test that builds the Celery app in this process can never talk to another Redis (such as one a deployment
runs on this machine on the default port)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.host_commands import ProgramLog
from tests.services import Stack

CRASH_MARKER = "__soniquebay_test_crash__"

WORKSPACE = Path(tempfile.mkdtemp(prefix="soniquebay-tests-"))
os.chmod(WORKSPACE, 0o755)  # the postgres user must reach its data folder inside
LIBRARY_ROOT = WORKSPACE / "library"
STACK = Stack(WORKSPACE / "services", [LIBRARY_ROOT], extra_env={
    "SONIQUEBAY_BATCH_SIZE": "50",
    # Files whose names hold this marker crash their worker (see worker_app/pipeline/extract.py).
    "SONIQUEBAY_TEST_CRASH_MARKER": CRASH_MARKER,
    # Shorter time limits, and so a shorter visibility timeout: a lost message comes back within a test's patience.
    "SONIQUEBAY_TIME_LIMIT_SCALE": "0.1",
    "SONIQUEBAY_VISIBILITY_TIMEOUT": "300",
    # Below the shortest time limit once scaled (27 s).
    "SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT": "10",
    # Several tests leave half-built scans behind on purpose; the workers' own stalled-scan check must not finish
    # them during the session. tests/test_stalls.py moves a scan's clock past this instead of waiting.
    "SONIQUEBAY_STALL_TIMEOUT": "3600",
})
os.environ.update(STACK.env)
os.environ["SONIQUEBAY_ENV_FILE"] = str(STACK.env_file)


@pytest.fixture(scope="session")
def workspace():
    yield WORKSPACE
    if not os.environ.get("SONIQUEBAY_KEEP_TEST_FILES"):
        shutil.rmtree(WORKSPACE, ignore_errors=True)


@pytest.fixture(scope="session")
def library_root(workspace) -> Path:
    LIBRARY_ROOT.mkdir(exist_ok=True)
    return LIBRARY_ROOT


@pytest.fixture(scope="session")
def stack(workspace, library_root):
    """The whole single-host system, with the catalogue migrated and every worker program RUNNING."""
    STACK.start_services()
    try:
        STACK.soniquebay("db", "upgrade")
        STACK.start_workers()
        yield STACK
    finally:
        STACK.stop()


@pytest.fixture(scope="session")
def db_session_factory(stack):
    from sqlalchemy.orm import Session

    from worker_app.db.session import get_engine

    return lambda: Session(get_engine())


@pytest.fixture
def running_scan(db_session_factory):
    """Make a scan that is under way with the given pending units ({key: kind}), as a test that hands tasks a unit
    of their own needs; returns its id."""
    from sqlalchemy import func, update

    from worker_app.db.models import Scan, ScanUnit
    from worker_app.db.statuses import ACTIVE, ScanStatus

    made: list[int] = []

    def make(root: str, units: dict[str, str]) -> int:
        with db_session_factory() as session, session.begin():
            # Started now, as a real scan's start marks it: its end-of-scan sweep then spares the tracks the test
            # writes (tracks older than the scan, in folders it did not list, are what a sweep removes).
            scan = Scan(root=root, status="running", started_at=func.now())
            session.add(scan)
            session.flush()
            session.add_all([ScanUnit(scan_id=scan.id, key=key, kind=kind) for key, kind in units.items()])
            made.append(scan.id)
            return scan.id

    yield make
    # A scan left under way would be "the current scan" of the monitoring (the latest running one) for the rest of
    # the session: the ones a test left open are cancelled, their tracks kept, as `soniquebay cancel` does.
    with db_session_factory() as session, session.begin():
        session.execute(update(Scan).where(Scan.id.in_(made), Scan.status.in_(ACTIVE))
                        .values(status=ScanStatus.CANCELLED, finished_at=func.now()))


# Every program the test session starts must be one ci/host-commands.tsv lists, with the package that provides
# it: else a fresh machine, which has only what the project installs, would fail where this one passes.
PROGRAMS = ProgramLog()
PROGRAMS.install()


def pytest_sessionfinish(session, exitstatus):
    unknown = PROGRAMS.unknown()
    if unknown:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(f"  {program}  (as in: {line})" for program, line in unknown.items())
        message = f"the tests started programs that ci/host-commands.tsv does not list:\n{lines}"
        if reporter:
            reporter.write_sep("=", "host commands", red=True)
            reporter.write_line(message)
        session.exitstatus = 1


def pytest_addoption(parser):
    parser.addoption("--chaos-seed", type=int, default=int(os.environ.get("SONIQUEBAY_CHAOS_SEED", "20261206")),
                     help="seed of tests/faults/test_chaos.py's faults (their kinds, targets and times)")
