"""The field table: the one place a tag name is defined, with its TrackRecord field, type, how several values
join, and every format's keys and aliases; and the rules that turn a file's values into the record's fields.

The names are MusicBrainz Picard's internal tag names ("albumartist", "tracknumber", "musicbrainz_albumid",
"label"...): what most tagged libraries were written with, what beets' mediafile and Navidrome's mappings read, and
what ``TrackRecord.tags`` uses as keys, whatever the file format. A key the table does not list stays as the file
spells it, lower-cased (an ID3 frame id, a TXXX description, an MP4 atom name...). The format readers
(``tagmaps.py``) look keys up here and keep code only for structure: frames with a description or a role (TXXX,
COMM, USLT, TIPL, UFID), number pairs (MP4 trkn/disk), pictures.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker_app.metadata.cleaning import parse_decibels, parse_flag, parse_mbid, parse_position, parse_total, parse_year

if TYPE_CHECKING:
    from worker_app.metadata.record import TrackRecord

# One line per name, with the aliases other taggers write (foobar2000's "ALBUM ARTIST" and "TOTALTRACKS", "DISCC",
# APEv2's "Track"...); in a column, keys are separated by commas.
#   record field: type, for the names the catalogue keeps as fields (the others go to TrackRecord.tags):
#     text      text as tagged
#     credit    the artists as one display string ("A feat. B"): the field when the file has no list (the other
#               name of the same field, e.g. ARTISTS), else it stays in tags
#     flag      yes or no
#     position  "3", "3/12" or "3 of 12": the number, and the total into the field of the "total" line beside it
#     total     the total when the position did not hold one
#     date      the date as tagged, and the year in it; a later name fills it only if the earlier one is absent
#     mbid      a MusicBrainz identifier
#     gain      a ReplayGain gain in dB or a peak
#     A value that does not parse stays in tags under its name, with a warning.
#   values: how several values of the name join in the field:
#     first           the field holds one: the first is used, the others stay in tags, with a warning
#     all             the field is a list of them all, in file order
#     all, split /;   likewise, each value also split at these characters (ID3v2.3 and some taggers join several
#                     identifiers into one value; an identifier holds none of them)
#   ID3v2 frames as mutagen gives them (v2.2/v2.3 ids upgraded to v2.4; "TIPL:role" for an involved person's role,
#     "UFID:owner" for an identifier); COMM and USLT name their frames without a description;
#   MP4 atoms (case-sensitive); trkn and disk are number pairs, their totals go to the position's total name;
#   ASF attributes;
#   free-form names, compared without case: Vorbis comments, APEv2 items, WAV's RIFF INFO chunks (INAM, IART...),
#     and the descriptions of ID3 TXXX frames, MP4 "----:com.apple.iTunes:..." atoms and ASF "Group/Name"
#     attributes (read "group name").
# A free-form name needs no alias when it is the Picard name itself (TXXX:ARTISTS, Vorbis REPLAYGAIN_TRACK_GAIN).
# name                       | record field: type           | values         | ID3v2            | MP4        | ASF                        | free-form
TAG_MAP_TABLE = """
title                        | title: text                  | first          | TIT2             | ©nam       | Title                      | TITLE, INAM
artist                       | artists: credit              | all            | TPE1             | ©ART       | Author                     | ARTIST, IART
artists                      | artists: text                | all            |                  |            | WM/ARTISTS                 | ARTISTS
album                        | album: text                  | first          | TALB             | ©alb       | WM/AlbumTitle              | ALBUM, IPRD
albumartist                  | album_artists: credit        | all            | TPE2             | aART       | WM/AlbumArtist             | ALBUMARTIST, ALBUM ARTIST
albumartists                 | album_artists: text          | all            |                  |            |                            | ALBUMARTISTS, ALBUM ARTISTS
compilation                  | is_compilation: flag         | first          | TCMP             | cpil       | WM/IsCompilation           | COMPILATION
tracknumber                  | track_number: position       | first          | TRCK             | trkn       | WM/TrackNumber             | TRACKNUMBER, TRACK, ITRK
tracktotal                   | track_total: total           | first          |                  |            |                            | TRACKTOTAL, TOTALTRACKS, TRACKC
discnumber                   | disc_number: position        | first          | TPOS             | disk       | WM/PartOfSet               | DISCNUMBER, DISC
disctotal                    | disc_total: total            | first          |                  |            |                            | DISCTOTAL, TOTALDISCS, DISCC
date                         | date: date                   | first          | TDRC             | ©day       | WM/Year                    | DATE, ICRD
year                         | date: date                   | first          |                  |            |                            | YEAR
genre                        | genres: text                 | all            | TCON             | ©gen, gnre | WM/Genre                   | GENRE, IGNR
composer                     | composers: text              | all            | TCOM             | ©wrt       | WM/Composer                | COMPOSER, IMUS
musicbrainz_trackid          | mb_track_id: mbid            | first          | UFID:http://musicbrainz.org |            |                            | MUSICBRAINZ_TRACKID, MUSICBRAINZ TRACK ID
musicbrainz_releasetrackid   | mb_release_track_id: mbid    | first          |                  |            |                            | MUSICBRAINZ_RELEASETRACKID, MUSICBRAINZ RELEASE TRACK ID
musicbrainz_albumid          | mb_album_id: mbid            | first          |                  |            |                            | MUSICBRAINZ_ALBUMID, MUSICBRAINZ ALBUM ID
musicbrainz_releasegroupid   | mb_release_group_id: mbid    | first          |                  |            |                            | MUSICBRAINZ_RELEASEGROUPID, MUSICBRAINZ RELEASE GROUP ID
musicbrainz_artistid         | mb_artist_ids: mbid          | all, split /;  |                  |            |                            | MUSICBRAINZ_ARTISTID, MUSICBRAINZ ARTIST ID
musicbrainz_albumartistid    | mb_album_artist_ids: mbid    | all, split /;  |                  |            |                            | MUSICBRAINZ_ALBUMARTISTID, MUSICBRAINZ ALBUM ARTIST ID
replaygain_track_gain        | replaygain_track_gain: gain  | first          |                  |            |                            | REPLAYGAIN_TRACK_GAIN
replaygain_track_peak        | replaygain_track_peak: gain  | first          |                  |            |                            | REPLAYGAIN_TRACK_PEAK
replaygain_album_gain        | replaygain_album_gain: gain  | first          |                  |            |                            | REPLAYGAIN_ALBUM_GAIN
replaygain_album_peak        | replaygain_album_peak: gain  | first          |                  |            |                            | REPLAYGAIN_ALBUM_PEAK
musicbrainz_workid           |                              |                |                  |            |                            | MUSICBRAINZ WORK ID
musicbrainz_discid           |                              |                |                  |            |                            | MUSICBRAINZ DISC ID
musicbrainz_trmid            |                              |                |                  |            |                            | MUSICBRAINZ TRM ID
musicbrainz_originalalbumid  |                              |                |                  |            |                            | MUSICBRAINZ ORIGINAL ALBUM ID
musicbrainz_originalartistid |                              |                |                  |            |                            | MUSICBRAINZ ORIGINAL ARTIST ID
releasestatus                |                              |                |                  |            |                            | MUSICBRAINZ_ALBUMSTATUS, MUSICBRAINZ ALBUM STATUS
releasetype                  |                              |                |                  |            |                            | MUSICBRAINZ_ALBUMTYPE, MUSICBRAINZ ALBUM TYPE
releasecountry               |                              |                |                  |            |                            | MUSICBRAINZ ALBUM RELEASE COUNTRY, ICNT
comment:musicbrainz album comment |                              |                |                  |            |                            | MUSICBRAINZ ALBUM COMMENT
acoustid_id                  |                              |                |                  |            |                            | ACOUSTID ID
acoustid_fingerprint         |                              |                |                  |            |                            | ACOUSTID FINGERPRINT
musicip_puid                 |                              |                |                  |            |                            | MUSICIP PUID
musicip_fingerprint          |                              |                |                  |            |                            | MUSICMAGIC FINGERPRINT
artistsort                   |                              |                | TSOP, XSOP       | soar       | WM/ArtistSortOrder         |
albumsort                    |                              |                | TSOA, XSOA       | soal       | WM/AlbumSortOrder          |
titlesort                    |                              |                | TSOT, XSOT       | sonm       | WM/TitleSortOrder          |
albumartistsort              |                              |                | TSO2             | soaa       | WM/AlbumArtistSortOrder    |
composersort                 |                              |                | TSOC             | soco       | WM/ComposerSortOrder       |
label                        |                              |                | TPUB             |            | WM/Publisher               |
catalognumber                |                              |                |                  |            | WM/CatalogNo               |
isrc                         |                              |                | TSRC             |            | WM/ISRC                    |
barcode                      |                              |                |                  |            | WM/Barcode                 |
bpm                          |                              |                | TBPM             | tmpo       | WM/BeatsPerMinute          |
copyright                    |                              |                | TCOP             | cprt       | Copyright                  | ICOP
encodedby                    |                              |                | TENC             | ©too       | WM/EncodedBy               | IENC
encodersettings              |                              |                | TSSE             |            | WM/EncodingSettings        |
lyricist                     |                              |                | TEXT             |            | WM/Writer                  |
conductor                    |                              |                | TPE3             |            | WM/Conductor               |
remixer                      |                              |                | TPE4             |            | WM/ModifiedBy              | MIXARTIST
producer                     |                              |                |                  |            | WM/Producer                | IPRO
engineer                     |                              |                |                  |            | WM/Engineer                | IENG
djmixer                      |                              |                | TIPL:dj-mix      |            | WM/DJMixer                 |
mixer                        |                              |                | TIPL:mix         |            | WM/Mixer                   |
grouping                     |                              |                | TIT1, GRP1       | ©grp       | WM/ContentGroupDescription |
subtitle                     |                              |                | TIT3             |            | WM/SubTitle                |
discsubtitle                 |                              |                | TSST             |            | WM/SetSubTitle             |
key                          |                              |                | TKEY             |            | WM/InitialKey              | INITIALKEY
language                     |                              |                | TLAN             |            | WM/Language                | ILNG
script                       |                              |                |                  |            | WM/Script                  |
media                        |                              |                | TMED             |            | WM/Media                   | IMED
mood                         |                              |                | TMOO             |            | WM/Mood                    |
originaldate                 |                              |                | TDOR, XDOR       |            | WM/OriginalReleaseTime     |
originalyear                 |                              |                |                  |            | WM/OriginalReleaseYear     |
releasedate                  |                              |                | TDRL             |            |                            |
originalalbum                |                              |                | TOAL             |            | WM/OriginalAlbumTitle      |
originalartist               |                              |                | TOPE             |            | WM/OriginalArtist          | ORIGINAL ARTIST
originalfilename             |                              |                | TOFN             |            | WM/OriginalFilename        |
work                         |                              |                |                  | ©wrk       | WM/Work                    |
movement                     |                              |                | MVNM             | ©mvn       |                            |
movementnumber               |                              |                | MVIN             | ©mvi       |                            |
movementtotal                |                              |                |                  | ©mvc       |                            |
showmovement                 |                              |                |                  | shwm       |                            |
website                      |                              |                | WOAR             |            | WM/AuthorURL               | WEBLINK
license                      |                              |                | WCOP             |            |                            |
comment                      |                              |                | COMM             | ©cmt       | Description                | ICMT
lyrics                       |                              |                | USLT             | ©lyr       | WM/Lyrics                  |
rating                       |                              |                |                  |            | WM/SharedUserRating        |
show                         |                              |                |                  | tvsh       |                            |
showsort                     |                              |                |                  | sosn       |                            |
podcast                      |                              |                |                  | pcst       |                            |
gapless                      |                              |                |                  | pgap       |                            |
description                  |                              |                |                  | desc       |                            |
podcasturl                   |                              |                |                  | purl       |                            |
"""

_COLUMNS = ("id3", "mp4", "asf", "free")
_CASE_SENSITIVE = frozenset({"id3", "mp4"})
FIELD_TYPES = frozenset({"text", "credit", "flag", "position", "total", "date", "mbid", "gain"})
_LIST_TYPES = frozenset({"text", "credit", "mbid"})  # the types whose values may be "all"


@dataclass(frozen=True)
class FieldKey:
    """A name whose values become a TrackRecord field."""

    key: str  # the Picard name
    field: str  # the TrackRecord attribute
    type: str  # how one value becomes the field: one of FIELD_TYPES
    every_value: bool  # "all": the field is a list of every value; else the first
    split: str = ""  # characters that also separate values inside one


def _parse_tag_map(table: str) -> tuple[dict[str, dict[str, str]], tuple[FieldKey, ...]]:
    """Per column, each key (lower-cased where the format ignores case) -> its name; and the names that are record
    fields, in table order. A key under two names, an unknown type, or values a type cannot have, is a mistake in
    the table, refused at import."""
    maps: dict[str, dict[str, str]] = {column: {} for column in _COLUMNS}
    field_keys = []
    for line in table.strip().splitlines():
        name, record_field, values, *cells = (cell.strip() for cell in line.split("|"))
        if len(cells) != len(_COLUMNS):
            raise ValueError(f"tag map line {line!r}: {len(cells) + 3} columns, not {len(_COLUMNS) + 3}")
        if record_field:
            attribute, _, field_type = (part.strip() for part in record_field.partition(":"))
            how, _, split = (part.strip() for part in values.partition(","))
            if field_type not in FIELD_TYPES:
                raise ValueError(f"tag map line {line!r}: unknown type {field_type!r}")
            if how not in ("first", "all") or (how == "all" and field_type not in _LIST_TYPES) or (
                    split and (how != "all" or not split.startswith("split "))):
                raise ValueError(f"tag map line {line!r}: values {values!r} do not suit a {field_type} field")
            field_keys.append(FieldKey(name, attribute, field_type, how == "all", split.removeprefix("split ")))
        elif values:
            raise ValueError(f"tag map line {line!r}: values for a name that is no field")
        for column, cell in zip(_COLUMNS, cells, strict=True):
            for key in filter(None, (key.strip() for key in cell.split(","))):
                lookup = key if column in _CASE_SENSITIVE else key.lower()
                if maps[column].setdefault(lookup, name) != name:
                    raise ValueError(f"tag map: {column} key {key!r} listed for {maps[column][lookup]} and {name}")
    return maps, tuple(field_keys)


TAG_MAP, FIELD_KEYS = _parse_tag_map(TAG_MAP_TABLE)
ID3_KEYS, MP4_KEYS, ASF_KEYS, FREE_KEYS = (TAG_MAP[column] for column in _COLUMNS)
# The names that become fields, and the names that fill the same field: a tag format that has one of them in a
# file decides that field alone (see tagmaps.merge_missing).
FIELD_NAMES = frozenset(field_key.key for field_key in FIELD_KEYS)
SAME_FIELD = {field_key.key: frozenset(other.key for other in FIELD_KEYS if other.field == field_key.field)
              for field_key in FIELD_KEYS}
# A position's name -> the name of its total (tracknumber -> tracktotal): the total line whose field is the
# position's, "_number" read "_total".
TOTAL_NAME = {position.key: total.key for position in FIELD_KEYS if position.type == "position"
              for total in FIELD_KEYS
              if total.type == "total" and total.field == position.field.replace("_number", "_total")}


def free_form_key(name: str, key_without_name: str = "") -> str:
    """The name of a free-form key (a Vorbis comment, an APEv2 item, a TXXX/MP4/ASF description)."""
    lowered = name.strip().lower()
    return FREE_KEYS.get(lowered, lowered) or key_without_name


_PARSERS: dict[str, Callable[[str, str, list[str]], object]] = {
    "flag": parse_flag, "mbid": parse_mbid, "gain": parse_decibels}


def fill_fields(record: TrackRecord, values: dict[str, list[str]], warnings: list[str]) -> None:
    """Move each field's values out of ``values`` (a file's tags by name), as the table says, in table order; what
    is left is the record's tags. A value that cannot become its field (track "A1", gain "loud") stays in
    ``values`` under its name, so the catalogue loses nothing the file says."""
    credits: dict[str, tuple[str, list[str]]] = {}  # field -> (name, values) of a display credit ("A feat. B")

    def take_first(key: str) -> str | None:
        items = values.get(key)
        if not items:
            return None
        if len(items) == 1:
            del values[key]
        else:  # a single-valued field: keep the first, leave the others visible in tags
            warnings.append(f"{key} has {len(items)} values, the first is used")
            values[key] = items[1:]
        return items[0]

    def keep(key: str, text: str) -> None:
        values.setdefault(key, []).insert(0, text)

    for entry in FIELD_KEYS:
        key, field_name = entry.key, entry.field
        if entry.every_value:
            if entry.type == "credit":
                credit = values.pop(key, [])
                credits[field_name] = (key, credit)
                setattr(record, field_name, credit)
            elif entry.type == "mbid":
                setattr(record, field_name, _identifiers(values, key, entry.split, warnings))
            else:
                items = values.pop(key, [])
                if items:
                    # Picard writes a display string to ARTIST and the list to ARTISTS: the list wins, and the
                    # display string stays in tags, the only place the catalogue has it.
                    credit_key, credit = credits.get(field_name, (key, []))
                    if credit and credit != items:
                        values[credit_key] = credit
                    setattr(record, field_name, items)
        elif entry.type == "date":
            if record.date is None:
                text = take_first(key)
                if text is not None:
                    record.date, record.year = text, parse_year(text, warnings)
        elif entry.type == "total":
            text = take_first(key)
            if getattr(record, field_name) is None and text is not None:
                setattr(record, field_name, parse_total(text, key, warnings))
        else:
            text = take_first(key)
            if text is None:
                continue
            if entry.type == "text":
                setattr(record, field_name, text)
            elif entry.type == "position":
                number, total, understood = parse_position(text, key, warnings)
                if not understood:
                    keep(key, text)
                setattr(record, field_name, number)
                setattr(record, field_name.replace("_number", "_total"), total)
            else:
                value = _PARSERS[entry.type](text, key, warnings)
                if value is None:
                    keep(key, text)
                setattr(record, field_name, bool(value) if entry.type == "flag" else value)


def _identifiers(values: dict[str, list[str]], key: str, separators: str, warnings: list[str]) -> list[str]:
    identifiers, rejected = [], []
    for item in values.pop(key, []):
        for separator in separators[1:]:
            item = item.replace(separator, separators[:1])
        for part in item.split(separators[:1]) if separators else [item]:
            if part.strip():
                identifier = parse_mbid(part, key, warnings)
                if identifier is None:
                    rejected.append(part.strip())
                else:
                    identifiers.append(identifier)
    if rejected:
        values[key] = rejected
    return identifiers
