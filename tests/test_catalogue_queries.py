"""The catalogue's read queries: right answers through the command line on a scanned library, and plans that read
through an index at a size where PostgreSQL would rather read the table if no index served (bench/catalogue.py
times them at 1,000,000 tracks)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.catalogue import forget_library
from tests.services import VENV_BIN, PostgresServer
from worker_app.db.models import Track
from worker_app.db.search_vector import album_title_of, names_credited_on, search_vector
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)

SYNTHETIC_TRACKS = 100_000


def _answer(stack, *args: str) -> Any:
    result = stack.soniquebay(*args, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def _json(stack, *args: str) -> list:
    return _answer(stack, *args, "--json")


@pytest.fixture(scope="module")
def scanned(stack, library_root, db_session_factory):
    library = make_library(library_root / "browse", n_files=40, seed=31, corrupt=False, untagged=False,
                           odd_file_names=False)
    result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    yield library
    # Its artists share names with other test libraries' (not MusicBrainz ids), which would otherwise see them.
    with db_session_factory() as session, session.begin():
        forget_library(session, str(library.root))


def test_recent_lists_the_tracks_a_scan_just_added_newest_first(stack, scanned):
    newest = _json(stack, "recent", "-n", str(len(scanned.tracks)))
    assert {row["path"] for row in newest} == {track.path for track in scanned.tracks}
    ids = [row["id"] for row in newest]
    assert ids == sorted(ids, reverse=True)


def test_an_albums_tracks_come_in_disc_and_track_order(stack, scanned, db_session_factory):
    albums: dict[str, list] = {}
    for track in scanned.tracks:
        albums.setdefault(track.album, []).append(track)
    album, tracks = max(albums.items(), key=lambda item: len(item[1]))
    with db_session_factory() as session:
        album_id = session.execute(text("SELECT album_id FROM tracks WHERE path = :path"),
                                   {"path": tracks[0].path}).scalar()
    rows = _json(stack, "browse", "--album", str(album_id))
    expected = sorted(tracks, key=lambda track: (track.disc_number or 0, track.track_number or 0))
    assert [row["path"] for row in rows] == [track.path for track in expected]
    assert [row["title"] for row in rows] == [track.title for track in expected]


def test_a_folders_tracks_are_its_own_files_only(stack, scanned):
    folder = os.path.dirname(scanned.tracks[0].path)
    rows = _json(stack, "browse", "--folder", folder)
    assert sorted(row["path"] for row in rows) == sorted(
        track.path for track in scanned.tracks if os.path.dirname(track.path) == folder)


def test_search_finds_a_track_by_its_title_and_by_its_artist(stack, scanned):
    track = next(t for t in scanned.tracks if t.title and t.artists and len(t.title.split()) >= 2)
    by_title = _json(stack, "search", *track.title.split(), "-n", "1000")
    assert track.path in [row["path"] for row in by_title]
    # "word*": the words that start with it.
    artist_words = track.artists[0].split()
    by_artist = _json(stack, "search", *artist_words[:-1], artist_words[-1][:3] + "*", "-n", "1000")
    assert track.path in [row["path"] for row in by_artist]
    assert _json(stack, "search", "zzqx-nothing-is-called-this") == []
    # Query syntax in the words is searched as text, never parsed.
    assert _json(stack, "search", "it's", "&", "!(", "a:*") is not None


def test_search_finds_a_track_by_its_album_and_its_second_artist(stack, scanned):
    track = next(t for t in scanned.tracks if t.album and len(t.artists) >= 2)
    by_album = _json(stack, "search", *track.album.split(), "-n", "1000")
    assert track.path in [row["path"] for row in by_album]
    by_second_artist = _json(stack, "search", *track.artists[1].split(), "-n", "1000")
    assert track.path in [row["path"] for row in by_second_artist]


def test_the_vector_a_scan_writes_is_the_one_the_catalogue_rows_give(scanned, db_session_factory):
    """The insert stage makes each vector from the rows it writes (artist ids in credit order, album id);
    vectorize_tracks from the catalogue's rows: the same definition must give the same vector."""
    rebuilt = search_vector(Track.title, names_credited_on(Track.id), album_title_of(Track.album_id), Track.genres)
    paths = [db_path(track.path)[0] for track in scanned.tracks]
    with db_session_factory() as session:
        rows = session.execute(select(Track.path, Track.search_vector, rebuilt).where(Track.path.in_(paths))).all()
    assert len(rows) == len(paths)
    assert any(len(track.artists) >= 2 for track in scanned.tracks)
    assert [(path, written) for path, written, _ in rows] == [(path, again) for path, _, again in rows]


