"""Alembic, driven from the package so that `soniquebay db upgrade` works wherever the wheel is installed.

`upgrade` is safe to run while the fleet works (see migrations/env.py): each migration waits at most
``SONIQUEBAY_MIGRATION_LOCK_TIMEOUT`` for its locks; when one times out, its transaction is rolled back (the
migrations before it stay applied), and the upgrade is run again after a backoff, up to
``SONIQUEBAY_MIGRATION_ATTEMPTS`` times, with one log line per retry."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError

from worker_app.db.privileges import Granted, grant
from worker_app.db.session import get_engine
from worker_app.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logging.getLogger("worker_app.migrate")

# lock_not_available (lock_timeout, NOWAIT) and deadlock_detected: a migration that lost a race for its locks,
# which running it again later can win. Anything else is a real error and is raised at once.
RETRYABLE_SQLSTATES = {"55P03", "40P01"}
# pg_advisory_lock's key for "a migration is running" (any constant: nothing else in the catalogue takes one).
MIGRATION_LOCK_KEY = 0x50_4E_51_55_45
# Longest pause between two attempts.
MAX_BACKOFF = 60.0


def alembic_config(script_location: str | Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS))
    return config


def _retryable(error: BaseException) -> bool:
    return getattr(getattr(error, "orig", None), "pgcode", None) in RETRYABLE_SQLSTATES


def backoff(attempt: int, lock_timeout: float) -> float:
    """Pause after the ``attempt``-th failed attempt: the lock timeout, doubling each time, at most a minute."""
    return min(lock_timeout * 2.0 ** (attempt - 1), MAX_BACKOFF)


def upgrade(revision: str = "head", script_location: str | Path | None = None) -> int:
    """Migrate the catalogue to ``revision``; returns how many times it had to retry."""
    settings = get_settings()
    attempts = settings.migration_attempts
    for attempt in range(1, attempts + 1):
        try:
            command.upgrade(alembic_config(script_location), revision)
            if script_location is None:  # the map of privileges belongs with this package's own migrations
                apply_grants()
            return attempt - 1
        except DBAPIError as error:
            if not _retryable(error) or attempt == attempts:
                if _retryable(error):
                    log.error("migration gave up after %d attempts: it never got its locks within %d s; "
                              "look for long transactions in pg_stat_activity", attempts,
                              settings.migration_lock_timeout)
                raise
            pause = backoff(attempt, settings.migration_lock_timeout)
            log.warning("migration retry %d of %d: a migration after revision %s waited more than the lock "
                        "timeout (%d s) for its locks (%s); trying again in %.0f s", attempt, attempts - 1,
                        _current_or_unknown(), settings.migration_lock_timeout,
                        str(error.orig).strip().splitlines()[0], pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def apply_grants() -> Granted:
    """Each duty's privileges on the tables as they are now (worker_app/db/privileges.py), in one transaction."""
    with get_engine().begin() as connection:
        result = grant(connection)
    log.info("privileges by duty: %s granted%s%s", ", ".join(result.granted) or "no role",
             "" if result.changed else " (unchanged)",
             f"; missing roles: {', '.join(result.missing_roles)}" if result.missing_roles else "")
    return result


def downgrade(revision: str, script_location: str | Path | None = None) -> None:
    """Undo migrations down to ``revision`` ("-1": the latest one). An operator's tool, and the tests'."""
    command.downgrade(alembic_config(script_location), revision)


def _current_or_unknown() -> str:
    try:
        return str(current_revision())
    except Exception:  # noqa: BLE001 - only for a log line
        return "unknown"


def current_revision() -> str | None:
    with get_engine().connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(script_location: str | Path | None = None) -> str | None:
    return ScriptDirectory.from_config(alembic_config(script_location)).get_current_head()
