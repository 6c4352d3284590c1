"""Each tag family's keys, translated to one vocabulary: MusicBrainz Picard's internal tag names.

Picard's names ("albumartist", "tracknumber", "musicbrainz_albumid", "label", ...) are what most tagged libraries
were written with, and they are what ``TrackRecord.tags`` uses as keys, whatever the file format. A key Picard does
not know stays as the file spells it, lower-cased (an ID3 frame id, a TXXX description, an MP4 atom name, ...).
Source of the mapping: Picard's documentation, appendix "Tag Mapping".
"""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

from mutagen.apev2 import APEBinaryValue, APEExtValue, APETextValue
from mutagen.flac import Picture
from mutagen.id3 import (
    APIC,
    COMM,
    PCNT,
    POPM,
    SYLT,
    USER,
    PairedTextFrame,
    RVA2,
    TCON,
    TXXX,
    UFID,
    USLT,
    WXXX,
    Encoding,
    TextFrame,
    TimeStampTextFrame,
    UrlFrame,
)
from mutagen.mp4 import AtomDataType, MP4Cover, MP4FreeForm

from worker_app.metadata.cleaning import (
    MAX_FIELD_BYTES,
    MAX_TAG_VALUE_BYTES,
    clean_key,
    clean_text,
    decode_utf8_lenient,
    repair_latin1_mojibake,
    repair_utf16_byte_order,
)
from worker_app.metadata.covers import FRONT_COVER, EmbeddedPicture

MUSICBRAINZ_UFID_OWNER = "http://musicbrainz.org"


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
        cleaned = clean_text(value, key, self.warnings, MAX_FIELD_BYTES if key in FIELD_KEYS else MAX_TAG_VALUE_BYTES)
        if cleaned is not None:
            self.values.setdefault(key, []).append(cleaned)

    def add_all(self, key: str, values) -> None:
        for value in values:
            self.add(key, value if isinstance(value, str) else str(value))

    def add_if_absent(self, key: str, value: str) -> None:
        if key not in self.values:
            self.add(key, value)


# Keys whose values become TrackRecord fields (one line of text each), and the groups of keys that say the same
# thing (a tag format that has one of them in a file decides that field alone).
FIELD_KEYS = frozenset({
    "title", "album", "artist", "artists", "albumartist", "albumartists", "genre", "composer", "date", "year",
    "tracknumber", "tracktotal", "discnumber", "disctotal", "compilation",
    "musicbrainz_trackid", "musicbrainz_releasetrackid", "musicbrainz_albumid", "musicbrainz_releasegroupid",
    "musicbrainz_artistid", "musicbrainz_albumartistid",
    "replaygain_track_gain", "replaygain_track_peak", "replaygain_album_gain", "replaygain_album_peak",
})
MAX_KEY_BYTES = 255
_GOOD_KEYS: set[str] = set()  # keys already seen fit for a JSON key as they are (a cache: checking costs more)
KEY_GROUPS = {"artists": "artist", "albumartists": "albumartist", "year": "date"}


def merge_missing(primary: RawTags, secondary: RawTags) -> None:
    """Add to ``primary`` the keys only ``secondary`` has (a key or its group partner present in ``primary``
    wins whole); pictures too, when ``primary`` has none."""
    present = set(primary.values)
    present |= {KEY_GROUPS[key] for key in present if key in KEY_GROUPS}
    present |= {key for key, partner in KEY_GROUPS.items() if partner in present}
    for key, values in secondary.values.items():
        if key not in present:
            primary.values[key] = values
    if not primary.pictures:
        primary.pictures.extend(secondary.pictures)


