"""Overlapping scans never delete each other's work. A scan's removals and its end-of-scan sweep touch only tracks
written before it listed their folder: a folder created, or tracks written by another scan, after that listing are
left alone. A second scan of the same root waits for the first to end (so that it sees every change made meanwhile);
a scan of an overlapping root (a subfolder) runs beside it. `soniquebay scan` says which."""
from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import (
    assert_catalogue_exact,
    engine_of,
    finish,
    newest_scan_id,
    scan,
    scan_started_after,
    set_plan,
    start_scan,
    units_done_share,
)
from tests.services import wait_for
from worker_app.db.models import Scan


def test_a_subfolder_scanned_during_a_scan_of_its_root_keeps_its_tracks(faults):
    stack, root = faults
    engine = engine_of(stack)
    music = root / "overlap"
    existing = make_library(music / "Existing", n_files=30, seed=401, odd_file_names=False, corrupt=False)
    assert scan(stack, music)["inserted"] == 30

    # Scan A of the whole root, held open by one slow unit (a changed file whose reading waits).
    held = sorted(existing.by_path)[0]
    existing.touch(held)
    set_plan(stack, f"hold {held}")
    previous = newest_scan_id(engine)
    scan_a = start_scan(stack, music)
    a_id = scan_started_after(engine, previous)
    wait_for(lambda: units_done_share(engine, a_id)[0] >= 1, 60, "scan A to list the root")

    # Meanwhile a new folder appears and is scanned on its own: scan B runs beside A and completes.
    new = make_library(music / "New", n_files=20, seed=402, odd_file_names=False, corrupt=False)
    scan_b = start_scan(stack, new.root)
    b_summary = finish(stack, scan_b)
    assert b_summary["inserted"] == 20, b_summary
    with Session(engine) as session:
        assert session.get(Scan, a_id).status in ("running", "finalizing"), "scan A was not held open"

    set_plan(stack)
    a_summary = finish(stack, scan_a)
    assert a_summary["removed"] == 0, a_summary
    assert_catalogue_exact(engine, new)
    assert_catalogue_exact(engine, existing)


def test_a_second_scan_of_the_same_root_starts_when_the_first_ends(faults):
    stack, root = faults
    engine = engine_of(stack)
    library = make_library(root / "twice", n_files=20, seed=411, odd_file_names=False, corrupt=False)
    scan(stack, library.root)
    held = sorted(library.by_path)[0]
    library.touch(held)
    set_plan(stack, f"hold {held}")
    previous = newest_scan_id(engine)
    first = start_scan(stack, library.root)
    first_id = scan_started_after(engine, previous)
    wait_for(lambda: units_done_share(engine, first_id)[0] >= 1, 60, "the first scan to list its root")

    second = stack.soniquebay("scan", str(library.root), "--json")
    assert f"scan {first_id} of this root is running" in second.stderr, second.stderr
    second_id = json.loads(second.stdout)["scan_id"]
    third = stack.soniquebay("scan", str(library.root), "--json")
    assert json.loads(third.stdout)["scan_id"] == second_id and "already queued" in third.stderr, third.stderr
    with Session(engine) as session:
        assert session.get(Scan, second_id).status == "queued"

    set_plan(stack)
    assert finish(stack, first)["status"] == "complete"
    wait_for(lambda: _status(engine, second_id) == "complete", 120, "the queued scan to run and complete")
    with Session(engine) as session:
        queued = session.get(Scan, second_id)
        assert queued.started_at is not None and queued.unchanged == 20


def _status(engine, scan_id: int) -> str:
    with Session(engine) as session:
        return session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
