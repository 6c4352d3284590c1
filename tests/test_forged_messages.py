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
from sqlalchemy import func, select

from tests.audio_factory import make_library
from tests.catalogue import forget_library
from tests.services import wait_for
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


def staged_unit(db_session_factory, running_scan, root: str, records: list[dict], verdicts: list[list]) -> int:
    """A scan unit whose staged rows say what a forger on an extract or batch host wrote there (the ledger duty
    may write ``staged_units``: the claim check), ready for the insert message that names it; returns the scan."""
    from tests.test_idempotence import stage
    from worker_app.pipeline.batch import group_by_artist, prepare_insertion_batch

    scan_id = running_scan(root, {"b0": "extract"})
    stage(db_session_factory, scan_id, "b0", prepare_insertion_batch(group_by_artist(records), verdicts, {}))
    return scan_id


def record_of(source: str, **changes) -> dict:
    """The record the extract stage would stage for a file, as a forger would change it."""
    from worker_app.metadata.reader import read_track

    record = read_track(source)
    record.cover = None
    return {**record.to_message(), "cover": None, "folder_cover": None, **changes}


def catalogued_track(db_session_factory, path: str):
    from worker_app.db.models import Track

    with db_session_factory() as session:
        return session.execute(select(Track.title, Track.size_bytes, Track.mtime).where(Track.path == path)).first()


def test_forged_records_and_verdicts_cannot_touch_the_tracks_of_unchanged_files(
        stack, library, outside, scanned, running_scan, db_session_factory):
    """What a compromised extract host can stage for the insert stage: a record that retitles a catalogued file, a
    verdict that would delete one, names outside the roots. Only what a real scan could send is believed: a file
    that really changed on disk gets its verdict."""
    secret, folder, cover, link = outside
    retitled, condemned, changed = library.tracks[5], library.tracks[6], library.tracks[7]
    planted = f"{link}/{os.path.basename(secret.tracks[0].path)}"
    changed_state = os.stat(changed.path)
    os.utime(changed.path, ns=(changed_state.st_atime_ns, changed_state.st_mtime_ns + 5_000_000_000))
    changed_now = os.stat(changed.path)
    records = [record_of(retitled.path, title="Forged title"), record_of(secret.tracks[0].path, path=planted),
               record_of(secret.tracks[1].path, path="/etc/passwd")]
    verdicts = [[condemned.path, "extract", "not audio (forged)", condemned.size_bytes, condemned.mtime, "verdict"],
                [changed.path, "extract", "corrupt (the file changed)", changed_now.st_size, changed_now.st_mtime,
                 "verdict"]]
    scan_id = staged_unit(db_session_factory, running_scan, "/forged-unit", records, verdicts)
    forge("insert_batch_direct", [scan_id, "b0"])

    state, inserted, failed = stack.wait_for_unit(scan_id, "b0")
    assert (state, inserted) == ("done", 0), stack.diagnostics()
    assert catalogued_track(db_session_factory, retitled.path).title == retitled.title
    assert catalogued_track(db_session_factory, condemned.path) is not None
    assert catalogued_track(db_session_factory, changed.path) is None  # really changed: the verdict holds
    assert not {path for path in catalogued_paths(db_session_factory) if path in (planted, "/etc/passwd")}
    failures = failures_of(stack, scan_id)
    for path, why in {retitled.path: "has not changed since it was catalogued",
                      condemned.path: "has not changed since it was catalogued",
                      planted: "leads outside the library roots", "/etc/passwd": "outside the library roots"}.items():
        assert failures[path]["kind"] == "passing" and failures[path]["reason"].startswith("refused: "), failures
        assert why in failures[path]["reason"], failures[path]
    assert failures[changed.path]["kind"] == "verdict"
    log = worker_log(stack, "insert")
    assert f"refused what its staged unit says of {condemned.path}: the verdict" in log
    # The refused verdict is not remembered: the next scan reads the file as usual.
    from worker_app.db.models import FailedFile

    with db_session_factory() as session:
        remembered = set(session.execute(select(FailedFile.path).where(
            FailedFile.path.in_([retitled.path, condemned.path]))).scalars())
    assert not remembered


