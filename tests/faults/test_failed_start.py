"""A failed start leaves nothing behind, and a scan with no worker to do it says so. When `soniquebay scan` cannot
hand the scan to the broker (a wrong password, the broker down), the user sees one line saying why and a non-zero
exit code, and the scan is recorded as failed: nothing starts it later. `scan --wait` with no worker consuming a
queue says so after a few seconds and exits, leaving the scan to go on when a worker runs."""
from __future__ import annotations

import json
import subprocess
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import engine_of, newest_scan_id
from tests.services import VENV_BIN, wait_for
from worker_app.db.models import Scan, ScanUnit


def _scan_with(stack, root, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "soniquebay"), "scan", str(root), "--wait", "--timeout", "60"],
                          env={**stack.cli_env(), **env}, capture_output=True, text=True, timeout=120)


def _assert_nothing_left_behind(stack, engine, before: int, result) -> None:
    assert result.returncode == 3, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not send the scan to the broker" in lines[0], result.stderr
    with Session(engine) as session:
        scans = session.execute(select(Scan.id, Scan.status).where(Scan.id > before)).all()
    assert [status for _, status in scans] == ["failed"], scans
    time.sleep(3 * int(stack.env["SONIQUEBAY_RELAY_INTERVAL"]) + 1)  # the relay had several turns
    with Session(engine) as session:
        assert session.get(Scan, scans[0][0]).status == "failed"
        assert session.execute(select(ScanUnit.key).where(ScanUnit.scan_id == scans[0][0])).all() == []


def test_a_wrong_broker_password(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "bad-password", n_files=4, seed=601, corrupt=False)
    before = newest_scan_id(engine)
    wrong = stack.broker.url().replace(stack.broker.password, "not-the-password")
    _assert_nothing_left_behind(stack, engine, before, _scan_with(stack, library.root,
                                                                  SONIQUEBAY_BROKER_URL=wrong))


def test_the_broker_down(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "broker-down", n_files=4, seed=602, corrupt=False)
    before = newest_scan_id(engine)
    stack.broker.crash()
    try:
        result = _scan_with(stack, library.root)
    finally:
        stack.broker.start()
    _assert_nothing_left_behind(stack, engine, before, result)


def test_no_worker_consuming_a_queue(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "no-worker", n_files=6, seed=603, corrupt=False)
    stack.supervisor.ctl("stop", stack.supervisor.group("extract"))
    try:
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "soniquebay"), "scan", str(library.root), "--wait", "--json", "--no-worker-grace", "15"],
            env=stack.cli_env(), capture_output=True, text=True, timeout=120)
        waited = time.monotonic() - started
    finally:
        stack.supervisor.ctl("start", stack.supervisor.group("extract"))
    assert result.returncode == 4, result
    assert "no worker consumed the queue(s) extract for 15 s" in result.stderr, result.stderr
    assert waited < 60, waited
    scan_id = json.loads(result.stdout)["scan_id"]
    # The scan was left as it was, and completes once the extract worker is back.
    wait_for(lambda: _status(engine, scan_id) == "complete", 120, "the scan to complete with its worker back")


def _status(engine, scan_id):
    with Session(engine) as session:
        return session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
