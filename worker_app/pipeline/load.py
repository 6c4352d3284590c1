"""`soniquebay db load`: records read elsewhere put into the catalogue without a scan, through the insert queue's
per-entity tasks (the seed's insert_covers_batch, insert_artists_batch, insert_albums_batch, insert_tracks_batch).

The records are what `soniquebay tags --json` prints for a file (``{"path": ..., "record": {...}}``; an answer with
an "error" holds no record and is counted as unreadable), or bare ``TrackRecord.to_message()`` dicts. They are
grouped exactly as a scan's batch stage groups them (``group_by_artist``, ``prepare_insertion_batch``), so a track
loaded so is the row a scan of the same file would write, and a later scan of its folder finds it unchanged.

Each kind of row goes in its own tasks, in dependency order, each waited for: covers (in messages of at most
``COVER_MESSAGE_BYTES``, the heavy part), then artists, then albums with their album artists, then tracks in
chunks. Each tracks chunk carries the covers, artists and albums it uses, upserted again in its transaction: a
deferred worker's orphan cleanup that runs between two steps (rows no track uses yet) costs nothing but that
upsert, and a load run twice leaves the catalogue as once.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Task

from worker_app.metadata.record import TrackRecord
from worker_app.paths import PathRefused, check_task_path, display_path
from worker_app.pipeline.batch import group_by_artist, prepare_insertion_batch
from worker_app.pipeline.insert import (
    insert_albums_batch,
    insert_artists_batch,
    insert_covers_batch,
    insert_tracks_batch,
)

COVER_MESSAGE_BYTES = 32 * 1024 * 1024  # base64 text of the covers in one message
TRACKS_PER_MESSAGE = 500


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


def _cover_messages(covers: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for cover in covers:
        if chunk and size + len(cover["data"]) > COVER_MESSAGE_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(cover)
        size += len(cover["data"])
    if chunk:
        yield chunk


def _sent(task: Task, *args: Any, timeout: float) -> Any:
    return task.apply_async(args, ignore_result=False).get(timeout=timeout)


def load(entries: Iterable[Any], library_roots: tuple[str, ...], *, timeout: float) -> LoadReport:
    """Insert the records among ``entries`` through the insert workers; raises what a task raised (or Celery's
    TimeoutError when no insert worker answered within ``timeout`` seconds for one message)."""
    report = LoadReport()
    records, covers = _records(entries, library_roots, report)
    if not records:
        return report
    payload = prepare_insertion_batch(group_by_artist(records), [], covers)
    for chunk in _cover_messages(payload["covers"]):
        report.covers += len(_sent(insert_covers_batch, chunk, timeout=timeout))
    report.artists = len(_sent(insert_artists_batch, payload["artists"], timeout=timeout))
    album_artist_keys = {album["album_artist_key"] for album in payload["albums"]}
    album_artists = [artist for artist in payload["artists"] if artist["name_key"] in album_artist_keys]
    report.albums = len(_sent(insert_albums_batch, payload["albums"], album_artists, timeout=timeout))
    tracks = payload["tracks"]
    for start in range(0, len(tracks), TRACKS_PER_MESSAGE):
        report.tracks += len(_sent(insert_tracks_batch, _subset(payload, tracks[start:start + TRACKS_PER_MESSAGE]),
                                   timeout=timeout))
    return report


def _subset(payload: dict[str, Any], tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of ``payload`` that ``tracks`` use, in the payload's order."""
    album_keys = {track["album_key"] for track in tracks if track.get("album_key")}
    albums = [album for album in payload["albums"] if album["key"] in album_keys]
    artist_keys = {key for track in tracks for key in track["artist_keys"]} | {
        album["album_artist_key"] for album in albums}
    cover_shas = {track.get("cover") for track in tracks}
    return {
        "covers": [cover for cover in payload["covers"] if cover["sha256"] in cover_shas],
        "artists": [artist for artist in payload["artists"] if artist["name_key"] in artist_keys],
        "albums": albums,
        "tracks": tracks,
        "failures": [],
    }
