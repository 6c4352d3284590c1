"""`soniquebay db load`: the records `soniquebay tags --json` printed go into the catalogue through the insert
workers' per-entity tasks (covers, artists, albums, tracks), as the rows a scan would write."""
from __future__ import annotations

import json
import os

import pytest

from tests.audio_factory import make_library
from tests.catalogue import forget_library, table_counts, tracks_by_path

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def library(library_root, db_session_factory):
    library = make_library(library_root / "load", n_files=14, seed=41, untagged=False, odd_file_names=False)
    yield library
    with db_session_factory() as session, session.begin():
        forget_library(session, str(library.root))


def _under(db_session_factory, root) -> dict[str, dict]:
    prefix = os.fsdecode(root) + "/"
    with db_session_factory() as session:
        return {path: row for path, row in tracks_by_path(session).items() if path.startswith(prefix)}


def test_load_writes_what_tags_read_and_a_scan_then_finds_it_unchanged(stack, library, tmp_path,
                                                                        db_session_factory):
    answers = tmp_path / "records.jsonl"
    with answers.open("w") as out:
        for path in [track.path for track in library.tracks] + [os.fsdecode(p) for p in library.corrupt]:
            shown = stack.soniquebay("tags", path, "--json", check=False)
            assert shown.returncode in (0, 1), shown.stderr
            out.write(shown.stdout.strip() + "\n")

    loaded = stack.soniquebay("db", "load", str(answers), "--json", check=False)
    assert loaded.returncode == 0, loaded.stderr + loaded.stdout + stack.diagnostics()
    report = json.loads(loaded.stdout)
    assert report["tracks"] == len(library.tracks)
    assert len(report["unreadable"]) == len(library.corrupt) and report["refused"] == []
    assert report["covers"] == len({t.cover_sha256 for t in library.tracks if t.cover_sha256})

    rows = _under(db_session_factory, library.root)
    assert report["albums"] == len({(row["album_artist"], row["album"]) for row in rows.values() if row["album"]})
    assert set(rows) == {track.path for track in library.tracks}
    for track in library.tracks:
        row = rows[track.path]
        got = {name: row[name] for name in ("title", "album", "track_number", "disc_number", "year", "format",
                                            "size_bytes", "mtime", "tags")}
        want = {name: getattr(track, name) for name in got}
        assert got == want, track.path
        assert list(row["artists"]) == list(dict.fromkeys(track.artists)), track.path
        assert list(row["genres"]) == track.genres, track.path
        assert row["cover_sha256"] == track.cover_sha256, track.path  # the embedded picture: no scan, no folder

    # Loaded twice, the catalogue is as after once.
    with db_session_factory() as session:
        before = table_counts(session)
    again = stack.soniquebay("db", "load", str(answers), "--json", check=False)
    assert again.returncode == 0, again.stderr
    with db_session_factory() as session:
        assert table_counts(session) == before

    # A scan of the folder finds every loaded file as catalogued: nothing to read again but the unreadable ones.
    scanned = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
    assert scanned.returncode == 0, scanned.stderr + scanned.stdout + stack.diagnostics()
    summary = json.loads(scanned.stdout)
    assert summary["unchanged"] == len(library.tracks), summary
    assert summary["failed"] == len(library.corrupt), summary


def test_load_refuses_records_outside_the_library_roots_and_what_is_not_a_record(stack, library, tmp_path,
                                                                                 db_session_factory):
    track = library.tracks[0]
    record = json.loads(stack.soniquebay("tags", track.path, "--json").stdout)["record"]
    outside = dict(record, path=str(tmp_path / "elsewhere.flac"))
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps([{"path": outside["path"], "record": outside}, {"title": "no path"}]))
    with db_session_factory() as session:
        before = table_counts(session)

    refused = stack.soniquebay("db", "load", str(source), "--json", check=False)
    assert refused.returncode == 1, refused.stderr + refused.stdout
    report = json.loads(refused.stdout)
    assert report["tracks"] == 0 and len(report["refused"]) == 2
    assert "outside" in report["refused"][0][1] or "root" in report["refused"][0][1], report
    with db_session_factory() as session:
        assert table_counts(session) == before

    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json\n")
    failed = stack.soniquebay("db", "load", str(garbage), check=False)
    assert failed.returncode == 2 and "not JSON records" in failed.stderr
