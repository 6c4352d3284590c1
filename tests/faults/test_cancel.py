"""`soniquebay cancel` stops a scan: its pending units are dropped, a unit running at the time stops at its next
boundary (the next stage of its chain is not run), what was catalogued stays, and the end-of-scan sweep never runs
(a folder that vanished keeps its tracks until a scan completes). A scan queued behind the cancelled one starts."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import (
    catalogue_under,
    engine_of,
    newest_scan_id,
    scan,
    scan_started_after,
    set_plan,
    start_scan,
)
from tests.services import wait_for
from worker_app.db.models import Scan, ScanUnit, Track
from worker_app.limits import QUEUES
from worker_app.paths import db_path

# Tasks the deferred workers send themselves every few seconds, whatever the scans do.
PERIODIC = {"relay_units", "cleanup_stalled_scans"}


def pipeline_messages(stack) -> list[str]:
    """Names of the pipeline tasks still waiting in a queue (any priority) or being run (unacknowledged)."""
    client = redis.Redis.from_url(stack.broker.url())
    try:
        raw = [m for queue in QUEUES for key in [queue, *(f"{queue}:{p}" for p in range(1, 10))]
               for m in client.lrange(key, 0, -1)]
        raw += [json.loads(value)[0] for value in client.hvals("unacked")]
    finally:
        client.close()
    names = [(json.loads(m) if isinstance(m, bytes | str) else m)["headers"]["task"] for m in raw]
    return [name for name in names if name not in PERIODIC]


def unit_states(engine, scan_id: int) -> dict[str, int]:
    with Session(engine) as session:
        return dict(session.execute(select(ScanUnit.state, func.count()).where(ScanUnit.scan_id == scan_id)
                                    .group_by(ScanUnit.state)).all())


def pending_kinds(engine, scan_id: int) -> set[str]:
    with Session(engine) as session:
        return set(session.execute(select(ScanUnit.kind).where(ScanUnit.scan_id == scan_id,
                                                              ScanUnit.state == "pending")).scalars())


def held_unit(engine, scan_id: int, path: str):
    """The extract unit whose message carries ``path`` (with its stage and deliveries), once registered."""
    with Session(engine) as session:
        return session.execute(select(ScanUnit.key, ScanUnit.stage, ScanUnit.deliveries).where(
            ScanUnit.scan_id == scan_id, ScanUnit.kind == "extract",
            ScanUnit.message.contains(json.dumps(path)[1:-1]))).first()


def status_of(engine, scan_id: int) -> str:
    with Session(engine) as session:
        return session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()


def test_a_cancelled_scan_keeps_what_it_catalogued_and_deletes_nothing(faults):
    stack, root = faults
    engine = engine_of(stack)
    music = root / "cancel"
    old = make_library(music / "Old", n_files=60, seed=501, odd_file_names=False, corrupt=False)
    assert scan(stack, music)["inserted"] == 60
    old_paths = {db_path(path)[0] for path in old.by_path}

    # A whole album folder vanishes: only the end-of-scan sweep would remove its tracks.
    album = Path(sorted(old.by_path)[0]).parent
    gone = {path for path in old_paths if os.path.dirname(path) == os.fsdecode(album)}
    shutil.rmtree(album)
    new = make_library(music / "New", n_files=240, seed=502, odd_file_names=False, corrupt=False)
    new_paths = {db_path(path)[0] for path in new.by_path}
    # One batch is held open in its extract (it is running when the scan is cancelled).
    held = next(path for path in sorted(new.by_path) if path.isascii())
    set_plan(stack, f"hold {held}")
    try:
        previous = newest_scan_id(engine)
        watcher = start_scan(stack, music)
        scan_id = scan_started_after(engine, previous)
        # Mid-way: the held batch in its extract (it waits there for a minute at most) and a few units done.
        wait_for(lambda: (unit := held_unit(engine, scan_id, held)) and unit.deliveries > 0
                 and unit_states(engine, scan_id).get("done", 0) >= 4, 50, "the scan to be mid-way", interval=0.05)
        held_key = held_unit(engine, scan_id, held).key

        cancelled = stack.soniquebay("cancel", "--json")  # the latest running scan: this one
        summary = json.loads(cancelled.stdout)
        assert summary["scan_id"] == scan_id and summary["status"] == "cancelled", cancelled
        assert f"scan {scan_id} cancelled" in cancelled.stderr, cancelled.stderr
        # Only the follow-ups of tracks already written (album covers) are left to run.
        assert pending_kinds(engine, scan_id) <= {"enrich"}
        # `scan --wait` sees the end, and says the scan did not complete.
        out, err = watcher.communicate(timeout=120)
        assert watcher.returncode == 1 and json.loads(out)["status"] == "cancelled", (out, err)
        # Nothing was deleted: the sweep did not run, the vanished folder's tracks are still there.
        assert old_paths <= set(catalogue_under(engine, music)), "a cancelled scan deleted tracks"
    finally:
        set_plan(stack)

    # The held batch, released, stops at its next stage; what was running at the cancel finishes.
    wait_for(lambda: f"'skipped': '{held_key}', 'why': 'scan cancelled'" in
             stack.supervisor.log("batch").read_text(errors="replace"), 120,
             "the held batch's next stage to be skipped")
    wait_for(lambda: not pipeline_messages(stack), 120, "the pipeline to be idle")
    catalogued = set(catalogue_under(engine, music))
    assert catalogued - old_paths <= new_paths
    assert old_paths <= catalogued, "a cancelled scan deleted tracks"
    added = catalogued & new_paths
    assert 0 < len(added) < len(new_paths), "the scan was not cancelled mid-way"
    assert db_path(held)[0] not in added, "the held batch went on after the cancel"
    wait_for(lambda: not pending_kinds(engine, scan_id), 120, "the follow-ups of the cancelled scan")
    # Every track it wrote has its search vector (written with the track): the next scan, which finds those files
    # unchanged, would not write it.
    with Session(engine) as session:
        unvectorized = session.execute(select(func.count()).select_from(Track).where(
            Track.path.in_(sorted(added)), Track.search_vector.is_(None))).scalar()
    assert unvectorized == 0
    status = json.loads(stack.soniquebay("status", str(scan_id), "--json").stdout)
    assert status["status"] == "cancelled" and status["pending_units"] == {}, status
    # Its figures: what it did, including units that were running at the cancel.
    assert status["inserted"] == len(added) and status["removed"] == 0, status
    assert unit_states(engine, scan_id).get("pending", 0) == 0
    assert stack.soniquebay("cancel", str(scan_id), check=False).returncode == 1  # it has ended

    # The next scan completes as usual: it reads what the cancelled one did not, and sweeps the vanished folder.
    after = scan(stack, music)
    assert after["status"] == "complete" and after["removed"] == len(gone), after
    assert set(catalogue_under(engine, music)) == (old_paths - gone) | new_paths


def test_a_scan_queued_behind_a_cancelled_one_starts(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "cancel-queued", n_files=20, seed=511, odd_file_names=False, corrupt=False)
    scan(stack, library.root)
    held = next(path for path in sorted(library.by_path) if path.isascii())
    library.touch(held)
    set_plan(stack, f"hold {held}")
    try:
        previous = newest_scan_id(engine)
        first = start_scan(stack, library.root)
        first_id = scan_started_after(engine, previous)
        wait_for(lambda: (unit := held_unit(engine, first_id, held)) and unit.deliveries > 0, 120,
                 "the held batch to be in its extract")
        second_id = json.loads(stack.soniquebay("scan", str(library.root), "--json").stdout)["scan_id"]
        assert status_of(engine, second_id) == "queued"

        cancelled = stack.soniquebay("cancel", str(first_id))
        assert f"queued scan(s) {second_id} started" in cancelled.stderr, cancelled.stderr
        assert status_of(engine, first_id) == "cancelled"
    finally:
        set_plan(stack)
    first.communicate(timeout=120)
    wait_for(lambda: status_of(engine, second_id) == "complete", 180, "the queued scan to complete")
    with Session(engine) as session:
        second = session.get(Scan, second_id)
        # The touched file, which the cancelled scan never inserted, is read again by the second.
        assert second.extracted >= 1 and second.failed == 0
    assert len(catalogue_under(engine, library.root)) == 20


def test_cancel_refuses_what_it_cannot_cancel(faults):
    stack, root = faults
    engine = engine_of(stack)
    missing = stack.soniquebay("cancel", str(newest_scan_id(engine) + 1000), check=False)
    assert missing.returncode == 2 and "there is no scan" in missing.stderr, missing
    library = make_library(root / "cancel-ended", n_files=5, seed=521, odd_file_names=False, corrupt=False)
    ended = scan(stack, library.root)
    again = stack.soniquebay("cancel", str(ended["scan_id"]), check=False)
    assert again.returncode == 1 and "is complete: nothing to cancel" in again.stderr, again
    assert status_of(engine, ended["scan_id"]) == "complete"
