"""Each tag format's reader: a file's tags under the field table's names (``fields.py``), values cleaned, plus its
pictures. Keys are looked up in the table; the code here is for structure only (frames with a description, a role
or an owner, number pairs, pictures, text mutagen could not decode).
"""
from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mutagen._riff import RiffFile
from mutagen._vorbis import VComment
from mutagen.apev2 import APEBinaryValue, APEExtValue, APETextValue, APEv2
from mutagen.asf import ASFTags
from mutagen.flac import Picture
from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    PCNT,
    POPM,
    RVA2,
    SYLT,
    TCON,
    TXXX,
    UFID,
    USER,
    USLT,
    WXXX,
    Encoding,
    Frame,
    PairedTextFrame,
    TextFrame,
    TimeStampTextFrame,
    UrlFrame,
)
from mutagen.mp4 import AtomDataType, MP4FreeForm, MP4Tags

from worker_app.metadata.cleaning import (
    MAX_FIELD_BYTES,
    MAX_KEY_BYTES,
    MAX_TAG_VALUE_BYTES,
    clean_key,
    clean_text,
    decode_utf8_lenient,
    repair_latin1_mojibake,
    repair_utf16_byte_order,
)
from worker_app.metadata.covers import MP4_COVER_MIME, EmbeddedPicture, ape_cover_item
from worker_app.metadata.fields import ASF_KEYS, FIELD_NAMES, ID3_KEYS, MP4_KEYS, SAME_FIELD, TOTAL_NAME, free_form_key
from worker_app.metadata.lenient import decode_id3_value

if TYPE_CHECKING:
    from worker_app.metadata.safefile import SafeFile


@dataclass
class RawTags:
    """A file's tags under Picard names, values cleaned, in file order; plus its pictures."""

    warnings: list[str]
    values: dict[str, list[str]] = field(default_factory=dict)
    pictures: list[EmbeddedPicture] = field(default_factory=list)

    def add(self, key: str, value: str) -> None:
        if key not in _GOOD_KEYS:
            if key.isascii() and key.isprintable() and 0 < len(key) <= MAX_KEY_BYTES:
                if len(_GOOD_KEYS) < 10_000:
                    _GOOD_KEYS.add(key)
            else:
                key = clean_key(key, self.warnings)
        is_field = key in FIELD_NAMES
        cleaned = clean_text(value, key, self.warnings, MAX_FIELD_BYTES if is_field else MAX_TAG_VALUE_BYTES)
        if cleaned is not None:
            values = self.values.setdefault(key, [])
            # Two aliases of one field with the same value (ALBUMARTIST and ALBUM ARTIST, written by two taggers)
            # say it once.
            if not (is_field and cleaned in values):
                values.append(cleaned)

    def add_all(self, key: str, values: Iterable[object]) -> None:
        for value in values:
            self.add(key, value if isinstance(value, str) else str(value))

    def add_if_absent(self, key: str, value: str) -> None:
        if key not in self.values:
            self.add(key, value)


_GOOD_KEYS: set[str] = set()  # keys already seen fit for a JSON key as they are (a cache: checking costs more)


def merge_missing(primary: RawTags, secondary: RawTags) -> None:
    """Add to ``primary`` the keys only ``secondary`` has (a key, or any key of the same field, present in
    ``primary`` wins whole); pictures too, when ``primary`` has none."""
    present = set(primary.values)
    present |= {other for key in present if key in SAME_FIELD for other in SAME_FIELD[key]}
    for key, values in secondary.values.items():
        if key not in present:
            primary.values[key] = values
    if not primary.pictures:
        primary.pictures.extend(secondary.pictures)


# ---------------------------------------------------------------- Vorbis comments (FLAC, Ogg Vorbis, Opus, Speex)

