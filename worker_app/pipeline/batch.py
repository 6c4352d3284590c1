"""Batch stage (queue ``batch``, memory bound): group a batch's records by artist and album, decide each album's
artist (a compilation stays one "Various Artists" album), dedupe, and hand one payload to the insert stage.

The records are read from, and the payload written to, the unit's staged row (pipeline/staging.py): the messages
in and out carry the unit's key only."""
from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Any

from worker_app.celery_app import app
from worker_app.db.session import transaction
from worker_app.limits import BATCH
from worker_app.metadata.cleaning import storable
from worker_app.pipeline.ledger import hand_off, publish
from worker_app.pipeline.staging import Extracted, read_extracted, restart_unit, stage_payload, staged_paths
from worker_app.pipeline.unit_task import UnitTask

VARIOUS_ARTISTS = "Various Artists"
UNKNOWN_ARTIST = "Unknown Artist"
_SPACES = re.compile(r"\s+")


def name_key(name: str) -> str:
    """The natural key of an artist or album title: "The Beatles", "the  beatles" and "ＴＨＥ BEATLES" are one."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", name)).strip().casefold()


def _album_artist_name(records: list[dict[str, Any]]) -> tuple[str, bool]:
    """(album artist, is compilation) for the records of one album in one folder."""
    tagged = Counter(" & ".join(a for a in r["album_artists"] if a.strip()) for r in records
                     if any(a.strip() for a in r["album_artists"]))
    flagged = any(r["is_compilation"] for r in records)
    if tagged:
        name = tagged.most_common(1)[0][0]
        return name, flagged or name_key(name) == name_key(VARIOUS_ARTISTS)
    if flagged:
        return VARIOUS_ARTISTS, True
    track_artists = {name_key(r["artists"][0]): r["artists"][0] for r in records if r["artists"]}
    if len(track_artists) > 1:
        return VARIOUS_ARTISTS, True
    if track_artists:
        return next(iter(track_artists.values())), False
    return UNKNOWN_ARTIST, False


@app.task(name="group_by_artist", acks_late=True, ignore_result=False,
          **BATCH.options)
def group_by_artist(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Artists and albums of a batch, each once, and each track annotated with their natural keys."""
    return group_records(records)


def group_records(records: list[dict[str, Any]], storable_already: bool = False) -> dict[str, Any]:
    """``group_by_artist``'s work. Every value is made storable (``cleaning.storable``) unless the caller knows
    that none needs it (``storable_already``: ``staging.Extracted.storable``)."""
    artists: dict[str, dict[str, Any]] = {}
    albums: dict[str, dict[str, Any]] = {}

    def add_artist(name: str, mbid: str | None) -> str:
        key = name_key(name)
        known = artists.setdefault(key, {"name": name, "name_key": key, "mbid": None})
        known["mbid"] = known["mbid"] or mbid
        return key

    by_album: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        record["warnings"] = list(record.get("warnings") or [])
        if not storable_already:
            for field in list(record):
                if field not in ("path", "cover", "folder_cover"):  # the path keeps its raw bytes
                    record[field] = storable(record[field], record["warnings"], field)
        record["artists"] = [a for a in record["artists"] if a.strip()]
        if record.get("album") and record["album"].strip():
            by_album[(os.path.dirname(record["path"]), name_key(record["album"]))].append(record)
        else:
            record["album_key"] = None
        mbids = record["mb_artist_ids"] if len(record["mb_artist_ids"]) == len(record["artists"]) else []
        record["artist_keys"] = [
            add_artist(name, mbids[i] if mbids else None) for i, name in enumerate(record["artists"])
        ]

    for (_, title_key), album_records in by_album.items():
        artist_name, is_compilation = _album_artist_name(album_records)
        first = album_records[0]
        album_artist_mbid = (first["mb_album_artist_ids"][0]
                             if len(first["mb_album_artist_ids"]) == 1 and first["album_artists"] else None)
        artist_key = add_artist(artist_name, album_artist_mbid)
        album_key = f"{artist_key}\x1f{title_key}"
        years = [r["year"] for r in album_records if r["year"]]
        discs = [r["disc_total"] or r["disc_number"] for r in album_records if r["disc_total"] or r["disc_number"]]
        album = albums.setdefault(album_key, {
            "title": Counter(r["album"] for r in album_records).most_common(1)[0][0],
            "title_key": title_key, "album_artist_key": artist_key, "is_compilation": False,
            "year": None, "mbid": None, "release_group_mbid": None, "disc_total": None,
        })
        album["is_compilation"] = album["is_compilation"] or is_compilation
        album["year"] = min(years + ([album["year"]] if album["year"] else []), default=None)
        album["disc_total"] = max(discs + ([album["disc_total"]] if album["disc_total"] else []), default=None)
        album["mbid"] = album["mbid"] or next((r["mb_album_id"] for r in album_records if r["mb_album_id"]), None)
        album["release_group_mbid"] = album["release_group_mbid"] or next(
            (r["mb_release_group_id"] for r in album_records if r["mb_release_group_id"]), None)
        for record in album_records:
            record["album_key"] = album_key
    return {"artists": artists, "albums": albums, "tracks": records}