# Descriptions that ID3 TXXX frames, MP4 "----" atoms and ASF attributes share (ASF with "/" for " ").
_DESCRIPTION_KEYS = {
    "musicbrainz track id": "musicbrainz_trackid",  # the recording, despite the name
    "musicbrainz release track id": "musicbrainz_releasetrackid",
    "musicbrainz album id": "musicbrainz_albumid",
    "musicbrainz release group id": "musicbrainz_releasegroupid",
    "musicbrainz artist id": "musicbrainz_artistid",
    "musicbrainz album artist id": "musicbrainz_albumartistid",
    "musicbrainz work id": "musicbrainz_workid",
    "musicbrainz disc id": "musicbrainz_discid",
    "musicbrainz trm id": "musicbrainz_trmid",
    "musicbrainz original album id": "musicbrainz_originalalbumid",
    "musicbrainz original artist id": "musicbrainz_originalartistid",
    "musicbrainz album status": "releasestatus",
    "musicbrainz album type": "releasetype",
    "musicbrainz album release country": "releasecountry",
    "musicbrainz album comment": "comment:musicbrainz album comment",
    "acoustid id": "acoustid_id",
    "acoustid fingerprint": "acoustid_fingerprint",
    "musicip puid": "musicip_puid",
    "musicmagic fingerprint": "musicip_fingerprint",
    "album artist": "albumartist",
    "initialkey": "key",
}


def description_key(description: str, key_without_description: str) -> str:
    lowered = description.strip().lower()
    return _DESCRIPTION_KEYS.get(lowered, lowered) or key_without_description


# ---------------------------------------------------------------- Vorbis comments (FLAC, Ogg Vorbis, Opus, Speex)

_VORBIS_KEYS = {
    "album artist": "albumartist",
    "totaltracks": "tracktotal",
    "totaldiscs": "disctotal",
}


def read_vorbis_comments(comments, flac_pictures, raw: RawTags) -> None:
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
            raw.add(_VORBIS_KEYS.get(key, key), value)


# ---------------------------------------------------------------- APEv2 (Monkey's Audio, WavPack, Musepack, MP3)

_APE_KEYS = {
    "album artist": "albumartist",
    "albumartist": "albumartist",
    "year": "date",
    "track": "tracknumber",
    "disc": "discnumber",
    "mixartist": "remixer",
    "weblink": "website",
    "musicbrainz_albumstatus": "releasestatus",
    "musicbrainz_albumtype": "releasetype",
    "original artist": "originalartist",
    "totaltracks": "tracktotal",
    "totaldiscs": "disctotal",
}
_APE_PICTURE_TYPES = {"cover art (front)": FRONT_COVER, "cover art (back)": 4}
_MIME_BY_SUFFIX = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
                   "webp": "image/webp", "bmp": "image/bmp"}


def read_apev2(tags, raw: RawTags) -> None:
    for key, value in tags.items():
        lowered = key.lower()
        if isinstance(value, APETextValue):
            raw.add_all(_APE_KEYS.get(lowered, lowered), list(value))
        elif isinstance(value, APEExtValue):  # a link (URL or file)
            raw.add(_APE_KEYS.get(lowered, lowered), value.value)
        elif isinstance(value, APEBinaryValue) and lowered.startswith("cover art"):
            # "<file name>\0<image bytes>" by convention (foobar2000, mp3tag, Picard)
            file_name, separator, data = value.value.partition(b"\x00")
            if not separator:
                file_name, data = b"", value.value
            suffix = file_name.decode("latin-1").rpartition(".")[2].lower()
            raw.pictures.append(EmbeddedPicture(data, _MIME_BY_SUFFIX.get(suffix), _APE_PICTURE_TYPES.get(lowered, 0)))
        # other binary items are opaque application data, not tags people read


# ---------------------------------------------------------------- ID3v2 (MP3, AIFF, WAV, DSF) and ID3v1

_ID3_TEXT_KEYS = {
    "TIT2": "title",
    "TPE1": "artist",
    "TALB": "album",
    "TPE2": "albumartist",
    "TCMP": "compilation",
    "TRCK": "tracknumber",
    "TPOS": "discnumber",
    "TDRC": "date",
    "TCON": "genre",
    "TCOM": "composer",
    "TSOP": "artistsort",
    "TSOA": "albumsort",
    "TSOT": "titlesort",
    "TSO2": "albumartistsort",
    "TSOC": "composersort",
    "TPUB": "label",
    "TSRC": "isrc",
    "TBPM": "bpm",
    "TCOP": "copyright",
    "TENC": "encodedby",
    "TSSE": "encodersettings",
    "TEXT": "lyricist",
    "TPE3": "conductor",
    "TPE4": "remixer",
    "TIT1": "grouping",
    "GRP1": "grouping",
    "TIT3": "subtitle",
    "TKEY": "key",
    "TLAN": "language",
    "TMED": "media",
    "TMOO": "mood",
    "TDOR": "originaldate",
    "TDRL": "releasedate",
    "TOAL": "originalalbum",
    "TOPE": "originalartist",
    "TOFN": "originalfilename",
    "TSST": "discsubtitle",
    "MVNM": "movement",
    "MVIN": "movementnumber",
}
_ID3_URL_KEYS = {"WOAR": "website", "WCOP": "license"}
_ID3_ROLE_KEYS = {"dj-mix": "djmixer", "mix": "mixer"}
_ID3V1_COMMENT = "ID3v1 Comment"  # the description mutagen gives an ID3v1 comment


