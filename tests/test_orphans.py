"""Orphans: the end of a scan deletes the albums, artists and covers its changes left unused, and checks only those
(recorded by triggers), not the whole catalogue; `cleanup_orphans` checks everything."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from sqlalchemy import select, text

from tests.audio_factory import make_library
from tests.catalogue import forget_library

pytestmark = pytest.mark.timeout(600)

# What the catalogue references, per kind of row: (table, the queries that list the ids still referenced by tracks
# outside :prefix, the ids referenced by tracks inside it).
USED_BY_TRACKS = {
    "albums": "SELECT album_id FROM tracks WHERE {where}",
    "artists": """SELECT artist_id FROM tracks WHERE {where}
                  UNION SELECT ta.artist_id FROM track_artists ta JOIN tracks t ON t.id = ta.track_id WHERE {t_where}
                  UNION SELECT al.album_artist_id FROM albums al JOIN tracks t ON t.album_id = al.id WHERE {t_where}""",
    "covers": """SELECT cover_id FROM tracks WHERE {where} UNION SELECT folder_cover_id FROM tracks WHERE {where}
                 UNION SELECT al.cover_id FROM albums al JOIN tracks t ON t.album_id = al.id WHERE {t_where}""",
}


def _scan(stack, root) -> dict:
    result = stack.soniquebay("scan", str(root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    return json.loads(result.stdout)


def _used(session, table: str, folder: str, inside: bool) -> set[int]:
    """Ids of ``table`` that tracks in ``folder`` (or, not ``inside``, every other track) reference."""
    condition = "folder = :folder" if inside else "folder <> :folder"
    query = USED_BY_TRACKS[table].format(where=condition, t_where="t." + condition)
    return {row_id for row_id in session.execute(text(query), {"folder": folder}).scalars() if row_id is not None}


def _existing(session, table: str, ids: set[int]) -> set[int]:
    return set(session.execute(text(f"SELECT id FROM {table} WHERE id = ANY(:ids)"), {"ids": list(ids)}).scalars())


def test_a_scan_removes_what_its_changes_left_unused_and_only_that(stack, library_root, db_session_factory):
    from worker_app.db.models import orphan_candidates

    library = make_library(library_root / "orphans", n_files=40, seed=71, corrupt=False, untagged=False,
                           odd_file_names=False)
    try:
        _scan(stack, library.root)
        folders = sorted({os.path.dirname(track.path) for track in library.tracks})
        # Leaves only: removing a folder removes no other folder's tracks.
        folders = [f for f in folders if not any(other.startswith(f + "/") for other in folders)]
        with db_session_factory() as session:
            # A folder whose removal orphans an album and an artist of its own.
            for folder in folders:
                gone = {table: _used(session, table, folder, True) - _used(session, table, folder, False)
                        for table in USED_BY_TRACKS}
                if gone["albums"] and gone["artists"]:
                    break
            else:
                pytest.fail("the generated library has no folder of its own artist")
            kept = {table: _used(session, table, folder, False) for table in USED_BY_TRACKS}
        with db_session_factory() as session, session.begin():
            # An orphan no change made (no trigger saw it): the end of a scan does not look for it.
            stray = session.execute(text(
                "INSERT INTO albums (title, title_key, album_artist_id) VALUES ('stray', 'stray', :artist) "
                "RETURNING id"), {"artist": min(kept["artists"])}).scalar()

        removed = [track for track in library.tracks if os.path.dirname(track.path) == folder]
        shutil.rmtree(folder)
        summary = _scan(stack, library.root)
        assert summary["removed"] == len(removed)

        with db_session_factory() as session:
            for table in USED_BY_TRACKS:
                assert _existing(session, table, gone[table]) == set(), table
                assert _existing(session, table, kept[table]) == kept[table], table
            assert _existing(session, "albums", {stray}) == {stray}
            assert session.execute(select(orphan_candidates.c.id)).first() is None
        # The whole-catalogue check finds it (`soniquebay db orphans`, on a deferred worker).
        assert json.loads(stack.soniquebay("db", "orphans").stdout)["albums"] >= 1
        with db_session_factory() as session:
            assert _existing(session, "albums", {stray}) == set()
            assert _existing(session, "albums", kept["albums"]) == kept["albums"]
    finally:
        with db_session_factory() as session, session.begin():
            forget_library(session, str(library.root))


def test_a_retagged_track_leaves_no_empty_album_behind(stack, library_root, db_session_factory):
    library = make_library(library_root / "orphans-retag", n_files=12, seed=72, corrupt=False, untagged=False,
                           odd_file_names=False)
    try:
        _scan(stack, library.root)
        with db_session_factory() as session:
            counts = dict(session.execute(text(
                "SELECT t.path, (SELECT count(*) FROM tracks o WHERE o.album_id = t.album_id) FROM tracks t "
                "WHERE t.path LIKE :root"), {"root": str(library.root) + "/%"}).all())
        # Every other track of its album moves with it: the album is left empty.
        track = next(t for t in library.tracks if t.album and not t.is_compilation)
        album_tracks = [t for t in library.tracks if t.album == track.album]
        assert counts[track.path] == len(album_tracks)
        with db_session_factory() as session:
            album_id = session.execute(text("SELECT album_id FROM tracks WHERE path = :path"),
                                       {"path": track.path}).scalar()
        for other in album_tracks:
            library.retag(other.path, album="A Title Nobody Used Before")
        _scan(stack, library.root)
        with db_session_factory() as session:
            new_album = session.execute(text("SELECT album_id FROM tracks WHERE path = :path"),
                                        {"path": track.path}).scalar()
            assert new_album != album_id
            assert _existing(session, "albums", {album_id}) == set()
    finally:
        with db_session_factory() as session, session.begin():
            forget_library(session, str(library.root))
