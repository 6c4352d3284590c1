"""Retention: a scan that ended longer ago than SONIQUEBAY_SCAN_RETENTION_DAYS loses its units and failure records,
keeps its row and figures; a recent scan keeps everything; and a closed unit never keeps its message."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from tests.audio_factory import make_library
from tests.catalogue import forget_library

pytestmark = pytest.mark.timeout(600)


def _scan(stack, root) -> dict:
    result = stack.soniquebay("scan", str(root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    return json.loads(result.stdout)


def _rows(session, scan_id: int) -> tuple[int, int]:
    from worker_app.db.models import ScanFailure, ScanUnit

    units = session.execute(select(func.count()).where(ScanUnit.scan_id == scan_id)).scalar()
    failures = session.execute(select(func.count()).where(ScanFailure.scan_id == scan_id)).scalar()
    return units, failures


@pytest.fixture
def two_scans(stack, library_root, db_session_factory):
    # Corrupt files give each scan failure records to prune.
    old = make_library(library_root / "retention-old", n_files=12, seed=61, corrupt=True)
    new = make_library(library_root / "retention-new", n_files=12, seed=62, corrupt=True)
    old_summary, new_summary = _scan(stack, old.root), _scan(stack, new.root)
    yield old_summary, new_summary
    with db_session_factory() as session, session.begin():
        for library in (old, new):
            forget_library(session, str(library.root))


def test_an_old_scan_loses_its_working_records_and_keeps_its_figures(stack, db_session_factory, two_scans):
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.retention import cleanup_old_scans
    from worker_app.settings import get_settings

    old, new = two_scans
    with db_session_factory() as session:
        # A closed unit's message is never sent again: it is not kept.
        assert session.execute(select(func.count()).where(
            ScanUnit.scan_id.in_((old["scan_id"], new["scan_id"])), ScanUnit.state == "done",
            ScanUnit.message.is_not(None))).scalar() == 0
        old_rows, new_rows = _rows(session, old["scan_id"]), _rows(session, new["scan_id"])
    assert old_rows[0] > 0 and old_rows[1] > 0 and new_rows[1] > 0

    # Not past the retention yet: nothing goes.
    cleanup_old_scans.apply().get()
    with db_session_factory() as session:
        assert _rows(session, old["scan_id"]) == old_rows

    with db_session_factory() as session, session.begin():
        session.execute(text("UPDATE scans SET finished_at = finished_at - make_interval(days => :days) "
                             "WHERE id = :id"), {"days": get_settings().scan_retention_days + 1, "id": old["scan_id"]})
    pruned = cleanup_old_scans.apply().get()
    assert pruned["scans"] >= 1 and pruned["units"] >= old_rows[0] and pruned["failures"] >= old_rows[1]

    with db_session_factory() as session:
        assert _rows(session, old["scan_id"]) == (0, 0)
        assert _rows(session, new["scan_id"]) == new_rows
    status = json.loads(stack.soniquebay("status", str(old["scan_id"]), "--json").stdout)
    for figure in ("status", "discovered", "extracted", "inserted", "failed"):
        assert status[figure] == old[figure], figure

    # Pruned once: the next run finds nothing more of it.
    assert cleanup_old_scans.apply().get()["scans"] == 0


def test_the_deferred_workers_prune_on_a_clock(stack):
    from worker_app.pipeline.retention import INTERVAL

    logs = "".join(path.read_text(errors="replace") for path in stack.supervisor.base.glob("soniquebay-deferred*.log"))
    assert f"pruning the records of old scans every {INTERVAL} s" in logs


def test_the_staged_records_of_an_ended_scan_go_and_a_running_scans_stay(stack, db_session_factory, running_scan):
    """A scan that ended without inserting a unit (cancelled here) leaves its claim check behind; retention drops
    it, and a staged picture no unit uses once nobody staged it for an hour, but not what a running scan needs."""
    from tests.test_idempotence import _payload, stage
    from worker_app.db.models import StagedCover, StagedUnit
    from worker_app.pipeline.retention import cleanup_old_scans

    ended = running_scan("/retention-staged-ended", {"c/b0": "extract"})
    running = running_scan("/retention-staged-running", {"c/b0": "extract"})
    for scan_id in (ended, running):
        stage(db_session_factory, scan_id, "c/b0", _payload(f"/retention-staged/{scan_id}"))
    unused = "0" * 64
    with db_session_factory() as session, session.begin():
        session.add(StagedCover(sha256=unused, mime="image/png", size_bytes=3, source="embedded", data=b"png",
                                staged_at=func.now() - timedelta(hours=2)))
        session.execute(text("UPDATE scans SET status = 'cancelled', finished_at = now() WHERE id = :id"),
                        {"id": ended})

    pruned = cleanup_old_scans.apply().get()
    assert pruned["staged_units"] >= 1 and pruned["staged_covers"] >= 1, pruned
    with db_session_factory() as session, session.begin():
        staged = dict(session.execute(select(StagedUnit.scan_id, StagedUnit.key)
                                      .where(StagedUnit.scan_id.in_((ended, running)))).all())
        assert staged == {running: "c/b0"}
        assert session.get(StagedCover, unused) is None
        session.execute(text("UPDATE scans SET status = 'cancelled', finished_at = now() WHERE id = :id"),
                        {"id": running})
    assert cleanup_old_scans.apply().get()["staged_units"] >= 1