_ID3_UNKNOWN_TEXT_KEYS = {"XSOP": "artistsort", "XSOA": "albumsort", "XSOT": "titlesort", "XDOR": "originaldate"}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_id3(tags, raw: RawTags) -> None:
    """``tags`` is a mutagen ID3 loaded with translate=True: v2.2/v2.3 frames already upgraded to v2.4 ones.

    Every frame that holds text people read ends up in ``raw``: text frames under their Picard name (else their
    frame id), TXXX/COMM/USLT/WXXX by description, POPM/PCNT/USER/SYLT/UFID too, and text frames mutagen does not
    know (``unknown_frames``). Binary frames (APIC aside) are skipped: PRIV, GEOB, MCDI, ETCO, CHAP...
    Text in a Latin-1 frame that is really UTF-8, and BOM-less big-endian UTF-16, are repaired with a warning.
    """
    volume_adjustments: dict[str, RVA2] = {}
    for frame in tags.values():
        frame_id = frame.FrameID
        if isinstance(frame, TXXX):
            raw.add_all(description_key(_repaired(frame, frame.desc, raw), "txxx"), _texts(frame, raw))
        elif isinstance(frame, COMM):  # before TextFrame, which it subclasses
            description = _repaired(frame, frame.desc, raw)
            if description in ("", _ID3V1_COMMENT):
                raw.add_all("comment", _texts(frame, raw))
            else:
                raw.add_all(f"comment:{description.lower()}", _texts(frame, raw))
        elif isinstance(frame, TCON):
            # resolves ID3v1 numeric references: "(17)" -> "Rock"
            raw.add_all("genre", [_repaired(frame, genre, raw) for genre in frame.genres])
        elif isinstance(frame, TimeStampTextFrame):
            raw.add_all(_ID3_TEXT_KEYS.get(frame_id, frame_id.lower()), [stamp.text for stamp in frame.text])
        elif isinstance(frame, TextFrame):
            raw.add_all(_ID3_TEXT_KEYS.get(frame_id, frame_id.lower()), _texts(frame, raw))
        elif isinstance(frame, APIC):
            if frame.mime != "-->":  # "-->" means the data is a URL to an image, not an image
                raw.pictures.append(EmbeddedPicture(frame.data, frame.mime or None, int(frame.type)))
        elif isinstance(frame, USLT):
            description = _repaired(frame, frame.desc, raw)
            raw.add("lyrics" if not description else f"lyrics:{description.lower()}", _repaired(frame, frame.text, raw))
        elif isinstance(frame, SYLT):
            description = _repaired(frame, frame.desc, raw)
            raw.add("syncedlyrics" if not description else f"syncedlyrics:{description.lower()}",
                    _synced_lyrics(frame))
        elif isinstance(frame, UFID):
            if frame.owner == MUSICBRAINZ_UFID_OWNER:
                raw.add("musicbrainz_trackid", frame.data.decode("ascii", "replace"))
            elif frame.owner:
                raw.add(f"ufid:{frame.owner.lower()}", _printable_or_hex(frame.data))
        elif isinstance(frame, POPM):  # rating 0-255 (and a play count) per player e-mail
            suffix = f":{frame.email.lower()}" if frame.email else ""
            raw.add(f"rating{suffix}", str(frame.rating))
            if getattr(frame, "count", None) is not None:
                raw.add(f"playcount{suffix}", str(frame.count))
        elif isinstance(frame, PCNT):
            raw.add("playcount", str(frame.count))
        elif isinstance(frame, USER):
            raw.add("termsofuse", _repaired(frame, frame.text, raw))
        elif isinstance(frame, PairedTextFrame):  # TIPL (involved people), TMCL (musicians)
            for role, name in frame.people:
                if frame_id == "TMCL":
                    raw.add(f"performer:{role.lower()}", name)
                else:
                    raw.add(_ID3_ROLE_KEYS.get(role.lower(), role.lower()), name)
        elif isinstance(frame, WXXX):
            raw.add(description_key(frame.desc, "wxxx"), frame.url)
        elif isinstance(frame, UrlFrame):
            raw.add(_ID3_URL_KEYS.get(frame_id, frame_id.lower()), frame.url)
        elif isinstance(frame, RVA2):
            volume_adjustments[frame.desc.lower()] = frame
        # PRIV, GEOB, MCDI, ETCO, CHAP, CTOC...: binary or player state, not catalogue tags

    for frame_data in getattr(tags, "unknown_frames", None) or ():
        _read_unknown_id3_frame(frame_data, getattr(tags, "_unknown_v2_version", 4), raw)

    # RVA2 is the ID3-native ReplayGain; the TXXX form (what taggers write today) wins when both exist.
    for scope in ("track", "album"):
        frame = volume_adjustments.get(scope)
        if frame is not None and frame.channel == 1:  # 1 = master volume
            raw.add_if_absent(f"replaygain_{scope}_gain", f"{frame.gain:.2f} dB")
            raw.add_if_absent(f"replaygain_{scope}_peak", f"{frame.peak:.6f}")


