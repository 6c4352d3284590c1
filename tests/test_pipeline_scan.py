"""End to end: real Redis, PostgreSQL and supervisor-run Celery workers scan a generated library, and the catalogue
is checked against what the generator wrote, field by field; then rescans follow changes exactly."""
from __future__ import annotations

import json
import math
import os

import pytest

from tests.audio_factory import make_library
from tests.catalogue import catalogue_counts, tracks_by_path
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def library(library_root):
    return make_library(library_root / "e2e", n_files=300, seed=7)


def scan(stack, root, *extra) -> dict:
    result = stack.soniquebay("scan", str(root), "--wait", "--json", "--timeout", "300", *extra, check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    return json.loads(result.stdout)


def catalogue_under(db_session_factory, root) -> dict[str, dict]:
    prefix = os.fsdecode(root) + "/"
    with db_session_factory() as session:
        return {path: row for path, row in tracks_by_path(session).items() if path.startswith(prefix)}


def expected_album_artist(track) -> str:
    if track.album_artists:
        return " & ".join(track.album_artists)
    if track.is_compilation:
        return "Various Artists"
    return track.artists[0]


def close(a, b, tolerance) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=tolerance))


def mismatches(expected, row) -> list[str]:
    problems = []
    same = {
        "title": (expected.title, row["title"]),
        "artists": (list(dict.fromkeys(expected.artists)), list(row["artists"])),
        "album": (expected.album, row["album"]),
        "track_number": (expected.track_number, row["track_number"]),
        "track_total": (expected.track_total, row["track_total"]),
        "disc_number": (expected.disc_number, row["disc_number"]),
        "disc_total": (expected.disc_total, row["disc_total"]),
        "date": (expected.date, row["date"]),
        "year": (expected.year, row["year"]),
        "genres": (expected.genres, list(row["genres"])),
        "composers": (expected.composers, list(row["composers"])),
        "sample_rate": (expected.sample_rate, row["sample_rate"]),
        "channels": (expected.channels, row["channels"]),
        "bits_per_sample": (expected.bits_per_sample, row["bits_per_sample"]),
        "format": (expected.format, row["format"]),
        "codec": (expected.codec, row["codec"]),
        "size_bytes": (expected.size_bytes, row["size_bytes"]),
        "mtime": (expected.mtime, row["mtime"]),
        "mb_track_id": (expected.mb_track_id, row["mb_track_id"]),
        "mb_release_track_id": (expected.mb_release_track_id, row["mb_release_track_id"]),
        "tags": (expected.tags, row["tags"]),
        "cover": (expected.cover_sha256 or expected.folder_cover_sha256, row["cover_sha256"]),
    }
    if expected.album:
        same["album_artist"] = (expected_album_artist(expected), row["album_artist"])
        same["is_compilation"] = (expected.is_compilation, row["is_compilation"])
        # Album ids live on the album: a track that names none takes its album's.
        if expected.mb_album_id:
            same["mb_album_id"] = (expected.mb_album_id, row["mb_album_id"])
        if expected.mb_release_group_id:
            same["mb_release_group_id"] = (expected.mb_release_group_id, row["mb_release_group_id"])
    if expected.mb_artist_ids and len(expected.mb_artist_ids) == len(expected.artists):
        same["artist mbids"] = (expected.mb_artist_ids, list(row["artist_mbids"]))
    for name, (want, got) in same.items():
        if want != got:
            problems.append(f"{name}: expected {want!r}, catalogue has {got!r}")
    if not close(expected.duration_seconds, row["duration_seconds"], 0.1):
        problems.append(f"duration: expected ~{expected.duration_seconds}, catalogue has {row['duration_seconds']}")
    for name in ("replaygain_track_gain", "replaygain_track_peak", "replaygain_album_gain", "replaygain_album_peak"):
        if not close(getattr(expected, name), row[name], 1e-6):
            problems.append(f"{name}: expected {getattr(expected, name)}, catalogue has {row[name]}")
    return problems