def read_vorbis_comments(comments: VComment | None, flac_pictures: list[Picture] | None, raw: RawTags) -> None:
    """``comments`` is mutagen's VComment (a list of (key, value) pairs); FLAC keeps pictures in their own blocks."""
    for picture in flac_pictures or ():
        raw.pictures.append(EmbeddedPicture(picture.data, picture.mime or None, int(picture.type)))
    if comments is None:
        return
    legacy_cover_mime = None
    for key, value in comments:
        key = key.lower()
        if key == "metadata_block_picture":
            try:
                picture = Picture(base64.b64decode(value))
            except Exception as error:  # bad base64 or a malformed picture block
                raw.warnings.append(f"unreadable METADATA_BLOCK_PICTURE skipped ({type(error).__name__})")
                continue
            raw.pictures.append(EmbeddedPicture(picture.data, picture.mime or None, int(picture.type)))
        elif key == "coverart":  # pre-2010 convention: bare base64 image, mime in COVERARTMIME
            try:
                raw.pictures.append(EmbeddedPicture(base64.b64decode(value), legacy_cover_mime, None))
            except ValueError:
                raw.warnings.append("unreadable COVERART skipped")
        elif key == "coverartmime":
            legacy_cover_mime = value
        else:
            raw.add(free_form_key(key), value)


# ---------------------------------------------------------------- APEv2 (Monkey's Audio, WavPack, Musepack, MP3)



def read_apev2(tags: APEv2, raw: RawTags) -> None:
    for key, value in tags.items():
        lowered = key.lower()
        # An item's value is set by its constructor; mypy sees the class default (None).
        payload: Any = value.value
        if isinstance(value, APETextValue):
            raw.add_all(free_form_key(lowered), list(value))
        elif isinstance(value, APEExtValue):  # a link (URL or file)
            raw.add(free_form_key(lowered), payload)
        elif isinstance(value, APEBinaryValue) and lowered.startswith("cover art"):
            image_start, mime, picture_type = ape_cover_item(lowered, payload)
            raw.pictures.append(EmbeddedPicture(payload[image_start:], mime, picture_type))
        # other binary items are opaque application data, not tags people read


# ---------------------------------------------------------------- RIFF INFO (WAV)


def read_riff_info(view: SafeFile, raw: RawTags) -> None:
    """The INFO list of a WAV file (what Windows and most audio editors write; mutagen reads only WAV's ID3 chunk):
    each sub-chunk a NUL-terminated string, UTF-8 or, from older software, Windows-1252."""
    view.seek(0)
    for chunk in RiffFile(view).root.subchunks():
        if chunk.id == "LIST" and chunk.name == "INFO":
            for item in chunk.subchunks():
                text, repaired = decode_utf8_lenient(item.read().split(b"\x00", 1)[0])
                if repaired:
                    raw.warnings.append(f"RIFF INFO {item.id} is not UTF-8, read as Windows-1252")
                raw.add(free_form_key(item.id), text)


# ---------------------------------------------------------------- ID3v2 (MP3, AIFF, WAV, DSF) and ID3v1

_ID3V1_COMMENT = "ID3v1 Comment"  # the description mutagen gives an ID3v1 comment


