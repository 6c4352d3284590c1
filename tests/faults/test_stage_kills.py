"""Every stage's worker process killed inside it (os._exit in the pool process, as a crash in a C library or the
OOM killer would): the delivery guarantees come from one place (unit_task.py), so each stage survives the same way.
The message comes back, the unit is done once, and the scan's figures are exact; a redelivered cleanup does not
count its removals twice or as zero. A unit whose worker dies every time is parked after SONIQUEBAY_MAX_DELIVERIES
deaths: its files are recorded as a passing failure, their tracks are kept, and the next scan catalogues them."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import (
    assert_catalogue_exact,
    engine_of,
    plan_left,
    scan,
    set_plan,
    unit_failures,
)
from worker_app.db.models import FailedFile, ScanFailure, ScanUnit

# stage -> the ledger kind of its units
STAGES = ["chunk", "extract", "batch", "insert", "cleanup", "enrich", "cleanup-after", "insert-after"]


@pytest.mark.parametrize("step", STAGES)
def test_a_worker_killed_inside_a_stage_costs_nothing(faults, step):
    stack, root = faults
    library = make_library(root / f"killed-{step}", n_files=16, seed=200 + STAGES.index(step), odd_file_names=False)
    engine = engine_of(stack)
    removing = step.startswith("cleanup")
    if removing:
        assert_catalogue_exact(engine, library, scan(stack, library.root))
        gone = sorted(library.by_path)[:3]
        for path in gone:
            library.remove_track(path)

    set_plan(stack, f"{step} 1")
    summary = scan(stack, library.root)
    assert plan_left(stack) == {step: 0}, "the planned kill did not happen"
    set_plan(stack)

    assert_catalogue_exact(engine, library, summary)
    assert unit_failures(engine, summary["scan_id"]) == []
    if removing:
        assert summary["removed"] == 3 and summary["extracted"] == 0, summary
    else:
        assert summary["extracted"] == summary["inserted"] == len(library.by_path), summary
    with Session(engine) as session:
        redelivered = session.execute(select(ScanUnit.key, ScanUnit.stage, ScanUnit.deliveries).where(
            ScanUnit.scan_id == summary["scan_id"], ScanUnit.deliveries > 1)).all()
    if not step.endswith("-after") and step not in ("extract", "batch"):
        # The killed delivery was counted at its stage (an extract or batch unit moves on to later stages, which
        # count afresh; a delivery after the work found the unit done and counted nothing).
        assert redelivered, "no unit shows the second delivery"


def test_a_unit_that_kills_its_worker_every_time_is_parked_and_its_tracks_kept(faults):
    stack, root = faults
    library = make_library(root / "parked", n_files=12, seed=231, odd_file_names=False, corrupt=False)
    engine = engine_of(stack)
    assert_catalogue_exact(engine, library, scan(stack, library.root))
    for path in library.by_path:
        info = os.stat(path)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))

    set_plan(stack, "insert 99")
    try:
        parked = scan(stack, library.root)
    finally:
        left = plan_left(stack)["insert"]
        set_plan(stack)
    from worker_app.settings import get_settings  # noqa: F401 - the stack's value is the one in its env file

    max_deliveries = int(stack.env["SONIQUEBAY_MAX_DELIVERIES"])
    assert 99 - left == max_deliveries, "each insert unit is killed max_deliveries times, then parked"
    assert parked["status"] == "complete" and parked["failed"] == len(library.by_path), parked
    assert_catalogue_exact(engine, library)  # the tracks catalogued before are all still there
    with Session(engine) as session:
        kinds = set(session.execute(select(ScanFailure.kind).where(
            ScanFailure.scan_id == parked["scan_id"])).scalars())
        remembered = session.execute(select(FailedFile.path).where(
            FailedFile.path.startswith(str(library.root) + "/"))).scalars().all()
    assert kinds == {"passing"} and remembered == []

    again = scan(stack, library.root)
    assert again["extracted"] == again["inserted"] == len(library.by_path) and again["failed"] == 0, again
