"""Alembic environment: the database URL comes from the application's settings, never from alembic.ini.

Migrations run while the fleet works (playbooks/upgrade.yml migrates before the hosts get the new code), so:

- one migration at a time across the fleet: a session-level advisory lock, held for the whole run, so two hosts'
  upgrades never interleave (the second waits, then finds nothing left to do);
- every lock a migration takes is waited for at most ``SONIQUEBAY_MIGRATION_LOCK_TIMEOUT`` seconds
  (``lock_timeout``): an ALTER TABLE queued behind a long transaction would otherwise make every query on that
  table queue behind the ALTER for as long. When it times out, ``worker_app.db.migrate.upgrade`` backs off and runs
  the upgrade again;
- one transaction per migration, so that retry starts again at the migration that timed out, not at the first;
- indexes on existing tables are built with ``worker_app.migrations.helpers.create_index_concurrently``.
"""
import logging

from alembic import context
from sqlalchemy import Connection, text

from worker_app.db.migrate import MIGRATION_LOCK_KEY
from worker_app.db.models import Base
from worker_app.db.session import get_engine
from worker_app.settings import get_settings

target_metadata = Base.metadata
log = logging.getLogger("worker_app.migrate")


def run_migrations_online() -> None:
    settings = get_settings()
    with get_engine().connect() as connection:
        # Waiting for another host's upgrade is harmless (it takes no lock anyone else needs), so no timeout here.
        connection.execute(text("SET lock_timeout = 0"))
        if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}).scalar():
            log.warning("another `soniquebay db upgrade` is running: waiting for it to end")
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            connection.execute(text(f"SET lock_timeout = '{int(settings.migration_lock_timeout)}s'"))
            # Alembic must begin its own (per-migration) transactions: none may be open when it is configured.
            connection.commit()
            context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                              transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            _release(connection)


def _release(connection: Connection) -> None:
    """The connection goes back to the process's pool: leave it as it was found, or drop it (which ends its
    session, and the advisory lock with it) when it cannot be."""
    try:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("RESET lock_timeout"))
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
    except Exception:  # a broken connection: never hide the migration's own error behind this one
        connection.invalidate()


run_migrations_online()
