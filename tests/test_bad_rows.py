"""One bad row or one vanished file costs only itself: the rest of its batch lands, and the failure is recorded."""
from __future__ import annotations

import json
import os
import shutil

from sqlalchemy import select

from tests.audio_factory import make_library
from tests.catalogue import tracks_by_path
from tests.test_idempotence import _payload, _records, stage


def test_a_row_postgresql_refuses_does_not_sink_its_batch(stack, db_session_factory, running_scan, library_root):
    """One track of a batch holds what PostgreSQL refuses: the others are written, the refused one is recorded as a
    passing failure, and the row an earlier scan catalogued for it stays as it was."""
    from worker_app.db.models import ScanFailure, ScanFolder, ScanUnit
    from worker_app.pipeline.insert import insert_batch_direct, insert_tracks_batch

    album = f"{library_root}/bad-rows/album"  # the insert stage takes only names under the library roots
    insert_tracks_batch.apply_async((_payload(album),), ignore_result=False).get(timeout=60)  # an earlier scan's
    payload = _payload(album)
    os.makedirs(album)
    for track in payload["tracks"]:  # the files as they are now: changed since, so the insert stage believes it
        with open(track["path"], "wb") as changed:
            changed.write(b"retagged")
        track["title"] += " (retagged)"
    payload["tracks"][1]["track_number"] = 10**9  # beyond the smallint column: PostgreSQL refuses the row
    scan_id = running_scan(f"{library_root}/bad-rows", {"c/b0": "extract"})
    with db_session_factory() as session, session.begin():
        session.add(ScanFolder(scan_id=scan_id, folder=album))  # as its scan stage listed it
    stage(db_session_factory, scan_id, "c/b0", payload)
    insert_batch_direct.apply_async((scan_id, "c/b0"), ignore_result=False).get(timeout=60)
    stack.wait_for_scan(scan_id)

    with db_session_factory() as session:
        titles = {p: track["title"] for p, track in tracks_by_path(session).items() if p.startswith(f"{album}/")}
        failures = session.execute(select(ScanFailure.path, ScanFailure.stage, ScanFailure.kind, ScanFailure.reason)
                                   .where(ScanFailure.scan_id == scan_id, ScanFailure.stage == "insert")).all()
        unit = session.execute(select(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == "c/b0")
                               ).scalar_one()
    assert titles == {f"{album}/01.flac": "Song 1 (retagged)", f"{album}/02.flac": "Song 2",
                      f"{album}/03.flac": "Song 3 (retagged)"}
    assert [(p, s, k) for p, s, k, _ in failures] == [(f"{album}/02.flac", "insert", "passing")]
    assert "out of range" in failures[0][3]
    assert (unit.state, unit.inserted, unit.failed) == ("done", 2, 1)


def test_a_file_that_vanishes_between_scan_and_extract_is_recorded(stack, library_root, db_session_factory,
                                                                  running_scan):
    from worker_app.pipeline.extract import extract_metadata_batch

    library = make_library(library_root / "vanishing", n_files=4, seed=5, corrupt=False, untagged=False,
                           odd_file_names=False)
    files = sorted(library.tracks, key=lambda t: t.path)
    gone, replaced = files[0], files[1]
    os.unlink(gone.path)
    shutil.copy(files[2].path, replaced.path)  # replaced by another file's content, same name
    scan_id = running_scan("/bad-rows", {"c/b0": "extract"})
    message = [[t.path, t.size_bytes, t.mtime] for t in files]
    extract_metadata_batch.apply_async((scan_id, "c/b0", message, {}), ignore_result=False).get(timeout=60)
    summary = stack.wait_for_unit(scan_id, "c/b0")

    failures = json.loads(stack.soniquebay("failures", str(scan_id), "--json").stdout)
    assert [f["path"] for f in failures] == [gone.path]
    assert "no longer exists" in failures[0]["reason"] or "vanished" in failures[0]["reason"]
    with db_session_factory() as session:
        catalogue = tracks_by_path(session)
    assert catalogue[replaced.path]["title"] == files[2].title  # what the file holds now
    assert {files[2].path, files[3].path} <= set(catalogue)
    assert summary == ("done", 3, 1)


def test_records_holding_what_postgresql_refuses_are_cleaned_by_the_batch_stage(stack, db_session_factory,
                                                                                running_scan, library_root):
    """Staged records are the extract host's word: a NUL or a lone surrogate in them (which the extractor never
    writes, but a forged row can) is cleaned by the batch stage and told in the track's warnings, not refused."""
    from worker_app.pipeline.batch import batch_entities
    from worker_app.pipeline.staging import stage_extracted

    album = f"{library_root}/bad-rows/unstorable"
    records = _records(album)
    for record in records:
        record["cover"], record["folder_cover"] = None, None
    records[0]["title"] = "Nul\x00here"
    records[1]["tags"] = {"comment": ["lone \ud800 surrogate"]}
    # A second unit keeps the scan open: its end would sweep away these tracks, whose files were never on disk.
    scan_id = running_scan(f"{library_root}/bad-rows", {"c/u0": "extract", "c/u1": "extract"})
    with db_session_factory() as session, session.begin():
        stage_extracted(session, scan_id, "c/u0", records, [], {})
    batch_entities.apply_async((scan_id, "c/u0"), ignore_result=False).get(timeout=60)
    assert stack.wait_for_unit(scan_id, "c/u0") == ("done", 3, 0)

    with db_session_factory() as session:
        catalogue = tracks_by_path(session)
    first, second = catalogue[f"{album}/01.flac"], catalogue[f"{album}/02.flac"]
    assert first["title"] == "Nulhere"
    assert "title: NUL removed or invalid characters replaced" in first["warnings"]
    assert second["tags"] == {"comment": ["lone \ufffd surrogate"]}
    assert "tags.comment: NUL removed or invalid characters replaced" in second["warnings"]


def test_words_beyond_what_a_search_vector_holds_do_not_cost_the_track(stack, db_session_factory, running_scan,
                                                                        library_root):
    """PostgreSQL refuses a tsvector above 1 MB. The vector is made in the same statement as the track: a title of
    that many distinct words must still catalogue the track, searchable by its first words."""
    from worker_app.db.models import ScanFailure
    from worker_app.pipeline.insert import insert_batch_direct

    album = f"{library_root}/wordy/album"
    payload = _payload(album)
    payload["tracks"][0]["title"] = " ".join(f"w{number:06d}x" for number in range(150_000))  # 1.5 MB
    scan_id = running_scan(f"{library_root}/wordy", {"c/b0": "extract"})
    stage(db_session_factory, scan_id, "c/b0", payload)
    insert_batch_direct.apply_async((scan_id, "c/b0"), ignore_result=False).get(timeout=120)

    with db_session_factory() as session:
        catalogued = {p for p in tracks_by_path(session) if p.startswith(f"{album}/")}
        # The insert's failures: the analysis it sends may already have failed too, as these files are not on disk.
        failures = session.execute(select(ScanFailure.path, ScanFailure.kind, ScanFailure.reason)
                                   .where(ScanFailure.scan_id == scan_id, ScanFailure.stage == "insert")).all()
    assert failures == [], [(path, kind, reason[:300]) for path, kind, reason in failures]
    assert catalogued == {f"{album}/01.flac", f"{album}/02.flac", f"{album}/03.flac"}
    # As a user looks for it: `soniquebay search` by its first word.
    found = json.loads(stack.soniquebay("search", "w000000x", "--json").stdout)
    assert [track["path"] for track in found] == [f"{album}/01.flac"]
