"""read_track against hostile files, built from the factory's real templates and tagged with mutagen (or at byte
level where mutagen refuses to write what real files contain).

The rule under test: one bad file must never crash a worker nor escape as an unexpected exception. A file is
catalogued where it can be, with ``warnings`` saying what was cleaned or ignored, or refused with
UnreadableFileError and a clear reason; strings in the record never hold NUL or lone surrogates (PostgreSQL text
rejects both); pictures above ``max_cover_bytes`` never reach the record, nor memory; one file's reading is
bounded in time.
"""
from __future__ import annotations

import base64
import json
import os
import random
import signal
import struct
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import mutagen
import pytest
from mutagen.apev2 import BINARY, EXTERNAL, APEv2, APEValue
from mutagen.asf import ASF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    PCNT,
    POPM,
    TALB,
    TBPM,
    TDRC,
    TIPL,
    TIT2,
    TKEY,
    TMCL,
    TMOO,
    TPE1,
    TPOS,
    TRCK,
    TSRC,
    TXXX,
    UFID,
    USER,
    USLT,
    WXXX,
)
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

from tests.audio_factory import (
    ALL_FORMATS,
    FORMATS,
    NOT_AN_IMAGE,
    RARE_FORMATS,
    TemplateCache,
    _asf_picture,
    make_cover_art,
    syncsafe,
)
from worker_app.metadata import reader
from worker_app.metadata.cleaning import MAX_FIELD_BYTES, MAX_TAG_VALUE_BYTES
from worker_app.metadata.reader import read_stream_info, read_track
from worker_app.metadata.record import TrackRecord, UnreadableFileError
from worker_app.metadata.timelimit import FileTimeLimit, FileTimeLimitExceeded

MiB = 1024 * 1024
ID3_FORMATS = [name for name in ALL_FORMATS if FORMATS[name].tag_styles[0].startswith("id3")]
VORBIS_FORMATS = [name for name in ALL_FORMATS if FORMATS[name].tag_styles[0] == "vorbis"]
APE_FORMATS = [name for name in ALL_FORMATS if FORMATS[name].tag_styles[0] == "apev2"]
MP4_FORMATS = [name for name in ALL_FORMATS if FORMATS[name].tag_styles[0] == "mp4"]
ASF_FORMATS = [name for name in ALL_FORMATS if FORMATS[name].tag_styles[0] == "asf"]
ONE_PER_STYLE = ["mp3", "wav", "flac", "ogg", "opus", "m4a-aac", "wma", "wavpack"]


@pytest.fixture(scope="module")
def templates():
    return TemplateCache()


def fresh(templates, format_name: str, directory: Path, stem: str = "track") -> Path:
    path = directory / f"{stem}{FORMATS[format_name].extension}"
    path.write_bytes(templates.get(format_name, 0.3).data)
    return path


def style(format_name: str) -> str:
    first = FORMATS[format_name].tag_styles[0]
    return "id3" if first.startswith("id3") else first


# Picard key -> the format's own key, for the tags these tests write.
_VORBIS = {"title": "TITLE", "artist": "ARTIST", "album": "ALBUM", "tracknumber": "TRACKNUMBER",
           "discnumber": "DISCNUMBER", "date": "DATE", "comment": "COMMENT", "label": "LABEL"}
_APE = {"title": "Title", "artist": "Artist", "album": "Album", "tracknumber": "Track", "discnumber": "Disc",
        "date": "Year", "comment": "Comment", "label": "Label"}
_ASF = {"title": "Title", "artist": "Author", "album": "WM/AlbumTitle", "tracknumber": "WM/TrackNumber",
        "discnumber": "WM/PartOfSet", "date": "WM/Year", "comment": "Description", "label": "WM/Publisher"}
_MP4 = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "date": "\xa9day", "comment": "\xa9cmt"}
_ID3 = {"title": TIT2, "artist": TPE1, "album": TALB, "tracknumber": TRCK, "discnumber": TPOS, "date": TDRC}


def write_tags(path: Path, format_name: str, values: dict[str, str | list[str]]) -> None:
    """Tag ``path`` with Picard-named ``values`` in the format's own way; unknown keys become custom tags."""
    values = {key: [value] if isinstance(value, str) else value for key, value in values.items()}
    kind = style(format_name)
    if kind == "id3":
        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        for key, texts in values.items():
            if key in _ID3:
                audio.tags.add(_ID3[key](encoding=3, text=texts))
            elif key == "comment":
                audio.tags.add(COMM(encoding=3, lang="eng", desc="", text=texts))
            else:
                audio.tags.add(TXXX(encoding=3, desc=key.upper(), text=texts))
        audio.save()
    elif kind == "vorbis":
        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        for key, texts in values.items():
            audio.tags[_VORBIS.get(key, key.upper())] = texts
        audio.save()
    elif kind == "apev2":
        try:
            tags = APEv2(path)
        except mutagen.apev2.APENoHeaderError:
            tags = APEv2()
        for key, texts in values.items():
            tags[_APE.get(key, key.upper())] = texts
        tags.save(path)
    elif kind == "asf":
        audio = ASF(path)
        for key, texts in values.items():
            audio[_ASF.get(key, key.upper())] = texts
        audio.save()
    elif kind == "mp4":
        audio = MP4(path)
        if audio.tags is None:
            audio.add_tags()
        for key, texts in values.items():
            if key in _MP4:
                audio.tags[_MP4[key]] = texts
            else:
                audio.tags[f"----:com.apple.iTunes:{key.upper()}"] = [MP4FreeForm(text.encode()) for text in texts]
        audio.save()
    else:
        raise ValueError(kind)


def all_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from all_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from all_strings(item)


def assert_storable(record: TrackRecord) -> None:
    """What PostgreSQL and the JSON queue accept: no NUL, no lone surrogate, no NaN. (The path is the file's name,
    surrogate-escaped where not UTF-8, which the pipeline stores as bytes: not checked here.)"""
    message = record.to_message()
    json.dumps({**message, "path": None}, allow_nan=False)
    for text in all_strings({key: value for key, value in message.items() if key != "path"}):
        assert "\x00" not in text, text
        text.encode("utf-8")  # raises on a lone surrogate


