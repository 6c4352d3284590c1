"""One engine per process. Celery's prefork children each build their own after the fork (a connection
inherited across fork would be shared by two processes)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from worker_app.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None


def get_engine() -> Engine:
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = create_engine(
            get_settings().database_url, pool_size=2, max_overflow=2, pool_pre_ping=True, future=True
        )
        _engine_pid = os.getpid()
    return _engine


@contextmanager
def transaction() -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on any error."""
    with Session(get_engine()) as session, session.begin():
        yield session
