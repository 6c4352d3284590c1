"""Fuzzing read_track with mutated real files of every format the factory makes.

Seeds are tagged files from the factory (with covers where the library gave them one), plus an MP3 with ID3v2.3,
APEv2 and ID3v1 at once, one with an ID3v2.2 tag and one with compressed ID3v2.4 frames. Each example applies
1-3 mutations (bit flips, "interesting" integers written over length fields, truncation, a splice with another
file of any format, a duplicated or garbled region, a deleted range), biased toward the first 4 kB and the last
1 kB where the tags are, and reads the result with a small per-file time limit and one of three picture limits
(the default, 2 kB and 64 bytes: the last two push every file through the oversized-item scanners and the capped
MP4/Ogg readers).

Every example must: raise nothing but UnreadableFileError, with a reason that is not "unexpected ..." (that is
the extractor's catch-all for its own bugs) nor "took longer than ..." (a hang, bounded by the limit but still a
bug); or return a record fit for PostgreSQL and the JSON queue. Python memory allocated during one read
(tracemalloc) stays under 32 MiB plus 8 times the file's size.

Deterministic by default (CI); ``SONIQUEBAY_FUZZ_SEED=<n>`` explores other inputs, and
``SONIQUEBAY_FUZZ_EXAMPLES=<n>`` (per format, default 100) runs longer.
"""
from __future__ import annotations

import json
import math
import os
import random
import resource
import time
import tracemalloc
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TALB, TCON, TIT2

from tests.audio_factory import ALL_FORMATS, FORMATS, make_cover_art, make_library, syncsafe
from worker_app.metadata import cleaning
from worker_app.metadata.reader import (
    MAX_BITRATE,
    MAX_BITS_PER_SAMPLE,
    MAX_CHANNELS,
    MAX_DURATION,
    MAX_SAMPLE_RATE,
    read_track,
)
from worker_app.metadata.record import TrackRecord, UnreadableFileError

EXAMPLES_PER_FORMAT = int(os.environ.get("SONIQUEBAY_FUZZ_EXAMPLES", "100"))
FUZZ_SEED = os.environ.get("SONIQUEBAY_FUZZ_SEED")
FILE_TIME_LIMIT = 2.0
MiB = 1024 * 1024
PICTURE_LIMITS = [None, 2048, 64]  # None: the default (16 MiB)
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, list[tuple[bytes, str]]]:
    """format name -> [(bytes, extension)]: up to two tagged files a format, one with a cover if there is one."""
    root = tmp_path_factory.mktemp("fuzz-seeds")
    library = make_library(root / "music", 90, seed=21, formats=ALL_FORMATS, corrupt=False, odd_file_names=False)
    chosen: dict[str, list] = {}
    for track in sorted(library.tracks, key=lambda track: track.cover_sha256 is None):
        if track.tagged and len(chosen.setdefault(track.format_name, [])) < 2:
            chosen[track.format_name].append((Path(track.path).read_bytes(), FORMATS[track.format_name].extension))
    mp3 = next(track for track in library.tracks if track.format_name == "mp3" and track.tag_style == "id3v2.4")
    chosen["mp3"].append((_three_tag_formats(Path(mp3.path), root), ".mp3"))
    mp3_audio = library.templates.get("mp3-vbr", 0.3).data
    chosen["mp3-vbr"][1:] = [(_id3v22() + mp3_audio, ".mp3"), (_id3v24_compressed() + mp3_audio, ".mp3")]
    assert set(chosen) == set(ALL_FORMATS)
    return chosen


def _id3v22() -> bytes:
    """An ID3v2.2 tag: 3-letter frames, PIC with a 3-letter image format."""
    cover = make_cover_art(random.Random(4), 24, 24).data
    frames = [(b"TT2", b"\x01" + "Vingt-deux".encode("utf-16")), (b"TP1", b"\x00Artiste"),
              (b"COM", b"\x00eng\x00Old comment"), (b"PIC", b"\x00JPG\x03\x00" + cover)]
    body = b"".join(name + len(data).to_bytes(3, "big") + data for name, data in frames)
    return b"ID3\x02\x00\x00" + syncsafe(len(body)) + body


