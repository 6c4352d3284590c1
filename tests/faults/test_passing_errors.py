"""A passing error is not a verdict (nothing is lost). A file that cannot be read for one scan (a
permission, an I/O error, a stale handle, the per-file time limit, the worker lost while reading it) keeps its track
in the catalogue, is reported with kind "passing", is not remembered, and is read again by the next scan, which
catalogues it as it now is. A verdict on the content (a corrupt file) is remembered while the file is unchanged."""
from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.stack import assert_catalogue_exact, engine_of, scan, set_plan
from worker_app.db.models import FailedFile, ScanFailure, Track
from worker_app.paths import db_path


def _bump(path: str) -> None:
    """Changed on disk (a retag would do this): the next scan reads the file."""
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))


def test_a_file_unreadable_for_one_scan_keeps_its_track_and_is_read_again(faults):
    stack, root = faults
    library = make_library(root / "passing", n_files=24, seed=101, odd_file_names=False)
    engine = engine_of(stack)
    first = scan(stack, library.root)
    assert_catalogue_exact(engine, library, first)

    paths = sorted(library.by_path)
    victims = {"permission": paths[1], "eio": paths[5], "estale": paths[9], "slow": paths[13], "exit": paths[17]}
    for path in victims.values():
        _bump(path)
    os.chmod(victims["permission"], 0)
    set_plan(stack, *(f"read {fault} {victims[fault]}" for fault in ("eio", "estale", "slow", "exit")))
    with Session(engine) as session:
        before = {path: mtime for path, mtime in session.execute(select(Track.path, Track.mtime))}
    try:
        during = scan(stack, library.root)
    finally:
        os.chmod(victims["permission"], 0o644)
        set_plan(stack)

    # Every track is still there, as it was; each unreadable file is a passing failure, and none is remembered.
    assert_catalogue_exact(engine, library)
    assert during["status"] == "complete" and during["failed"] == len(victims) + len(library.corrupt), during
    with Session(engine) as session:
        kinds = {path: (kind, reason) for path, kind, reason in session.execute(
            select(ScanFailure.path, ScanFailure.kind, ScanFailure.reason)
            .where(ScanFailure.scan_id == during["scan_id"]))}
        remembered = set(session.execute(select(FailedFile.path)).scalars())
        mtimes = {path: mtime for path, mtime in session.execute(select(Track.path, Track.mtime))}
    for fault, path in victims.items():
        key = db_path(path)[0]
        assert kinds[key][0] == "passing", (fault, kinds[key])
        assert key not in remembered, fault
        assert mtimes[key] == before[key], f"{fault}: the track was changed by a failed read"
    assert "permission denied" in kinds[db_path(victims["permission"])[0]][1]
    assert "I/O error" in kinds[db_path(victims["eio"])[0]][1]
    assert "took longer than" in kinds[db_path(victims["slow"])[0]][1]
    assert "died" in kinds[db_path(victims["exit"])[0]][1]
    for corrupt in library.corrupt:
        assert kinds[db_path(str(corrupt))[0]][0] == "verdict"

    # The faults are gone (the files' mtimes did not change again): the next scan reads exactly those files.
    after = scan(stack, library.root)
    assert after["extracted"] == len(victims), after
    assert after["failed"] == len(library.corrupt) and after["removed"] == 0, after
    with Session(engine) as session:
        mtimes = {path: mtime for path, mtime in session.execute(select(Track.path, Track.mtime))}
        failed_kinds = set(session.execute(select(ScanFailure.kind).where(
            ScanFailure.scan_id == after["scan_id"])).scalars())
    for path in victims.values():
        assert mtimes[db_path(path)[0]] == os.stat(path).st_mtime
    assert failed_kinds <= {"verdict"}

    # A verdict is remembered: the corrupt files are not read again while they are unchanged.
    again = scan(stack, library.root)
    assert again["extracted"] == 0 and again["failed"] == len(library.corrupt), again
