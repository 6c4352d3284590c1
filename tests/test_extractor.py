"""read_track against the generator's answer key, plus the failure and cleaning rules, one case at a time."""
from __future__ import annotations

import builtins
import os
from pathlib import Path

import mutagen
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.asf import ASF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, RVA2, TIT2, TXXX
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4

from tests.audio_factory import ALL_FORMATS, NOT_AN_IMAGE, TemplateCache, make_cover_art, make_library
from worker_app.metadata import cleaning, reader
from worker_app.metadata.covers import find_folder_cover, read_folder_cover
from worker_app.metadata.reader import read_stream_info, read_track
from worker_app.metadata.record import TrackRecord, UnreadableFileError

STREAM_FIELDS = ("format", "codec", "sample_rate", "channels", "bits_per_sample")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("extractor") / "music", 60, seed=11, formats=ALL_FORMATS)


@pytest.fixture(scope="module")
def templates():
    return TemplateCache()


def copy_template(templates, format_name: str, destination: Path) -> Path:
    destination.write_bytes(templates.get(format_name, 0.3).data)
    return destination


# ---------------------------------------------------------------- the answer key


def test_every_file_reads_exactly_as_generated(library):
    mismatches = {}
    for expected in library.tracks:
        problems = expected.mismatches(read_track(expected.path))
        if problems:
            mismatches[f"{expected.format_name}/{expected.tag_style} {expected.path}"] = problems
    assert mismatches == {}


def test_records_survive_the_queue_as_json(library):
    for expected in library.tracks[:15]:
        record = read_track(expected.path)
        assert TrackRecord.from_message(record.to_message()) == record


def test_stat_result_from_the_scanner_is_used(library):
    expected = library.tracks[0]
    stat_result = os.stat(expected.path)
    assert read_track(expected.path, stat_result).mtime == stat_result.st_mtime


def test_stream_info_matches_the_full_read(library):
    for expected in library.tracks:
        info = read_stream_info(expected.path)
        assert {name: info[name] for name in STREAM_FIELDS} == {name: getattr(expected, name) for name in STREAM_FIELDS}
        assert abs(info["duration_seconds"] - expected.duration_seconds) < 0.1


@pytest.mark.parametrize("kind, reason_start", [
    ("zero-byte", "zero-byte file"),
    ("random-bytes", "not an audio file mutagen can read"),
    ("truncated", "truncated"),
])
def test_corrupt_files_are_refused_with_a_reason(library, kind, reason_start):
    paths = [path for path in library.corrupt if library.corrupt_kinds[os.fsdecode(path)] == kind]
    assert paths
    for path in paths:
        with pytest.raises(UnreadableFileError) as caught:
            read_track(path)
        assert caught.value.reason.startswith(reason_start), caught.value.reason
        with pytest.raises(UnreadableFileError):
            read_stream_info(path)


def test_truncated_files_name_their_format(library):
    reasons = set()
    for path in library.corrupt:
        if library.corrupt_kinds[os.fsdecode(path)] == "truncated":
            with pytest.raises(UnreadableFileError) as caught:
                read_track(path)
            reasons.add(caught.value.reason.split(":")[0])
    assert reasons == {"truncated FLAC", "truncated or corrupt MP4/M4A"}


def test_folder_covers_are_found_and_read(library):
    assert library.folder_covers
    for directory, cover_path in library.folder_covers.items():
        name = find_folder_cover(os.listdir(directory))
        assert os.path.join(directory, name) == os.fspath(cover_path)  # the image the generator meant
        cover = read_folder_cover(os.path.join(directory, name))
        assert cover.source == "folder"
        assert cover.width and cover.height and cover.mime in ("image/jpeg", "image/png")
        tracks_here = [t for t in library.tracks if os.path.dirname(t.path) == directory]
        assert all(track.folder_cover_sha256 == cover.sha256 for track in tracks_here)


# ---------------------------------------------------------------- failures


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableFileError, match="vanished"):
        read_track(tmp_path / "gone.mp3")


def test_directory(tmp_path):
    (tmp_path / "album.flac").mkdir()
    with pytest.raises(UnreadableFileError, match="not a regular file"):
        read_track(tmp_path / "album.flac")