def _id3v24_compressed() -> bytes:
    """An ID3v2.4 tag whose frames are zlib-compressed (with the data length indicator)."""
    frames = []
    for name, text in ((b"TIT2", "compressed title"), (b"TPE1", "compressed artist")):
        raw = b"\x03" + text.encode()
        frames.append((name, 0x0009, syncsafe(len(raw)) + zlib.compress(raw)))
    frames.append((b"TALB", 0, b"\x03Album"))
    body = b"".join(name + syncsafe(len(data)) + flags.to_bytes(2, "big") + data for name, flags, data in frames)
    return b"ID3\x04\x00\x00" + syncsafe(len(body)) + body


def _three_tag_formats(source: Path, directory: Path) -> bytes:
    """An MP3 with ID3v2.3, APEv2 and ID3v1 at once."""
    path = directory / "three-tags.mp3"
    path.write_bytes(source.read_bytes())
    ape = APEv2()
    ape["Title"], ape["Album"], ape["REPLAYGAIN_TRACK_GAIN"] = "APE title", "APE album", "-2.00 dB"
    ape.save(path)
    tags = ID3(path)
    tags.add(TIT2(encoding=1, text=["UTF-16 title"]))
    tags.add(TALB(encoding=0, text=["Latin-1 album"]))
    tags.add(TCON(encoding=0, text=["(17)"]))
    tags.save(path, v1=2, v2_version=3)
    return path.read_bytes()


# ---------------------------------------------------------------- mutations

