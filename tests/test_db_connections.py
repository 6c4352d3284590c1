"""A worker's pooled database connections after the database cut them (a restart, a server that ended idle
sessions): one unused for a while is pinged before use and replaced, so the next transaction just works; one used
within the last moment is trusted without a round trip, so its first statement fails (a passing error: the task is
retried) and the pool is renewed for the next one."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError


def _cut(stack, pid: int) -> None:
    """End the server process of one connection, as a restart would, and wait until it is gone."""
    admin = create_engine(stack.postgres.url)
    try:
        with admin.connect() as connection:
            # With a timeout, pg_terminate_backend returns once the process has exited (false if it is still there
            # after it). pg_stat_activity would not tell: within a transaction it keeps showing the snapshot it
            # took first, which on a busy host can be from before the exit.
            assert connection.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar(), \
                f"backend {pid} still there"
    finally:
        admin.dispose()


def _one_pooled_connection() -> int:
    """The engine of this process (as a worker builds it) with one connection in its pool: its server pid."""
    from worker_app.db.session import get_engine, transaction

    get_engine().dispose()
    with transaction() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_an_idle_connection_the_database_cut_is_replaced_before_use(stack, monkeypatch):
    from worker_app.db import session as db_session

    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout counts as after idle
    pid = _one_pooled_connection()
    _cut(stack, pid)
    with db_session.transaction() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_busy_connection_is_not_pinged_and_fails_once_when_cut(stack, monkeypatch):
    from worker_app.db import session as db_session

    monkeypatch.setattr(db_session, "PING_AFTER_IDLE_SECONDS", 3600.0)  # every checkout counts as busy
    pid = _one_pooled_connection()
    pings = []
    engine = db_session.get_engine()
    original = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(1) or original(connection))
    with db_session.transaction() as session:  # in use a moment ago: no ping, the same connection
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
    assert pings == []
    _cut(stack, pid)
    with pytest.raises(OperationalError), db_session.transaction() as session:
        session.execute(text("SELECT 1"))
    with db_session.transaction() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
