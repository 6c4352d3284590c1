"""The reader against the kinds of mistakes an independent reader found: each kind on files the generator makes.

- a container holding no audio stream is a failure with a reason, not a track without duration;
- the aliases common taggers write (MusicBrainz Picard's tag map, as beets' mediafile and Navidrome read it);
- every container mutagen reads is scanned, whatever extension it goes by;
- impossible stream values from a damaged header are not stored, and the track says why.
"""
from __future__ import annotations

import importlib
import inspect
import io
import os
import pkgutil
import re
import warnings

import mutagen
import pytest
from mutagen.asf import ASF
from mutagen.id3 import TIT2
from mutagen.wave import WAVE

from tests.audio_factory import (
    ALL_FORMATS,
    FORMATS,
    RARE_FORMATS,
    TemplateCache,
    asf_without_audio_stream,
    is_available,
    make_library,
    metadata_only_mp4,
    wav_with_riff_info,
    with_damaged_stream_header,
    with_raw_tags,
)
from worker_app import paths
from worker_app.metadata import reader
from worker_app.metadata.formats import AUDIO_EXTENSIONS, CLASS_BY_EXTENSION, NOT_AUDIO_EXTENSIONS
from worker_app.metadata.reader import read_stream_info, read_track
from worker_app.metadata.record import UnreadableFileError


@pytest.fixture(scope="module")
def templates():
    return TemplateCache()


# ---------------------------------------------------------------- containers without audio


def test_an_m4a_made_only_of_metadata_boxes_is_refused(tmp_path):
    path = tmp_path / "01 Only Tags.m4a"
    path.write_bytes(metadata_only_mp4({"\xa9nam": ["Only tags"], "\xa9ART": ["Somebody"]}))
    for read in (read_track, read_stream_info):
        with pytest.raises(UnreadableFileError) as caught:
            read(path)
        assert caught.value.reason == "no audio stream in the MP4/M4A file (only metadata or other tracks)"


def test_a_wma_without_a_stream_is_refused(tmp_path, templates):
    buffer = io.BytesIO(templates.get("wma", 0.3).data)
    audio = ASF(buffer)
    audio["Title"] = ["Only tags"]
    buffer.seek(0)
    audio.save(buffer)
    path = tmp_path / "01 Only Tags.wma"
    path.write_bytes(asf_without_audio_stream(buffer.getvalue()))
    with pytest.raises(UnreadableFileError) as caught:
        read_track(path)
    assert caught.value.reason == "no audio stream in the WMA/ASF file (only metadata or other tracks)"


@pytest.mark.parametrize("format_name", ["m4a-aac", "m4a-alac", "wma"])
def test_the_same_containers_with_audio_are_tracks(tmp_path, templates, format_name):
    template = templates.get(format_name, 0.3)
    path = tmp_path / f"track{template.format.extension}"
    path.write_bytes(template.data)
    record = read_track(path)
    assert record.codec == template.format.codec and record.duration_seconds == pytest.approx(0.3, abs=0.1)


# ---------------------------------------------------------------- aliases other taggers write

