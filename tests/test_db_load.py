"""`soniquebay db load`: the records `soniquebay tags --json` printed go into the catalogue through the insert
workers' per-entity tasks (covers, artists, albums, tracks), as the rows a scan would write; its pictures wait in
PostgreSQL like a scan's (pipeline/staging.py), and every message it sends stays under 64 KB in the broker."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
import subprocess
import threading

import pytest
import redis
from sqlalchemy import func, select

from tests.audio_factory import make_library
from tests.catalogue import catalogue_counts, forget_library, tracks_by_path
from tests.services import VENV_BIN
from tests.test_claim_check import MAX_MESSAGE_BYTES, big_picture, embed_front_cover

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
        before = catalogue_counts(session, os.fsdecode(library.root))
    again = stack.soniquebay("db", "load", str(answers), "--json", check=False)
    assert again.returncode == 0, again.stderr
    with db_session_factory() as session:
        assert catalogue_counts(session, os.fsdecode(library.root)) == before

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
        before = catalogue_counts(session, os.fsdecode(library.root))

    refused = stack.soniquebay("db", "load", str(source), "--json", check=False)
    assert refused.returncode == 1, refused.stderr + refused.stdout
    report = json.loads(refused.stdout)
    assert report["tracks"] == 0 and len(report["refused"]) == 2
    assert "outside" in report["refused"][0][1] or "root" in report["refused"][0][1], report
    with db_session_factory() as session:
        assert catalogue_counts(session, os.fsdecode(library.root)) == before
        assert catalogue_counts(session, str(tmp_path))["tracks"] == 0

    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json\n")
    failed = stack.soniquebay("db", "load", str(garbage), check=False)
    assert failed.returncode == 2 and "not JSON records" in failed.stderr


def _answers(stack, paths: list[str], into) -> None:
    with into.open("w") as out:
        for path in paths:
            shown = stack.soniquebay("tags", path, "--json", check=False)
            assert shown.returncode in (0, 1), shown.stderr
            out.write(shown.stdout.strip() + "\n")


def test_no_message_of_a_load_exceeds_64_kb_and_nothing_stays_staged(stack, library_root, tmp_path,
                                                                       db_session_factory):
    """Pictures of a megabyte in the records: each message of the load is measured as the broker receives it."""
    from worker_app.db.models import Cover, StagedCover

    library = make_library(library_root / "load-pictures", n_files=16, seed=43, corrupt=False, untagged=False,
                           odd_file_names=False)
    pictures = [big_picture(seed, 830) for seed in (11, 12, 13)]
    shas = [hashlib.sha256(data).hexdigest() for data in pictures]
    assert min(len(data) for data in pictures) > 12 * MAX_MESSAGE_BYTES
    want_cover = {track.path: track.cover_sha256 for track in library.tracks}
    for number, track in enumerate(library.tracks):
        if embed_front_cover(track.path, track.format, pictures[number % 3]):
            want_cover[track.path] = shas[number % 3]
    assert set(shas) <= set(want_cover.values()), "too few FLAC and MP3 files for three pictures"
    answers = tmp_path / "records.jsonl"
    _answers(stack, [track.path for track in library.tracks], answers)
    # Lyrics of 6 KB of random letters per record (gzip, which the broker's copy goes through, cannot shrink them
    # much): the tracks do not fit one message and go in several, each near the bound.
    lyrics = {track.path: ["".join(random.Random(number).choices(string.ascii_letters + " ", k=6000))]
              for number, track in enumerate(library.tracks)}
    entries = [json.loads(line) for line in answers.read_text().splitlines()]
    for entry in entries:
        entry["record"]["tags"]["lyrics"] = lyrics[entry["record"]["path"]]
    answers.write_text("".join(json.dumps(entry) + "\n" for entry in entries))

    # The broker's own view of each message the load sends to the insert queue (MONITOR shows every LPUSH as the
    # server received it; its escaping only lengthens a message, so a size read so is an upper bound).
    watched: list[str] = []
    watcher = redis.Redis.from_url(stack.broker.watcher_url())
    stop = f"load-watch-done-{os.getpid()}"
    ready = threading.Event()

    def watch() -> None:
        with watcher.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                text = command["command"]
                if stop in text:
                    return
                if text.upper().startswith("LPUSH INSERT"):
                    watched.append(text.split(" ", 2)[2])

    watching = threading.Thread(target=watch, daemon=True)
    watching.start()
    assert ready.wait(10)
    try:
        process = subprocess.run([str(VENV_BIN / "soniquebay"), "db", "load", str(answers), "--json"],
                                 env=stack.cli_env(), capture_output=True, text=True, timeout=600)
    finally:
        redis.Redis.from_url(stack.broker.url()).echo(stop)
        watching.join(30)
    out, err = process.stdout, process.stderr
    # The task's name from the headers as written (MONITOR's escaping can leave the rest of it unparseable).
    messages = [(re.search(r'"task": "(\w+)"', message).group(1), len(message)) for message in watched]
    assert process.returncode == 0, err + out + stack.diagnostics()
    report = json.loads(out)
    assert report["tracks"] == len(library.tracks) and report["refused"] == []
    assert report["covers"] == len({sha for sha in want_cover.values() if sha})

    largest = max(size for _, size in messages)
    print(f"largest message of the load in the broker: {largest} bytes; {len(messages)} messages")
    assert {task for task, _ in messages} == {"insert_covers_batch", "insert_artists_batch", "insert_albums_batch",
                                              "insert_tracks_batch"}, messages
    assert largest < MAX_MESSAGE_BYTES, messages
    assert sum(task == "insert_tracks_batch" for task, _ in messages) >= 2, messages

    # The catalogue as the records say, pictures by sha256, nothing left staged.
    rows = _under(db_session_factory, library.root)
    assert set(rows) == {track.path for track in library.tracks}
    for track in library.tracks:
        row = rows[track.path]
        got = {name: row[name] for name in ("title", "album", "track_number", "disc_number", "year", "format",
                                            "tags")}
        want = {name: getattr(track, name) for name in got} | {"tags": track.tags | {"lyrics": lyrics[track.path]}}
        assert got == want, track.path
        assert list(row["artists"]) == list(dict.fromkeys(track.artists)), track.path
        assert row["cover_sha256"] == want_cover[track.path], track.path
    with db_session_factory() as session:
        catalogued = dict(session.execute(select(Cover.sha256, Cover.size_bytes).where(Cover.sha256.in_(shas))).all())
        data = dict(session.execute(select(Cover.sha256, func.md5(Cover.data)).where(Cover.sha256.in_(shas))).all())
        staged = session.execute(select(func.count()).select_from(StagedCover)
                                 .where(StagedCover.sha256.in_(list(want_cover.values())))).scalar_one()
        before = catalogue_counts(session, os.fsdecode(library.root))
    assert catalogued == {sha: len(picture) for sha, picture in zip(shas, pictures, strict=True)}
    assert data == {sha: hashlib.md5(picture).hexdigest() for sha, picture in zip(shas, pictures, strict=True)}
    assert staged == 0

    # Loaded again: the same catalogue, and again nothing staged.
    again = stack.soniquebay("db", "load", str(answers), "--json", check=False)
    assert again.returncode == 0, again.stderr
    assert _under(db_session_factory, library.root) == rows
    with db_session_factory() as session:
        assert catalogue_counts(session, os.fsdecode(library.root)) == before
        assert session.execute(select(func.count()).select_from(StagedCover)
                               .where(StagedCover.sha256.in_(list(want_cover.values())))).scalar_one() == 0
    with db_session_factory() as session, session.begin():
        forget_library(session, str(library.root))


def test_a_record_too_large_for_a_message_refuses_the_load_before_it_writes(stack, library, tmp_path,
                                                                            db_session_factory):
    from worker_app.db.models import StagedCover

    track = library.tracks[0]
    record = json.loads(stack.soniquebay("tags", track.path, "--json").stdout)["record"]
    big = dict(record, path=os.path.join(os.path.dirname(track.path), "lyrics.flac"),
               tags={"lyrics": ["la " * 20000]})
    source = tmp_path / "big.json"
    source.write_text(json.dumps([record, big]))
    with db_session_factory() as session:
        staged = session.execute(select(func.count()).select_from(StagedCover)).scalar_one()

    refused = stack.soniquebay("db", "load", str(source), check=False)
    assert refused.returncode == 3, refused.stderr + refused.stdout
    assert "MessageTooLarge" in refused.stderr and "insert_tracks_batch" in refused.stderr, refused.stderr
    # Nothing written: not the big record, nor a picture staged.
    assert big["path"] not in _under(db_session_factory, library.root)
    with db_session_factory() as session:
        assert session.execute(select(func.count()).select_from(StagedCover)).scalar_one() == staged
