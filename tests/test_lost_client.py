"""A worker host that stops answering in the middle of a transaction (lost power or network: no FIN ever reaches
PostgreSQL) must not stall every other worker behind its row locks. Here the client is frozen with SIGSTOP right
after it locked the scan row, which is what PostgreSQL sees of a lost host: a connection that says nothing more.
(A container killed with `podman kill` is not such a host: its sockets are closed, and PostgreSQL sees the FIN.)"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select, text

from tests.services import VENV_BIN, wait_for

pytestmark = pytest.mark.timeout(180)

IDLE_TRANSACTION_TIMEOUT = 3

FROZEN_CLIENT = """
import os, signal, sys
from sqlalchemy import text
from worker_app.db.session import transaction
from worker_app.pipeline.ledger import complete_unit

with transaction() as session:
    complete_unit(session, int(sys.argv[1]), "c.0", discovered=1)  # holds the scan row, FOR NO KEY UPDATE
    print(session.execute(text("SELECT pg_backend_pid()")).scalar(), flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
"""


def test_a_frozen_client_holding_the_scan_row_does_not_stall_the_others(stack, db_session_factory, running_scan):
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger import complete_unit

    scan_id = running_scan("/lost-client", {"c.0": "chunk", "c.1": "chunk"})
    client = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", FROZEN_CLIENT, str(scan_id)],
        env={**os.environ, "SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT": str(IDLE_TRANSACTION_TIMEOUT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        backend_pid = int(client.stdout.readline())
        wait_for(lambda: open(f"/proc/{client.pid}/stat").read().split(") ")[1].startswith("T"), 30,
                 "the client to stop")

        # Another worker closes another unit of the same scan: it needs the same row lock.
        started = time.monotonic()
        with db_session_factory() as session, session.begin():
            session.execute(text("SET LOCAL lock_timeout = '60s'"))  # without the fix: LockNotAvailable, not a hang
            finished = complete_unit(session, scan_id, "c.1", discovered=1)
        waited = time.monotonic() - started

        assert finished is False  # c.0 is pending again: the frozen client's work was rolled back, not kept
        assert IDLE_TRANSACTION_TIMEOUT - 1 < waited < IDLE_TRANSACTION_TIMEOUT + 20, waited
        with db_session_factory() as session:
            states = dict(session.execute(
                select(ScanUnit.key, ScanUnit.state).where(ScanUnit.scan_id == scan_id)).all())
        assert states == {"c.0": "pending", "c.1": "done"}

        def backend_gone() -> bool:  # its locks go at its abort, its process a moment later: a fresh look each time
            with db_session_factory() as session:
                return backend_pid not in session.execute(text("SELECT pid FROM pg_stat_activity")).scalars().all()

        wait_for(backend_gone, 10, f"backend {backend_pid} to exit", interval=0.1)

        # Woken up, the client learns its transaction is gone: its commit fails, it does not believe it succeeded.
        client.send_signal(signal.SIGCONT)
        _, errors = client.communicate(timeout=60)
        assert client.returncode != 0
        assert "OperationalError" in errors and "server closed the connection" in errors, errors[-2000:]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
