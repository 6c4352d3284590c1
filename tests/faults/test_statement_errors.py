"""A statement-level database error is not a bad row. An error that would hit every row (a missing privilege, a
schema older than the code) fails the unit, which is retried until the error goes; no track is deleted and no file
is recorded as failed meanwhile. Only an error one row causes is isolated to that row (tests/test_bad_rows.py)."""
from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import (
    CATALOGUE_DUTY,
    assert_catalogue_exact,
    engine_of,
    finish,
    newest_scan_id,
    scan,
    scan_started_after,
    start_scan,
)
from tests.services import wait_for
from worker_app.db.models import ScanFailure, ScanUnit, Track

FAULTS = {
    # Taken from the role the insert workers connect with, given back as `soniquebay db grant` would.
    "insert revoked": (f"REVOKE INSERT ON tracks FROM soniquebay_{CATALOGUE_DUTY}",
                       f"GRANT INSERT ON tracks TO soniquebay_{CATALOGUE_DUTY}", "permission denied"),
    "a dropped column": ("ALTER TABLE tracks DROP COLUMN bits_per_sample",
                         "ALTER TABLE tracks ADD COLUMN bits_per_sample smallint", "bits_per_sample"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_statement_every_row_would_fail_is_retried_and_deletes_nothing(faults, fault):
    stack, root = faults
    inject, repair, error_text = FAULTS[fault]
    engine = engine_of(stack)
    library = make_library(root / f"statement-{fault.replace(' ', '-')}", n_files=40, seed=500 + len(fault),
                           odd_file_names=False, corrupt=False)
    assert_catalogue_exact(engine, library, scan(stack, library.root))
    for path in library.by_path:  # every file changed: the next scan writes every track again
        info = os.stat(path)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))

    stack.postgres.psql(inject)
    try:
        previous = newest_scan_id(engine)
        process = start_scan(stack, library.root)
        scan_id = scan_started_after(engine, previous)

        def retrying():
            with Session(engine) as session:
                return session.execute(select(ScanUnit.last_error).where(
                    ScanUnit.scan_id == scan_id, ScanUnit.last_error.is_not(None))).scalars().first()
        error = wait_for(retrying, 120, "an insert unit to meet the error and wait to retry")
        assert error_text in error, error
        status = json.loads(stack.soniquebay("status", str(scan_id), "--json").stdout)
        assert status["status"] == "running" and status["retrying"], status
        with Session(engine) as session:
            failures = session.execute(select(func.count()).where(ScanFailure.scan_id == scan_id)).scalar()
            tracks = session.execute(select(func.count()).where(
                Track.path.startswith(str(library.root) + "/"))).scalar()
        assert failures == 0, "files were recorded as failed for an error that was not theirs"
        assert tracks == len(library.by_path), "tracks were deleted"
    finally:
        stack.postgres.psql(repair)
    summary = finish(stack, process)
    assert_catalogue_exact(engine, library, summary)
    assert summary["inserted"] == len(library.by_path) and summary["failed"] == 0, summary
