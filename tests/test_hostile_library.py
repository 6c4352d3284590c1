"""A hostile library through the real pipeline: bad files, bad names, bad file-system objects and files that kill
their worker. The scan completes, every good file is catalogued, every bad one has a failure record with its
reason, and the workers are still alive."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.audio_factory import make_library
from tests.catalogue import tracks_by_path
from tests.conftest import CRASH_MARKER
from tests.services import VENV_BIN
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)
BIG_FOLDER_ENTRIES = 100_000
BIG_FOLDER_AUDIO = 1_000


@pytest.fixture(scope="module")
def hostile(library_root, tmp_path_factory):
    library = make_library(library_root / "hostile", n_files=40, seed=21)
    root = library.root
    some_flac = next(t for t in library.tracks if t.format == "flac" and t.tagged and not t.warnings)
    some_mp3 = next(t for t in library.tracks if t.format == "mp3" and t.tagged and not t.warnings)
    cases = {"expected_failures": {}, "skipped": [], "extra_good": {}}
    failures = cases["expected_failures"]

    odd = root / "Odd Files"
    odd.mkdir()
    # A FLAC named .mp3 is read as what it is.
    shutil.copy(some_flac.path, odd / "really a flac.mp3")
    cases["extra_good"][os.fsdecode(odd / "really a flac.mp3")] = some_flac.title
    # Text and an image behind audio extensions.
    (odd / "liner notes.flac").write_text("These are the liner notes.\n" * 50)
    failures[os.fsdecode(odd / "liner notes.flac")] = "extract"
    shutil.copy(next(iter(library.folder_covers.values())), odd / "a picture.ogg")
    failures[os.fsdecode(odd / "a picture.ogg")] = "extract"
    # macOS AppleDouble sidecars are neither audio nor failures.
    (odd / "._really a flac.mp3").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 200)
    cases["skipped"].append(os.fsdecode(odd / "._really a flac.mp3"))
    # FIFOs, sockets and device nodes are never opened (a FIFO would block the reader forever).
    os.mkfifo(odd / "a fifo.mp3")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.fsdecode(odd / "a socket.flac"))
    os.mknod(odd / "a device.wav", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    cases["skipped"] += [os.fsdecode(odd / n) for n in ("a fifo.mp3", "a socket.flac", "a device.wav")]
    # A file the workers may not read, and a folder they may not list.
    shutil.copy(some_mp3.path, odd / "locked.mp3")
    os.chmod(odd / "locked.mp3", 0)
    failures[os.fsdecode(odd / "locked.mp3")] = "extract"
    locked_folder = root / "Locked Folder"
    locked_folder.mkdir()
    shutil.copy(some_mp3.path, locked_folder / "inside.mp3")
    os.chmod(locked_folder, 0)
    failures[os.fsdecode(locked_folder)] = "scan"
    # Files that kill their worker process, or exhaust its memory, in the middle of a folder of good files.
    poison = root / "Poison"
    poison.mkdir()
    for i in range(6):
        shutil.copy(some_mp3.path, poison / f"{i:02d} good.mp3")
        cases["extra_good"][os.fsdecode(poison / f"{i:02d} good.mp3")] = some_mp3.title
    shutil.copy(some_mp3.path, poison / f"03 {CRASH_MARKER}-exit.mp3")
    shutil.copy(some_mp3.path, poison / f"04 {CRASH_MARKER}-nomem.mp3")
    failures[os.fsdecode(poison / f"03 {CRASH_MARKER}-exit.mp3")] = "extract"
    failures[os.fsdecode(poison / f"04 {CRASH_MARKER}-nomem.mp3")] = "extract"
    # A folder that kills the scan worker listing it (a hung NFS mount, a file-system driver bug): it is left out
    # and recorded, the folders listed with it are not.
    poison_folder = root / f"Poison Folder {CRASH_MARKER}-exit"
    poison_folder.mkdir()
    shutil.copy(some_mp3.path, poison_folder / "never listed.mp3")
    failures[os.fsdecode(poison_folder)] = "scan"
    cases["poison_folder"] = os.fsdecode(poison_folder)
    # A very deep, very long path.
    deep = root.joinpath(*[f"{level:02d}-" + "ü" * 100 for level in range(12)])
    deep.mkdir(parents=True)
    shutil.copy(some_flac.path, deep / "deep.flac")
    cases["extra_good"][os.fsdecode(deep / "deep.flac")] = some_flac.title
    # Symbolic links: a loop, a way out of the library, and a link to a file inside it.
    os.symlink(root, root / "Odd Files" / "loop")
    outside = tmp_path_factory.mktemp("outside-the-library")
    shutil.copy(some_mp3.path, outside / "private.mp3")
    os.symlink(outside, root / "escape")
    os.symlink(some_flac.path, odd / "linked.flac")
    cases["extra_good"][os.fsdecode(odd / "linked.flac")] = some_flac.title
    # A folder of 100,000 entries.
    big = root / "Big Folder"
    big.mkdir()
    for i in range(BIG_FOLDER_ENTRIES):
        if i < BIG_FOLDER_AUDIO:
            os.link(some_mp3.path, big / f"{i:06d}.mp3")
        else:
            (big / f"{i:06d}.txt").touch()
    for i in range(BIG_FOLDER_AUDIO):
        cases["extra_good"][os.fsdecode(big / f"{i:06d}.mp3")] = some_mp3.title
    yield library, cases
    listener.close()
    os.chmod(locked_folder, 0o755)


def test_a_hostile_library_is_scanned_to_the_end(stack, hostile, db_session_factory):
    library, cases = hostile
    result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "400", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    summary = json.loads(result.stdout)
    assert summary["status"] == "complete"

    with db_session_factory() as session:
        catalogue = {p: row for p, row in tracks_by_path(session).items()
                     if p.startswith(os.fsdecode(library.root) + "/")}
    good = {db_path(p)[0]: t.title for p, t in library.by_path.items()}
    good.update(cases["extra_good"])
    assert sorted(set(good) - set(catalogue)) == []
    assert sorted(set(catalogue) - set(good)) == []
    assert all(catalogue[path]["title"] == title for path, title in good.items())
    assert any("extension" in w for w in catalogue[os.fsdecode(library.root / "Odd Files/really a flac.mp3")]
               ["warnings"])

    listed = stack.soniquebay("failures", str(summary["scan_id"]), "--json").stdout
    failures = {f["path"]: f for f in json.loads(listed)}
    expected = dict(cases["expected_failures"])
    expected.update({db_path(os.fsdecode(p))[0]: "extract" for p in library.corrupt})
    assert {path: failures[path]["stage"] for path in expected if path in failures} == expected, \
        f"missing failure records: {sorted(set(expected) - set(failures))}"
    assert all(failures[path]["reason"] for path in expected)
    assert "denied" in failures[os.fsdecode(library.root / "Locked Folder")]["reason"].lower()
    assert "denied" in failures[os.fsdecode(library.root / "Odd Files/locked.mp3")]["reason"].lower()
    assert "died" in failures[os.fsdecode(library.root / f"Poison/03 {CRASH_MARKER}-exit.mp3")]["reason"]
    assert "memory" in failures[os.fsdecode(library.root / f"Poison/04 {CRASH_MARKER}-nomem.mp3")]["reason"]
    assert "died" in failures[cases["poison_folder"]]["reason"]
    for skipped in cases["skipped"]:
        assert skipped not in failures and skipped not in catalogue
    assert summary["failed"] == len(expected) - 2  # the locked folder and the poison folder are not files

    # Every worker is still there and answering.
    ping = subprocess.run([str(VENV_BIN / "celery"), "-A", "worker_app", "inspect", "ping", "--timeout", "10",
                           "--json"], env=stack.cli_env(), capture_output=True, text=True)
    assert len(json.loads(ping.stdout.strip().splitlines()[-1])) == 5, ping.stdout + ping.stderr
    assert stack.supervisor.all_running()


def test_an_unreadable_folder_keeps_its_tracks(stack, hostile, db_session_factory):
    """Permission trouble is not deletion: the tracks of a folder the scan cannot list stay in the catalogue."""
    library, _ = hostile
    album = os.path.dirname(next(t.path for t in library.tracks if t.tagged and t.album))
    os.chmod(album, 0)
    try:
        result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "400", check=False)
        assert result.returncode == 0, result.stderr + stack.diagnostics()
        summary = json.loads(result.stdout)
    finally:
        os.chmod(album, 0o755)
    assert summary["removed"] == 0
    with db_session_factory() as session:
        catalogued = [p for p in tracks_by_path(session) if os.path.dirname(p) == db_path(album)[0]]
    assert len(catalogued) == len([t for t in library.tracks if os.path.dirname(t.path) == album])


def test_an_empty_mount_point_keeps_the_tracks_that_were_under_it(stack, library_root, db_session_factory):
    """A disk that is not mounted leaves an empty folder where its tree was: no proof of a deletion. A scan of an
    artist's folder found empty, then of the whole library folder found empty, removes nothing and says why; once
    the disk is back nothing has changed; and an artist's folder emptied of its albums for real, inside a scanned
    folder that is not empty, loses their tracks."""
    library = make_library(library_root / "mounts", n_files=16, seed=41, corrupt=False, untagged=False,
                           odd_file_names=False)
    root = library.root

    def scan(folder) -> dict:
        result = stack.soniquebay("scan", str(folder), "--wait", "--json", "--timeout", "400", check=False)
        assert result.returncode == 0, result.stderr + stack.diagnostics()
        return json.loads(result.stdout)

    def catalogued() -> set[str]:
        with db_session_factory() as session:
            return {p for p in tracks_by_path(session) if p.startswith(db_path(str(root))[0] + "/")}

    def kept_because_empty(summary: dict) -> list[str]:
        failures = json.loads(stack.soniquebay("failures", str(summary["scan_id"]), "--json").stdout)
        return [f["path"] for f in failures if f["kind"] == "passing" and "is empty, as the mount point" in f["reason"]]

    # What a disk that is not mounted holds is out of sight, and out of the scanned folder.
    away = library_root / "mounts-away"

    def unmount(folder) -> None:
        folder.rename(away)
        folder.mkdir()

    def mount(folder) -> None:
        folder.rmdir()
        away.rename(folder)

    scan(root)
    everything = catalogued()
    assert len(everything) == len(library.tracks)
    artist = root / max({Path(p).relative_to(root).parts[0] for p in everything},
                        key=lambda name: sum(p.startswith(os.fsdecode(root / name) + "/") for p in everything))
    under_artist = {p for p in everything if p.startswith(os.fsdecode(artist) + "/")}
    for folder in (artist, root):
        unmount(folder)
        try:
            summary = scan(folder)
            assert summary["removed"] == 0 and catalogued() == everything
            assert kept_because_empty(summary) == [os.fsdecode(folder)]
        finally:
            mount(folder)
    summary = scan(root)
    assert (summary["removed"], summary["failed"]) == (0, 0) and catalogued() == everything

    for album in list(artist.iterdir()):
        shutil.rmtree(album)
    summary = scan(root)
    assert catalogued() == everything - under_artist
    assert summary["removed"] == len(under_artist) > 0 and kept_because_empty(summary) == []


def test_a_file_under_an_empty_library_root_is_not_taken_for_gone(tmp_path, monkeypatch):
    """The library root itself, empty (its disk not mounted): a file or folder missing under it is kept, whatever
    the scan or the message said; once the root holds anything, a missing file is gone."""
    from types import SimpleNamespace

    from worker_app.pipeline import deferred

    root = tmp_path / "library"
    root.mkdir()
    monkeypatch.setattr(deferred, "get_settings", lambda: SimpleNamespace(library_roots=(str(root),)))
    for name, what in ((root / "a.mp3", "file"), (root / "Artist" / "Album", "folder")):
        kept = deferred.verify_gone(str(name), what)
        assert kept is not None and kept.kind == "passing" and f"{root} is empty" in kept.reason
    (root / "b.mp3").touch()
    assert deferred.verify_gone(str(root / "a.mp3")) is None
    assert deferred.verify_gone(str(root / "Artist" / "Album"), "folder") is None


def test_a_chunk_that_fails_for_good_keeps_its_folders_tracks(stack, hostile, db_session_factory, running_scan):
    """A chunk that cannot be done (here: closed as failed as after a time limit) is not a deletion either: its
    folders are recorded as not scanned, and the end of the scan keeps every track under them."""
    from worker_app.pipeline.scan import scan_directory_chunk

    library, _ = hostile
    root = os.fsdecode(library.root)
    with db_session_factory() as session:
        before = {p for p in tracks_by_path(session) if p.startswith(root + "/")}
    scan_id = running_scan(root, {"c": "chunk"})
    scan_directory_chunk.close_unit_as_failed(scan_id, "c", [root], "TimeLimitExceeded: 60 s")
    stack.wait_for_scan(scan_id)
    with db_session_factory() as session:
        after = {p for p in tracks_by_path(session) if p.startswith(root + "/")}
    assert len(before) > 1000 and after == before
    failures = json.loads(stack.soniquebay("failures", str(scan_id), "--json").stdout)
    assert [(f["path"], f["stage"]) for f in failures] == [(root, "scan")]
    assert "not scanned" in failures[0]["reason"] and "TimeLimitExceeded" in failures[0]["reason"]