_offsets = st.integers(0, 1 << 24)
_regions = st.sampled_from(["head", "head", "tail", "any"])
_operations = st.one_of(
    st.tuples(st.just("flip"), _regions, st.lists(st.tuples(_offsets, st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(st.just("integer"), _regions, _offsets, st.sampled_from(INTERESTING), st.sampled_from([-1, 0, 0, 1]),
              st.sampled_from([1, 2, 3, 4, 8]), st.sampled_from(["big", "little"])),
    st.tuples(st.just("truncate"), _regions, _offsets),
    st.tuples(st.just("splice"), _regions, _offsets, st.sampled_from(ALL_FORMATS), _offsets),
    st.tuples(st.just("duplicate"), _offsets, st.integers(1, 4096), _regions, _offsets),
    st.tuples(st.just("garble"), _regions, _offsets, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _regions, _offsets, st.integers(1, 512)),
)


def _position(data: bytearray, region: str, offset: int) -> int:
    if region == "head":
        return offset % min(len(data), 4096)
    if region == "tail":
        return max(len(data) - 1 - offset % min(len(data), 1024), 0)
    return offset % len(data)


def mutate(data: bytes, operations, seeds) -> bytes:
    result = bytearray(data)
    for operation in operations:
        if len(result) < 16:
            break
        kind = operation[0]
        if kind == "flip":
            _, region, flips = operation
            for offset, bit in flips:
                result[_position(result, region, offset)] ^= 1 << bit
        elif kind == "integer":
            _, region, offset, value, delta, width, order = operation
            position = _position(result, region, offset)
            number = (value + delta) % (1 << (8 * width))
            result[position:position + width] = number.to_bytes(width, order)
        elif kind == "truncate":
            _, region, offset = operation
            del result[_position(result, region, offset):]
        elif kind == "splice":
            _, region, offset, other_format, other_offset = operation
            other = seeds[other_format][0][0]
            result[_position(result, region, offset):] = other[other_offset % len(other):]
        elif kind == "duplicate":
            _, source, length, region, offset = operation
            start = source % min(len(result), 8192)
            piece = result[start:start + length]
            position = _position(result, region, offset)
            result[position:position] = piece
        elif kind == "garble":
            _, region, offset, junk = operation
            position = _position(result, region, offset)
            result[position:position + len(junk)] = junk
        elif kind == "delete":
            _, region, offset, length = operation
            position = _position(result, region, offset)
            del result[position:position + length]
    return bytes(result)


# ---------------------------------------------------------------- what every outcome must satisfy


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def check_record(record: TrackRecord, picture_limit: int) -> None:
    message = record.to_message()
    json.dumps({**message, "path": None}, allow_nan=False)
    for text in _strings({key: value for key, value in message.items() if key != "path"}):
        assert "\x00" not in text, text
        text.encode("utf-8")
    for name in ("track_number", "track_total", "disc_number", "disc_total"):
        value = getattr(record, name)
        assert value is None or 1 <= value <= cleaning.MAX_POSITION, (name, value)
    assert record.year is None or cleaning.EARLIEST_YEAR <= record.year <= cleaning.LATEST_YEAR
    assert record.duration_seconds is None or 0 < record.duration_seconds <= MAX_DURATION
    assert record.bitrate is None or 0 < record.bitrate <= MAX_BITRATE
    assert record.sample_rate is None or 0 < record.sample_rate <= MAX_SAMPLE_RATE
    assert record.channels is None or 0 < record.channels <= MAX_CHANNELS
    assert record.bits_per_sample is None or 0 < record.bits_per_sample <= MAX_BITS_PER_SAMPLE
    for name in ("replaygain_track_gain", "replaygain_album_gain", "replaygain_track_peak", "replaygain_album_peak"):
        value = getattr(record, name)
        assert value is None or math.isfinite(value)
    for identifier in [record.mb_track_id, record.mb_album_id, *record.mb_artist_ids]:
        assert identifier is None or len(identifier) <= 36
    assert record.codec is None or len(record.codec) <= 16
    if record.cover is not None:
        assert record.cover.size_bytes <= picture_limit and len(record.cover.mime) <= 100
    assert len(record.warnings) <= cleaning.MAX_WARNINGS


def read_and_check(path: Path, picture_limit: int | None) -> str:
    """The outcome as a word, after checking it."""
    size = path.stat().st_size
    started = time.monotonic()
    tracemalloc.start()  # around the read only: tracing slows every allocation, Hypothesis' own included
    try:
        record = read_track(path, time_limit=FILE_TIME_LIMIT, max_cover_bytes=picture_limit)
    except UnreadableFileError as error:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        reason = error.reason
        assert reason and "\x00" not in reason
        reason.encode("utf-8")
        assert not reason.startswith("unexpected"), reason  # the extractor's own bug
        assert not reason.startswith("took longer"), reason  # a hang, stopped by the limit
        outcome = "refused"
    else:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        check_record(record, picture_limit or 16 * MiB)
        outcome = "read"
    assert peak < 32 * MiB + 8 * size, f"{peak} bytes allocated reading a {size}-byte file"
    assert time.monotonic() - started < FILE_TIME_LIMIT + 1
    return outcome


@pytest.fixture(scope="module")
def traced():
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert rss_growth_kib < 256 * 1024, f"peak resident memory grew by {rss_growth_kib} KiB while fuzzing"


def _fuzz_settings(function):
    configured = settings(max_examples=EXAMPLES_PER_FORMAT, deadline=timedelta(seconds=FILE_TIME_LIMIT + 2),
                          derandomize=FUZZ_SEED is None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(function)
    return seed(int(FUZZ_SEED))(configured) if FUZZ_SEED is not None else configured


# ---------------------------------------------------------------- the fuzz tests


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_mutated_files_are_read_or_refused_cleanly(seeds, traced, tmp_path, format_name):
    outcomes = {"read": 0, "refused": 0}
    other_extensions = sorted({spec.extension for spec in FORMATS.values()} - {FORMATS[format_name].extension})

    @_fuzz_settings
    @given(seed_index=st.integers(0, 2), operations=st.lists(_operations, min_size=1, max_size=3),
           picture_limit=st.sampled_from(PICTURE_LIMITS),
           extension=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(other_extensions)))
    def mutated_file(seed_index, operations, picture_limit, extension):
        candidates = seeds[format_name]
        data, own_extension = candidates[seed_index % len(candidates)]
        path = tmp_path / f"fuzzed{extension or own_extension}"
        path.write_bytes(mutate(data, operations, seeds))
        outcomes[read_and_check(path, picture_limit)] += 1

    mutated_file()
    assert outcomes["read"] + outcomes["refused"] >= EXAMPLES_PER_FORMAT // 2


def test_unmutated_seeds_read_with_every_picture_limit(seeds, traced, tmp_path):
    """The baseline the mutations start from: every seed reads, whatever the picture limit."""
    for format_name, candidates in seeds.items():
        for index, (data, extension) in enumerate(candidates):
            path = tmp_path / f"seed-{format_name}-{index}{extension}"
            path.write_bytes(data)
            for picture_limit in PICTURE_LIMITS:
                assert read_and_check(path, picture_limit) == "read", (format_name, index, picture_limit)
