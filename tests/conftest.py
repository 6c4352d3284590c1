"""Fixtures that start the real services once per test session: PostgreSQL, the broker and cache Redis, and
supervisord with one Celery worker program per queue."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.services import Stack


@pytest.fixture(scope="session")
def workspace():
    base = Path(tempfile.mkdtemp(prefix="soniquebay-tests-"))
    os.chmod(base, 0o755)  # the postgres user must reach its data folder inside
    yield base
    if not os.environ.get("SONIQUEBAY_KEEP_TEST_FILES"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def library_root(workspace) -> Path:
    root = workspace / "library"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def stack(workspace, library_root):
    """The whole single-host system, with the catalogue migrated and every worker program RUNNING."""
    system = Stack(workspace / "services", [library_root], extra_env={"SONIQUEBAY_BATCH_SIZE": "50"})
    system.start_services()
    try:
        system.soniquebay("db", "upgrade")
        system.start_workers()
        # The test process talks to the same services as the workers and the command line.
        for key, value in system.env.items():
            os.environ[key] = value
        os.environ["SONIQUEBAY_ENV_FILE"] = str(system.env_file)
        from worker_app.settings import get_settings

        get_settings.cache_clear()
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="session")
def db_session_factory(stack):
    from sqlalchemy.orm import Session

    from worker_app.db.session import get_engine

    return lambda: Session(get_engine())
