"""A task delivered twice changes nothing: the same insert batch run twice through the real insert worker leaves
the same rows."""
from __future__ import annotations

import hashlib

from sqlalchemy import select

from tests.catalogue import catalogue_counts, forget_library, tracks_by_path
from worker_app.metadata.record import CoverImage, TrackRecord
from worker_app.paths import db_path


def _records(folder: str) -> list[dict]:
    cover_bytes = b"\x89PNG\r\n\x1a\n" + b"fake-but-stored" * 10
    cover = CoverImage(hashlib.sha256(cover_bytes).hexdigest(), "image/png", None, None, len(cover_bytes),
                       "embedded", cover_bytes)
    records = []
    for number, artist in enumerate(["Ana", "Bo", "Ana feat. Cy"], start=1):
        record = TrackRecord(
            path=f"{folder}/{number:02d}.flac", size_bytes=1000 + number, mtime=1_700_000_000.5 + number,
            format="flac", codec="flac", title=f"Song {number}", artists=[artist, "Dee"], album="Mixtape",
            is_compilation=True, track_number=number, track_total=3, year=2001, genres=["Pop", "Rock"],
            duration_seconds=1.5, sample_rate=44100, channels=2, cover=cover,
        ).to_message()
        records.append(record)
    return records


def _payload(folder: str) -> dict:
    from worker_app.pipeline.batch import group_by_artist, prepare_insertion_batch

    records = _records(folder)
    covers = {}
    for record in records:
        covers[record["cover"]["sha256"]] = record["cover"]
        record["cover"] = record["cover"]["sha256"]
        record["folder_cover"] = None
    return prepare_insertion_batch(group_by_artist(records), [], covers)


def stage(db_session_factory, scan_id: int, key: str, payload: dict) -> None:
    """Stage a payload for a scan unit as its extract and batch stages would (pipeline/staging.py): the insert
    message then carries only (scan_id, key)."""
    from worker_app.pipeline.staging import stage_extracted, stage_payload

    covers = {cover["sha256"]: CoverImage.from_message(cover) for cover in payload["covers"]}
    with db_session_factory() as session, session.begin():
        stage_extracted(session, scan_id, key, payload["tracks"], payload["failures"], covers)
        assert stage_payload(session, scan_id, key, {**payload, "covers": []})


def test_the_same_insert_batch_twice_leaves_the_same_rows(stack, db_session_factory):
    from worker_app.pipeline.insert import insert_tracks_batch

    payload = _payload("/idempotence/first")
    with db_session_factory() as session:
        before = catalogue_counts(session, "/idempotence/first")
    first = insert_tracks_batch.apply_async((payload,), ignore_result=False).get(timeout=60)
    with db_session_factory() as session:
        after_once = catalogue_counts(session, "/idempotence/first")
        catalogue_once = tracks_by_path(session)
    second = insert_tracks_batch.apply_async((payload,), ignore_result=False).get(timeout=60)
    with db_session_factory() as session:
        after_twice = catalogue_counts(session, "/idempotence/first")
        catalogue_twice = tracks_by_path(session)

    assert first == second, "the same rows must keep the same ids"
    assert after_once["tracks"] - before["tracks"] == 3
    assert after_once["track_artists"] - before["track_artists"] == 6
    assert after_once["covers"] - before["covers"] == 1
    assert after_twice == after_once
    assert catalogue_twice == catalogue_once
    track = catalogue_once["/idempotence/first/02.flac"]
    assert track["artists"] == ["Bo", "Dee"]
    assert track["album"] == "Mixtape" and track["album_artist"] == "Various Artists" and track["is_compilation"]


def test_a_redelivered_scan_batch_is_counted_once(stack, db_session_factory, running_scan, library_root):
    """insert_batch_direct delivered twice for one scan unit: rows and the scan's figures as for one delivery."""
    from worker_app.db.models import ScanUnit, StagedCover, StagedUnit
    from worker_app.pipeline.insert import insert_batch_direct

    folder = f"{library_root}/idempotence/scan"  # the insert stage takes only names under the library roots
    payload = _payload(folder)
    scan_id = running_scan(f"{library_root}/idempotence", {"c/b0": "extract"})
    stage(db_session_factory, scan_id, "c/b0", payload)
    insert_batch_direct.apply_async((scan_id, "c/b0"), ignore_result=False).get(timeout=60)
    # Its only unit done, the scan ends: its sweep must not take the tracks it has just written.
    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        once = catalogue_counts(session, folder)
        assert once["tracks"] == 3
        # Dropped in the transaction that closed the unit; the picture moved into the catalogue.
        assert session.execute(select(StagedUnit).where(StagedUnit.scan_id == scan_id)).first() is None
        assert session.execute(select(StagedCover).where(
            StagedCover.sha256.in_(payload["cover_shas"]))).first() is None
    second = insert_batch_direct.apply_async((scan_id, "c/b0"), ignore_result=False).get(timeout=60)
    assert second == {"skipped": "c/b0", "why": "done"}
    with db_session_factory() as session:
        assert catalogue_counts(session, folder) == once
        unit = session.execute(select(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == "c/b0")).scalar_one()
        assert (unit.state, unit.extracted, unit.inserted, unit.failed) == ("done", 3, 3, 0)