def test_permission_denied(tmp_path, templates, monkeypatch):
    path = copy_template(templates, "flac", tmp_path / "locked.flac")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # root ignores chmod, so refuse the way the kernel would
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(UnreadableFileError, match="^permission denied$"):
        read_track(path)


def test_text_file_with_an_unknown_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not music")
    with pytest.raises(UnreadableFileError, match="^not an audio file mutagen can read$"):
        read_track(path)


def test_wrong_extension_is_sniffed_with_a_warning(tmp_path, templates):
    path = copy_template(templates, "flac", tmp_path / "actually flac.mp3")
    record = read_track(path)
    assert (record.format, record.codec) == ("flac", "flac")
    assert record.warnings == ["extension .mp3 but the content is FLAC"]


def test_no_extension_is_sniffed_silently(tmp_path, templates):
    record = read_track(copy_template(templates, "opus", tmp_path / "track"))
    assert (record.format, record.codec, record.sample_rate, record.warnings) == ("opus", "opus", 48000, [])


def test_an_unexpected_error_becomes_unreadable(tmp_path, templates, monkeypatch):
    path = copy_template(templates, "ogg", tmp_path / "a.ogg")
    monkeypatch.setattr(reader, "read_vorbis_comments", lambda *args: 1 / 0)
    with pytest.raises(UnreadableFileError, match="unexpected ZeroDivisionError"):
        read_track(path)


def test_celery_soft_time_limit_is_not_swallowed(tmp_path, templates, monkeypatch):
    from billiard.exceptions import SoftTimeLimitExceeded

    path = copy_template(templates, "ogg", tmp_path / "a.ogg")

    def out_of_time(*args):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(reader, "read_vorbis_comments", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        read_track(path)


# ---------------------------------------------------------------- cleaning


def flac_with(templates, tmp_path, **comments) -> Path:
    path = copy_template(templates, "flac", tmp_path / "tagged.flac")
    audio = FLAC(path)
    audio.add_tags()
    for key, value in comments.items():
        audio.tags[key] = value
    audio.save()
    return path


def test_nul_and_whitespace_are_cleaned_with_warnings(tmp_path, templates):
    record = read_track(flac_with(templates, tmp_path, TITLE="Hello\x00World", ALBUM="  Spaced  ",
                                  GENRE=["Rock", "  "]))
    assert (record.title, record.album, record.genres) == ("HelloWorld", "Spaced", ["Rock"])
    assert sorted(record.warnings) == ["NUL removed from title", "whitespace stripped from album"]


def test_invalid_utf8_is_replaced_with_a_warning(tmp_path, templates):
    path = flac_with(templates, tmp_path, TITLE="XXXX")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"TITLE=XXXX", b"TITLE=A\xff\xfeB"))
    record = read_track(path)
    assert record.title == "A\ufffd\ufffdB"
    assert record.warnings == ["invalid UTF-8 replaced in title"]


def test_lone_surrogates_are_replaced():
    warnings = []
    assert cleaning.clean_text("caf\udce9", "album", warnings) == "caf\ufffd"
    assert warnings == ["invalid UTF-8 replaced in album"]


def test_one_storable_guard_for_the_extractor_and_the_batch_stage():
    from worker_app.pipeline import batch

    assert batch.storable is cleaning.storable
    warnings = []
    record = {"title": "caf\udce9\x00", "tags": {"k\x00": ["ok", "bad\ud800"]}}
    assert cleaning.storable(record, warnings, "record") == {"title": "caf\ufffd", "tags": {"k": ["ok", "bad\ufffd"]}}
    assert warnings == ["record.title: NUL removed or invalid characters replaced",
                        "record.tags: NUL removed or invalid characters replaced",
                        "record.tags.k: NUL removed or invalid characters replaced"]
    assert cleaning.storable("fine") == "fine"


# Any text, lone surrogates, NUL and characters beyond the BMP included, nested as records are.
_CHARACTERS = st.sampled_from(["a", "\u00e9", "\x00", "\ud800", "\udce9", "\U0001f600", "\\", "u"]) | st.characters(
    exclude_categories=())
_TEXT = st.lists(_CHARACTERS, max_size=8).map("".join)  # st.text leaves surrogates out
_VALUES = st.recursive(
    _TEXT | st.integers() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400)