MBID = "1c7d1d3a-1f8e-4e2d-9c11-2f0f3a8e5b41"
# (key as a tagger writes it, value, TrackRecord field, what the field must hold): Picard's tag map and the aliases
# beets' mediafile and Navidrome accept beside it (foobar2000, Mp3tag, MediaMonkey, old Winamp).
ALIASES = [
    ("DISC", "2", "disc_number", 2),
    ("DISCNUMBER", "2", "disc_number", 2),
    ("DISCC", "3", "disc_total", 3),
    ("DISCTOTAL", "3", "disc_total", 3),
    ("TOTALDISCS", "3", "disc_total", 3),
    ("TRACK", "5", "track_number", 5),
    ("TRACKNUMBER", "5/9", "track_number", 5),
    ("TRACKC", "12", "track_total", 12),
    ("TRACKTOTAL", "12", "track_total", 12),
    ("TOTALTRACKS", "12", "track_total", 12),
    ("ALBUM ARTIST", "The Band", "album_artists", ["The Band"]),
    ("ALBUMARTIST", "The Band", "album_artists", ["The Band"]),
    ("ALBUMARTISTS", "The Band", "album_artists", ["The Band"]),
    ("ALBUM ARTISTS", "The Band", "album_artists", ["The Band"]),
    ("ARTISTS", "Solo", "artists", ["Solo"]),
    ("COMPILATION", "1", "is_compilation", True),
    ("DATE", "1999-04-01", "date", "1999-04-01"),
    ("YEAR", "1999", "year", 1999),
    ("MUSICBRAINZ_ALBUMID", MBID, "mb_album_id", MBID),
    ("MUSICBRAINZ ALBUM ID", MBID, "mb_album_id", MBID),
    ("MUSICBRAINZ_TRACKID", MBID, "mb_track_id", MBID),
    ("MUSICBRAINZ TRACK ID", MBID, "mb_track_id", MBID),
    ("MUSICBRAINZ RELEASE TRACK ID", MBID, "mb_release_track_id", MBID),
    ("MUSICBRAINZ RELEASE GROUP ID", MBID, "mb_release_group_id", MBID),
    ("MUSICBRAINZ ARTIST ID", MBID, "mb_artist_ids", [MBID]),
    ("MUSICBRAINZ ALBUM ARTIST ID", MBID, "mb_album_artist_ids", [MBID]),
    ("REPLAYGAIN_TRACK_GAIN", "-7.10 dB", "replaygain_track_gain", -7.1),
    ("replaygain_album_peak", "0.988", "replaygain_album_peak", 0.988),
]
# One format per tag family: Vorbis comments (FLAC, Ogg, Opus), APEv2 (WavPack, Monkey's Audio, Musepack), ID3v2
# TXXX frames, MP4 free-form atoms, ASF attributes.
FAMILY_FORMATS = ["flac", "ogg", "opus", "wavpack", "ape", "musepack", "mp3", "aiff", "m4a-aac", "wma"]


@pytest.mark.parametrize("format_name", [name for name in FAMILY_FORMATS if name in ALL_FORMATS])
@pytest.mark.parametrize("key, value, field, expected", ALIASES, ids=[alias[0] for alias in ALIASES])
def test_aliases_taggers_write_fill_the_field(tmp_path, templates, format_name, key, value, field, expected):
    template = templates.get(format_name, 0.3)
    path = tmp_path / f"track{template.format.extension}"
    path.write_bytes(with_raw_tags(template, [(key, value)]))
    record = read_track(path)
    assert getattr(record, field) == expected
    assert record.tags == {} and record.warnings == []


def test_separate_totals_beside_a_bare_number(tmp_path, templates):
    """foobar2000's layout: TRACKNUMBER and DISC alone, the totals in TOTALTRACKS and DISCC."""
    template = templates.get("flac", 0.3)
    path = tmp_path / "track.flac"
    path.write_bytes(with_raw_tags(template, [("TRACKNUMBER", "4"), ("TOTALTRACKS", "11"), ("DISC", "1"),
                                              ("DISCC", "2"), ("ALBUM ARTIST", "Various Artists"),
                                              ("COMPILATION", "1")]))
    record = read_track(path)
    assert (record.track_number, record.track_total, record.disc_number, record.disc_total) == (4, 11, 1, 2)
    assert record.album_artists == ["Various Artists"] and record.is_compilation
    assert record.tags == {}


def test_two_taggers_aliases_for_one_field_say_it_once(tmp_path, templates):
    template = templates.get("flac", 0.3)
    path = tmp_path / "track.flac"
    path.write_bytes(with_raw_tags(template, [("ALBUMARTIST", "The Band"), ("ALBUM ARTIST", "The Band"),
                                              ("DISCNUMBER", "2"), ("DISC", "2"), ("GENRE", "Rock"),
                                              ("GENRE", "Rock")]))
    record = read_track(path)
    assert (record.album_artists, record.disc_number, record.genres) == (["The Band"], 2, ["Rock"])
    assert record.tags == {} and record.warnings == []


def test_aliases_that_disagree_keep_the_first_and_the_other_in_tags(tmp_path, templates):
    template = templates.get("flac", 0.3)
    path = tmp_path / "track.flac"
    path.write_bytes(with_raw_tags(template, [("DISCNUMBER", "1"), ("DISC", "2")]))
    record = read_track(path)
    assert record.disc_number == 1 and record.tags == {"discnumber": ["2"]}
    assert record.warnings == ["discnumber has 2 values, the first is used"]


INFO = {"title": "Take Five", "artist": "Quartet", "album": "Time Out", "date": "1959-12-14", "genre": "Jazz",
        "tracknumber": "3", "comment": "Remastered"}