def assert_catalogue_matches(library, db_session_factory):
    catalogue = catalogue_under(db_session_factory, library.root)
    # Names that are not UTF-8 are shown with \\xNN escapes; their bytes are checked below.
    expected = {db_path(path)[0]: track for path, track in library.by_path.items()}
    assert sorted(catalogue) == sorted(expected), (
        f"missing: {sorted(set(expected) - set(catalogue))[:5]}, "
        f"unexpected: {sorted(set(catalogue) - set(expected))[:5]}"
    )
    problems = {path: mismatches(expected[path], row) for path, row in catalogue.items()}
    problems = {path: p for path, p in problems.items() if p}
    assert not problems, f"{len(problems)} tracks differ, e.g. {next(iter(problems.items()))}"
    return catalogue


def test_first_scan_catalogues_every_track_field_by_field(stack, library, db_session_factory):
    assert len(library.formats) >= 8 and library.corrupt
    summary = scan(stack, library.root)

    assert summary["status"] == "complete"
    assert summary["discovered"] == len(library.tracks) + len(library.corrupt)
    assert summary["extracted"] == summary["inserted"] == len(library.tracks)
    assert summary["failed"] == len(library.corrupt)
    assert summary["removed"] == 0 and summary["unchanged"] == 0

    catalogue = assert_catalogue_matches(library, db_session_factory)
    # Compilations stay one album under "Various Artists" although their tracks name other artists.
    compilations = {row["album"] for row in catalogue.values() if row["album_artist"] == "Various Artists"}
    assert compilations
    for title in compilations:
        artists = {row["artists"][0] for row in catalogue.values() if row["album"] == title}
        assert len(artists) > 1
    # Every album shows a cover when one of its tracks or its folder has one; the folder image wins.
    for path, row in catalogue.items():
        folder_cover = library.by_path[path].folder_cover_sha256 if path in library.by_path else None
        if folder_cover:
            assert row["album_cover_sha256"] == folder_cover, path
    with db_session_factory() as session:
        from sqlalchemy import text

        raw_names = session.execute(text(
            "SELECT path, path_bytes FROM tracks WHERE path_bytes IS NOT NULL AND starts_with(path, :root)"
        ), {"root": os.fsdecode(library.root) + "/"}).all()
    not_utf8 = [t.path for t in library.tracks if db_path(t.path)[1] is not None]
    assert not_utf8, "the generator should write a file name that is not UTF-8"
    assert sorted(bytes(raw) for _, raw in raw_names) == sorted(os.fsencode(p) for p in not_utf8)
    failures = json.loads(stack.soniquebay("failures", str(summary["scan_id"]), "--json").stdout)
    assert sorted(f["path"] for f in failures) == sorted(db_path(os.fsdecode(p))[0] for p in library.corrupt)
    assert all(f["stage"] == "extract" and f["reason"] for f in failures)


def test_rescan_with_nothing_changed_extracts_nothing(stack, library, db_session_factory):
    with db_session_factory() as session:
        before = catalogue_counts(session, os.fsdecode(library.root))
    summary = scan(stack, library.root)
    assert summary["status"] == "complete"
    assert summary["unchanged"] == len(library.tracks)
    assert summary["extracted"] == summary["inserted"] == summary["removed"] == 0
    assert summary["failed"] == len(library.corrupt)  # still reported, from the record of their failure
    with db_session_factory() as session:
        assert catalogue_counts(session, os.fsdecode(library.root)) == before
        from sqlalchemy import text

        extract_units = session.execute(text(
            "SELECT count(*) FROM scan_units WHERE scan_id = :id AND kind = 'extract'"), {"id": summary["scan_id"]}
        ).scalar()
        assert extract_units == 0, "an unchanged library must not send a single file to extract"