def read_id3(tags: ID3, raw: RawTags) -> None:
    """``tags`` is a mutagen ID3 loaded with translate=True: v2.2/v2.3 frames already upgraded to v2.4 ones.

    Every frame that holds text people read ends up in ``raw``: text frames under their Picard name (else their
    frame id), TXXX/COMM/USLT/WXXX by description, POPM/PCNT/USER/SYLT/UFID too, and text frames mutagen does not
    know (``unknown_frames``). Binary frames (APIC aside) are skipped: PRIV, GEOB, MCDI, ETCO, CHAP...
    Text in a Latin-1 frame that is really UTF-8, and BOM-less big-endian UTF-16, are repaired with a warning.
    """
    # A frame's fields (desc, text, data...) are set at run time from its class's _framespec: mypy sees none of
    # them, so they are read through ``fields``, the same frame typed Any.
    volume_adjustments: dict[str, Any] = {}
    for frame in tags.values():
        frame_id = frame.FrameID
        fields: Any = frame
        if isinstance(frame, TXXX):
            raw.add_all(free_form_key(_repaired(frame, fields.desc, raw), "txxx"), _texts(frame, raw))
        elif isinstance(frame, COMM):  # before TextFrame, which it subclasses
            description = _repaired(frame, fields.desc, raw)
            if description in ("", _ID3V1_COMMENT):
                raw.add_all(ID3_KEYS["COMM"], _texts(frame, raw))
            else:
                raw.add_all(f"{ID3_KEYS['COMM']}:{description.lower()}", _texts(frame, raw))
        elif isinstance(frame, TCON):
            # resolves ID3v1 numeric references: "(17)" -> "Rock"
            raw.add_all(ID3_KEYS["TCON"], [_repaired(frame, genre, raw) for genre in fields.genres])
        elif isinstance(frame, TimeStampTextFrame):
            raw.add_all(ID3_KEYS.get(frame_id, frame_id.lower()), [stamp.text for stamp in fields.text])
        elif isinstance(frame, TextFrame):
            raw.add_all(ID3_KEYS.get(frame_id, frame_id.lower()), _texts(frame, raw))
        elif isinstance(frame, APIC):
            if fields.mime != "-->":  # "-->" means the data is a URL to an image, not an image
                raw.pictures.append(EmbeddedPicture(fields.data, fields.mime or None, int(fields.type)))
        elif isinstance(frame, USLT):
            description = _repaired(frame, fields.desc, raw)
            lyrics = ID3_KEYS["USLT"]
            raw.add(lyrics if not description else f"{lyrics}:{description.lower()}",
                    _repaired(frame, fields.text, raw))
        elif isinstance(frame, SYLT):
            description = _repaired(frame, fields.desc, raw)
            raw.add("syncedlyrics" if not description else f"syncedlyrics:{description.lower()}",
                    _synced_lyrics(frame))
        elif isinstance(frame, UFID):
            if fields.owner:
                key = ID3_KEYS.get(f"UFID:{fields.owner}", f"ufid:{fields.owner.lower()}")
                raw.add(key, _printable_or_hex(fields.data))
        elif isinstance(frame, POPM):  # rating 0-255 (and a play count) per player e-mail
            suffix = f":{fields.email.lower()}" if fields.email else ""
            raw.add(f"rating{suffix}", str(fields.rating))
            if getattr(frame, "count", None) is not None:
                raw.add(f"playcount{suffix}", str(fields.count))
        elif isinstance(frame, PCNT):
            raw.add("playcount", str(fields.count))
        elif isinstance(frame, USER):
            raw.add("termsofuse", _repaired(frame, fields.text, raw))
        elif isinstance(frame, PairedTextFrame):  # TIPL (involved people), TMCL (musicians)
            for role, name in fields.people:
                if frame_id == "TMCL":
                    raw.add(f"performer:{role.lower()}", name)
                else:
                    raw.add(ID3_KEYS.get(f"TIPL:{role.lower()}", role.lower()), name)
        elif isinstance(frame, WXXX):
            raw.add(free_form_key(fields.desc, "wxxx"), fields.url)
        elif isinstance(frame, UrlFrame):
            raw.add(ID3_KEYS.get(frame_id, frame_id.lower()), fields.url)
        elif isinstance(frame, RVA2):
            volume_adjustments[fields.desc.lower()] = frame
        # PRIV, GEOB, MCDI, ETCO, CHAP, CTOC...: binary or player state, not catalogue tags

    for frame_data in getattr(tags, "unknown_frames", None) or ():
        _read_unknown_id3_frame(frame_data, getattr(tags, "_unknown_v2_version", 4), raw)

    # RVA2 is the ID3-native ReplayGain; the TXXX form (what taggers write today) wins when both exist.
    for scope in ("track", "album"):
        frame = volume_adjustments.get(scope)
        if frame is not None and frame.channel == 1:  # 1 = master volume
            raw.add_if_absent(f"replaygain_{scope}_gain", f"{frame.gain:.2f} dB")
            raw.add_if_absent(f"replaygain_{scope}_peak", f"{frame.peak:.6f}")


