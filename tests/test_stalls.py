"""Messages the broker lost: a scan that stopped moving gets what it waits for sent again.

Here the loss is made by registering a unit (or a scan) and never sending its message, then moving the scan's
clock back past the stall timeout, which is what a scan looks like once a worker died between Redis's BRPOP and
kombu's bookkeeping. The end-to-end version, with real messages taken out of Redis during a scan and the workers'
own periodic check, is in test_worker_loss.py."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from tests.audio_factory import make_library
from tests.catalogue import forget_library
from worker_app.paths import db_path


def _move_clock_back(session, scan_id: int) -> None:
    from worker_app.settings import get_settings

    past = f"{get_settings().stall_timeout + 60} seconds"
    session.execute(text("UPDATE scans SET requested_at = requested_at - CAST(:past AS interval) WHERE id = :id"),
                    {"past": past, "id": scan_id})
    session.execute(text("UPDATE scan_units SET updated_at = updated_at - CAST(:past AS interval) "
                         "WHERE scan_id = :id"), {"past": past, "id": scan_id})


@pytest.fixture
def stalled_library(library_root, db_session_factory):
    made = []

    def make(name: str, seed: int):
        library = make_library(library_root / name, n_files=12, seed=seed, corrupt=False)
        made.append(str(library.root))
        return library

    yield make
    with db_session_factory() as session, session.begin():
        for root in made:
            forget_library(session, root)


def _catalogued(db_session_factory, root: str) -> list[str]:
    from worker_app.db.models import Track

    with db_session_factory() as session:
        return sorted(session.execute(select(Track.path).where(Track.path.startswith(root + "/"))).scalars())


@pytest.mark.parametrize("lost", ["the scan's start", "its first chunk"])
def test_a_stalled_scan_gets_its_lost_message_again(stack, db_session_factory, stalled_library, lost):
    from worker_app.db.models import Scan
    from worker_app.pipeline.ledger import Unit, register_units
    from worker_app.pipeline.stalls import cleanup_stalled_scans

    library = stalled_library(f"stalled-{lost.split()[-1]}", seed=51 if lost.endswith("start") else 52)
    root = str(library.root)
    with db_session_factory() as session, session.begin():
        # Queued: as `soniquebay scan` makes it, before its message. Running: as scan_directory_parallel leaves
        # it, before its send.
        scan = (Scan(root=root, status="queued") if lost == "the scan's start"
                else Scan(root=root, status="running", started_at=func.now()))
        session.add(scan)
        session.flush()
        if scan.status == "running":
            register_units(session, scan.id, "", [Unit("c", "chunk", "scan_directory_chunk", [scan.id, "c", [root]])])
        scan_id = scan.id
    assert str(scan_id) not in cleanup_stalled_scans.apply().get()  # not stalled yet

    with db_session_factory() as session, session.begin():
        _move_clock_back(session, scan_id)
    assert cleanup_stalled_scans.apply().get()[str(scan_id)] == 1

    stack.wait_for_scan(scan_id)
    assert _catalogued(db_session_factory, root) == sorted(db_path(path)[0] for path in library.by_path)


def test_a_running_scan_is_sent_only_its_pending_units_and_then_left_alone(stack, db_session_factory, running_scan):
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger import Unit, register_units
    from worker_app.pipeline.stalls import cleanup_stalled_scans

    scan_id = running_scan("/stalled-pending", {})
    with db_session_factory() as session, session.begin():
        # Messages no worker could act on (no such files): they only have to be sent.
        register_units(session, scan_id, "", [
            Unit(f"c{i}", "cleanup", "cleanup_removed_files", [scan_id, f"c{i}", [f"/stalled-pending/{i}.mp3"]])
            for i in range(3)])
        session.execute(text("UPDATE scan_units SET state = 'done' WHERE scan_id = :id AND key = 'c0'"),
                        {"id": scan_id})
        _move_clock_back(session, scan_id)
    assert cleanup_stalled_scans.apply().get()[str(scan_id)] == 2  # c1 and c2, not c0 (done)
    # Their clock restarted: the next check sends nothing before another stall timeout.
    assert str(scan_id) not in cleanup_stalled_scans.apply().get()
    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        states = dict(session.execute(select(ScanUnit.key, ScanUnit.state).where(ScanUnit.scan_id == scan_id)).all())
    assert states == {"c0": "done", "c1": "done", "c2": "done"}


def test_a_scan_whose_end_was_lost_is_finished(stack, db_session_factory, running_scan):
    from worker_app.db.models import Scan
    from worker_app.pipeline.stalls import cleanup_stalled_scans

    scan_id = running_scan("/stalled-end", {"c": "chunk"})
    with db_session_factory() as session, session.begin():
        session.execute(text("UPDATE scan_units SET state = 'done' WHERE scan_id = :id"), {"id": scan_id})
        session.execute(text("UPDATE scans SET status = 'finalizing' WHERE id = :id"), {"id": scan_id})
        _move_clock_back(session, scan_id)
    assert cleanup_stalled_scans.apply().get()[str(scan_id)] == 1
    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        assert session.get(Scan, scan_id).finished_at is not None


def test_a_message_sent_again_by_the_stall_check_is_not_a_death(stack, db_session_factory, running_scan):
    """A unit whose message was delivered once and then lost (its worker gone with it, say) is sent again by the
    check: that delivery starts the count afresh, so it is not taken for the same message coming back, which is how
    a worker's death is told (unit_task.py)."""
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger import Unit, register_units
    from worker_app.pipeline.stalls import cleanup_stalled_scans

    scan_id = running_scan("/stalled-death", {})
    with db_session_factory() as session, session.begin():
        register_units(session, scan_id, "", [
            Unit("c0", "cleanup", "cleanup_removed_files", [scan_id, "c0", ["/stalled-death/0.mp3"]])])
        # Delivered once at its stage (retry count 0), as a worker that then vanished left it.
        session.execute(text("UPDATE scan_units SET stage = 1, deliveries = 1, last_retries = 0, sent_at = now() "
                             "WHERE scan_id = :id"), {"id": scan_id})
        _move_clock_back(session, scan_id)
    assert cleanup_stalled_scans.apply().get()[str(scan_id)] == 1
    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        deliveries, deaths = session.execute(select(ScanUnit.deliveries, ScanUnit.deaths).where(
            ScanUnit.scan_id == scan_id, ScanUnit.key == "c0")).one()
    assert (deliveries, deaths) == (1, 0)
