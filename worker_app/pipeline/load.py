"""`soniquebay db load`: records read elsewhere put into the catalogue without a scan, through the insert queue's
per-entity tasks (insert_covers_batch, insert_artists_batch, insert_albums_batch, insert_tracks_batch).

The records are what `soniquebay tags --json` prints for a file (``{"path": ..., "record": {...}}``; an answer with
an "error" holds no record and is counted as unreadable), or bare ``TrackRecord.to_message()`` dicts. They are
grouped exactly as a scan's batch stage groups them (``group_by_artist``, ``prepare_insertion_batch``), so a track
loaded so is the row a scan of the same file would write, and a later scan of its folder finds it unchanged.

Like a scan's, the load's messages carry no pictures and stay within MAX_ARGS_BYTES (every message under
64 KB in the broker), with the claim check of pipeline/staging.py: the command stages each picture once by sha256
in ``staged_covers`` (as the operator's role, the command line's writing duty), then sends, each waited for and in
dependency order, the sha256s to move into ``covers``, the artists, the albums with their album artists, and the
tracks, each kind in as many messages as its JSON needs to stay within the bound. Every message is made and
measured before the first is sent, so a record too large for any message refuses the load before it writes
anything. Each tracks message carries the artists and albums its tracks use, upserted again, and claims its
pictures again from the staged copies (left staged until the load ends): a deferred worker's orphan cleanup that
runs between two steps (rows no track uses yet) costs nothing but that upsert, and a load run twice leaves the
catalogue as once. At its end the load drops the staged copies the catalogue has (``unstage_catalogued``); after a
failure, those it has not are pruned by retention within ``UNUSED_COVER_AGE``.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Task

from worker_app.db.session import transaction
from worker_app.metadata.record import CoverImage, TrackRecord
from worker_app.paths import PathRefused, check_task_path, display_path
from worker_app.pipeline.batch import group_by_artist, prepare_insertion_batch
from worker_app.pipeline.insert import (
    insert_albums_batch,
    insert_artists_batch,
    insert_covers_batch,
    insert_tracks_batch,
)
from worker_app.pipeline.ledger import MAX_ARGS_BYTES, check_args_size
from worker_app.pipeline.staging import stage_covers, unstage_catalogued


@dataclass
class LoadReport:
    covers: int = 0
    artists: int = 0
    albums: int = 0
    tracks: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of "error" answers
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why) of entries that are not records

    def as_dict(self) -> dict[str, Any]:
        return {"covers": self.covers, "artists": self.artists, "albums": self.albums, "tracks": self.tracks,
                "unreadable": [list(item) for item in self.unreadable],
                "refused": [list(item) for item in self.refused]}


def read_entries(text: str) -> list[Any]:
    """A JSON list of entries, or JSON Lines (one entry a line, what `soniquebay tags --json` appends to a file)."""
    stripped = text.strip()
    if stripped.startswith("["):
        entries = json.loads(stripped)
        if not isinstance(entries, list):
            raise ValueError("not a list of records")
        return entries
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]


def _records(entries: Iterable[Any], library_roots: tuple[str, ...], report: LoadReport
             ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The entries that are records under the library roots, their covers taken out by digest (as the extract
    stage sends them); the others are counted in ``report``."""
    records, covers = [], {}
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, dict) and "error" in entry and "record" not in entry:
            report.unreadable.append((str(entry.get("path")), str(entry["error"])))
            continue
        record = entry.get("record", entry) if isinstance(entry, dict) else None
        try:
            if not isinstance(record, dict):
                raise ValueError("not a record")
            message = TrackRecord.from_message(record).to_message()  # refuses missing and unknown fields
            check_task_path(message["path"], library_roots)
        except (TypeError, ValueError, KeyError, PathRefused) as error:
            where = display_path(record["path"]) if isinstance(record, dict) and isinstance(
                record.get("path"), str) else f"entry {number}"
            report.refused.append((where, str(error) or type(error).__name__))
            continue
        cover = message.get("cover")
        if cover:
            covers[cover["sha256"]] = cover
            message["cover"] = cover["sha256"]
        message["folder_cover"] = None  # a folder image is a scan's finding, not the file's
        records.append(message)
    return records, covers


# What a picture's staging transaction holds at most (the pictures themselves, decoded): the command line keeps
# a batch in memory, and PostgreSQL gets it as one statement.
STAGING_BYTES = 32 * 1024 * 1024


def _staging_batches(covers: list[CoverImage]) -> Iterator[dict[str, CoverImage]]:
    batch: dict[str, CoverImage] = {}
    size = 0
    for cover in covers:
        if batch and size + len(cover.data) > STAGING_BYTES:
            yield batch
            batch, size = {}, 0
        batch[cover.sha256] = cover
        size += len(cover.data)
    if batch:
        yield batch


def _json_bytes(value: Any) -> int:
    """What a value adds to a JSON list: itself and a ", " separator (so a sum of these bounds the list's JSON)."""
    return len(json.dumps(value)) + 2