def test_db_reindex_gives_tracks_without_a_vector_theirs_again(stack, scanned, db_session_factory):
    """`soniquebay db reindex` (vectorize_tracks on the deferred workers): the tracks that lost their vector get the
    one the scan wrote, and search finds them again; the others are left as they are."""
    track = next(t for t in scanned.tracks if t.title and len(t.title.split()) >= 2)
    paths = [db_path(t.path)[0] for t in scanned.tracks[:5]] + [db_path(track.path)[0]]
    vectors = select(Track.path, Track.search_vector).where(Track.path.in_(paths)).order_by(Track.path)
    with db_session_factory() as session, session.begin():
        written = session.execute(vectors).all()
        session.execute(update(Track).where(Track.path.in_(paths)).values(search_vector=None))
    assert track.path not in [row["path"] for row in _json(stack, "search", *track.title.split(), "-n", "1000")]
    assert _answer(stack, "db", "reindex") == {"tracks": len(set(paths))}
    with db_session_factory() as session:
        assert session.execute(vectors).all() == written
    assert track.path in [row["path"] for row in _json(stack, "search", *track.title.split(), "-n", "1000")]
    # --all: every track again, none of them changed.
    everything = _answer(stack, "db", "reindex", "--all")["tracks"]
    assert everything >= len(scanned.tracks)
    with db_session_factory() as session:
        assert session.execute(vectors).all() == written


