"""One engine per process. Celery's prefork children each build their own after the fork (a connection
inherited across fork would be shared by two processes)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine
from sqlalchemy.orm import Session

from worker_app.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
# The duty this process connects with (worker_app/db/privileges.py); None: the owner's URL (migrations, and a
# process that never said, such as the tests' own). A worker sets it from its queues before it forks.
_duty: str | None = None
_owner_fallback = True


def use_duty(duty: str | None, owner_fallback: bool = True) -> None:
    """Connect as ``duty``'s role from now on (``owner_fallback``: see Settings.database_url_for). Checks at once
    that the host has the credentials, so a worker without them fails at its start, in one line."""
    global _duty, _owner_fallback, _engine
    get_settings().database_url_for(duty, owner_fallback)
    if (duty, owner_fallback) != (_duty, _owner_fallback) and _engine is not None:
        _engine.dispose(close=False)
        _engine = None
    _duty, _owner_fallback = duty, owner_fallback


def database_url() -> str:
    """The URL of this process's duty."""
    return get_settings().database_url_for(_duty, _owner_fallback)


def current_duty() -> str | None:
    return _duty


def get_engine() -> Engine:
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        settings = get_settings()
        _engine = create_engine(
            database_url(), pool_size=2, max_overflow=2, pool_pre_ping=True, future=True,
            connect_args=_connect_args(settings.db_idle_transaction_timeout),
        )
        _engine_pid = os.getpid()
    return _engine


def _connect_args(idle_transaction_timeout: int) -> dict[str, Any]:
    """A worker host can vanish (power, network) without closing its connections. PostgreSQL would then keep its
    open transaction, and the row locks every other worker waits for, until the kernel gives up on the socket
    (hours). So the server ends a transaction idle for longer than the timeout, probes idle connections and checks
    for a gone client during long statements; the worker probes its side too, to notice a lost database."""
    server_settings = {
        "idle_in_transaction_session_timeout": f"{idle_transaction_timeout}s",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
        "client_connection_check_interval": "10s",
    }
    return {
        "options": " ".join(f"-c {name}={value}" for name, value in server_settings.items()),
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    }


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` returns a CursorResult for those statements, but
    is typed as returning a Result, which has no rowcount."""
    return cast("CursorResult[Any]", result).rowcount


@contextmanager
def transaction() -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on any error."""
    with Session(get_engine()) as session, session.begin():
        yield session