@given(_VALUES)
def test_the_json_scan_never_misses_a_value_storable_would_change(value):
    """The batch stage skips ``storable``'s walk through a unit's records when the scan of their JSON says that
    nothing needs it: a miss would send a NUL or a lone surrogate to PostgreSQL."""
    import json

    from worker_app.db import json_text

    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json_text.dumps(value)):
        staged = json.loads(text)  # what the batch stage cleans (an escaped surrogate pair is one character then)
        if cleaning.storable(staged) != staged:
            assert cleaning.json_may_hold_unstorable(text)
    # Most units: accents, CJK, an emoji (an escaped surrogate pair): nothing to clean.
    assert not cleaning.json_may_hold_unstorable(json.dumps({"title": "Café 東京 \U0001f3a4", "n": 1}))
    # An escaped backslash before text that reads like a high surrogate: the lone low one after it still counts.
    assert cleaning.json_may_hold_unstorable(json.dumps("\\ud800\udc00"))


def test_numbers_are_parsed_and_absurd_ones_dropped(tmp_path, templates):
    record = read_track(flac_with(templates, tmp_path, TRACKNUMBER="0", TRACKTOTAL="12", DISCNUMBER="2 of 3",
                                  DATE="3001-01-01", REPLAYGAIN_TRACK_GAIN="-6,50 dB",
                                  REPLAYGAIN_TRACK_PEAK="loud", COMPILATION="maybe"))
    assert (record.track_number, record.track_total) == (None, 12)
    assert (record.disc_number, record.disc_total) == (2, 3)
    assert (record.date, record.year) == ("3001-01-01", None)
    assert record.replaygain_track_gain == -6.5
    assert record.replaygain_track_peak is None and record.tags["replaygain_track_peak"] == ["loud"]
    assert record.is_compilation is False and record.tags["compilation"] == ["maybe"]
    assert sorted(record.warnings) == sorted([
        "tracknumber 0 ignored", "year 3001 ignored (outside 1000..2100)",
        "replaygain_track_peak 'loud' is not a number, kept in tags",
        "compilation 'maybe' is not a yes/no value, kept in tags",
    ])


def test_vinyl_side_track_number_stays_in_tags(tmp_path, templates):
    record = read_track(flac_with(templates, tmp_path, TRACKNUMBER="A1"))
    assert record.track_number is None and record.tags == {"tracknumber": ["A1"]}


def test_extra_values_of_a_single_valued_field_stay_in_tags(tmp_path, templates):
    record = read_track(flac_with(templates, tmp_path, TITLE=["One", "Two"]))
    assert record.title == "One" and record.tags == {"title": ["Two"]}
    assert record.warnings == ["title has 2 values, the first is used"]


@pytest.mark.parametrize("text, expected", [
    ("3/12", (3, 12, True)), ("03", (3, None, True)), ("3 of 12", (3, 12, True)), ("3/", (3, None, True)),
    ("0/12", (None, 12, True)), ("99999", (None, None, True)), ("A1", (None, None, False)),
])
def test_parse_position(text, expected):
    assert cleaning.parse_position(text, "tracknumber", []) == expected


def test_negative_duration_is_dropped():
    warnings = []
    assert cleaning.positive_number(-1.0, "duration", warnings) is None
    assert warnings == ["negative duration ignored"]


# ---------------------------------------------------------------- covers


def test_front_cover_beats_the_first_picture(tmp_path, templates):
    import random

    path = copy_template(templates, "flac", tmp_path / "covers.flac")
    back, front = make_cover_art(random.Random(1), 40, 30, "image/png"), make_cover_art(random.Random(2), 64, 64)
    audio = FLAC(path)
    for cover, picture_type in ((back, 4), (front, 3)):
        picture = Picture()
        picture.type, picture.mime, picture.data = picture_type, cover.mime, cover.data
        audio.add_picture(picture)
    audio.save()
    cover = read_track(path).cover
    assert (cover.sha256, cover.width, cover.height, cover.mime, cover.source) == (
        front.sha256, 64, 64, "image/jpeg", "embedded")