def test_a_listing_that_leaves_folders_out_cannot_make_the_sweep_delete_them(
        stack, library, outside, scanned, db_session_factory):
    """The end of a scan deletes the tracks of the folders its listing did not find. A scan host that reports a
    listing with folders left out (here: none listed at all) must not get their tracks deleted: each folder is
    checked to be gone first. A folder that really is gone is swept."""
    from tests.test_idempotence import _payload
    from worker_app.db.models import Scan, ScanFolder
    from worker_app.pipeline.insert import write_payload

    vanished = f"{library.root}/vanished"  # catalogued, and no such folder on disk
    with db_session_factory() as session, session.begin():
        write_payload(session, None, _payload(vanished))
    with db_session_factory() as session, session.begin():
        scan = Scan(root=str(library.root), status="finalizing", started_at=func.now())
        session.add(scan)
        session.flush()
        # What the forger reported: the root was listed, every folder below it was not found.
        session.add(ScanFolder(scan_id=scan.id, folder=str(library.root), listed=True))
        scan_id = scan.id
    before = {path for path in catalogued_paths(db_session_factory) if path.startswith(f"{library.root}/")}
    forge("cleanup_finish_scan", [scan_id])
    wait_for(lambda: scan_status(db_session_factory, scan_id) == "complete", 120, "the forged scan's end")

    after = {path for path in catalogued_paths(db_session_factory) if path.startswith(f"{library.root}/")}
    assert after == {path for path in before if not path.startswith(f"{vanished}/")}
    assert {path for path in before if path.startswith(f"{vanished}/")}  # it was there to be swept
    kept = failures_of(stack, scan_id)
    folders = {os.path.dirname(path) for path in after}
    assert folders <= set(kept), (folders, kept)
    assert all(kept[folder]["reason"].startswith("not removed: the folder is still there") for folder in folders)
    assert f"scan {scan_id}: kept the tracks of " in worker_log(stack, "deferred")


def scan_status(db_session_factory, scan_id: int) -> str:
    from worker_app.db.models import Scan

    with db_session_factory() as session:
        return session.get(Scan, scan_id).status


def test_analysis_does_not_open_a_planted_track_outside_the_roots(stack, outside, running_scan, db_session_factory):
    """A track row whose file lies outside the roots (written by hand, or by an older release's insert stage, which
    checked no name): the analysis that would open its file refuses it."""
    from tests.test_idempotence import _payload
    from worker_app.db.models import AudioFeatures, Track
    from worker_app.pipeline.insert import write_payload

    secret, folder, cover, link = outside
    payload = _payload(str(link))
    planted = [f"{link}/{os.path.basename(track.path)}" for track in secret.tracks[:len(payload["tracks"])]]
    for track, path in zip(payload["tracks"], planted, strict=True):
        track["path"] = path
    with db_session_factory() as session, session.begin():
        track_ids = sorted(write_payload(session, None, payload).values())
    scan_id = running_scan("/forged-analysis", {"a": "analysis"})
    forge("extract_audio_features_batch", [scan_id, "a", track_ids])
    assert stack.wait_for_unit(scan_id, "a", timeout=180)[0] == "done"

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
    ("{root}/Artist/escape.flac", "leads outside the library roots"),  # the file itself a link out
    ("{root}/Artist/chain.flac", "leads outside the library roots"),  # a link to a link out
    ("{root}/inner/escape.flac", "leads outside the library roots"),  # ... through a linked folder
    ("{root}/Artist/alias.flac", None),  # a file link that stays inside
    ("{root}/Artist/dangling.flac", None),  # a link to nothing, inside: the name is checked, not the file
    (42, "not a file name"),
    (["{root}/Artist/01.flac"], "not a file name"),
])
@pytest.mark.parametrize("folders_cached", [False, True], ids=["alone", "in-a-message"])
def test_the_name_check(tmp_path, name, refused_because, folders_cached):
    """Alone, and as a message's names are checked (each folder resolved once for all its files: the cache has
    seen the folders of other names first)."""
    from worker_app.paths import PathRefused, check_task_path

    root = tmp_path / "library"
    (root / "Artist").mkdir(parents=True)
    (root / "Artist" / "01.flac").write_bytes(b"fLaC")
    (root / "link").symlink_to("/etc", target_is_directory=True)
    (root / "inner").symlink_to(root / "Artist", target_is_directory=True)
    (root / "Artist" / "escape.flac").symlink_to("/etc/passwd")
    (root / "Artist" / "chain.flac").symlink_to(root / "Artist" / "escape.flac")
    (root / "Artist" / "alias.flac").symlink_to(root / "Artist" / "01.flac")
    (root / "Artist" / "dangling.flac").symlink_to(root / "Artist" / "gone.flac")
    if isinstance(name, str):
        name = name.format(root=root)
    elif isinstance(name, bytes):
        name = name.replace(b"{root}", os.fsencode(root))
    folders: dict[str, str] | None = None
    if folders_cached:
        folders = {}
        for other in ("Artist/01.flac", "inner/01.flac", "link/hosts", "Artist/alias.flac"):
            try:
                check_task_path(str(root / other), (str(root),), folders)
            except PathRefused:
                pass
    if refused_because is None:
        assert check_task_path(name, (str(root),), folders) == str(root)
    else:
        with pytest.raises(PathRefused, match=refused_because):
            check_task_path(name, (str(root),), folders)
