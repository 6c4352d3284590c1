"""An album's picture is the one its tracks show most, folder images before embedded art; choosing it costs what
the unit wrote, not the album's size: an album is looked at again only when a written track shows another picture
than the album's, and then through a bounded sample of its tracks."""
from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from tests.catalogue import forget_library
from worker_app.metadata.record import CoverImage, TrackRecord


def picture(name: str) -> dict:
    data = b"\x89PNG\r\n\x1a\n" + name.encode() * 20
    return CoverImage(hashlib.sha256(data).hexdigest(), "image/png", None, None, len(data), "embedded",
                      data).to_message()


def album_payload(folder: str, pictures: list[str]) -> dict:
    """One album, a track per entry of ``pictures`` (the name of the picture it embeds)."""
    from worker_app.pipeline.batch import group_by_artist, prepare_insertion_batch

    covers, records = {}, []
    for number, name in enumerate(pictures, start=1):
        cover = picture(name)
        covers[cover["sha256"]] = cover
        record = TrackRecord(path=f"{folder}/{number:04d}.flac", size_bytes=1000 + number, mtime=1.7e9 + number,
                             format="flac", codec="flac", title=f"Part {number}", artists=["Box Artist"],
                             album=f"Box {folder.rsplit('/', 1)[-1]}", track_number=number).to_message()
        records.append({**record, "cover": cover["sha256"], "folder_cover": None})
    return prepare_insertion_batch(group_by_artist(records), [], covers)


@pytest.fixture
def write(db_session_factory, library_root):
    """Write an album's tracks as the insert stage does; returns (album id, track ids by path)."""
    from worker_app.pipeline.insert import write_payload

    folders = []

    def written(name: str, pictures: list[str]) -> tuple[int, dict[str, int]]:
        folder = f"{library_root}/album-covers/{name}"
        folders.append(folder)
        with db_session_factory() as session, session.begin():
            track_ids = write_payload(session, None, album_payload(folder, pictures))
            album_id = session.execute(text("SELECT album_id FROM tracks WHERE id = :id"),
                                       {"id": next(iter(track_ids.values()))}).scalar_one()
        return album_id, track_ids

    yield written
    with db_session_factory() as session, session.begin():
        for folder in folders:
            forget_library(session, folder)


def album_picture(db_session_factory, album_id: int) -> str | None:
    with db_session_factory() as session:
        return session.execute(text("SELECT covers.sha256 FROM albums JOIN covers ON covers.id = albums.cover_id "
                                    "WHERE albums.id = :id"), {"id": album_id}).scalar()


@pytest.fixture
def enrich(running_scan):
    """Run enrich_album_covers as a scan's unit on the deferred worker; returns how many albums it updated."""
    from worker_app.pipeline.deferred import enrich_album_covers

    def enriched(album_id: int, track_ids: list[int] | None) -> int:
        scan_id = running_scan("/album-covers", {"e": "enrich"})
        return enrich_album_covers.apply_async((scan_id, "e", [album_id], track_ids),
                                               ignore_result=False).get(timeout=60)["albums"]

    return enriched


def test_the_picture_most_tracks_show_and_only_a_track_showing_another_makes_it_look_again(
        stack, db_session_factory, write, enrich):
    album_id, tracks = write("three", ["red", "red", "blue"])
    assert enrich(album_id, sorted(tracks.values())) == 1
    assert album_picture(db_session_factory, album_id) == picture("red")["sha256"]

    # Tracks written again showing the album's own picture: nothing to choose, the album is not even looked at.
    red_ones = [track_id for path, track_id in tracks.items() if not path.endswith("0003.flac")]
    assert enrich(album_id, red_ones) == 0
    # Written again, they all show blue: blue is shown most.
    album_id, tracks = write("three", ["blue", "blue", "blue"])
    assert enrich(album_id, red_ones) == 1
    assert album_picture(db_session_factory, album_id) == picture("blue")["sha256"]


def test_a_huge_album_is_judged_by_a_bounded_sample_of_its_tracks(stack, db_session_factory, write, enrich):
    from worker_app.pipeline.deferred import ALBUM_COVER_SAMPLE, album_cover_statement

    size = 3 * ALBUM_COVER_SAMPLE
    album_id, tracks = write("box", ["gold"] * size)
    assert len(tracks) == size
    statement = album_cover_statement([album_id], None).compile(dialect=postgresql.dialect(),
                                                                 compile_kwargs={"literal_binds": True})
    with db_session_factory() as session, session.begin():
        session.execute(text("SET LOCAL enable_seqscan = off"))  # as on a big catalogue, where the index is used
        plan = session.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}")).scalar_one()
        session.rollback()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    read = [(node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
            for node in walk(plan[0]["Plan"]) if node.get("Relation Name") == "tracks"]
    # Two samples (folder images, embedded art), each at most ALBUM_COVER_SAMPLE rows of the album's tracks.
    assert read and max(read) <= ALBUM_COVER_SAMPLE < size, read
    assert enrich(album_id, None) == 1
    assert album_picture(db_session_factory, album_id) == picture("gold")["sha256"]
    with db_session_factory() as session:
        assert session.execute(select(text("count(*)")).select_from(text("tracks"))
                               .where(text(f"album_id = {album_id}"))).scalar_one() == size


def walk(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)