def test_a_picture_that_is_not_an_image_is_kept_without_size(tmp_path, templates):
    path = copy_template(templates, "flac", tmp_path / "junk.flac")
    audio = FLAC(path)
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", NOT_AN_IMAGE.data
    audio.add_picture(picture)
    audio.save()
    record = read_track(path)
    assert (record.cover.width, record.cover.height, record.cover.mime) == (None, None, "image/jpeg")
    assert record.warnings == ["embedded cover is not a readable image"]


def test_a_picture_measured_before_is_described_as_the_first_time(monkeypatch):
    """Pillow measures each picture once per process (an album's tracks carry the same one): the next tracks get
    the same size and type, their own source and MIME fallback, and the same warning for bytes that are no image."""
    import random

    from worker_app.metadata import covers

    measured = []
    real_measure = covers._measure
    monkeypatch.setattr(covers, "_measure", lambda data: measured.append(data) or real_measure(data))
    monkeypatch.setattr(covers, "_MEASURED", {})
    art = make_cover_art(random.Random(3), 48, 32, "image/png")
    for source in ("embedded", "folder", "embedded"):
        warnings: list[str] = []
        cover = covers.cover_from_bytes(art.data, "image/jpeg", source, warnings)
        assert (cover.sha256, cover.width, cover.height, cover.mime, cover.source, warnings) == (
            art.sha256, 48, 32, "image/png", source, [])
    for declared, source in (("image/gif", "embedded"), (None, "folder")):
        warnings = []
        junk = covers.cover_from_bytes(NOT_AN_IMAGE.data, declared, source, warnings)
        assert (junk.width, junk.height, junk.mime) == (None, None, declared or "application/octet-stream")
        assert warnings == [f"{source} cover is not a readable image"]
    assert measured == [art.data, NOT_AN_IMAGE.data]


@pytest.mark.parametrize("names, chosen", [
    (["01 Song.mp3", "Cover.JPG", "back.jpg"], "Cover.JPG"),
    (["front.png", "folder.jpg"], "folder.jpg"),
    (["folder.gif", "folder.webp", "folder.jpeg"], "folder.jpeg"),
    (["cover.bmp", "scan.jpg", "cover"], None),
    (["cover.jpg", "COVER.jpg"], "COVER.jpg"),  # same rank: the name decides, whatever the listing order
])
def test_find_folder_cover(names, chosen):
    assert find_folder_cover(names) == chosen
    assert find_folder_cover(list(reversed(names))) == chosen


def test_folder_cover_that_is_not_an_image(tmp_path):
    (tmp_path / "cover.jpg").write_bytes(b"<html>404</html>")
    cover = read_folder_cover(tmp_path / "cover.jpg")
    assert (cover.width, cover.height, cover.mime, cover.source) == (None, None, "image/jpeg", "folder")
    with pytest.raises(UnreadableFileError, match="vanished"):
        read_folder_cover(tmp_path / "folder.jpg")


# ---------------------------------------------------------------- format specifics the generator does not write


def test_mp3_with_only_apev2_and_id3v1_merges_them(tmp_path, templates):
    path = copy_template(templates, "mp3", tmp_path / "old.mp3")
    ape = APEv2()
    ape["Title"], ape["Artist"] = "APE title", ["A", "B"]
    ape.save(path)
    audio = MP3(path)
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=["ID3v1 title"]))
    audio.tags.add(mutagen.id3.TCON(encoding=3, text=["Jazz"]))
    audio.save(v1=2)  # ID3v1 goes last, after the APE tag, as foobar2000 leaves it
    mutagen.id3.delete(path, delete_v1=False, delete_v2=True)
    record = read_track(path)
    assert (record.title, record.artists, record.genres) == ("APE title", ["A", "B"], ["Jazz"])


def test_id3_rva2_is_a_replaygain_fallback(tmp_path, templates):
    path = copy_template(templates, "wav", tmp_path / "rva2.wav")
    audio = mutagen.File(path)
    audio.add_tags()
    audio.tags.add(RVA2(desc="track", channel=1, gain=-4.25, peak=0.5))
    audio.tags.add(RVA2(desc="album", channel=1, gain=-3.0, peak=0.75))
    audio.tags.add(TXXX(encoding=3, desc="REPLAYGAIN_ALBUM_GAIN", text=["-2.00 dB"]))
    audio.save()
    record = read_track(path)
    assert (record.replaygain_track_gain, record.replaygain_track_peak) == (-4.25, 0.5)
    assert (record.replaygain_album_gain, record.replaygain_album_peak) == (-2.0, 0.75)