def test_a_wav_tagged_only_in_riff_info(tmp_path):
    path = tmp_path / "03 Take Five.wav"
    path.write_bytes(wav_with_riff_info(0.3, INFO))
    record = read_track(path)
    assert (record.title, record.artists, record.album, record.genres) == ("Take Five", ["Quartet"], "Time Out",
                                                                           ["Jazz"])
    assert (record.date, record.year, record.track_number) == ("1959-12-14", 1959, 3)
    assert record.tags == {"comment": ["Remastered"]} and record.warnings == []


def test_the_id3_chunk_of_a_wav_wins_and_riff_info_fills_the_rest(tmp_path):
    path = tmp_path / "03 Take Five.wav"
    path.write_bytes(wav_with_riff_info(0.3, INFO))
    audio = WAVE(path)
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=["Take Five (ID3)"]))
    audio.save()
    record = read_track(path)
    assert (record.title, record.album, record.artists) == ("Take Five (ID3)", "Time Out", ["Quartet"])


def test_riff_info_from_older_software_is_windows_1252(tmp_path):
    path = tmp_path / "01 Cafe.wav"
    data = wav_with_riff_info(0.3, {"title": "Cafe!"})
    path.write_bytes(data.replace(b"Cafe!", b"Caf\xe9!"))
    record = read_track(path)
    assert record.title == "Café!"
    assert record.warnings == ["RIFF INFO INAM is not UTF-8, read as Windows-1252"]


# ---------------------------------------------------------------- every container mutagen reads, by every name


def test_the_scanner_looks_at_every_extension_the_reader_reads():
    assert paths.AUDIO_EXTENSIONS == reader.AUDIO_EXTENSIONS == frozenset(CLASS_BY_EXTENSION)
    for extension in CLASS_BY_EXTENSION:
        assert paths.is_audio_name(f"01 Song{extension}") and paths.is_audio_name(f"01 Song{extension.upper()}")
    assert not paths.is_audio_name("._01 Song.mp3") and not paths.is_audio_name("cover.jpg")


def _mutagen_extensions() -> dict[str, type]:
    """Each extension a mutagen class names in its ``score`` (how mutagen.File tells formats apart by name)."""
    found: dict[str, type] = {}
    for module_info in pkgutil.walk_packages(mutagen.__path__, "mutagen."):
        if module_info.name.rpartition(".")[2].startswith(("_", "easy")):
            continue
        with warnings.catch_warnings():  # mutagen.m4a, kept for old callers, warns that it is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(module_info.name)
        for kind in vars(module).values():
            if inspect.isclass(kind) and issubclass(kind, mutagen.FileType) and "score" in vars(kind):
                for extension in re.findall(r'"(\.[a-z0-9+]+)"', inspect.getsource(kind.score)):
                    found[extension] = kind
    return found


def test_every_extension_mutagen_knows_is_read_or_refused_for_a_reason():
    known = _mutagen_extensions()
    assert {".mp3", ".flac", ".wav", ".tak", ".aac"} <= set(known)  # the introspection itself works
    unread = {extension: kind.__name__ for extension, kind in known.items()
              if extension not in AUDIO_EXTENSIONS and extension not in NOT_AUDIO_EXTENSIONS}
    assert unread == {}
    misread = {extension: (CLASS_BY_EXTENSION[extension].__name__, kind.__name__) for extension, kind in known.items()
               if extension in AUDIO_EXTENSIONS and not issubclass(kind, CLASS_BY_EXTENSION[extension])}
    assert misread == {}
    assert not AUDIO_EXTENSIONS & set(NOT_AUDIO_EXTENSIONS)


def test_containers_under_other_names_read_as_generated(tmp_path):
    """3GPP/3GPP2 (MP4), TAK, ADTS AAC with ID3v2, AC-3 with APEv2: the answer key, file by file."""
    library = make_library(tmp_path / "music", 4 * len(RARE_FORMATS), seed=3, formats=RARE_FORMATS, corrupt=False,
                           untagged=False, odd_file_names=False, tracks_per_album=(2, 3))
    assert {expected.format_name for expected in library.tracks} == set(RARE_FORMATS)
    mismatches = {}
    for expected in library.tracks:
        assert paths.is_audio_name(os.path.basename(expected.path))
        record = read_track(expected.path)
        problems = expected.mismatches(record)
        stream = read_stream_info(expected.path)
        problems += [f"read_stream_info {name}: {value!r}, read_track {getattr(record, name)!r}"
                     for name, value in stream.items() if value != getattr(record, name)]
        if problems:
            mismatches[f"{expected.format_name} {expected.path}"] = problems
    assert mismatches == {}