def _repaired(frame: Frame, text: str, raw: RawTags) -> str:
    """``text`` from ``frame``, repaired when its bytes were in another encoding than the frame declared."""
    encoding = getattr(frame, "encoding", None)
    if encoding == Encoding.LATIN1:
        fixed = repair_latin1_mojibake(text)
        if fixed is not None:
            raw.warnings.append(f"UTF-8 text in Latin-1 ID3 frame {frame.FrameID}, read as UTF-8")
            return fixed
    elif encoding == Encoding.UTF16:
        fixed = repair_utf16_byte_order(text)
        if fixed is not None:
            raw.warnings.append(f"UTF-16 without byte order mark in ID3 frame {frame.FrameID}, read as big-endian")
            return fixed
    return text


def _texts(frame: Any, raw: RawTags) -> list[str]:
    return [_repaired(frame, text if isinstance(text, str) else str(text), raw) for text in frame.text]


def _synced_lyrics(frame: Any) -> str:  # a SYLT: its fields are untyped (see read_id3)
    if frame.format == 2:  # times in milliseconds: LRC-style lines
        return "\n".join(f"[{time // 60000:02d}:{time // 1000 % 60:02d}.{time % 1000 // 10:02d}]{text}"
                         for text, time in frame.text)
    return "\n".join(text for text, _ in frame.text)


