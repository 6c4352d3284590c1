"""Tracks catalogued while audio analysis was off (the Ansible role's default, and this stack's) wait in the backlog;
`soniquebay analysis --queue-backlog` has them analysed. A passing error during their analysis (an I/O error, a
permission) stores nothing, so the track stays in the backlog and is analysed when queued again; nothing that
analysis stored before is lost to it."""
from __future__ import annotations

import json
import os

from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import engine_of, scan, set_plan
from tests.services import wait_for
from worker_app.analysis import ANALYSIS_VERSION
from worker_app.paths import db_path


def _analysis_of(engine, paths: list[str]) -> dict[str, tuple[int | None, bool]]:
    """{path: (analysis version of its stored features or None, whether it has a similarity vector)}."""
    with Session(engine) as session:
        rows = session.execute(text("""
            SELECT t.path, f.analysis_version, v.track_id IS NOT NULL AS has_vector
            FROM tracks t LEFT JOIN audio_features f ON f.track_id = t.id AND f.error IS NULL
            LEFT JOIN track_vectors v ON v.track_id = t.id
            WHERE t.path = ANY(:paths)"""), {"paths": [db_path(path)[0] for path in paths]}).all()
    return {path: (version, has_vector) for path, version, has_vector in rows}


def _queue_backlog(stack, root) -> dict:
    result = stack.soniquebay("analysis", "--queue-backlog", "1000", "--under", str(root), "--json")
    return json.loads(result.stdout)


def test_the_backlog_is_queued_and_a_passing_error_leaves_its_track_in_it(faults):
    stack, root = faults
    library = make_library(root / "analysis-backlog", n_files=6, seed=131, odd_file_names=False, corrupt=False)
    engine = engine_of(stack)
    scan(stack, library.root)
    paths = sorted(library.by_path)
    keys = [db_path(path)[0] for path in paths]
    # Scanned with analysis off: catalogued, not analysed, and a rescan does not change that.
    assert _analysis_of(engine, paths) == {key: (None, False) for key in keys}
    scan(stack, library.root)
    assert _analysis_of(engine, paths) == {key: (None, False) for key in keys}

    unreadable, denied = paths[1], paths[4]
    set_plan(stack, f"read eio {unreadable}")
    os.chmod(denied, 0)
    try:
        assert _queue_backlog(stack, library.root)["queued"] == len(paths)
        analysed = {key: (ANALYSIS_VERSION, True) for key in keys if key not in (db_path(unreadable)[0],
                                                                                  db_path(denied)[0])}

        def settled():
            seen = _analysis_of(engine, paths)
            return {key: seen[key] for key in analysed} == analysed and seen
        seen = wait_for(settled, 300, "the queued tracks analysed and vectorised", interval=0.5)
    finally:
        set_plan(stack)
        os.chmod(denied, 0o644)
    # The same task tried all six: the two it could not read store nothing and stay in the backlog.
    assert seen[db_path(unreadable)[0]] == (None, False) and seen[db_path(denied)[0]] == (None, False), seen
    with Session(engine) as session:
        remembered = session.execute(text("SELECT count(*) FROM audio_features f JOIN tracks t ON t.id = f.track_id "
                                          "WHERE t.path = ANY(:paths)"),
                                     {"paths": [db_path(unreadable)[0], db_path(denied)[0]]}).scalar()
    assert remembered == 0

    # Readable again: queued again, only they are (the others are done), and they are analysed.
    assert _queue_backlog(stack, library.root)["queued"] == 2
    everything = {key: (ANALYSIS_VERSION, True) for key in keys}
    wait_for(lambda: _analysis_of(engine, paths) == everything, 300, "the two tracks analysed once readable",
             interval=0.5)
    assert _queue_backlog(stack, library.root)["queued"] == 0
    engine.dispose()