@app.task(name="prepare_insertion_batch", acks_late=True, ignore_result=False,
          **BATCH.options)
def prepare_insertion_batch(grouped: dict[str, Any], failures: list[Any],
                            covers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The insert stage's payload: every entity once, sorted by natural key (every insert worker then locks rows
    in the same order, which rules out deadlocks between them), and the sha256 of each picture a track uses
    (``cover_shas``). ``covers``, when given (``CoverImage.to_message`` dicts by sha256, outside a scan), puts
    those pictures themselves in the payload; a scan's pictures are staged (pipeline/staging.py)."""
    tracks = sorted({t["path"]: t for t in grouped["tracks"]}.values(), key=lambda t: t["path"])
    used_covers = sorted({t["cover"] for t in tracks if t.get("cover")} | {t["folder_cover"] for t in tracks
                                                                             if t.get("folder_cover")})
    return {
        "covers": [covers[sha] for sha in used_covers if sha in covers] if covers else [],
        "cover_shas": used_covers,
        "artists": [grouped["artists"][k] for k in sorted(grouped["artists"])],
        "albums": [grouped["albums"][k] | {"key": k} for k in sorted(grouped["albums"])],
        "tracks": tracks,
        "failures": failures,
    }


def payload_of(staged: Extracted) -> dict[str, Any]:
    """A batch unit's insert payload from its staged records."""
    payload: dict[str, Any] = prepare_insertion_batch(group_records(staged.records, staged.storable),
                                                      staged.failures)
    return payload


# The stage number of a batch unit's chain at this step (extract 1 -> batch 2 -> insert 3).
BATCH_STAGE = 2


class BatchTask(UnitTask):
    stage = "batch"
    unit_stage = BATCH_STAGE
    unit_kind = "batch"

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        return staged_paths(args[0], args[1]) if len(args) >= 2 else []


@app.task(name="batch_entities", base=BatchTask, bind=True, acks_late=True,
          **BATCH.options)
def batch_entities(self: BatchTask, scan_id: int, key: str, *previous_release: Any) -> dict[str, Any]:
    """Make a unit's insert payload from its staged records, stage it, and send the insert its key. (A message of
    the previous release carried the records after the key: its unit has no staged row and starts again.)"""
    from worker_app.pipeline.insert import INSERT_STAGE, insert_batch_direct

    with transaction() as session:
        staged = read_extracted(session, scan_id, key)
    if staged is None:
        restart_unit(scan_id, key, "the batch stage found no staged records")
        return {"skipped": key, "why": "no staged records"}
    payload = payload_of(staged)
    with transaction() as session:
        if not stage_payload(session, scan_id, key, payload):
            return {"skipped": key, "why": "its staged records went meanwhile (a duplicate inserted them)"}
    publish(insert_batch_direct.name, [scan_id, key])
    hand_off(scan_id, key, INSERT_STAGE)
    return {"tracks": len(payload["tracks"]), "artists": len(payload["artists"]), "albums": len(payload["albums"])}