def _repaired(frame, text: str, raw: RawTags) -> str:
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


def _texts(frame, raw: RawTags) -> list[str]:
    return [_repaired(frame, text if isinstance(text, str) else str(text), raw) for text in frame.text]


def _synced_lyrics(frame: SYLT) -> str:
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
    if not body or not (frame_id.startswith("T") or frame_id in _ID3_UNKNOWN_TEXT_KEYS) or body[0] > 3:
        return
    encoding, text_bytes = body[0], body[1:]
    if encoding == Encoding.UTF16BE:
        text = text_bytes.decode("utf-16-be", "replace")
    elif encoding == Encoding.UTF16:
        text = text_bytes.decode("utf-16" if text_bytes[:2] in _UTF16_BOMS else "utf-16-le", "replace")
    elif encoding == Encoding.UTF8:
        text = decode_utf8_lenient(text_bytes)[0]
    else:
        text = text_bytes.decode("latin-1")
    key = _ID3_UNKNOWN_TEXT_KEYS.get(frame_id, frame_id.lower())
    raw.add_all(key, [value.lstrip("\ufeff") for value in text.split("\x00") if value.strip("\ufeff")])


# ---------------------------------------------------------------- MP4 / iTunes (M4A, M4B, ALAC)

_MP4_KEYS = {
    "\xa9nam": "title",
    "\xa9ART": "artist",
    "\xa9alb": "album",
    "aART": "albumartist",
    "cpil": "compilation",
    "\xa9day": "date",
    "\xa9gen": "genre",
    "\xa9wrt": "composer",
    "soar": "artistsort",
    "soaa": "albumartistsort",
    "soal": "albumsort",
    "sonm": "titlesort",
    "soco": "composersort",
    "\xa9grp": "grouping",
    "\xa9lyr": "lyrics",
    "\xa9cmt": "comment",
    "cprt": "copyright",
    "\xa9too": "encodedby",
    "tmpo": "bpm",
    "\xa9wrk": "work",
    "\xa9mvn": "movement",
    "\xa9mvi": "movementnumber",
    "\xa9mvc": "movementtotal",
    "shwm": "showmovement",
    "tvsh": "show",
    "sosn": "showsort",
    "pcst": "podcast",
    "purl": "podcasturl",
    "pgap": "gapless",
    "desc": "description",
}
_MP4_COVER_MIME = {MP4Cover.FORMAT_JPEG: "image/jpeg", MP4Cover.FORMAT_PNG: "image/png"}
_TEXT_FORMATS = (AtomDataType.UTF8, AtomDataType.IMPLICIT)