def read(path, **kwargs) -> TrackRecord:
    record = read_track(path, **kwargs)
    assert_storable(record)
    return record


def refused(path, **kwargs) -> str:
    with pytest.raises(UnreadableFileError) as caught:
        read_track(path, **kwargs)
    assert caught.value.reason and not caught.value.reason.startswith("unexpected"), caught.value.reason
    return caught.value.reason


def traced_peak(function):
    """(result, peak bytes Python allocated while running function)."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- raw ID3v2, for what mutagen will not write


def raw_id3(frames: list[tuple[str, bytes]], version: int = 4, frame_flags: int = 0) -> bytes:
    body = b"".join(
        name.encode("ascii") + (syncsafe(len(data)) if version == 4 else struct.pack(">I", len(data)))
        + struct.pack(">H", frame_flags) + data
        for name, data in frames
    )
    return b"ID3" + bytes((version, 0, 0)) + syncsafe(len(body)) + body


def mp3_with_raw_id3(templates, directory: Path, frames, version: int = 4, stem: str = "raw") -> Path:
    path = directory / f"{stem}.mp3"
    path.write_bytes(raw_id3(frames, version) + templates.get("mp3", 0.3).data)
    return path


# ---------------------------------------------------------------- NUL bytes


@pytest.mark.parametrize("format_name", ONE_PER_STYLE)
def test_nul_bytes_never_reach_the_record(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "Hello\x00World", "album": "\x00Album\x00", "mood": "Calm\x00Sea"})
    record = read(path)
    if style(format_name) in ("id3", "apev2"):  # NUL separates values in ID3v2.4 and APEv2: two titles
        assert (record.title, record.tags["title"]) == ("Hello", ["World"])
        assert "title has 2 values, the first is used" in record.warnings
    else:
        assert record.title == "HelloWorld"
        assert "NUL removed from title" in record.warnings
    assert record.album == "Album"
    assert record.tags["mood"] in (["CalmSea"], ["Calm", "Sea"])


# ---------------------------------------------------------------- invalid UTF-8, UTF-16 with and without BOM


@pytest.mark.parametrize("version", [3, 4])
def test_id3_text_in_another_encoding_than_declared_is_repaired(templates, tmp_path, version):
    path = mp3_with_raw_id3(templates, tmp_path, [
        ("TIT2", b"\x03Caf\xe9 Noir"),  # says UTF-8, is Latin-1
        ("TPE1", b"\x00Bj\xc3\xb6rk"),  # says Latin-1, is UTF-8
        ("TALB", b"\x03Stra\xc3\x9fe"),  # really UTF-8: untouched
        ("TXXX", b"\x03MOOD\x00Ruhe \x96 Stille"),  # Windows-1252 dash in a UTF-8 frame
        ("TCOM", b"\x07Composer"),  # encoding byte 7 does not exist
    ], version)
    record = read(path)
    assert (record.title, record.artists, record.album) == ("Café Noir", ["Björk"], "Straße")
    assert record.tags["mood"] == ["Ruhe – Stille"] and record.composers == ["Composer"]
    assert sorted(record.warnings) == sorted([
        "invalid UTF-8 in ID3 frame TIT2, read as Windows-1252",
        "UTF-8 text in Latin-1 ID3 frame TPE1, read as UTF-8",
        "invalid UTF-8 in ID3 frame TXXX, read as Windows-1252",
        "invalid text encoding 7 in ID3 frame TCOM, read as UTF-8",
    ])


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("label, data, title, warnings", [
    ("UTF-16 LE with BOM", b"\x01" + "Ça va".encode("utf-16"), "Ça va", []),
    ("UTF-16 BE with BOM", b"\x01\xfe\xff" + "Ça va".encode("utf-16-be"), "Ça va", []),
    ("UTF-16 LE, no BOM", b"\x01" + "Ça va".encode("utf-16-le"), "Ça va", []),
    ("UTF-16 BE, no BOM", b"\x01" + "Ça va".encode("utf-16-be"), "Ça va",
     ["UTF-16 without byte order mark in ID3 frame TIT2, read as big-endian"]),
    ("UTF-16 BE, no BOM, Cyrillic", b"\x01" + "Ночь".encode("utf-16-be"), "Ночь",
     ["UTF-16 without byte order mark in ID3 frame TIT2, read as big-endian"]),
    ("UTF-16 LE, no BOM, Japanese", b"\x01" + "夜に駆ける".encode("utf-16-le"), "夜に駆ける", []),
    ("encoding 2 (UTF-16BE)", b"\x02" + "Ça va".encode("utf-16-be"), "Ça va", []),
    ("lone surrogate", b"\x01\xff\xfe" + "A".encode("utf-16-le") + b"\x00\xd8" + "B".encode("utf-16-le"), "A\ufffdB",
     ["invalid UTF-16 in ID3 frame TIT2, replaced", "invalid UTF-8 replaced in title"]),
    ("odd number of bytes", b"\x01\xff\xfe" + "Ça va".encode("utf-16-le") + b"!", "Ça va!", None),
])
def test_id3_utf16_with_and_without_byte_order_mark(templates, tmp_path, version, label, data, title, warnings):
    record = read(mp3_with_raw_id3(templates, tmp_path, [("TIT2", data), ("TPE1", b"\x03After")], version))
    assert record.title == title, label
    assert record.artists == ["After"]  # the frame after a broken one is still read
    if warnings is not None:
        assert sorted(record.warnings) == sorted(warnings)


@pytest.mark.parametrize("format_name", VORBIS_FORMATS)
def test_vorbis_comments_with_invalid_utf8_bytes(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "XXXXXXXX", "artist": "Fine", "ZKEYZ": "value"})
    data = path.read_bytes()  # Ogg page CRCs go stale: mutagen (like most players) does not check them
    data = data.replace(b"XXXXXXXX", b"Caf\xe9\xff\xfe!!").replace(b"ZKEYZ=", b"Z\xe9EYZ=")
    path.write_bytes(data)
    record = read(path)
    assert record.title == "Caf\ufffd\ufffd\ufffd!!" and record.artists == ["Fine"]
    assert "invalid UTF-8 replaced in title" in record.warnings
    assert record.tags == {"z?eyz": ["value"]}  # a key is ASCII: mutagen replaces what is not


@pytest.mark.parametrize("format_name", APE_FORMATS)
def test_apev2_item_with_invalid_utf8_costs_that_item_only(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "XXXXX", "artist": "Fine", "label": "Label"})
    path.write_bytes(path.read_bytes().replace(b"XXXXX", b"Caf\xe9!"))
    record = read(path)  # mutagen alone refuses the whole tag, and so the file
    assert (record.title, record.artists, record.tags) == ("Café!", ["Fine"], {"label": ["Label"]})
    assert record.warnings == ["invalid UTF-8 in APEv2 item Title, read as Windows-1252"]


@pytest.mark.parametrize("format_name", ASF_FORMATS)
def test_asf_strings_with_invalid_utf16_cost_those_strings_only(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "XXXX", "album": "YYYY", "artist": "Fine"})
    data = path.read_bytes()
    lone_high, lone_low = b"A\x00\x00\xd8B\x00", b"A\x00\x00\xdcB\x00"
    path.write_bytes(data.replace("XXXX".encode("utf-16-le"), lone_high + b"C\x00")
                     .replace("YYYY".encode("utf-16-le"), lone_low + b"C\x00"))
    record = read(path)  # mutagen alone refuses the file
    assert (record.title, record.album, record.artists) == ("A\ufffdBC", "A\ufffdBC", ["Fine"])
    assert "invalid UTF-16 in WMA Title, replaced" in record.warnings


@pytest.mark.parametrize("format_name", MP4_FORMATS)
def test_mp4_text_atoms_with_invalid_utf8_are_recovered(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "XXXX", "artist": "Fine", "mood": "ZZZZ"})
    path.write_bytes(path.read_bytes().replace(b"XXXX", b"Ca\xe9s").replace(b"ZZZZ", b"M\xf6\xf6d"))
    record = read(path)
    assert (record.title, record.artists, record.tags) == ("Caés", ["Fine"], {"mood": ["Mööd"]})
    assert sorted(record.warnings) == [
        "invalid UTF-8 in MP4 atom '----:com.apple.iTunes:MOOD', read as Windows-1252",
        "invalid UTF-8 in MP4 atom '©nam', read as Windows-1252",
    ]


# ---------------------------------------------------------------- size: long strings, many frames


@pytest.mark.parametrize("format_name", ["mp3", "flac", "opus", "m4a-aac", "wavpack"])
def test_one_megabyte_strings_are_cut(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    title, lyrics = "é" * (MiB // 2), ("la " * MiB)[:MiB]
    write_tags(path, format_name, {"title": title, "artist": "Fine", "lyrics": lyrics})
    record = read(path)
    assert record.title == "é" * (MAX_FIELD_BYTES // 2) and record.artists == ["Fine"]
    assert len(record.tags["lyrics"][0].encode()) <= MAX_TAG_VALUE_BYTES
    assert sorted(record.warnings) == ["lyrics cut to 64 KiB (was 1048576 bytes)",
                                      "title cut to 1 KiB (was 1048576 bytes)"]


def test_five_thousand_id3_frames(templates, tmp_path):
    frames = [("TXXX", b"\x03" + f"CUSTOM {index}".encode() + b"\x00" + f"value {index}".encode())
              for index in range(5000)] + [("TIT2", b"\x03Last frame")]
    path = mp3_with_raw_id3(templates, tmp_path, frames)
    started = time.perf_counter()
    record = read(path)
    assert time.perf_counter() - started < 10
    assert record.title == "Last frame" and len(record.tags) == 5000
    assert record.tags["custom 4999"] == ["value 4999"] and record.warnings == []


@pytest.mark.parametrize("format_name", ["flac", "ogg"])
def test_five_thousand_vorbis_comments(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.extend((f"CUSTOM{index}", f"value {index}") for index in range(5000))
    audio.tags.append(("TITLE", "Last comment"))
    audio.save()
    record = read(path)
    assert record.title == "Last comment" and len(record.tags) == 5000 and record.warnings == []


def test_a_file_made_of_tags_keeps_at_most_a_megabyte_of_them(templates, tmp_path):
    path = fresh(templates, "flac", tmp_path)
    audio = FLAC(path)
    audio.add_tags()
    audio.tags.extend((f"NOTE{index}", "x" * 1000) for index in range(3000))
    audio.save()
    record = read(path)
    kept = sum(len(key) + len(value) for key, values in record.tags.items() for value in values)
    assert 1000 * 1000 < kept <= MiB
    assert any(warning.endswith("tag values ignored: the tags kept are limited to 1 MiB") for warning in
               record.warnings)


# ---------------------------------------------------------------- several tag formats in one MP3


def test_id3v2_then_apev2_then_id3v1_on_one_mp3(templates, tmp_path):
    """Documented precedence: ID3v2 wins; APEv2 fills what ID3v2 lacks; ID3v1 fills what is still missing."""
    path = fresh(templates, "mp3", tmp_path)
    ape = APEv2()
    ape["Title"], ape["Album"], ape["Artist"] = "APE title", "APE album", "APE artist"
    ape["REPLAYGAIN_TRACK_GAIN"] = "-3.50 dB"
    ape.save(path)
    tags = ID3()
    tags.add(TIT2(encoding=3, text=["ID3v1 title"]))
    tags.add(TALB(encoding=3, text=["ID3v1 album"]))
    tags.add(TDRC(encoding=3, text=["1999"]))
    tags.add(mutagen.id3.TCON(encoding=3, text=["Jazz"]))
    tags.save(path, v1=2, v2_version=4)  # ID3v1 at the very end, after the APE tag, as foobar2000 leaves it
    mutagen.id3.delete(path, delete_v1=False, delete_v2=True)
    id3v2 = raw_id3([("TIT2", b"\x03ID3v2 title"), ("TPE1", b"\x03ID3v2 artist")])
    path.write_bytes(id3v2 + path.read_bytes())  # ID3v2 at the start (mutagen would rewrite ID3v1 from it)
    record = read(path)
    assert record.title == "ID3v2 title" and record.artists == ["ID3v2 artist"]  # ID3v2
    assert record.album == "APE album" and record.replaygain_track_gain == -3.5  # APEv2
    assert record.genres == ["Jazz"] and record.year == 1999  # ID3v1
    assert record.warnings == []


# ---------------------------------------------------------------- pictures: size limit, not an image


def _big_picture(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(size - 4)  # a JPEG start, then nothing worth compressing


def embed_picture(path: Path, format_name: str, data: bytes, picture_type: int = 3, mime: str = "image/jpeg"):
    """Add a picture the format's usual way (FLAC above 16 MiB: a block whose size field overflows, as the
    writers that do it leave it; mutagen reads those, as does libFLAC)."""
    kind = style(format_name)
    if kind == "id3":
        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        audio.tags.add(APIC(encoding=3, mime=mime, type=picture_type, desc=f"picture {picture_type}", data=data))
        audio.save()
    elif format_name.startswith("flac"):
        picture = Picture()
        picture.type, picture.mime, picture.data = picture_type, mime, data
        if len(data) < 16 * MiB:
            audio = FLAC(path)
            audio.add_picture(picture)
            audio.save()
        else:
            original = path.read_bytes()
            body = picture.write()
            after_streaminfo = 4 + 4 + 34  # STREAMINFO comes first and is not the last block here
            block = bytes([6]) + (len(body) & 0xFFFFFF).to_bytes(3, "big") + body
            path.write_bytes(original[:after_streaminfo] + block + original[after_streaminfo:])
    elif kind == "vorbis":
        audio = mutagen.File(path)
        picture = Picture()
        picture.type, picture.mime, picture.data = picture_type, mime, data
        pictures = audio.tags.get("METADATA_BLOCK_PICTURE", []) if audio.tags else []
        audio["METADATA_BLOCK_PICTURE"] = pictures + [base64.b64encode(picture.write()).decode("ascii")]
        audio.save()
    elif kind == "mp4":
        audio = MP4(path)
        if audio.tags is None:
            audio.add_tags()
        audio.tags["covr"] = list(audio.tags.get("covr", [])) + [MP4Cover(data, MP4Cover.FORMAT_JPEG)]
        audio.save()
    elif kind == "asf":
        audio = ASF(path)

        class Cover:
            pass

        cover = Cover()
        cover.data, cover.mime = data, mime
        audio["WM/Picture"] = list(audio.get("WM/Picture", [])) + [_asf_picture(cover, picture_type)]
        audio.save()
    elif kind == "apev2":
        try:
            tags = APEv2(path)
        except mutagen.apev2.APENoHeaderError:
            tags = APEv2()
        key = "Cover Art (Front)" if picture_type == 3 else "Cover Art (Back)"
        tags[key] = APEValue(b"cover.jpg\x00" + data, BINARY)
        tags.save(path)


@pytest.mark.parametrize("format_name", ["mp3", "flac"])
def test_a_50_mb_picture_is_skipped_unread(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "Before"})
    embed_picture(path, format_name, _big_picture(50 * MiB))
    write_tags(path, format_name, {"artist": "After"})
    try:
        record, peak = traced_peak(lambda: read(path))
    finally:
        path.unlink()
    assert (record.title, record.artists, record.cover) == ("Before", ["After"], None)
    assert record.warnings == ["embedded picture of 52428800 bytes skipped: above the 16 MiB limit"]
    assert peak < 2 * MiB  # the picture was never read (mutagen alone: 100-150 MB)


@pytest.mark.parametrize("format_name", ALL_FORMATS + tuple(name for name in RARE_FORMATS if name in ("speex", "dff")))
def test_pictures_above_the_limit_are_skipped_in_every_format(templates, tmp_path, format_name):
    """``max_cover_bytes`` as a parameter: 1 MiB here, so a 2 MiB picture is enough (and quick) to cross it."""
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "Tagged"})
    embed_picture(path, format_name, _big_picture(2 * MiB))
    write_tags(path, format_name, {"album": "Still read"})
    record, peak = traced_peak(lambda: read(path, max_cover_bytes=MiB))
    assert (record.title, record.album, record.cover) == ("Tagged", "Still read", None)
    assert record.warnings == ["embedded picture of 2097152 bytes skipped: above the 1 MiB limit"]
    assert peak < MiB // 2


@pytest.mark.parametrize("format_name", ONE_PER_STYLE)
def test_a_front_cover_above_the_limit_means_no_cover_not_the_back_one(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "Covers"})
    small = make_cover_art(random.Random(3), 40, 40).data
    embed_picture(path, format_name, small, picture_type=4)
    embed_picture(path, format_name, _big_picture(300_000), picture_type=3)
    record = read(path, max_cover_bytes=200_000)
    assert "embedded picture of 300000 bytes skipped: above the 195 KiB limit" not in record.warnings
    assert "embedded picture of 300000 bytes skipped: above the 200000 bytes limit" in record.warnings
    if style(format_name) == "mp4":  # no picture types in MP4: the first picture (that can be kept)
        assert record.cover is not None and record.cover.width == 40
    else:
        assert record.cover is None
    record = read(path)  # under the default limit both are kept: the front one wins (MP4: the first one)
    assert record.cover is not None
    assert record.cover.size_bytes == (len(small) if style(format_name) == "mp4" else 300_000)


def test_a_compressed_id3_picture_inflating_above_the_limit_is_skipped(templates, tmp_path):
    inflated = b"\x03image/jpeg\x00\x03front\x00" + _big_picture(20 * MiB)
    compressed = zlib.compress(inflated, 9)
    frame = struct.pack(">I", len(inflated)) + compressed  # ID3v2.3: decompressed size, then zlib data
    path = tmp_path / "compressed.mp3"
    body = b"APIC" + struct.pack(">IH", len(frame), 0x0080) + frame + b"TIT2" + struct.pack(">IH", 6, 0) + b"\x03Title"
    path.write_bytes(b"ID3\x03\x00\x00" + syncsafe(len(body)) + body + templates.get("mp3", 0.3).data)
    record, peak = traced_peak(lambda: read(path, max_cover_bytes=MiB))
    assert record.title == "Title" and record.cover is None
    assert "compressed ID3 frame inflating to more than 1 MiB skipped" in record.warnings
    assert peak < 3 * MiB  # about the limit, not the 20 MiB the frame inflates to
    assert read(path, max_cover_bytes=32 * MiB).cover.size_bytes == 20 * MiB  # under the limit: a cover


def test_an_id3_zip_bomb_costs_at_most_the_limit(templates, tmp_path):
    inflated_size = 200 * MiB
    compressor = zlib.compressobj(9)
    chunk = bytes(MiB)
    compressed = b"".join(compressor.compress(chunk) for _ in range(inflated_size // MiB)) + compressor.flush()
    frame = syncsafe(inflated_size) + compressed  # ID3v2.4: data length indicator, then zlib data
    data = b"TXXX" + syncsafe(len(frame)) + struct.pack(">H", 0x0009) + frame
    data += b"TIT2" + syncsafe(6) + b"\x00\x00\x03Title"
    path = tmp_path / "bomb.mp3"
    path.write_bytes(b"ID3\x04\x00\x00" + syncsafe(len(data)) + data + templates.get("mp3", 0.3).data)
    assert len(compressed) < MiB // 2
    record, peak = traced_peak(lambda: read(path, max_cover_bytes=4 * MiB))
    assert record.title == "Title"
    assert "compressed ID3 frame inflating to more than 4 MiB skipped" in record.warnings
    assert peak < 12 * MiB


@pytest.mark.parametrize("format_name", ONE_PER_STYLE)
def test_a_picture_that_is_not_an_image(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "Junk cover"})
    embed_picture(path, format_name, NOT_AN_IMAGE.data)
    record = read(path)
    assert record.cover is not None and record.cover.sha256 == NOT_AN_IMAGE.sha256
    assert (record.cover.width, record.cover.height, record.cover.mime) == (None, None, "image/jpeg")
    assert record.warnings == ["embedded cover is not a readable image"]


def test_folder_images_above_the_limit_are_refused(tmp_path):
    from worker_app.metadata.covers import read_folder_cover

    (tmp_path / "cover.jpg").write_bytes(_big_picture(3 * MiB))
    with pytest.raises(UnreadableFileError, match=r"^folder image of 3145728 bytes skipped: above the 2 MiB limit$"):
        read_folder_cover(tmp_path / "cover.jpg", max_bytes=2 * MiB)
    assert read_folder_cover(tmp_path / "cover.jpg").size_bytes == 3 * MiB


# ---------------------------------------------------------------- absurd numbers


@pytest.mark.parametrize("format_name", ["mp3", "flac", "wma", "wavpack"])
def test_absurd_numbers(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {
        "tracknumber": "3/abc", "discnumber": "-1", "date": "99999",
        "replaygain_track_gain": "NaN dB", "replaygain_album_gain": "-99999 dB",
        "replaygain_track_peak": "-1", "replaygain_album_peak": "1e400",
    })
    record = read(path)
    assert (record.track_number, record.track_total, record.disc_number) == (3, None, None)
    assert record.year is None
    assert [record.replaygain_track_gain, record.replaygain_album_gain, record.replaygain_track_peak,
            record.replaygain_album_peak] == [None, None, None, None]
    assert record.tags["discnumber"] == ["-1"] and record.tags["replaygain_track_gain"] == ["NaN dB"]
    expected = {
        "tracktotal 'abc' is not a number, ignored",
        "discnumber '-1' is not a number, kept in tags",
        "replaygain_track_gain 'NaN dB' is not a number, kept in tags",
        "replaygain_album_gain '-99999 dB' is out of range (-100..100), kept in tags",
        "replaygain_track_peak '-1' is out of range (0..100), kept in tags",
        "replaygain_album_peak '1e400' is not a number, kept in tags",
    }
    assert expected <= set(record.warnings)
    assert any("99999" in warning for warning in record.warnings)  # "no year in date" (or the ID3 date parse)


@pytest.mark.parametrize("format_name", ["flac", "m4a-aac"])
def test_track_zero(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    if format_name == "m4a-aac":
        audio = MP4(path)
        if audio.tags is None:
            audio.add_tags()
        audio.tags["trkn"], audio.tags["disk"] = [(0, 12)], [(0, 0)]
        audio.save()
    else:
        write_tags(path, format_name, {"tracknumber": "0/12", "discnumber": "0"})
    record = read(path)
    assert (record.track_number, record.track_total, record.disc_number) == (None, 12, None)
    assert {"tracknumber 0 ignored", "discnumber 0 ignored"} <= set(record.warnings)


def test_negative_duration_from_an_opus_pre_skip(templates, tmp_path):
    path = fresh(templates, "opus", tmp_path)
    data = bytearray(path.read_bytes())
    head = data.index(b"OpusHead")
    data[head + 10:head + 12] = struct.pack("<H", 65535)  # pre-skip longer than the stream
    path.write_bytes(bytes(data))
    record = read(path)
    assert record.duration_seconds is None and "negative duration ignored" in record.warnings


def test_stream_numbers_from_a_corrupt_header(templates, tmp_path):
    path = fresh(templates, "wav", tmp_path)
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 10:fmt + 12] = struct.pack("<H", 65535)  # channels
    data[fmt + 12:fmt + 16] = struct.pack("<I", 0xFFFFFFFF)  # sample rate
    path.write_bytes(bytes(data))
    record = read(path)
    assert (record.channels, record.sample_rate) == (None, None)
    assert {"channel count 65535 ignored (above 255)",
            "sample rate 4294967295 ignored (above 100000000)"} <= set(record.warnings)
    dsf = fresh(templates, "dsf", tmp_path)
    data = bytearray(dsf.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 28:fmt + 32] = bytes(4)  # sampling frequency 0: mutagen's duration divides by it
    dsf.write_bytes(bytes(data))
    record = read(dsf)
    assert record.duration_seconds is None and "duration unreadable (corrupt header)" in record.warnings


# ---------------------------------------------------------------- files that are not what their name says


_LABELS = {"mp3": "MP3", "flac": "FLAC", "ogg": "Ogg Vorbis", "opus": "Opus", "m4a": "MP4/M4A", "wma": "WMA/ASF",
           "wavpack": "WavPack", "aiff": "AIFF", "wav": "WAV", "dsf": "DSF", "ape": "Monkey's Audio",
           "musepack": "Musepack"}
_WRONG_EXTENSION = {"mp3": ".flac", "mp3-vbr": ".ogg", "flac": ".mp3", "flac-24": ".m4a", "ogg": ".mp3",
                    "opus": ".ogg", "m4a-aac": ".mp3", "m4a-alac": ".flac", "wma": ".mp3", "wavpack": ".ape",
                    "aiff": ".wav", "wav": ".aiff", "dsf": ".flac", "ape": ".wv", "musepack": ".mp3"}


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_a_valid_file_with_the_wrong_extension(templates, tmp_path, format_name):
    extension = _WRONG_EXTENSION[format_name]
    path = tmp_path / f"misnamed{extension}"
    path.write_bytes(templates.get(format_name, 0.3).data)
    record = read(path)
    container = FORMATS[format_name].container
    assert (record.format, record.codec) == (container, FORMATS[format_name].codec)
    assert record.warnings == [f"extension {extension} but the content is {_LABELS[container]}"]


_NOT_AUDIO = {
    "text": (("Track list\n01 Intro\n02 Outro\n" * 50).encode(), "text"),
    "png": (make_cover_art(random.Random(1), 32, 32, "image/png").data, "a PNG image"),
    "jpeg": (make_cover_art(random.Random(2), 32, 32, "image/jpeg").data, "a JPEG image"),
    "appledouble": (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02" + bytes(4000),
                    "AppleDouble data: macOS metadata for another file"),
}


@pytest.mark.parametrize("content", sorted(_NOT_AUDIO))
@pytest.mark.parametrize("extension", sorted({spec.extension for spec in FORMATS.values()}))
def test_not_audio_with_an_audio_extension(tmp_path, content, extension):
    data, description = _NOT_AUDIO[content]
    path = tmp_path / (f"._song{extension}" if content == "appledouble" else f"song{extension}")
    path.write_bytes(data)
    assert refused(path) == f"not an audio file mutagen can read (a {extension} file holding {description})"


# ---------------------------------------------------------------- the per-file time limit


@pytest.fixture
def alarm_state():
    """The SIGALRM handler and timer before the test (pytest-timeout, when configured, runs one), and a check that
    they are the same after it: the per-file limit must leave both as it found them."""
    handler, (delay, interval) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()

    def unchanged():
        assert signal.getsignal(signal.SIGALRM) is handler
        now_delay, now_interval = signal.getitimer(signal.ITIMER_REAL)
        assert now_interval == interval
        if delay == 0:
            assert now_delay == 0
        else:
            assert abs(now_delay - (delay - (time.monotonic() - started))) < 0.5
    return unchanged


@pytest.fixture
def slow_tags(monkeypatch):
    """Make reading Vorbis comments take ``seconds`` of CPU (or of sleep)."""
    def install(seconds: float, sleep: bool = False):
        def slow(*args):
            if sleep:
                time.sleep(seconds)
                return
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                pass
        monkeypatch.setattr(reader, "read_vorbis_comments", slow)
    return install


@pytest.mark.parametrize("sleep", [False, True])
def test_a_file_that_takes_too_long_is_refused(templates, tmp_path, slow_tags, alarm_state, sleep):
    path = fresh(templates, "flac", tmp_path)
    slow_tags(5, sleep)
    started = time.monotonic()
    assert refused(path, time_limit=0.2) == "took longer than 0.2 s to read"
    assert time.monotonic() - started < 2
    alarm_state()


def test_the_time_limit_restores_the_previous_handler_and_timer(templates, tmp_path, slow_tags):
    path = fresh(templates, "flac", tmp_path)
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        slow_tags(5)
        refused(path, time_limit=0.1)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < remaining < 30  # the outer timer still runs, minus the time spent
        assert fired == []
        slow_tags(0.3)  # an outer timer that comes due during a read fires right after it
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        read(path, time_limit=5)
        time.sleep(0.05)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if previous_timer[0]:
            signal.setitimer(signal.ITIMER_REAL, max(previous_timer[0] - (time.monotonic() - started), 0.001),
                             previous_timer[1])


def test_celery_soft_time_limit_still_wins_and_the_timer_is_disarmed(templates, tmp_path, monkeypatch, alarm_state):
    from billiard.exceptions import SoftTimeLimitExceeded

    path = fresh(templates, "flac", tmp_path)

    def soft_limit(*args):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(reader, "read_vorbis_comments", soft_limit)
    with pytest.raises(SoftTimeLimitExceeded):
        read_track(path, time_limit=10)
    alarm_state()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # Celery's signal is not touched


def test_no_time_limit_outside_the_main_thread(templates, tmp_path, slow_tags):
    path = fresh(templates, "flac", tmp_path)
    slow_tags(0.3)
    results = []
    thread = threading.Thread(target=lambda: results.append(read_track(path, time_limit=0.05)))
    thread.start()
    thread.join()
    assert len(results) == 1  # signals only reach the main thread: the task time limits apply there


def test_the_time_limit_defaults_to_the_setting(templates, tmp_path, slow_tags, monkeypatch):
    from worker_app import settings as settings_module

    class Settings:
        file_time_limit = 0.2
        max_cover_bytes = 16 * MiB

    monkeypatch.setattr(settings_module, "get_settings", lambda: Settings())
    monkeypatch.setattr(reader, "_get_settings", lambda: Settings())
    path = fresh(templates, "flac", tmp_path)
    slow_tags(5)
    assert refused(path) == "took longer than 0.2 s to read"
    assert reader.current_limits() == reader.ReadLimits(0.2, 16 * MiB)


def test_file_time_limit_is_raised_once_and_only_inside(alarm_state):
    with pytest.raises(FileTimeLimitExceeded):
        with FileTimeLimit(0.05):
            time.sleep(1)
    with FileTimeLimit(0.05):
        pass
    time.sleep(0.1)  # nothing fires after the block
    with FileTimeLimit(None):
        time.sleep(0.01)
    alarm_state()


def test_stream_info_is_time_limited_too(templates, tmp_path, monkeypatch):
    path = fresh(templates, "ogg", tmp_path)

    def slow(*args, **kwargs):
        time.sleep(5)

    monkeypatch.setattr(reader, "_stream_fields", slow)
    with pytest.raises(UnreadableFileError, match="^took longer than 0.1 s to read$"):
        read_stream_info(path, time_limit=0.1)


# ---------------------------------------------------------------- every tag field the format offers


def _write_rare_id3(path: Path) -> None:
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    tags.add(TKEY(encoding=3, text=["F#m"]))
    tags.add(TBPM(encoding=3, text=["128"]))
    tags.add(TSRC(encoding=3, text=["USRC17607839"]))
    tags.add(TMOO(encoding=3, text=["Calm"]))
    tags.add(USLT(encoding=3, lang="eng", desc="", text="Line one\nLine two"))
    tags.add(USLT(encoding=3, lang="deu", desc="German", text="Zeile"))
    tags.add(COMM(encoding=3, lang="eng", desc="Liner", text=["Recorded live"]))
    tags.add(WXXX(encoding=3, desc="Shop", url="https://shop.example/1"))
    tags.add(POPM(email="user@example.org", rating=196, count=7))
    tags.add(PCNT(count=42))
    tags.add(USER(encoding=3, lang="eng", text="Personal use only"))
    tags.add(UFID(owner="http://example.org/ids", data=b"ID-12345"))
    tags.add(TIPL(encoding=3, people=[["producer", "Pat Prod"], ["engineer", "Eve Eng"]]))
    tags.add(TMCL(encoding=3, people=[["Bass", "Bo Bass"]]))
    tags.add(TXXX(encoding=3, desc="My Custom Field", text=["custom value"]))
    audio.save()


_RARE_ID3 = {
    "key": ["F#m"], "bpm": ["128"], "isrc": ["USRC17607839"], "mood": ["Calm"], "lyrics": ["Line one\nLine two"],
    "lyrics:german": ["Zeile"], "comment:liner": ["Recorded live"], "shop": ["https://shop.example/1"],
    "rating:user@example.org": ["196"], "playcount:user@example.org": ["7"], "playcount": ["42"],
    "termsofuse": ["Personal use only"], "ufid:http://example.org/ids": ["ID-12345"], "producer": ["Pat Prod"],
    "engineer": ["Eve Eng"], "performer:bass": ["Bo Bass"], "my custom field": ["custom value"],
}


def _write_rare_vorbis(path: Path) -> None:
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    for key, value in (("KEY", "F#m"), ("BPM", "128"), ("ISRC", "USRC17607839"), ("LYRICS", "Line one"),
                       ("MY_CUSTOM_KEY", "custom value"), ("WORK", "Symphony"), ("MOVEMENTNAME", "Allegro")):
        audio.tags.append((key, value))
    audio.save()


_RARE_VORBIS = {"key": ["F#m"], "bpm": ["128"], "isrc": ["USRC17607839"], "lyrics": ["Line one"],
                "my_custom_key": ["custom value"], "work": ["Symphony"], "movementname": ["Allegro"]}


def _write_rare_mp4(path: Path) -> None:
    audio = MP4(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags["tmpo"] = [128]
    audio.tags["\xa9lyr"] = ["Line one"]
    audio.tags["\xa9grp"] = ["Grouping"]
    audio.tags["desc"] = ["A description"]
    audio.tags["----:com.apple.iTunes:initialkey"] = [MP4FreeForm(b"F#m")]
    audio.tags["----:com.apple.iTunes:ISRC"] = [MP4FreeForm(b"USRC17607839")]
    audio.tags["----:com.apple.iTunes:My Custom Field"] = [MP4FreeForm(b"custom value")]
    audio.tags["----:org.example:Other Mean"] = [MP4FreeForm(b"other value")]
    audio.save()


_RARE_MP4 = {"bpm": ["128"], "lyrics": ["Line one"], "grouping": ["Grouping"], "description": ["A description"],
             "key": ["F#m"], "isrc": ["USRC17607839"], "my custom field": ["custom value"],
             "other mean": ["other value"]}


def _write_rare_asf(path: Path) -> None:
    audio = ASF(path)
    audio["WM/InitialKey"] = ["F#m"]
    audio["WM/BeatsPerMinute"] = ["128"]
    audio["WM/ISRC"] = ["USRC17607839"]
    audio["WM/Mood"] = ["Calm"]
    audio["WM/Lyrics"] = ["Line one"]
    audio["MyApp/Custom Thing"] = ["custom value"]
    audio["WM/EncodingTime"] = [mutagen.asf.ASFQWordAttribute(132000000000000000)]
    audio.save()


_RARE_ASF = {"key": ["F#m"], "bpm": ["128"], "isrc": ["USRC17607839"], "mood": ["Calm"], "lyrics": ["Line one"],
             "myapp custom thing": ["custom value"], "encodingtime": ["132000000000000000"]}


def _write_rare_ape(path: Path) -> None:
    tags = APEv2()
    tags["Key"] = "F#m"
    tags["BPM"] = "128"
    tags["ISRC"] = "USRC17607839"
    tags["Mood"] = ["Calm", "Quiet"]
    tags["Custom Thing"] = "custom value"
    tags["Related"] = APEValue("https://example.org/related", EXTERNAL)
    tags.save(path)


_RARE_APE = {"key": ["F#m"], "bpm": ["128"], "isrc": ["USRC17607839"], "mood": ["Calm", "Quiet"],
             "custom thing": ["custom value"], "related": ["https://example.org/related"]}

_RARE = {"id3": (_write_rare_id3, _RARE_ID3), "vorbis": (_write_rare_vorbis, _RARE_VORBIS),
         "mp4": (_write_rare_mp4, _RARE_MP4), "asf": (_write_rare_asf, _RARE_ASF),
         "apev2": (_write_rare_ape, _RARE_APE)}


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_rare_tag_fields_are_read_into_tags(templates, tmp_path, format_name):
    path = fresh(templates, format_name, tmp_path)
    write, expected = _RARE[style(format_name)]
    write(path)
    record = read(path)
    assert record.tags == expected
    assert record.warnings == []


def test_id3_text_frames_mutagen_does_not_know(templates, tmp_path):
    path = mp3_with_raw_id3(templates, tmp_path, [
        ("TXYZ", b"\x03Non-standard frame"), ("XSOP", b"\x00Sort, Artist"), ("TIT2", b"\x03Title"),
        ("PRIV", b"owner\x00\x01\x02\x03"),
    ])
    record = read(path)
    assert record.tags == {"txyz": ["Non-standard frame"], "artistsort": ["Sort, Artist"]}


# ---------------------------------------------------------------- the size-limit machinery changes nothing else


def test_files_above_the_limit_without_oversized_items_read_the_same(tmp_path):
    """The scanners and capped readers only run for files above the picture limit: a limit just above a file's
    largest picture sends every file through them, and the record must be exactly the one a plain read gives."""
    from tests.audio_factory import make_library

    library = make_library(tmp_path / "music", 90, seed=8, formats=ALL_FORMATS, corrupt=False)
    scanned = 0
    for expected in library.tracks:
        pictures = [library.covers[sha].data for sha in (expected.cover_sha256, expected.back_cover_sha256) if sha]
        limit = max([len(data) for data in pictures] + [4096]) + 1
        if expected.size_bytes <= limit:
            continue
        scanned += 1
        plain = read(expected.path, max_cover_bytes=64 * MiB)
        assert read(expected.path, max_cover_bytes=limit) == plain, expected.path
    assert scanned > 60


@pytest.mark.parametrize("format_name, allocated_before", [("flac", "4.3 GB"), ("mp3", "268 MB"),
                                                          ("m4a-aac", "4.3 GB")])
def test_a_corrupt_length_field_allocates_nothing_of_the_sort(templates, tmp_path, format_name, allocated_before):
    """mutagen passes lengths from headers straight to read(), and Python's buffered read allocates the size asked
    for before reading: a corrupt length once cost ``allocated_before`` (4 GB: a Vorbis comment or MP4 atom
    length; 256 MB: an ID3v2 tag size). The extractor's file object asks for no more than the file holds."""
    path = fresh(templates, format_name, tmp_path)
    write_tags(path, format_name, {"title": "XXXXXXXX"})
    data = bytearray(path.read_bytes())
    if format_name == "flac":
        at = data.index(b"TITLE=XXXXXXXX") - 4
        data[at:at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    elif format_name == "mp3":
        data[6:10] = b"\x7f\x7f\x7f\x7f"  # ID3v2 tag size: 2**28 - 1
    else:
        at = data.index(b"\xa9nam") - 4
        data[at:at + 4] = (0xFFFFFFF0).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    reason, peak = traced_peak(lambda: refused(path))
    assert reason.split(":")[0] in ("truncated FLAC", "corrupt MP3", "truncated MP4/M4A")
    assert peak < MiB


def test_the_lenient_patches_refuse_a_mutagen_they_were_not_written_for():
    from worker_app.metadata import lenient

    requirements = (Path(__file__).parent.parent / "requirements.txt").read_text()
    pinned = next(line.split("==")[1].strip() for line in requirements.splitlines() if line.startswith("mutagen=="))
    assert pinned in lenient.MUTAGEN_VERSIONS and mutagen.version_string == pinned
    lenient.check_mutagen_version(pinned)
    with pytest.raises(ImportError, match="not 0.9.9: check its patches"):
        lenient.check_mutagen_version("0.9.9")


def test_a_worker_refuses_to_start_on_a_mutagen_the_lenient_patches_were_not_written_for(tmp_path):
    """The extract worker's command line, with mutagen saying it is another release (as an upgrade would make it):
    the worker stops at start, saying why, instead of reading tags through patches that may no longer apply."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text('import mutagen\nmutagen.version_string = "1.47.0"\n')
    celery = Path(sys.executable).parent / "celery"
    started = subprocess.run([str(celery), "-A", "worker_app.celery_app", "worker", "--pool", "solo", "-Q", "extract"],
                             env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert started.returncode != 0
    assert "written for mutagen 1.48.1, not 1.47.0" in started.stderr


_UNDER_MEMORY_LIMIT = r"""
import json, resource, sys
from worker_app.metadata.reader import read_track, current_limits
from worker_app.metadata.record import UnreadableFileError
current_limits()
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
limit = size + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    record = read_track(sys.argv[1], max_cover_bytes=int(sys.argv[3]), time_limit=0)
    print(json.dumps({"title": record.title, "warnings": record.warnings}))
except UnreadableFileError as error:
    print(json.dumps({"reason": error.reason, "passing": error.passing}))
"""


def test_under_a_memory_limit_a_huge_picture_is_skipped_unread_and_an_out_of_memory_read_is_passing(
        templates, tmp_path):
    """bench/oversize.py measures it: mutagen holds an ID3 picture about four times over. Under an address-space
    limit of 256 MiB, a file with a 96 MiB picture reads with the picture skipped (oversize.py leaves it out before
    mutagen reads it); read whole (a limit above the picture), it runs out of memory, which is a passing failure,
    tried again at the next scan, not a verdict on the file."""
    import subprocess
    import sys

    from mutagen.id3 import APIC, ID3, TIT2

    path = tmp_path / "huge-picture.mp3"
    path.write_bytes(templates.get("mp3", 0.3).data)
    tags = ID3()
    tags.add(TIT2(encoding=3, text=["Title"]))
    tags.add(APIC(encoding=0, mime="image/jpeg", type=3, desc="", data=_big_picture(96 * MiB)))
    tags.save(path)
    del tags

    def read_under_limit(max_cover_bytes: int) -> dict:
        done = subprocess.run([sys.executable, "-c", _UNDER_MEMORY_LIMIT, str(path), str(256 * MiB),
                               str(max_cover_bytes)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    skipped = read_under_limit(16 * MiB)
    assert skipped["title"] == "Title"
    assert any("skipped" in warning for warning in skipped["warnings"]), skipped
    whole = read_under_limit(128 * MiB)
    assert whole == {"reason": "ran out of memory while reading it", "passing": True}