def test_id3v23_picard_style_slash_joined_ids_are_split(tmp_path, templates):
    path = copy_template(templates, "mp3", tmp_path / "v23.mp3")
    tags = ID3()
    tags.add(TXXX(encoding=1, desc="MusicBrainz Artist Id", text=["id-one/id-two"]))
    tags.add(TXXX(encoding=1, desc="Album Artist", text=["From TXXX"]))
    tags.save(path, v2_version=3)
    record = read_track(path)
    assert record.mb_artist_ids == ["id-one", "id-two"]
    assert record.album_artists == ["From TXXX"]


def test_mp4_flags_and_numbers_become_text(tmp_path, templates):
    path = copy_template(templates, "m4a-aac", tmp_path / "itunes.m4a")
    audio = MP4(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags["pgap"] = True
    audio.tags["tmpo"] = [120]
    audio.tags["cpil"] = False
    audio.save()
    record = read_track(path)
    assert record.is_compilation is False
    assert record.tags == {"gapless": ["1"], "bpm": ["120"]}


def test_asf_zero_based_track_and_picture(tmp_path, templates):
    import random

    from tests.audio_factory import _asf_picture

    path = copy_template(templates, "wma", tmp_path / "old.wma")
    cover = make_cover_art(random.Random(5), 32, 32)
    audio = ASF(path)
    audio["WM/Track"] = [mutagen.asf.ASFDWordAttribute(4)]
    audio["WM/Picture"] = [_asf_picture(cover, 3)]
    audio["WM/Publisher"] = ["Label"]
    audio.save()
    record = read_track(path)
    assert record.track_number == 5
    assert record.cover.sha256 == cover.sha256 and record.cover.width == 32
    assert record.tags == {"label": ["Label"]}


def test_stream_info_of_a_file_without_tags_is_cheap_and_right(tmp_path, templates):
    for format_name in ("mp3", "flac"):
        path = copy_template(templates, format_name, tmp_path / f"bare.{format_name}")
        info = read_stream_info(path)
        record = read_track(path)
        assert info == {"format": record.format, **{name: getattr(record, name) for name in (
            "codec", "duration_seconds", "bitrate", "sample_rate", "channels", "bits_per_sample")}}


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text())
def test_clean_text_always_gives_text_postgresql_accepts(value):
    warnings = []
    cleaned = cleaning.clean_text(value, "title", warnings)
    if cleaned is not None:
        cleaned.encode("utf-8")  # no lone surrogates
        assert "\x00" not in cleaned and cleaned == cleaned.strip() and cleaned
    assert (cleaned == value) or warnings or cleaned is None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text())
def test_number_parsers_never_raise(text):
    number, total, _ = cleaning.parse_position(text, "tracknumber", [])
    assert number is None or 1 <= number <= cleaning.MAX_POSITION
    assert total is None or 1 <= total <= cleaning.MAX_POSITION
    cleaning.parse_decibels(text, "replaygain_track_gain", [])
    cleaning.parse_flag(text, "compilation", [])


@pytest.mark.parametrize("format_name", ["mp3", "flac", "m4a-aac", "ogg", "wma", "wavpack"])
def test_damaged_tags_never_raise_anything_else(library, tmp_path, format_name):
    """Bytes flipped in the first few KB (where the tags are): read_track returns a record or refuses the file."""
    source = next(t for t in library.tracks if t.format_name == format_name and t.tagged)
    original = Path(source.path).read_bytes()

    @settings(max_examples=15, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(st.integers(0, min(len(original), 4096) - 1), st.integers(0, 255)), min_size=1,
                    max_size=8))
    def damaged_copy_is_handled(flips):
        damaged = bytearray(original)
        for position, value in flips:
            damaged[position] = value
        path = tmp_path / f"damaged{Path(source.path).suffix}"
        path.write_bytes(bytes(damaged))
        try:
            read_track(path)
        except UnreadableFileError as error:
            assert error.reason

    damaged_copy_is_handled()
