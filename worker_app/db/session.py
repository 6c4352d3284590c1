"""One engine per process. Celery's prefork children each build their own after the fork (a connection
inherited across fork would be shared by two processes)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, exc
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from worker_app.db import json_text
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
            url, pool_size=2, max_overflow=2, future=True,
            json_serializer=json_text.dumps, json_deserializer=json_text.loads,
            connect_args=_connect_args(settings.db_idle_transaction_timeout),
        )
        _ping_after_idle(_engine)
        _engine_pid = os.getpid()
    return _engine


# A pooled connection unused for longer than this is pinged before use (SELECT 1), and replaced, with the rest of
# the pool, when the ping fails: the database may have restarted or cut it meanwhile. One used more recently is
# trusted: while a worker is busy it takes a connection several times a second, and pinging every one of them
# (SQLAlchemy's pool_pre_ping) cost 2-9% of each worker's CPU and one more round trip per transaction. A database
# that went down within that second fails the statement instead: a passing error, the task is retried
# (pipeline/unit_task.py), and SQLAlchemy renews the pool on that disconnect.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_after_idle(engine: Engine) -> None:
    def since_now(dbapi_connection: Any, record: ConnectionPoolEntry, *_: Any) -> None:
        record.info["used_at"] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any failure of the old connection: take a new one
            raise exc.InvalidatePoolError(f"ping after idle failed: {error}") from error

    event.listen(engine, "connect", since_now)
    event.listen(engine, "checkin", since_now)
    event.listen(engine, "checkout", ping_if_idle)


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