def _printable_or_hex(data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return data.hex()
    return text if text.isprintable() else data.hex()


def _read_unknown_id3_frame(frame_data: bytes, version: int, raw: RawTags) -> None:
    """Text frames mutagen has no class for (non-standard "T..." frames, iTunes' X... sort frames)."""
    header_length = 6 if version == 2 else 10
    frame_id = frame_data[:3 if version == 2 else 4].decode("latin-1")
    if version > 2 and frame_data[8:10] != b"\x00\x00":
        return  # compressed, encrypted, grouped...: not worth it for a frame nobody defined
    body = frame_data[header_length:]
    if not body or not (frame_id.startswith("T") or frame_id in ID3_KEYS) or body[0] > 3:
        return
    encoding, rest = body[0], body[1:]
    values = []
    while rest:
        text, rest, _ = decode_id3_value(rest, encoding)
        values.append(text)
    key = ID3_KEYS.get(frame_id, frame_id.lower())
    raw.add_all(key, [value.lstrip("\ufeff") for value in values if value.strip("\ufeff")])


# ---------------------------------------------------------------- MP4 / iTunes (M4A, M4B, ALAC)

_TEXT_FORMATS = (AtomDataType.UTF8, AtomDataType.IMPLICIT)


def read_mp4(tags: MP4Tags, raw: RawTags) -> None:
    for key, values in tags.items():
        if not isinstance(values, list):  # flags (cpil, pgap, pcst, shwm) are a bare bool
            values = [values]
        if key == "covr":
            for cover in values:
                raw.pictures.append(EmbeddedPicture(bytes(cover), MP4_COVER_MIME.get(cover.imageformat), None))
        elif key in ("trkn", "disk"):  # (number, total) pairs
            number, total = values[0]
            raw.add(MP4_KEYS[key], str(number))
            if total:
                raw.add(TOTAL_NAME[MP4_KEYS[key]], str(total))
        elif key == "gnre":  # iTunes' legacy genre: ID3v1 genre index plus one
            raw.add_all(MP4_KEYS[key], TCON(text=[f"({value - 1})" for value in values]).genres)
        elif key.startswith("----:"):
            name = key.split(":", 2)[2]
            for value in values:
                if isinstance(value, MP4FreeForm) and value.dataformat not in _TEXT_FORMATS:
                    continue  # binary free-form data (iTunes' own blobs)
                text, repaired = decode_utf8_lenient(bytes(value))
                if repaired:
                    raw.warnings.append(f"invalid UTF-8 in MP4 atom {key!r}, read as Windows-1252")
                raw.add(free_form_key(name, "----"), text)
        else:
            tag_key = MP4_KEYS.get(key, key.lower())
            for value in values:
                if isinstance(value, bool):
                    raw.add(tag_key, "1" if value else "0")
                elif isinstance(value, (str, int)):
                    raw.add(tag_key, str(value))
                # tuples other than trkn/disk and raw bytes are not text
    failed = getattr(tags, "_failed_atoms", None)  # atoms mutagen could not parse (e.g. invalid UTF-8 text)
    for key, payloads in (failed or {}).items():
        if not _recover_mp4_text(key, payloads, raw):
            raw.warnings.append(f"unreadable MP4 atom {key!r} skipped")


def _recover_mp4_text(key: str, payloads: list[bytes], raw: RawTags) -> bool:
    """Text atoms mutagen refused (invalid UTF-8): read with bytes that are not UTF-8 as Windows-1252."""
    texts = []
    name = None
    for payload in payloads:
        position = 0
        while position + 8 <= len(payload):
            length, atom_name = struct.unpack_from(">I4s", payload, position)
            if length < 8 or position + length > len(payload):
                break
            body = payload[position + 8:position + length]
            if atom_name == b"name" and len(body) >= 4:
                name = body[4:].decode("utf-8", "replace")
            elif atom_name == b"data" and len(body) >= 8:
                data_type = int.from_bytes(body[1:4], "big")
                if data_type == AtomDataType.UTF16:
                    texts.append(body[8:].decode("utf-16-be", "replace"))
                elif data_type in (AtomDataType.UTF8, AtomDataType.IMPLICIT):
                    texts.append(decode_utf8_lenient(body[8:])[0])
                else:
                    return False
            position += length
    if not texts:
        return False
    if key.startswith("----"):
        if name is None:
            return False
        tag_key = free_form_key(name, "----")
    else:
        tag_key = MP4_KEYS.get(key, key.lower())
    raw.warnings.append(f"invalid UTF-8 in MP4 atom {key!r}, read as Windows-1252")
    raw.add_all(tag_key, texts)
    return True


# ---------------------------------------------------------------- ASF (WMA)

def read_asf(tags: ASFTags, raw: RawTags) -> None:
    zero_based_track = None
    for key, attribute in tags:
        lowered = key.lower()
        value = attribute.value
        if lowered == "wm/picture":
            picture = _parse_asf_picture(value)
            if picture is None:
                raw.warnings.append("unreadable WM/Picture skipped")
            else:
                raw.pictures.append(picture)
            continue
        if lowered == "wm/track":  # pre-WMP9 convention, counted from 0
            zero_based_track = value
            continue
        if isinstance(value, bytes):
            continue  # byte arrays and GUIDs are not text
        if isinstance(value, bool):
            value = "1" if value else "0"
        tag_key = ASF_KEYS.get(lowered)
        if tag_key is None:  # "MusicBrainz/Album Id" is the description "MusicBrainz Album Id"
            tag_key = free_form_key(lowered.removeprefix("wm/").replace("/", " "), lowered)
        raw.add(tag_key, str(value))
    track_number = ASF_KEYS["wm/tracknumber"]
    if zero_based_track is not None and track_number not in raw.values:
        try:
            raw.add(track_number, str(int(zero_based_track) + 1))
        except (TypeError, ValueError):
            raw.add("wm/track", str(zero_based_track))


def _parse_asf_picture(blob: object) -> EmbeddedPicture | None:
    """WM/Picture: type (1 byte), data size (uint32 LE), MIME and description (UTF-16LE, NUL-terminated), data."""
    if not isinstance(blob, bytes) or len(blob) < 9:
        return None
    picture_type, size = struct.unpack_from("<BI", blob)
    position = 5
    strings = []
    for _ in range(2):
        end = position
        while end + 1 < len(blob) and blob[end:end + 2] != b"\x00\x00":
            end += 2
        strings.append(blob[position:end].decode("utf-16-le", "replace"))
        position = end + 2
    data = blob[position:position + size]
    if len(data) != size:
        return None
    return EmbeddedPicture(data, strings[0] or None, picture_type)
