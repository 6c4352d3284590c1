"""The record the extract stage produces for one audio file.

It travels as JSON between the extract, batch and insert queues, so every field is JSON-friendly: strings,
numbers, booleans, lists and dicts. Cover bytes travel base64-encoded (``CoverImage.to_message``).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from typing import Any


class UnreadableFileError(Exception):
    """The one error the extractor raises for a file it cannot catalogue; ``reason`` says why, for people.

    ``passing`` is True when the failure says nothing about the file's content (an I/O error, a permission, a
    time limit): the next scan must read the file again. Otherwise it is a verdict on the content (corrupt, not
    audio), which holds as long as the file is unchanged."""

    def __init__(self, reason: str, passing: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.passing = passing


@dataclass
class CoverImage:
    sha256: str
    mime: str
    width: int | None
    height: int | None
    size_bytes: int
    source: str  # "embedded" or "folder"
    data: bytes = field(repr=False)

    def to_message(self) -> dict[str, Any]:
        message = {name: getattr(self, name) for name in _COVER_FIELDS}
        message["data"] = base64.b64encode(self.data).decode("ascii")
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> CoverImage:
        return cls(**{**message, "data": base64.b64decode(message["data"])})


@dataclass
class TrackRecord:
    """Everything the catalogue keeps about one file. ``None`` means the file does not say."""

    path: str  # as os.fsdecode gives it (surrogate-escaped where the name is not UTF-8)
    size_bytes: int
    mtime: float
    format: str  # container, lower case: mp3 flac ogg opus m4a wma ape wavpack aiff wav dsf musepack
    codec: str | None = None  # mp3 flac vorbis opus aac alac wma ape wavpack pcm dsd musepack ...
    title: str | None = None
    artists: list[str] = field(default_factory=list)
    album: str | None = None
    album_artists: list[str] = field(default_factory=list)
    is_compilation: bool = False
    track_number: int | None = None
    track_total: int | None = None
    disc_number: int | None = None
    disc_total: int | None = None
    date: str | None = None  # as tagged, e.g. "1997-05-21"
    year: int | None = None
    genres: list[str] = field(default_factory=list)
    composers: list[str] = field(default_factory=list)
    duration_seconds: float | None = None
    bitrate: int | None = None  # bits per second
    sample_rate: int | None = None
    channels: int | None = None
    bits_per_sample: int | None = None
    mb_track_id: str | None = None  # MusicBrainz recording id
    mb_release_track_id: str | None = None
    mb_album_id: str | None = None  # MusicBrainz release id
    mb_release_group_id: str | None = None
    mb_artist_ids: list[str] = field(default_factory=list)
    mb_album_artist_ids: list[str] = field(default_factory=list)
    replaygain_track_gain: float | None = None  # dB
    replaygain_track_peak: float | None = None
    replaygain_album_gain: float | None = None
    replaygain_album_peak: float | None = None
    tags: dict[str, list[str]] = field(default_factory=dict)  # every other tag the file carries, by lower-case key
    cover: CoverImage | None = None  # the embedded front cover (or first picture)
    warnings: list[str] = field(default_factory=list)  # what was cleaned or ignored, e.g. "NUL removed from title"

    def to_message(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy was ~12% of the extractor's time (bench/README.md). The
        # message's lists and dicts are copies, one level deep: what the caller changes in it stays out of the record.
        message = {name: _copy(getattr(self, name)) for name in _TRACK_FIELDS}
        message["cover"] = self.cover.to_message() if self.cover else None
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> TrackRecord:
        cover = message.get("cover")
        return cls(**{**message, "cover": CoverImage.from_message(cover) if cover else None})


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return {key: list(item) if isinstance(item, list) else item for key, item in value.items()}
    return value


_COVER_FIELDS = tuple(f.name for f in fields(CoverImage))
_TRACK_FIELDS = tuple(f.name for f in fields(TrackRecord))
