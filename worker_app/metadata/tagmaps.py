"""Each tag family's keys, translated to one vocabulary: MusicBrainz Picard's internal tag names.

Picard's names ("albumartist", "tracknumber", "musicbrainz_albumid", "label", ...) are what most tagged libraries
were written with, and they are what ``TrackRecord.tags`` uses as keys, whatever the file format. A key Picard does
not know stays as the file spells it, lower-cased (an ID3 frame id, a TXXX description, an MP4 atom name, ...).
Source of the mapping: Picard's documentation, appendix "Tag Mapping".
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
    MAX_TAG_VALUE_BYTES,
    clean_key,
    clean_text,
    decode_utf8_lenient,
    repair_latin1_mojibake,
    repair_utf16_byte_order,
)
from worker_app.metadata.covers import APE_PICTURE_TYPES, MIME_BY_EXTENSION, MP4_COVER_MIME, EmbeddedPicture

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


MAX_KEY_BYTES = 255
_GOOD_KEYS: set[str] = set()  # keys already seen fit for a JSON key as they are (a cache: checking costs more)


def merge_missing(primary: RawTags, secondary: RawTags) -> None:
    """Add to ``primary`` the keys only ``secondary`` has (a key, or any key of the same field, present in
    ``primary`` wins whole); pictures too, when ``primary`` has none."""
    present = set(primary.values)
    present |= {other for key in present if key in _SAME_FIELD for other in _SAME_FIELD[key]}
    for key, values in secondary.values.items():
        if key not in present:
            primary.values[key] = values
    if not primary.pictures:
        primary.pictures.extend(secondary.pictures)


# The tag map: every key a tag format may use for one thing, under the name the catalogue files it by (MusicBrainz
# Picard's internal tag names: the vocabulary of Picard's tag map, which beets' mediafile and Navidrome's
# mappings.yaml also read), with the aliases other taggers write (foobar2000's "ALBUM ARTIST" and "TOTALTRACKS",
# "DISCC", APEv2's "Track"...), and for the names that become TrackRecord fields, which field and how. One line per
# name; in a column, aliases are separated by commas:
#   record field: kind, for the names the catalogue keeps as fields (the others go to TrackRecord.tags):
#     text      one line of text; a second value stays in tags, with a warning
#     list      every value (genres, composers; the list of artists: ARTISTS wins over ARTIST)
#     credit    the artists as one display string ("A feat. B"): the field when the file has no list, else in tags
#     flag      yes or no
#     position  "3", "3/12" or "3 of 12": the number, and the total into the matching *_total field
#     total     the total when the position did not hold one
#     date      the date as tagged, and the year in it; a later name fills it only if the earlier one is absent
#     mbid      one MusicBrainz identifier; mbids: several, also split at "/" and ";" (ID3v2.3's joined values)
#     gain      a ReplayGain gain in dB or a peak
#     A value that does not parse stays in tags under its name, with a warning.
#   ID3v2 frames as mutagen gives them (v2.2/v2.3 ids upgraded to v2.4; "TIPL:role" for an involved person's role,
#     "UFID:owner" for an identifier);
#   MP4 atoms (case-sensitive);
#   ASF attributes;
#   free-form names, compared without case: Vorbis comments, APEv2 items, WAV's RIFF INFO chunks (INAM, IART...),
#     and the descriptions of ID3 TXXX frames, MP4 "----:com.apple.iTunes:..." atoms and ASF "Group/Name"
#     attributes (read "group name").
# A key no line lists is kept under its own name, lower-cased: a free-form name needs no alias when it is the Picard
# name itself (TXXX:ARTISTS, Vorbis REPLAYGAIN_TRACK_GAIN).
# name                       | record field: kind          | ID3v2            | MP4  | ASF                        | free-form
TAG_MAP_TABLE = """
title                        | title: text                 | TIT2             | ©nam | Title                      | TITLE, INAM
artist                       | artists: credit             | TPE1             | ©ART | Author                     | ARTIST, IART
artists                      | artists: list               |                  |      | WM/ARTISTS                 | ARTISTS
album                        | album: text                 | TALB             | ©alb | WM/AlbumTitle              | ALBUM, IPRD
albumartist                  | album_artists: credit       | TPE2             | aART | WM/AlbumArtist             | ALBUMARTIST, ALBUM ARTIST
albumartists                 | album_artists: list         |                  |      |                            | ALBUMARTISTS, ALBUM ARTISTS
compilation                  | is_compilation: flag        | TCMP             | cpil | WM/IsCompilation           | COMPILATION
tracknumber                  | track_number: position      | TRCK             |      | WM/TrackNumber             | TRACKNUMBER, TRACK, ITRK
tracktotal                   | track_total: total          |                  |      |                            | TRACKTOTAL, TOTALTRACKS, TRACKC
discnumber                   | disc_number: position       | TPOS             |      | WM/PartOfSet               | DISCNUMBER, DISC
disctotal                    | disc_total: total           |                  |      |                            | DISCTOTAL, TOTALDISCS, DISCC
date                         | date: date                  | TDRC             | ©day | WM/Year                    | DATE, ICRD
year                         | date: date                  |                  |      |                            | YEAR
genre                        | genres: list                | TCON             | ©gen | WM/Genre                   | GENRE, IGNR
composer                     | composers: list             | TCOM             | ©wrt | WM/Composer                | COMPOSER, IMUS
musicbrainz_trackid          | mb_track_id: mbid           | UFID:http://musicbrainz.org |      |                            | MUSICBRAINZ_TRACKID, MUSICBRAINZ TRACK ID
musicbrainz_releasetrackid   | mb_release_track_id: mbid   |                  |      |                            | MUSICBRAINZ_RELEASETRACKID, MUSICBRAINZ RELEASE TRACK ID
musicbrainz_albumid          | mb_album_id: mbid           |                  |      |                            | MUSICBRAINZ_ALBUMID, MUSICBRAINZ ALBUM ID
musicbrainz_releasegroupid   | mb_release_group_id: mbid   |                  |      |                            | MUSICBRAINZ_RELEASEGROUPID, MUSICBRAINZ RELEASE GROUP ID
musicbrainz_artistid         | mb_artist_ids: mbids        |                  |      |                            | MUSICBRAINZ_ARTISTID, MUSICBRAINZ ARTIST ID
musicbrainz_albumartistid    | mb_album_artist_ids: mbids  |                  |      |                            | MUSICBRAINZ_ALBUMARTISTID, MUSICBRAINZ ALBUM ARTIST ID
replaygain_track_gain        | replaygain_track_gain: gain |                  |      |                            | REPLAYGAIN_TRACK_GAIN
replaygain_track_peak        | replaygain_track_peak: gain |                  |      |                            | REPLAYGAIN_TRACK_PEAK
replaygain_album_gain        | replaygain_album_gain: gain |                  |      |                            | REPLAYGAIN_ALBUM_GAIN
replaygain_album_peak        | replaygain_album_peak: gain |                  |      |                            | REPLAYGAIN_ALBUM_PEAK
musicbrainz_workid           |                             |                  |      |                            | MUSICBRAINZ WORK ID
musicbrainz_discid           |                             |                  |      |                            | MUSICBRAINZ DISC ID
musicbrainz_trmid            |                             |                  |      |                            | MUSICBRAINZ TRM ID
musicbrainz_originalalbumid  |                             |                  |      |                            | MUSICBRAINZ ORIGINAL ALBUM ID
musicbrainz_originalartistid |                             |                  |      |                            | MUSICBRAINZ ORIGINAL ARTIST ID
releasestatus                |                             |                  |      |                            | MUSICBRAINZ_ALBUMSTATUS, MUSICBRAINZ ALBUM STATUS
releasetype                  |                             |                  |      |                            | MUSICBRAINZ_ALBUMTYPE, MUSICBRAINZ ALBUM TYPE
releasecountry               |                             |                  |      |                            | MUSICBRAINZ ALBUM RELEASE COUNTRY, ICNT
comment:musicbrainz album comment |                             |                  |      |                            | MUSICBRAINZ ALBUM COMMENT
acoustid_id                  |                             |                  |      |                            | ACOUSTID ID
acoustid_fingerprint         |                             |                  |      |                            | ACOUSTID FINGERPRINT
musicip_puid                 |                             |                  |      |                            | MUSICIP PUID
musicip_fingerprint          |                             |                  |      |                            | MUSICMAGIC FINGERPRINT
artistsort                   |                             | TSOP, XSOP       | soar | WM/ArtistSortOrder         |
albumsort                    |                             | TSOA, XSOA       | soal | WM/AlbumSortOrder          |
titlesort                    |                             | TSOT, XSOT       | sonm | WM/TitleSortOrder          |
albumartistsort              |                             | TSO2             | soaa | WM/AlbumArtistSortOrder    |
composersort                 |                             | TSOC             | soco | WM/ComposerSortOrder       |
label                        |                             | TPUB             |      | WM/Publisher               |
catalognumber                |                             |                  |      | WM/CatalogNo               |
isrc                         |                             | TSRC             |      | WM/ISRC                    |
barcode                      |                             |                  |      | WM/Barcode                 |
bpm                          |                             | TBPM             | tmpo | WM/BeatsPerMinute          |
copyright                    |                             | TCOP             | cprt | Copyright                  | ICOP
encodedby                    |                             | TENC             | ©too | WM/EncodedBy               | IENC
encodersettings              |                             | TSSE             |      | WM/EncodingSettings        |
lyricist                     |                             | TEXT             |      | WM/Writer                  |
conductor                    |                             | TPE3             |      | WM/Conductor               |
remixer                      |                             | TPE4             |      | WM/ModifiedBy              | MIXARTIST
producer                     |                             |                  |      | WM/Producer                | IPRO
engineer                     |                             |                  |      | WM/Engineer                | IENG
djmixer                      |                             | TIPL:dj-mix      |      | WM/DJMixer                 |
mixer                        |                             | TIPL:mix         |      | WM/Mixer                   |
grouping                     |                             | TIT1, GRP1       | ©grp | WM/ContentGroupDescription |
subtitle                     |                             | TIT3             |      | WM/SubTitle                |
discsubtitle                 |                             | TSST             |      | WM/SetSubTitle             |
key                          |                             | TKEY             |      | WM/InitialKey              | INITIALKEY
language                     |                             | TLAN             |      | WM/Language                | ILNG
script                       |                             |                  |      | WM/Script                  |
media                        |                             | TMED             |      | WM/Media                   | IMED
mood                         |                             | TMOO             |      | WM/Mood                    |
originaldate                 |                             | TDOR, XDOR       |      | WM/OriginalReleaseTime     |
originalyear                 |                             |                  |      | WM/OriginalReleaseYear     |
releasedate                  |                             | TDRL             |      |                            |
originalalbum                |                             | TOAL             |      | WM/OriginalAlbumTitle      |
originalartist               |                             | TOPE             |      | WM/OriginalArtist          | ORIGINAL ARTIST
originalfilename             |                             | TOFN             |      | WM/OriginalFilename        |
work                         |                             |                  | ©wrk | WM/Work                    |
movement                     |                             | MVNM             | ©mvn |                            |
movementnumber               |                             | MVIN             | ©mvi |                            |
movementtotal                |                             |                  | ©mvc |                            |
showmovement                 |                             |                  | shwm |                            |
website                      |                             | WOAR             |      | WM/AuthorURL               | WEBLINK
license                      |                             | WCOP             |      |                            |
comment                      |                             |                  | ©cmt | Description                | ICMT
lyrics                       |                             |                  | ©lyr | WM/Lyrics                  |
rating                       |                             |                  |      | WM/SharedUserRating        |
show                         |                             |                  | tvsh |                            |
showsort                     |                             |                  | sosn |                            |
podcast                      |                             |                  | pcst |                            |
gapless                      |                             |                  | pgap |                            |
description                  |                             |                  | desc |                            |
podcasturl                   |                             |                  | purl |                            |
"""

_COLUMNS = ("id3", "mp4", "asf", "free")
_CASE_SENSITIVE = frozenset({"id3", "mp4"})
FIELD_KINDS = frozenset({"text", "list", "credit", "flag", "position", "total", "date", "mbid", "mbids", "gain"})


@dataclass(frozen=True)
class FieldKey:
    """A name whose values become a TrackRecord field."""

    key: str  # the Picard name
    field: str  # the TrackRecord attribute
    kind: str  # how its values become the field: one of FIELD_KINDS


def _parse_tag_map(table: str) -> tuple[dict[str, dict[str, str]], tuple[FieldKey, ...]]:
    """Per column, each key (lower-cased where the format ignores case) -> its name; and the names that are record
    fields, in table order. A key under two names, or an unknown kind, is a mistake in the table, refused at import."""
    maps: dict[str, dict[str, str]] = {column: {} for column in _COLUMNS}
    field_keys = []
    for line in table.strip().splitlines():
        name, record_field, *cells = (cell.strip() for cell in line.split("|"))
        if len(cells) != len(_COLUMNS):
            raise ValueError(f"tag map line {line!r}: {len(cells) + 2} columns, not {len(_COLUMNS) + 2}")
        if record_field:
            attribute, _, kind = (part.strip() for part in record_field.partition(":"))
            if kind not in FIELD_KINDS:
                raise ValueError(f"tag map line {line!r}: unknown kind {kind!r}")
            field_keys.append(FieldKey(name, attribute, kind))
        for column, cell in zip(_COLUMNS, cells, strict=True):
            for key in filter(None, (key.strip() for key in cell.split(","))):
                lookup = key if column in _CASE_SENSITIVE else key.lower()
                if maps[column].setdefault(lookup, name) != name:
                    raise ValueError(f"tag map: {column} key {key!r} listed for {maps[column][lookup]} and {name}")
    return maps, tuple(field_keys)


TAG_MAP, FIELD_KEYS = _parse_tag_map(TAG_MAP_TABLE)
_ID3_KEYS, _MP4_KEYS, _ASF_KEYS, _FREE_KEYS = (TAG_MAP[column] for column in _COLUMNS)
# The names that become fields (one line of text each), and the names that fill the same field: a tag format that
# has one of them in a file decides that field alone (see merge_missing).
FIELD_NAMES = frozenset(field_key.key for field_key in FIELD_KEYS)
_SAME_FIELD = {field_key.key: frozenset(other.key for other in FIELD_KEYS if other.field == field_key.field)
               for field_key in FIELD_KEYS}


def free_form_key(name: str, key_without_name: str = "") -> str:
    """The name of a free-form key (a Vorbis comment, an APEv2 item, a TXXX/MP4/ASF description)."""
    lowered = name.strip().lower()
    return _FREE_KEYS.get(lowered, lowered) or key_without_name


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
            # "<file name>\0<image bytes>" by convention (foobar2000, mp3tag, Picard)
            file_name, separator, data = payload.partition(b"\x00")
            if not separator:
                file_name, data = b"", payload
            suffix = file_name.decode("latin-1").rpartition(".")[2].lower()
            raw.pictures.append(EmbeddedPicture(data, MIME_BY_EXTENSION.get(suffix), APE_PICTURE_TYPES.get(lowered, 0)))
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

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


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
                raw.add_all("comment", _texts(frame, raw))
            else:
                raw.add_all(f"comment:{description.lower()}", _texts(frame, raw))
        elif isinstance(frame, TCON):
            # resolves ID3v1 numeric references: "(17)" -> "Rock"
            raw.add_all("genre", [_repaired(frame, genre, raw) for genre in fields.genres])
        elif isinstance(frame, TimeStampTextFrame):
            raw.add_all(_ID3_KEYS.get(frame_id, frame_id.lower()), [stamp.text for stamp in fields.text])
        elif isinstance(frame, TextFrame):
            raw.add_all(_ID3_KEYS.get(frame_id, frame_id.lower()), _texts(frame, raw))
        elif isinstance(frame, APIC):
            if fields.mime != "-->":  # "-->" means the data is a URL to an image, not an image
                raw.pictures.append(EmbeddedPicture(fields.data, fields.mime or None, int(fields.type)))
        elif isinstance(frame, USLT):
            description = _repaired(frame, fields.desc, raw)
            raw.add("lyrics" if not description else f"lyrics:{description.lower()}", _repaired(frame, fields.text, raw))
        elif isinstance(frame, SYLT):
            description = _repaired(frame, fields.desc, raw)
            raw.add("syncedlyrics" if not description else f"syncedlyrics:{description.lower()}",
                    _synced_lyrics(frame))
        elif isinstance(frame, UFID):
            if fields.owner:
                key = _ID3_KEYS.get(f"UFID:{fields.owner}", f"ufid:{fields.owner.lower()}")
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
                    raw.add(_ID3_KEYS.get(f"TIPL:{role.lower()}", role.lower()), name)
        elif isinstance(frame, WXXX):
            raw.add(free_form_key(fields.desc, "wxxx"), fields.url)
        elif isinstance(frame, UrlFrame):
            raw.add(_ID3_KEYS.get(frame_id, frame_id.lower()), fields.url)
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
    if not body or not (frame_id.startswith("T") or frame_id in _ID3_KEYS) or body[0] > 3:
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
    key = _ID3_KEYS.get(frame_id, frame_id.lower())
    raw.add_all(key, [value.lstrip("\ufeff") for value in text.split("\x00") if value.strip("\ufeff")])


# ---------------------------------------------------------------- MP4 / iTunes (M4A, M4B, ALAC)

_TEXT_FORMATS = (AtomDataType.UTF8, AtomDataType.IMPLICIT)


def read_mp4(tags: MP4Tags, raw: RawTags) -> None:
    for key, values in tags.items():
        if not isinstance(values, list):  # flags (cpil, pgap, pcst, shwm) are a bare bool
            values = [values]
        if key == "covr":
            for cover in values:
                raw.pictures.append(EmbeddedPicture(bytes(cover), MP4_COVER_MIME.get(cover.imageformat), None))
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
                raw.add(free_form_key(name, "----"), text)
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
        tag_key = free_form_key(name, "----")
    else:
        tag_key = _MP4_KEYS.get(key, key.lower())
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
        tag_key = _ASF_KEYS.get(lowered)
        if tag_key is None:  # "MusicBrainz/Album Id" is the description "MusicBrainz Album Id"
            tag_key = free_form_key(lowered.removeprefix("wm/").replace("/", " "), lowered)
        raw.add(tag_key, str(value))
    if zero_based_track is not None and "tracknumber" not in raw.values:
        try:
            raw.add("tracknumber", str(int(zero_based_track) + 1))
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