def _runs(entries: list[Any], needs: Callable[[Any], list[tuple[str, Any]]], empty_args: list[Any]
          ) -> Iterator[list[Any]]:
    """Consecutive runs of ``entries`` whose message's arguments stay within MAX_ARGS_BYTES: ``empty_args`` are
    the arguments with no entry, and each entry adds what it ``needs`` ((identity, JSON value) pairs: itself and
    the rows it takes along), each counted once per run. An entry that alone exceeds the bound is a run of its own,
    which ``check_args_size`` refuses."""
    base = len(json.dumps(empty_args))
    run: list[Any] = []
    seen: set[str] = set()
    size = base
    for entry in entries:
        parts = dict(needs(entry))
        extra = sum(_json_bytes(value) for key, value in parts.items() if key not in seen)
        if run and size + extra > MAX_ARGS_BYTES:
            yield run
            run, seen, size = [], set(), base
            extra = sum(_json_bytes(value) for value in parts.values())
        run.append(entry)
        seen.update(parts)
        size += extra
    if run:
        yield run


def _messages(payload: dict[str, Any]) -> list[tuple[Task, list[Any]]]:
    """Every message of the load, in the order they are sent, each checked against MAX_ARGS_BYTES."""
    artists = {artist["name_key"]: artist for artist in payload["artists"]}
    messages: list[tuple[Task, list[Any]]] = []
    for shas in _runs(payload["cover_shas"], lambda sha: [(f"c:{sha}", sha)], [[]]):
        messages.append((insert_covers_batch, [shas]))
    for run in _runs(payload["artists"], lambda artist: [(f"a:{artist['name_key']}", artist)], [[]]):
        messages.append((insert_artists_batch, [run]))

    def album_needs(album: dict[str, Any]) -> list[tuple[str, Any]]:
        artist = artists[album["album_artist_key"]]
        return [(f"l:{album['key']}", album), (f"a:{artist['name_key']}", artist)]

    for run in _runs(payload["albums"], album_needs, [[], []]):
        keys = {album["album_artist_key"] for album in run}
        messages.append((insert_albums_batch, [run, [a for a in payload["artists"] if a["name_key"] in keys]]))
    album_by_key = {album["key"]: album for album in payload["albums"]}

    def track_needs(track: dict[str, Any]) -> list[tuple[str, Any]]:
        album = album_by_key.get(track.get("album_key") or "")
        keys = [*track["artist_keys"], *([album["album_artist_key"]] if album else [])]
        return [(f"t:{track['path']}", track), *([(f"l:{album['key']}", album)] if album else []),
                *((f"a:{key}", artists[key]) for key in keys),
                *((f"c:{sha}", sha) for sha in (track.get("cover"), track.get("folder_cover")) if sha)]

    for tracks in _runs(payload["tracks"], track_needs, [_subset(payload, [])]):
        messages.append((insert_tracks_batch, [_subset(payload, tracks)]))
    for task, args in messages:
        check_args_size(task.name, args)
    return messages


# The report's figure each task's answer (ids by key) counts.
_REPORTED = {insert_covers_batch.name: "covers", insert_artists_batch.name: "artists",
             insert_albums_batch.name: "albums", insert_tracks_batch.name: "tracks"}


def _sent(task: Task, args: list[Any], timeout: float) -> Any:
    return task.apply_async(args, ignore_result=False).get(timeout=timeout)


def load(entries: Iterable[Any], library_roots: tuple[str, ...], *, timeout: float) -> LoadReport:
    """Insert the records among ``entries`` through the insert workers; raises what a task raised (or Celery's
    TimeoutError when no insert worker answered within ``timeout`` seconds for one message), MessageTooLarge
    (before anything is written) for a record too large for a message."""
    report = LoadReport()
    records, covers = _records(entries, library_roots, report)
    if not records:
        return report
    payload = prepare_insertion_batch(group_by_artist(records), [])
    messages = _messages(payload)
    pictures = [CoverImage.from_message(covers[sha]) for sha in payload["cover_shas"]]
    try:
        for batch in _staging_batches(pictures):
            with transaction() as session:
                # Catalogued ones too: a picture no track uses may go to an orphan cleanup before the tracks
                # step claims it again.
                stage_covers(session, batch, catalogued_too=True)
        for task, args in messages:
            counted = _REPORTED[task.name]
            setattr(report, counted, getattr(report, counted) + len(_sent(task, args, timeout)))
    except BaseException:
        # What the catalogue has is safe to drop; the rest is left to retention (a scan may be waiting for it).
        with contextlib.suppress(Exception), transaction() as session:
            unstage_catalogued(session, payload["cover_shas"])
        raise
    with transaction() as session:
        unstage_catalogued(session, payload["cover_shas"])
    return report


def _subset(payload: dict[str, Any], tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of ``payload`` that ``tracks`` use, in the payload's order, their pictures by sha256."""
    album_keys = {track["album_key"] for track in tracks if track.get("album_key")}
    albums = [album for album in payload["albums"] if album["key"] in album_keys]
    artist_keys = {key for track in tracks for key in track["artist_keys"]} | {
        album["album_artist_key"] for album in albums}
    cover_shas = {sha for track in tracks for sha in (track.get("cover"), track.get("folder_cover")) if sha}
    return {
        "cover_shas": [sha for sha in payload["cover_shas"] if sha in cover_shas],
        "artists": [artist for artist in payload["artists"] if artist["name_key"] in artist_keys],
        "albums": albums,
        "tracks": tracks,
        "failures": [],
    }