def test_a_changed_file_keeps_when_it_was_added(stack, scanned, db_session_factory):
    track = scanned.tracks[0]
    query = text("SELECT added_at, updated_at FROM tracks WHERE path = :path")
    with db_session_factory() as session:
        added, updated = session.execute(query, {"path": track.path}).one()
    stat = os.stat(track.path)
    os.utime(track.path, (stat.st_atime, stat.st_mtime + 10))
    result = stack.soniquebay("scan", str(scanned.root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["extracted"] >= 1
    with db_session_factory() as session:
        added_after, updated_after = session.execute(query, {"path": track.path}).one()
    assert updated_after > updated
    assert added_after == added


# ----------------------------------------------------------------- plans on a catalogue of SYNTHETIC_TRACKS


@pytest.fixture(scope="module")
def synthetic(stack, workspace):
    """A private PostgreSQL holding a catalogue filled set-wise the way bench/catalogue.py fills it."""
    from bench import catalogue as bench_catalogue

    base = Path(workspace) / "catalogue-plans"
    base.mkdir()
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg").start()
    engine = create_engine(server.url)
    try:
        env = {**stack.cli_env(), "SONIQUEBAY_DATABASE_URL": server.url}
        subprocess.run([str(VENV_BIN / "soniquebay"), "db", "upgrade"], env=env, check=True, capture_output=True)
        albums = SYNTHETIC_TRACKS // bench_catalogue.TRACKS_PER_FOLDER
        with engine.begin() as connection:
            for statement in bench_catalogue.FILL.split(";\n"):
                if statement.strip():
                    connection.execute(text(statement), {
                        "root": "/library", "tracks": SYNTHETIC_TRACKS, "albums": albums,
                        "artists": albums // bench_catalogue.ALBUMS_PER_ARTIST,
                        "per_folder": bench_catalogue.TRACKS_PER_FOLDER,
                        "albums_per_artist": bench_catalogue.ALBUMS_PER_ARTIST,
                        "vocabulary": bench_catalogue.VOCABULARY})
            # Statistics from every row, not ANALYZE's random sample of 30,000: from a sample, the estimate of a
            # folder's tracks moved between runs (20 real, 43 estimated once), and with it the plan the tests read.
            connection.execute(text("SET LOCAL default_statistics_target = 1000"))
            connection.execute(text("ANALYZE"))
        yield engine
    finally:
        engine.dispose()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _plan_of(engine, call, starting: str = "") -> str:
    """The plan of the last statement ``call`` runs (of those ``starting`` so), as SQLAlchemy compiled it: EXPLAINed
    just before it runs, under the planner settings it runs with (the sweep sets its own)."""
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith(starting) and re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", statement):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", explain)
        try:
            call(session)
        finally:
            event.remove(engine, "before_cursor_execute", explain)
    return plans[-1]


@pytest.mark.parametrize("name, call, index", [
    ("album_tracks", lambda q, s: q.album_tracks(s, 77), "ix_tracks_album_id"),
    ("folder_tracks", lambda q, s: q.folder_tracks(s, "/library/1/7"), "ix_tracks_folder"),
    ("recently_added", lambda q, s: q.recently_added(s, 50), "ix_tracks_added_at"),
    ("artist_albums", lambda q, s: q.artist_albums(s, 3), "ix_albums_album_artist_id"),
])
def test_each_catalogue_query_reads_through_its_index(synthetic, name, call, index):
    from worker_app.db import catalogue_queries

    plan = _plan_of(synthetic, lambda session: call(catalogue_queries, session))
    assert index in plan, plan
    assert "Seq Scan on tracks" not in plan and "Seq Scan on albums" not in plan, plan


def test_a_search_for_a_rare_word_uses_the_text_index(synthetic):
    from worker_app.db import catalogue_queries

    with synthetic.connect() as connection:
        rare = connection.execute(text(
            "SELECT word FROM ts_stat('SELECT search_vector FROM tracks') WHERE word !~ '^[0-9]+$' "
            "ORDER BY ndoc, word LIMIT 1")).scalar()
    plan = _plan_of(synthetic, lambda session: catalogue_queries.search(session, rare))
    assert "ix_tracks_search_vector" in plan, plan


def test_the_sweep_selects_a_roots_tracks_through_the_prefix_index(synthetic):
    with synthetic.connect() as connection:
        plan = "\n".join(connection.execute(text(
            r"EXPLAIN SELECT id FROM tracks WHERE path LIKE '/library/3/%' ESCAPE '\'")).scalars())
    assert "ix_tracks_path_prefix" in plan, plan


@pytest.fixture
def disk_checks_pass(monkeypatch):
    """Only the sweep's statements are planned here: its disk checks (the folder is gone, its name is under a root,
    the folder scanned is not empty) pass, as the synthetic catalogue's folders are not on disk."""
    from worker_app.pipeline import deferred

    monkeypatch.setattr(deferred, "verify_gone", lambda name, what="file": None)
    monkeypatch.setattr(deferred, "check_task_path", lambda name, roots: None)
    monkeypatch.setattr(deferred, "_emptied_scan_root", lambda root, folders: None)


def _sweep_after(session: Session, root: str, listing: str, **values: Any) -> tuple[int, list]:
    """The sweep at the end of a scan of ``root`` whose listing is ``listing``: a SELECT of (folder, listed)."""
    from worker_app.pipeline import deferred

    scan = session.execute(text("INSERT INTO scans (root, status, started_at) VALUES (:root, 'finalizing', now()) "
                                "RETURNING id"), {"root": root}).scalar()
    session.execute(text(f"INSERT INTO scan_folders (scan_id, folder, listed) SELECT :scan, folder, listed "
                         f"FROM ({listing}) l"), {"scan": scan, **values})
    session.execute(text("ANALYZE scan_folders"))
    return deferred.sweep_vanished_folders(session, scan, root, datetime.now(UTC))


def test_the_sweep_checks_a_vanished_folders_tracks_against_the_unlisted_folders_only(synthetic, disk_checks_pass):
    """A scan of the whole library that lists every folder but one: the sweep's DELETE of that folder's tracks
    checks each against the folders the scan could not read through ``ix_scan_folders_unlisted``, not by reading
    every folder the scan listed (at 1,000,000 tracks that read 50,000 rows per track deleted: bench/README.md)."""
    from bench import catalogue as bench_catalogue

    def sweep(session: Session) -> None:
        deleted, kept = _sweep_after(session, "/library", "SELECT DISTINCT folder, true AS listed FROM tracks "
                                                          "WHERE folder <> '/library/1/7'")
        assert (deleted, kept) == (bench_catalogue.TRACKS_PER_FOLDER, [])

    plan = _plan_of(synthetic, sweep, starting="DELETE FROM tracks")
    assert plan.startswith("Delete on tracks"), plan
    assert "ix_scan_folders_unlisted" in plan, plan


def test_the_sweep_keeps_the_tracks_under_unread_folders_looking_up_each_level_of_their_path(synthetic,
                                                                                             disk_checks_pass):
    """A scan of the whole library whose storage failed for the first nine artist folders: none of their albums was
    reached. The sweep keeps every track under them, still deletes the one album folder gone elsewhere (unread
    "/library/2" does not shelter "/library/20/..."), and finds a track's unread folder by looking up each level of
    its path in ``ix_scan_folders_unlisted``, not by testing the track against every unread folder: at 1,000,000
    tracks with half the artist folders unread, that test took 61 s (bench/README.md)."""
    from bench import catalogue as bench_catalogue

    artists = [str(artist) for artist in range(1, 10)]
    gone = f"/library/20/{19 * bench_catalogue.ALBUMS_PER_ARTIST + 1}"
    # The tracks of an artist folder: the catalogue's layout is /library/ARTIST/ALBUM.
    under = "SELECT count(*) FROM tracks WHERE split_part(folder, '/', 3) = ANY(:artists)"

    def sweep(session: Session) -> None:
        kept_before = session.execute(text(under), {"artists": artists}).scalar()
        deleted, kept = _sweep_after(
            session, "/library", "SELECT DISTINCT folder, true AS listed FROM tracks WHERE folder <> :gone "
            "AND NOT split_part(folder, '/', 3) = ANY(:artists) "
            "UNION ALL SELECT '/library/' || unnest(CAST(:artists AS text[])), false", gone=gone, artists=artists)
        assert (deleted, kept) == (bench_catalogue.TRACKS_PER_FOLDER, [])
        assert session.execute(text("SELECT count(*) FROM tracks WHERE folder = :gone"), {"gone": gone}).scalar() == 0
        assert kept_before > 1000
        assert session.execute(text(under), {"artists": artists}).scalar() == kept_before

    plan = _plan_of(synthetic, sweep, starting="DELETE FROM tracks")
    assert plan.startswith("Delete on tracks"), plan
    assert "ix_scan_folders_unlisted" in plan and "folder = ANY" in plan, plan
    # The folders the scan did not list are asked about once each, not every track under the root.
    named = _plan_of(synthetic, sweep, starting="SELECT anon_1.folder").splitlines()
    assert named[0].startswith("Subquery Scan") and "SubPlan" in named[1], "\n".join(named)
    assert not any("SubPlan" in line for line in named[2:] if line.lstrip().startswith("Filter:")), "\n".join(named)


def test_the_sweep_of_one_folder_reads_that_folders_tracks_only(synthetic, disk_checks_pass):
    """A scan of one artist's folder that finds one of its albums gone: the sweep reads the tracks under that
    folder through the path index, not the whole catalogue."""
    from bench import catalogue as bench_catalogue

    def sweep(session: Session) -> None:
        deleted, kept = _sweep_after(
            session, "/library/7", "SELECT DISTINCT folder, true AS listed FROM tracks "
            "WHERE folder LIKE '/library/7/%' AND folder <> '/library/7/121' UNION ALL SELECT '/library/7', true")
        assert (deleted, kept) == (bench_catalogue.TRACKS_PER_FOLDER, [])

    plan = _plan_of(synthetic, sweep, starting="SELECT anon_1.folder")
    assert "Seq Scan on tracks" not in plan, plan