@pytest.mark.parametrize("format_name", RARE_FORMATS)
def test_containers_under_other_names_are_recognised_under_a_wrong_one(tmp_path, templates, format_name):
    template = templates.get(format_name, 0.3)
    path = tmp_path / "misnamed.flac"
    path.write_bytes(template.data)
    record = read_track(path)
    assert (record.format, record.codec) == (template.format.container, template.format.codec)
    assert len(record.warnings) == 1 and record.warnings[0].startswith("extension .flac but the content is ")


@pytest.mark.parametrize("extension", sorted(AUDIO_EXTENSIONS))
def test_every_extension_reads_its_container_without_a_warning(tmp_path, templates, extension):
    kind = CLASS_BY_EXTENSION[extension]
    made = [name for name, spec in FORMATS.items()
            if CLASS_BY_EXTENSION[spec.extension] is kind and (spec.synthetic or is_available(name))]
    if not made:
        pytest.skip(f"the generator makes no {kind.__name__} file")
    template = templates.get(made[0], 0.3)
    path = tmp_path / f"track{extension}"
    path.write_bytes(template.data)
    record = read_track(path)
    assert (record.format, record.codec, record.warnings) == (template.format.container, template.format.codec, [])


# ---------------------------------------------------------------- impossible stream values


def damaged(tmp_path, templates, format_name, **fields):
    template = templates.get(format_name, 0.3)
    path = tmp_path / f"damaged{template.format.extension}"
    path.write_bytes(with_damaged_stream_header(template, **fields))
    return path, read_track(path)


def test_a_24_hz_sample_rate_is_not_stored_nor_the_duration_it_implies(tmp_path, templates):
    samples = round(44100 * templates.get("flac", 0.3).duration)
    path, record = damaged(tmp_path, templates, "flac", sample_rate=24)
    size = path.stat().st_size
    assert (record.sample_rate, record.duration_seconds, record.bitrate) == (None, None, None)
    assert "sample rate 24 ignored (below 1000)" in record.warnings
    assert f"duration {samples / 24:g} s ignored (a {size}-byte file cannot hold it)" in record.warnings
    assert (record.channels, record.bits_per_sample, record.codec) == (2, 16, "flac")  # the rest of the header


def test_a_duration_the_file_cannot_hold_is_not_stored(tmp_path, templates):
    path, record = damaged(tmp_path, templates, "flac", total_samples=2**36 - 1)  # 18 days at 44.1 kHz
    assert record.duration_seconds is None and record.bitrate is None
    assert f"duration {(2**36 - 1) / 44100:g} s ignored (a {path.stat().st_size}-byte file cannot hold it)" \
        in record.warnings
    assert record.sample_rate == 44100


def test_a_duration_of_a_century_is_not_stored(tmp_path, templates):
    _, record = damaged(tmp_path, templates, "m4a-aac", mp4_duration=(1, 0xFFFFFFFF))
    assert record.duration_seconds is None
    assert f"duration {float(0xFFFFFFFF)} ignored (above {31 * 24 * 3600.0})" in record.warnings
    assert (record.codec, record.sample_rate, record.channels) == ("aac", 44100, 2)


@pytest.mark.parametrize("channels, sample_rate, warning", [
    (2, 24, "sample rate 24 ignored (below 1000)"),
    (300, 44100, "channel count 300 ignored (above 255)"),
    (2, 0xFFFFFFFF, "sample rate 4294967295 ignored (above 100000000)"),
])
def test_impossible_wav_header_values_are_not_stored(tmp_path, templates, channels, sample_rate, warning):
    _, record = damaged(tmp_path, templates, "wav", channels=channels, sample_rate=sample_rate)
    assert warning in record.warnings
    assert record.channels == (channels if channels <= 255 else None)
    assert record.sample_rate == (sample_rate if 1000 <= sample_rate <= 100_000_000 else None)


@pytest.mark.parametrize("format_name", [name for name in ALL_FORMATS if not FORMATS[name].synthetic])
def test_real_stream_values_are_kept_without_warnings(tmp_path, templates, format_name):
    template = templates.get(format_name, 0.3)
    path = tmp_path / f"track{template.format.extension}"
    path.write_bytes(template.data)
    record = read_track(path)
    assert record.warnings == []
    assert record.sample_rate == template.format.sample_rate and record.channels == template.format.channels
    assert record.duration_seconds == pytest.approx(template.duration, abs=0.1) and record.bitrate > 0