def test_a_chunk_that_died_after_its_commit_still_gets_its_children_sent(stack, db_session_factory, library_root,
                                                                         monkeypatch, running_scan):
    """The window between a task's commit and its sending of the child messages: the worker dies there (here the
    sending is switched off for one in-process run of the chunk). The chunk's message comes back, finds its unit
    done, and sends the children nobody started: the scan completes with every file."""
    import worker_app.pipeline.scan as scan_stage
    from tests.audio_factory import make_library
    from worker_app.db.models import ScanUnit, Track

    library = make_library(library_root / "died-after-commit", n_files=30, seed=41, corrupt=False)
    root = str(library.root)
    scan_id = running_scan(root, {"c": "chunk"})

    monkeypatch.setattr(scan_stage, "send_after_commit", lambda *args: None)
    scan_stage.scan_directory_chunk(scan_id, "c", [root])
    with db_session_factory() as session:
        pending = session.execute(select(ScanUnit.key).where(ScanUnit.scan_id == scan_id,
                                                             ScanUnit.state == "pending")).scalars().all()
    assert pending, "the chunk registered no children"

    scan_stage.scan_directory_chunk.delay(scan_id, "c", [root])  # the redelivery of the chunk's message

    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        catalogued = session.execute(select(Track.path).where(Track.path.startswith(root + "/"))).scalars().all()
    try:
        assert sorted(catalogued) == sorted(db_path(path)[0] for path in library.by_path)
    finally:
        with db_session_factory() as session, session.begin():
            forget_library(session, root)


def test_two_units_closing_at_once_do_not_deadlock(stack, db_session_factory, running_scan):
    """Two tasks of one scan, each registering new units (rows that reference the scan) and then closing its own
    unit, at the same moment: both commit. (Locking the scan row FOR UPDATE made them wait for each other's
    reference to it: a deadlock, which the fleet saw between concurrent scan chunks.)"""
    import threading

    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger import Unit, complete_unit, register_units

    scan_id = running_scan("/deadlock", {"c.0": "chunk", "c.1": "chunk"})

    both_registered = threading.Barrier(2, timeout=30)
    errors, finished = [], []

    def close(key: str) -> None:
        try:
            with db_session_factory() as session, session.begin():
                register_units(session, scan_id, key, [Unit(f"{key}/b0", "extract", "extract_metadata_batch", [])])
                both_registered.wait()
                finished.append(complete_unit(session, scan_id, key, discovered=1))
        except Exception as error:  # noqa: BLE001 - the test reports whatever went wrong
            errors.append(error)
            both_registered.abort()

    threads = [threading.Thread(target=close, args=(key,)) for key in ("c.0", "c.1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert finished == [False, False]  # their children are still pending
    with db_session_factory() as session:
        states = dict(session.execute(select(ScanUnit.key, ScanUnit.state).where(ScanUnit.scan_id == scan_id)).all())
    assert states == {"c.0": "done", "c.1": "done", "c.0/b0": "pending", "c.1/b0": "pending"}


def test_a_message_the_broker_gives_again_is_a_redelivery_not_a_death(db_session_factory, running_scan, library_root):
    """kombu marks the messages it restores from a lost consumer ``redelivered``, those the lost worker held without
    starting them too. Each counts in the unit's redeliveries (what `soniquebay status` and the fleet scenario read),
    never as a death (deaths park a unit): only a delivery that had begun and comes back is one."""
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger.delivery import begin_delivery

    scan_id = running_scan(f"{library_root}/redelivered", {"c/held": "extract", "c/started": "extract"})
    held = begin_delivery(scan_id, "c/held", 1, 0, redelivered=True)  # prefetched by a worker that died
    assert (held.action, held.deliveries, held.deaths) == ("run", 1, 0)
    begin_delivery(scan_id, "c/started", 1, 0)
    started = begin_delivery(scan_id, "c/started", 1, 0, redelivered=True)  # its worker died running it
    assert (started.action, started.deliveries, started.deaths) == ("run", 2, 1)
    with db_session_factory() as session:
        counted = dict(session.execute(select(ScanUnit.key, ScanUnit.redeliveries).where(
            ScanUnit.scan_id == scan_id)).all())
    assert counted == {"c/held": 1, "c/started": 1}