def test_rescan_follows_changed_added_and_removed_files(stack, library, db_session_factory):
    tracks = sorted(library.tracks, key=lambda t: t.path)
    tagged = [t for t in tracks if t.tagged and t.album]
    changed = [library.retag(tagged[0].path, title="A New Title"),
               library.retag(tagged[5].path, genres=["Dub", "Ska"], artists=["Someone Else"]),
               library.retag(tagged[9].path, date="1987-02-03")]
    added = [library.add_track("Brand New Artist", "Debut", f"Fresh {i}", "flac", track_number=i + 1)
             for i in range(3)]
    removed_paths = [t.path for t in tracks[-4:] if t.path not in {c.path for c in changed}]
    for path in removed_paths:
        library.remove_track(path)
    # A whole album folder disappears too.
    gone_folder = os.path.dirname(tagged[20].path)
    gone = [t.path for t in library.tracks if os.path.dirname(t.path) == gone_folder]
    for path in gone:
        library.remove_track(path)
    for entry in os.listdir(gone_folder):
        os.unlink(os.path.join(gone_folder, entry))
    os.rmdir(gone_folder)

    summary = scan(stack, library.root)
    assert summary["status"] == "complete"
    assert summary["extracted"] == summary["inserted"] == len(changed) + len(added)
    assert summary["removed"] == len(removed_paths) + len(gone)
    assert summary["unchanged"] == len(library.tracks) - len(changed) - len(added)
    assert_catalogue_matches(library, db_session_factory)
    with db_session_factory() as session:
        from sqlalchemy import text

        empty_albums = session.execute(text(
            "SELECT count(*) FROM albums a WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.album_id = a.id)"
        )).scalar()
        lonely_artists = session.execute(text(
            "SELECT count(*) FROM artists a WHERE NOT EXISTS (SELECT 1 FROM track_artists t WHERE t.artist_id = a.id)"
            " AND NOT EXISTS (SELECT 1 FROM albums al WHERE al.album_artist_id = a.id)"
        )).scalar()
        assert empty_albums == 0 and lonely_artists == 0
        assert "Brand New Artist" in {row["album_artist"] for row in catalogue_under(
            db_session_factory, library.root).values()}


def test_a_scan_of_one_file_catalogues_it(stack, library, db_session_factory):
    """`soniquebay scan FILE` (scan_single_file): the file is read again, and nothing else changes."""
    tagged = sorted((t for t in library.tracks if t.tagged and t.album), key=lambda t: t.path)
    changed = library.retag(tagged[3].path, title="Scanned Alone")
    summary = scan(stack, changed.path)
    assert summary["status"] == "complete"
    assert (summary["discovered"], summary["extracted"], summary["inserted"], summary["removed"]) == (1, 1, 1, 0)
    assert_catalogue_matches(library, db_session_factory)


def test_a_path_outside_the_library_roots_is_refused(stack, tmp_path):
    result = stack.soniquebay("scan", str(tmp_path), "--wait", check=False)
    assert result.returncode == 2
    assert "outside the library roots" in result.stderr


def test_tags_shows_what_the_extract_workers_read(stack, library, tmp_path):
    """`soniquebay tags FILE` asks an extract worker (extract_single_file) for the record of one file: one file of
    each format as the generator wrote it, a corrupt one with its reason, and nothing outside the library roots."""
    one_per_format = {track.format: track for track in library.tracks if db_path(track.path)[1] is None}
    assert len(one_per_format) >= 8
    for track in one_per_format.values():
        shown = stack.soniquebay("tags", track.path, "--json", check=False)
        assert shown.returncode == 0, shown.stderr + shown.stdout
        record = json.loads(shown.stdout)["record"]
        got = {name: record[name] for name in ("title", "artists", "album", "track_number", "genres", "format",
                                               "codec", "sample_rate", "size_bytes", "tags")}
        want = {name: getattr(track, name) for name in got}
        got["artists"], want["artists"] = list(dict.fromkeys(got["artists"])), list(dict.fromkeys(want["artists"]))
        assert got == want, track.path
        assert close(track.duration_seconds, record["duration_seconds"], 0.1), track.path

    corrupt = stack.soniquebay("tags", os.fsdecode(library.corrupt[0]), "--json", check=False)
    assert corrupt.returncode == 1 and json.loads(corrupt.stdout)["error"], corrupt.stdout + corrupt.stderr

    outside = tmp_path / "outside.flac"
    outside.write_bytes(b"fLaC")
    refused = stack.soniquebay("tags", str(outside), check=False)
    assert refused.returncode == 2 and "outside the library roots" in refused.stderr
