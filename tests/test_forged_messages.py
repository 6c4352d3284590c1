"""Forged task messages, published straight to the broker under the real task names, as any client of the broker
could: each names files outside the library roots (absolute, through `..`, through a symbolic link inside the
library) or a catalogued track whose file is still there. The real workers must refuse them, with a log line and a
failure record, read nothing outside the roots, delete nothing, and still close the unit."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.audio_factory import make_library
from tests.catalogue import forget_library
from worker_app.celery_app import app

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def library(library_root, db_session_factory):
    made = make_library(library_root / "forged", n_files=12, seed=13, corrupt=False, untagged=False,
                        odd_file_names=False)
    yield made
    # Its artists share names with later test libraries' (not MusicBrainz ids), which would otherwise see them.
    with db_session_factory() as session, session.begin():
        forget_library(session, str(made.root))


@pytest.fixture(scope="module")
def outside(workspace, library):
    """Audio files and a folder image outside the roots, and a link inside the library that leads to them. Were
    any of them read, the catalogue would show their tracks or their cover."""
    secret = make_library(workspace / "outside", n_files=3, seed=99, corrupt=False, untagged=False,
                          odd_file_names=False)
    folder = Path(secret.tracks[0].path).parent
    cover = secret.set_folder_cover(folder)
    link = library.root / "escape"
    link.symlink_to(folder, target_is_directory=True)
    yield secret, folder, cover, link
    link.unlink()
    shutil.rmtree(secret.root, ignore_errors=True)


@pytest.fixture(scope="module")
def scanned(stack, library, outside):
    result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    summary = json.loads(result.stdout)
    assert summary["status"] == "complete" and summary["inserted"] == len(library.tracks)
    return summary


def forge(task: str, args: list) -> None:
    """What a forger does: a message under a real task name, sent to the broker like any other."""
    app.send_task(task, args=args, ignore_result=True)


def failures_of(stack, scan_id: int) -> dict[str, dict]:
    listed = json.loads(stack.soniquebay("failures", str(scan_id), "--json").stdout)
    return {failure["path"]: failure for failure in listed}


def worker_log(stack, queue: str) -> str:
    return stack.supervisor.log(queue).read_text(errors="replace")


def catalogued_paths(db_session_factory) -> set[str]:
    from worker_app.db.models import Track

    with db_session_factory() as session:
        return set(session.execute(select(Track.path)).scalars())


def cover_shas(db_session_factory) -> set[str]:
    from worker_app.db.models import Cover

    with db_session_factory() as session:
        return set(session.execute(select(Cover.sha256)).scalars())


def assert_nothing_read_from(secret, cover, db_session_factory):
    paths = catalogued_paths(db_session_factory)
    assert not {path for path in paths if path.startswith(os.fsdecode(secret.root))}
    assert not {path for path in paths if "/escape/" in path or path == "/etc/passwd"}
    assert cover.sha256 not in cover_shas(db_session_factory)
    assert not {track.cover_sha256 for track in secret.tracks if track.cover_sha256} & cover_shas(db_session_factory)


def test_an_extract_of_files_outside_the_roots_is_refused_and_the_rest_is_read(
        stack, library, outside, scanned, running_scan, db_session_factory):
    secret, folder, cover, link = outside
    inside = library.tracks[0]
    outside_track = secret.tracks[0]
    name = os.path.basename(outside_track.path)
    size, mtime = outside_track.size_bytes, outside_track.mtime
    forged = {
        "/etc/passwd": "outside the library roots",
        f"{library.root}/{'/'.join(['..'] * 8)}{outside_track.path}": "not an absolute, normalised path",
        f"{link}/{name}": "leads outside the library roots",
    }
    # The unit is a real pending one (the forger may know one): only the check stands between it and the files.
    scan_id = running_scan("/forged-extract", {"b0": "extract"})
    with db_session_factory() as session:
        from worker_app.db.models import Track
        session.execute(Track.__table__.delete().where(Track.path == inside.path))
        session.commit()
    files = [[path, size, mtime] for path in forged] + [[inside.path, inside.size_bytes, inside.mtime]]
    forge("extract_metadata_batch", [scan_id, "b0", files, {str(link): f"{link}/cover.jpg",
                                                           str(folder): f"{folder}/cover.jpg"}])

    state, inserted, failed = stack.wait_for_unit(scan_id, "b0", timeout=120)
    assert state == "done" and inserted == 1, stack.diagnostics()
    assert inside.path in catalogued_paths(db_session_factory)  # the unit went on with the honest file
    assert_nothing_read_from(secret, cover, db_session_factory)
    failures = failures_of(stack, scan_id)
    for path, why in {**forged, f"{link}/cover.jpg": "leads outside", f"{folder}/cover.jpg": "outside"}.items():
        assert path in failures, (path, failures)
        assert failures[path]["reason"].startswith("refused: ") and why in failures[path]["reason"]
    log = worker_log(stack, "extract")
    assert "refused a name its message gave: /etc/passwd is outside the library roots" in log
    assert f"refused a name its message gave: {link}/{name} leads outside the library roots" in log


def test_a_scan_chunk_or_file_outside_the_roots_is_refused(stack, library, outside, scanned, running_scan,
                                                           db_session_factory):
    secret, folder, cover, link = outside
    name = os.path.basename(secret.tracks[0].path)
    inside = os.path.dirname(library.tracks[0].path)
    escape = "/".join([".."] * 12) + secret.tracks[1].path
    scan_id = running_scan("/forged-scan", {"c": "chunk", "f": "chunk", "s": "chunk", "t": "chunk"})
    forge("scan_directory_chunk", [scan_id, "c", [str(folder), str(link), "/etc"]])
    forge("scan_single_file", [scan_id, "f", f"{link}/{name}"])
    # Slices of a big folder: the folder, its file names and its image all come from the message.
    forge("scan_directory_chunk", [scan_id, "s", [str(link)], [name], f"{link}/cover.jpg"])
    forge("scan_directory_chunk", [scan_id, "t", [inside], [escape], f"{folder}/cover.jpg"])

    assert {stack.wait_for_unit(scan_id, key)[0] for key in ("c", "f", "s", "t")} == {"done"}
    failures = failures_of(stack, scan_id)
    assert {str(folder), str(link), "/etc", f"{link}/{name}", f"{link}/cover.jpg", f"{inside}/{escape}",
            f"{folder}/cover.jpg"} <= set(failures)
    assert all(failure["reason"].startswith("refused: ") for failure in failures.values())
    from worker_app.db.models import ScanUnit

    with db_session_factory() as session:  # nothing listed there, so no extract unit was made
        kinds = set(session.execute(select(ScanUnit.kind).where(ScanUnit.scan_id == scan_id)).scalars())
    assert kinds == {"chunk"}
    assert_nothing_read_from(secret, cover, db_session_factory)
    assert "refused a name its message gave: /etc is outside the library roots" in worker_log(stack, "scan")


def test_extract_single_file_refuses_names_outside_the_roots(stack, library, outside):
    secret, folder, cover, link = outside
    inside = library.tracks[1]
    linked = f"{link}/{os.path.basename(secret.tracks[0].path)}"
    for path in ("/etc/passwd", linked, f"{library.root}/../../../etc/passwd"):
        answer = app.send_task("extract_single_file", args=[path]).get(timeout=60)
        assert "record" not in answer and answer["error"].startswith("refused: "), answer
    assert app.send_task("extract_single_file", args=[inside.path]).get(timeout=60)["record"]["title"] == inside.title
    assert "extract_single_file refused a name its message gave: /etc/passwd" in worker_log(stack, "extract")


def test_a_cleanup_removes_only_tracks_whose_file_is_gone(stack, library, outside, scanned, running_scan,
                                                          db_session_factory):
    kept, gone = library.tracks[2], library.tracks[3]
    library.remove_track(gone.path)
    scan_id = running_scan("/forged-cleanup", {"rm": "cleanup"})
    forge("cleanup_removed_files", [scan_id, "rm", [kept.path, gone.path, "/etc/passwd"], None])

    state, _, failed = stack.wait_for_unit(scan_id, "rm")
    assert state == "done"
    paths = catalogued_paths(db_session_factory)
    assert kept.path in paths  # its file is there: the message's word is not enough
    assert gone.path not in paths  # verified gone: removed
    failures = failures_of(stack, scan_id)
    assert failures[kept.path]["reason"].startswith("not removed: the file is still there")
    assert failures["/etc/passwd"]["reason"].startswith("refused: ")
    assert f"kept {kept.path}: not removed: the file is still there" in worker_log(stack, "deferred")


def test_a_cleanup_under_an_unreadable_root_deletes_nothing(stack, library, outside, scanned, running_scan,
                                                            db_session_factory, library_root):
    """A file that looks gone because its root cannot be read (an unmounted or locked library) is not gone."""
    victim = library.tracks[4]
    mode = library_root.stat().st_mode
    library_root.chmod(0)
    try:
        scan_id = running_scan("/forged-cleanup-locked", {"rm": "cleanup"})
        forge("cleanup_removed_files", [scan_id, "rm", [victim.path], None])
        assert stack.wait_for_unit(scan_id, "rm")[0] == "done"
    finally:
        library_root.chmod(mode)
    assert victim.path in catalogued_paths(db_session_factory)
    failure = failures_of(stack, scan_id)[victim.path]
    assert failure["kind"] == "passing" and "library root" in failure["reason"]


def test_analysis_does_not_open_a_planted_track_outside_the_roots(stack, outside, running_scan, db_session_factory):
    """The insert stage opens no file, so rows planted in a unit's staged payload (the claim check the insert
    message names) are written as they are; the analysis that would open their files refuses names outside the
    roots."""
    from tests.test_idempotence import _payload, stage
    from worker_app.db.models import AudioFeatures, Track

    secret, folder, cover, link = outside
    payload = _payload(str(link))
    planted = [f"{link}/{os.path.basename(track.path)}" for track in secret.tracks[:len(payload["tracks"])]]
    for track, path in zip(payload["tracks"], planted, strict=True):
        track["path"] = path
    scan_id = running_scan("/forged-insert", {"b0": "extract"})
    stage(db_session_factory, scan_id, "b0", payload)
    forge("insert_batch_direct", [scan_id, "b0"])
    assert stack.wait_for_unit(scan_id, "b0")[0] == "done"
    assert stack.wait_for_unit(scan_id, "b0/analyse", timeout=180)[0] == "done"

    with db_session_factory() as session:
        analysed = session.execute(select(Track.path, AudioFeatures.error, AudioFeatures.duration_seconds)
                                   .join(AudioFeatures, AudioFeatures.track_id == Track.id)
                                   .where(Track.path.in_(planted))).all()
        session.execute(Track.__table__.delete().where(Track.path.in_(planted)))
        session.commit()
    assert sorted(path for path, _, _ in analysed) == sorted(planted)
    assert all(error.startswith("refused: ") and "leads outside" in error and duration is None
               for _, error, duration in analysed), analysed
    assert "analysis refused to open track" in worker_log(stack, "extract")


@pytest.mark.parametrize(("name", "refused_because"), [
    ("{root}/Artist/01.flac", None),
    ("{root}/Artist/\udcff.flac", None),  # a name that is not UTF-8, as os.fsdecode gives it: a library file
    (b"{root}/Artist/\xff.flac", None),  # ... and as the catalogue keeps its bytes (tracks.path_bytes)
    ("{root}/Artist/\ud800.flac", "is not a name any file can have"),  # no file name decodes to a lone \ud800
    ("{root}/Artist/\x00.flac", "holds a NUL byte"),
    ("{root}/../etc/passwd", "not an absolute, normalised path"),
    ("{root}/./Artist/01.flac", "not an absolute, normalised path"),
    ("Artist/01.flac", "not an absolute, normalised path"),
    ("/etc/passwd", "outside the library roots"),
    ("{root}-other/01.flac", "outside the library roots"),  # a sibling whose name starts like the root's
    ("{root}/link/passwd", "leads outside the library roots"),
    ("{root}/inner/01.flac", None),  # a link that stays inside the roots
    (42, "not a file name"),
    (["{root}/Artist/01.flac"], "not a file name"),
])
def test_the_name_check(tmp_path, name, refused_because):
    from worker_app.paths import PathRefused, check_task_path

    root = tmp_path / "library"
    (root / "Artist").mkdir(parents=True)
    (root / "link").symlink_to("/etc", target_is_directory=True)
    (root / "inner").symlink_to(root / "Artist", target_is_directory=True)
    if isinstance(name, str):
        name = name.format(root=root)
    elif isinstance(name, bytes):
        name = name.replace(b"{root}", os.fsencode(root))
    if refused_because is None:
        assert check_task_path(name, (str(root),)) == str(root)
    else:
        with pytest.raises(PathRefused, match=refused_because):
            check_task_path(name, (str(root),))
