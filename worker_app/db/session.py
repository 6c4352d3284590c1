"""One engine per process. Celery's prefork children each build their own after the fork (a connection
inherited across fork would be shared by two processes)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine
from sqlalchemy.orm import Session

from worker_app.db.duty import database_url
from worker_app.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
_engine_url: str | None = None


def get_engine() -> Engine:
    """This process's engine, connected as its duty's role (worker_app/db/duty.py): a new one after a fork or a
    change of duty."""
    global _engine, _engine_pid, _engine_url
    url = database_url()
    if _engine is None or _engine_pid != os.getpid() or _engine_url != url:
        if _engine is not None:
            _engine.dispose(close=False)
        settings = get_settings()
        _engine_url = url
        _engine = create_engine(
            url, pool_size=2, max_overflow=2, pool_pre_ping=True, future=True,
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