def read_mp4(tags, raw: RawTags) -> None:
    for key, values in tags.items():
        if not isinstance(values, list):  # flags (cpil, pgap, pcst, shwm) are a bare bool
            values = [values]
        if key == "covr":
            for cover in values:
                raw.pictures.append(EmbeddedPicture(bytes(cover), _MP4_COVER_MIME.get(cover.imageformat), None))
        elif key in ("trkn", "disk"):
            name = "track" if key == "trkn" else "disc"
            number, total = values[0]
            raw.add(f"{name}number", str(number))
            if total:
                raw.add(f"{name}total", str(total))
        elif key == "gnre":  # iTunes' legacy genre: ID3v1 genre index plus one
            raw.add_all("genre", TCON(text=[f"({value - 1})" for value in values]).genres)
        elif key.startswith("----:"):
            name = key.split(":", 2)[2]
            for value in values:
                if isinstance(value, MP4FreeForm) and value.dataformat not in _TEXT_FORMATS:
                    continue  # binary free-form data (iTunes' own blobs)
                text, repaired = decode_utf8_lenient(bytes(value))
                if repaired:
                    raw.warnings.append(f"invalid UTF-8 in MP4 atom {key!r}, read as Windows-1252")
                raw.add(description_key(name, "----"), text)
        else:
            tag_key = _MP4_KEYS.get(key, key.lower())
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
        tag_key = description_key(name, "----")
    else:
        tag_key = _MP4_KEYS.get(key, key.lower())
    raw.warnings.append(f"invalid UTF-8 in MP4 atom {key!r}, read as Windows-1252")
    raw.add_all(tag_key, texts)
    return True


# ---------------------------------------------------------------- ASF (WMA)

_ASF_KEYS = {
    "title": "title",
    "author": "artist",
    "wm/albumtitle": "album",
    "wm/albumartist": "albumartist",
    "wm/iscompilation": "compilation",
    "wm/tracknumber": "tracknumber",
    "wm/partofset": "discnumber",
    "wm/year": "date",
    "wm/genre": "genre",
    "wm/composer": "composer",
    "wm/writer": "lyricist",
    "wm/conductor": "conductor",
    "wm/modifiedby": "remixer",
    "wm/producer": "producer",
    "wm/contentgroupdescription": "grouping",
    "wm/subtitle": "subtitle",
    "wm/setsubtitle": "discsubtitle",
    "description": "comment",
    "wm/beatsperminute": "bpm",
    "wm/initialkey": "key",
    "wm/publisher": "label",
    "wm/catalogno": "catalognumber",
    "wm/isrc": "isrc",
    "wm/barcode": "barcode",
    "copyright": "copyright",
    "wm/lyrics": "lyrics",
    "wm/media": "media",
    "wm/encodedby": "encodedby",
    "wm/encodingsettings": "encodersettings",
    "wm/albumsortorder": "albumsort",
    "wm/albumartistsortorder": "albumartistsort",
    "wm/artistsortorder": "artistsort",
    "wm/titlesortorder": "titlesort",
    "wm/composersortorder": "composersort",
    "wm/originalreleasetime": "originaldate",
    "wm/originalreleaseyear": "originalyear",
    "wm/originalalbumtitle": "originalalbum",
    "wm/originalartist": "originalartist",
    "wm/originalfilename": "originalfilename",
    "wm/authorurl": "website",
    "wm/shareduserrating": "rating",
    "wm/artists": "artists",
    "wm/mood": "mood",
    "wm/language": "language",
    "wm/script": "script",
    "wm/work": "work",
    "wm/djmixer": "djmixer",
    "wm/mixer": "mixer",
    "wm/engineer": "engineer",
    "totaltracks": "tracktotal",
    "totaldiscs": "disctotal",
}


def read_asf(tags, raw: RawTags) -> None:
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
        tag_key = _ASF_KEYS.get(lowered)
        if tag_key is None:
            tag_key = description_key(lowered.removeprefix("wm/").replace("/", " "), lowered)
        raw.add(tag_key, str(value))
    if zero_based_track is not None and "tracknumber" not in raw.values:
        try:
            raw.add("tracknumber", str(int(zero_based_track) + 1))
        except (TypeError, ValueError):
            raw.add("wm/track", str(zero_based_track))


def _parse_asf_picture(blob) -> EmbeddedPicture | None:
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
