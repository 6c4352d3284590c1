"""The extractor: one audio file in, one ``TrackRecord`` out, or ``UnreadableFileError`` with a reason for people.

mutagen's parsing is the pipeline's throughput limit (see shared/performance-facts.md), so this module asks mutagen
for one parse per file: the class is chosen from the file's extension (``mutagen.File`` would read the header and
score every format first), and content sniffing is only the fallback for a wrong or missing extension.
"""
from __future__ import annotations

import os
import stat
from typing import Any

import mutagen
from mutagen.aac import AAC
from mutagen.ac3 import AC3
from mutagen.aiff import AIFF
from mutagen.apev2 import APENoHeaderError, APEv2
from mutagen.asf import ASF
from mutagen.dsdiff import DSDIFF
from mutagen.dsf import DSF
from mutagen.flac import FLAC, StreamInfo as FLACStreamInfo
from mutagen.monkeysaudio import MonkeysAudio
from mutagen.mp3 import MP3, MPEGInfo
from mutagen.mp4 import MP4
from mutagen.musepack import Musepack
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.optimfrog import OptimFROG
from mutagen.trueaudio import TrueAudio
from mutagen.wave import WAVE
from mutagen.wavpack import WavPack

from worker_app.metadata.cleaning import (
    parse_decibels,
    parse_flag,
    parse_position,
    parse_total,
    parse_year,
    positive_number,
)
from worker_app.metadata.covers import choose_cover, cover_from_bytes, find_folder_cover, read_folder_cover
from worker_app.metadata.record import TrackRecord, UnreadableFileError
from worker_app.metadata.tagmaps import RawTags, read_apev2, read_asf, read_id3, read_mp4, read_vorbis_comments

__all__ = ["read_track", "read_stream_info", "read_folder_cover", "find_folder_cover", "AUDIO_EXTENSIONS"]

try:  # Celery's soft time limit must stop a batch, not become one more unreadable file
    from billiard.exceptions import SoftTimeLimitExceeded as _SoftTimeLimitExceeded
except ImportError:  # pragma: no cover - billiard comes with celery
    class _SoftTimeLimitExceeded(Exception):
        pass


# TrackRecord.format (the container) and a label for messages, by mutagen class.
_FORMATS: dict[type, tuple[str, str]] = {
    MP3: ("mp3", "MP3"),
    FLAC: ("flac", "FLAC"),
    OggVorbis: ("ogg", "Ogg Vorbis"),
    OggFLAC: ("ogg", "Ogg FLAC"),
    OggSpeex: ("ogg", "Ogg Speex"),
    OggOpus: ("opus", "Opus"),
    MP4: ("m4a", "MP4/M4A"),
    ASF: ("wma", "WMA/ASF"),
    MonkeysAudio: ("ape", "Monkey's Audio"),
    WavPack: ("wavpack", "WavPack"),
    AIFF: ("aiff", "AIFF"),
    WAVE: ("wav", "WAV"),
    DSF: ("dsf", "DSF"),
    DSDIFF: ("dff", "DSDIFF"),
    Musepack: ("musepack", "Musepack"),
    TrueAudio: ("tta", "True Audio"),
    OptimFROG: ("optimfrog", "OptimFROG"),
    AAC: ("aac", "ADTS AAC"),
    AC3: ("ac3", "AC-3"),
}

_CLASS_BY_EXTENSION: dict[str, type] = {
    ".mp3": MP3, ".mp2": MP3, ".mpga": MP3,
    ".flac": FLAC,
    ".ogg": OggVorbis, ".oga": OggVorbis,
    ".opus": OggOpus,
    ".spx": OggSpeex,
    ".m4a": MP4, ".m4b": MP4, ".mp4": MP4, ".m4p": MP4, ".alac": MP4,
    ".wma": ASF, ".asf": ASF,
    ".ape": MonkeysAudio,
    ".wv": WavPack,
    ".aif": AIFF, ".aiff": AIFF, ".aifc": AIFF,
    ".wav": WAVE,
    ".dsf": DSF,
    ".dff": DSDIFF,
    ".mpc": Musepack, ".mp+": Musepack, ".mpp": Musepack,
    ".tta": TrueAudio,
    ".ofr": OptimFROG, ".ofs": OptimFROG,
    ".aac": AAC,
    ".ac3": AC3,
}
AUDIO_EXTENSIONS = frozenset(_CLASS_BY_EXTENSION)

# Sniffing candidates: the formats above. Not mutagen.File's whole default list: its ID3FileType accepts any junk
# behind an ID3 tag, and MIDI or video-only Ogg are not catalogue audio.
_SNIFFABLE_CLASSES = tuple(_FORMATS)

_LOSSLESS_CODECS = frozenset({"flac", "alac", "wavpack", "ape", "tta", "optimfrog", "pcm", "pcm_float", "dsd"})
_WAVE_CODECS = {1: "pcm", 3: "pcm_float", 0xFFFE: "pcm", 6: "alaw", 7: "mulaw", 0x55: "mp3", 2: "adpcm"}
_MPEG_LAYER_CODECS = {1: "mp1", 2: "mp2", 3: "mp3"}
_OPUS_OUTPUT_RATE = 48000  # Opus always decodes at 48 kHz; mutagen does not expose the (informative) input rate


def read_track(path: str | os.PathLike, stat_result: os.stat_result | None = None) -> TrackRecord:
    """Everything the catalogue keeps about one file. Raises only UnreadableFileError.

    ``stat_result`` saves a stat call when the scanner already has it (from ``os.scandir``).
    """
    path_text = os.fsdecode(path)
    try:
        return _read_track(path_text, stat_result)
    except (UnreadableFileError, _SoftTimeLimitExceeded):
        raise
    except Exception as error:  # a bug in mutagen or here must cost one file, not the batch
        raise UnreadableFileError(f"unexpected {type(error).__name__} while reading: {error}") from error


def read_stream_info(path: str | os.PathLike) -> dict[str, Any]:
    """Only the stream facts: format, codec, duration_seconds, bitrate, sample_rate, channels, bits_per_sample.

    Skips the tags where that is cheap (MP3: the MPEG header search skips ID3; FLAC: the first block is
    STREAMINFO); other formats are parsed whole. Raises only UnreadableFileError.
    """
    path_text = os.fsdecode(path)
    try:
        file_stat = _stat(path_text)
        _check_regular_nonempty(file_stat)
        warnings: list[str] = []
        extension = os.path.splitext(path_text)[1].lower()
        info = None
        audio_class = _CLASS_BY_EXTENSION.get(extension)
        if audio_class is MP3 or audio_class is FLAC:
            info = _read_bare_stream_info(path_text, audio_class)
        if info is None:
            audio = _load(path_text, warnings)
            audio_class, info = type(audio), audio.info
        return {"format": _FORMATS[audio_class][0],
                **_stream_fields(audio_class, info, file_stat.st_size, warnings)}
    except (UnreadableFileError, _SoftTimeLimitExceeded):
        raise
    except Exception as error:
        raise UnreadableFileError(f"unexpected {type(error).__name__} while reading: {error}") from error


def _read_track(path: str, stat_result: os.stat_result | None) -> TrackRecord:
    file_stat = stat_result if stat_result is not None else _stat(path)
    _check_regular_nonempty(file_stat)
    warnings: list[str] = []
    audio = _load(path, warnings)
    audio_class = type(audio)
    record = TrackRecord(
        path=path,
        size_bytes=file_stat.st_size,
        mtime=file_stat.st_mtime,
        format=_FORMATS[audio_class][0],
        warnings=warnings,
        **_stream_fields(audio_class, audio.info, file_stat.st_size, warnings),
    )
    raw = RawTags(warnings)
    _read_tags(audio, path, raw)
    _fill_tag_fields(record, raw)
    picture = choose_cover(raw.pictures)
    if picture is not None:
        record.cover = cover_from_bytes(picture.data, picture.mime, "embedded", warnings)
    return record


# ---------------------------------------------------------------- opening


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as error:
        raise UnreadableFileError(_os_error_reason(error)) from None


def _check_regular_nonempty(file_stat: os.stat_result) -> None:
    if not stat.S_ISREG(file_stat.st_mode):
        raise UnreadableFileError("not a regular file")
    if file_stat.st_size == 0:
        raise UnreadableFileError("zero-byte file")


def _os_error_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file vanished before it could be read"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "not a regular file"
    return f"I/O error: {error.strerror or error}"


def _raise_if_os_error(error: BaseException) -> None:
    """mutagen wraps I/O errors in its own types; an unreadable disk or file is not a corrupt file."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            raise UnreadableFileError(_os_error_reason(current)) from None
        pending.extend([current.__cause__, current.__context__])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))


def _load(path: str, warnings: list[str]):
    extension = os.path.splitext(path)[1].lower()
    expected_class = _CLASS_BY_EXTENSION.get(extension)
    first_error: Exception | None = None
    if expected_class is not None:
        try:
            return expected_class(path)
        except Exception as error:
            _raise_if_os_error(error)
            first_error = error
    try:
        audio = mutagen.File(path, options=[kind for kind in _SNIFFABLE_CLASSES if kind is not expected_class])
    except Exception as error:
        _raise_if_os_error(error)
        audio = None
    if audio is None:
        if first_error is not None:
            raise UnreadableFileError(_corrupt_reason(path, expected_class, first_error)) from None
        raise UnreadableFileError("not an audio file mutagen can read")
    if expected_class is not None:
        warnings.append(f"extension {extension} but the content is {_FORMATS[type(audio)][1]}")
    return audio


_TRUNCATION_HINTS = ("truncated", "unexpected", "eof", "end of file", "not enough", "too short", "ended", "said")
_OGG_SIGNATURE = (b"OggS",)
_SIGNATURES: dict[type, tuple[bytes, ...]] = {
    FLAC: (b"fLaC", b"ID3"),
    OggVorbis: _OGG_SIGNATURE, OggOpus: _OGG_SIGNATURE, OggFLAC: _OGG_SIGNATURE, OggSpeex: _OGG_SIGNATURE,
    ASF: (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"),),
    MonkeysAudio: (b"MAC ", b"ID3"),
    WavPack: (b"wvpk", b"ID3"),
    AIFF: (b"FORM",),
    WAVE: (b"RIFF", b"RF64"),
    DSF: (b"DSD ",),
    DSDIFF: (b"FRM8",),
    Musepack: (b"MPCK", b"MP+", b"ID3"),
    TrueAudio: (b"TTA1", b"ID3"),
    OptimFROG: (b"OFR ",),
    AAC: (b"ADIF", b"ID3"),
    AC3: (b"\x0b\x77",),
}


def _corrupt_reason(path: str, audio_class: type, error: Exception) -> str:
    """Why a file whose extension promised ``audio_class`` could not be parsed as it, nor sniffed as anything."""
    label = _FORMATS[audio_class][1]
    try:
        with open(path, "rb") as audio_file:
            header = audio_file.read(16)
    except OSError as os_error:
        return _os_error_reason(os_error)
    if not _has_signature(audio_class, header):
        extension = os.path.splitext(path)[1].lower()
        return f"not an audio file mutagen can read (a {extension} file without a valid {label} header)"
    detail = (str(error) or type(error).__name__).replace(repr(path), "the file").replace(path, "the file")
    if audio_class is MP4 and detail == "not a MP4 file":
        detail = "no moov box"  # the index MP4 writes last: what an interrupted copy loses
        return f"truncated or corrupt {label}: {detail}"
    if any(hint in detail.lower() for hint in _TRUNCATION_HINTS):
        return f"truncated {label}: {detail}"
    return f"corrupt {label}: {detail}"


def _has_signature(audio_class: type, header: bytes) -> bool:
    if audio_class is MP3:  # an ID3 tag or an MPEG frame sync
        return header.startswith(b"ID3") or (len(header) > 1 and header[0] == 0xFF and header[1] & 0xE0 == 0xE0)
    if audio_class is MP4:
        return header[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
    return header.startswith(_SIGNATURES.get(audio_class, (b"",)))


def _read_bare_stream_info(path: str, audio_class: type):
    """The stream header without the tags, or None to fall back to a full parse."""
    try:
        with open(path, "rb") as audio_file:
            if audio_class is MP3:
                return MPEGInfo(audio_file)
            header = audio_file.read(8)
            # STREAMINFO must be the first block: type 0, 34 bytes
            if header[:4] == b"fLaC" and header[4] & 0x7F == 0 and header[5:8] == b"\x00\x00\x22":
                return _flac_stream_info(audio_file, is_last_block=bool(header[4] & 0x80))
    except OSError as error:
        raise UnreadableFileError(_os_error_reason(error)) from None
    except Exception:
        return None
    return None


def _flac_stream_info(audio_file, is_last_block: bool):
    """STREAMINFO, then the other blocks' headers only, to find where audio starts (for the bitrate, as mutagen)."""
    info = FLACStreamInfo(audio_file.read(34))
    while not is_last_block:
        block_header = audio_file.read(4)
        if len(block_header) < 4:
            return None  # cut inside the metadata: let the full parse say what is wrong
        is_last_block = bool(block_header[0] & 0x80)
        audio_file.seek(int.from_bytes(block_header[1:4], "big"), os.SEEK_CUR)
    audio_start = audio_file.tell()
    file_end = audio_file.seek(0, os.SEEK_END)
    if file_end < audio_start:
        return None
    info.bitrate = int((file_end - audio_start) * 8 / info.length) if info.length else 0
    return info


# ---------------------------------------------------------------- stream


def _stream_fields(audio_class: type, info, size_bytes: int, warnings: list[str]) -> dict[str, Any]:
    codec = _codec(audio_class, info)
    duration = positive_number(getattr(info, "length", None), "duration", warnings)
    duration = float(duration) if duration is not None else None
    bitrate = positive_number(getattr(info, "bitrate", None), "bitrate", warnings)
    if bitrate is None and duration:
        bitrate = size_bytes * 8 / duration  # what mutagen leaves out (WavPack, APE, TTA): the file's average
    sample_rate = _OPUS_OUTPUT_RATE if audio_class is OggOpus else getattr(info, "sample_rate", None)
    bits_per_sample = getattr(info, "bits_per_sample", None) if codec in _LOSSLESS_CODECS else None
    return {
        "codec": codec,
        "duration_seconds": duration,
        "bitrate": round(bitrate) if bitrate else None,
        "sample_rate": _positive_int(sample_rate, "sample rate", warnings),
        "channels": _positive_int(getattr(info, "channels", None), "channel count", warnings),
        "bits_per_sample": _positive_int(bits_per_sample, "bits per sample", warnings),
    }


def _positive_int(value, key: str, warnings: list[str]) -> int | None:
    value = positive_number(value, key, warnings)
    return int(value) if value is not None else None


def _codec(audio_class: type, info) -> str:
    if audio_class is MP3:
        return _MPEG_LAYER_CODECS.get(getattr(info, "layer", 3), "mp3")
    if audio_class is MP4:
        return _mp4_codec(getattr(info, "codec", "") or "")
    if audio_class is ASF:
        description = f"{info.codec_type} {info.codec_name}".lower()
        for marker, codec in (("lossless", "wmalossless"), ("pro", "wmapro"), ("voice", "wmavoice")):
            if marker in description:
                return codec
        return "wma"
    if audio_class is WAVE:
        audio_format = getattr(info, "audio_format", 1)
        return _WAVE_CODECS.get(audio_format, f"wav_0x{audio_format:04x}")
    return _FIXED_CODECS[audio_class]


_FIXED_CODECS = {
    FLAC: "flac", OggVorbis: "vorbis", OggFLAC: "flac", OggSpeex: "speex", OggOpus: "opus",
    MonkeysAudio: "ape", WavPack: "wavpack", AIFF: "pcm", DSF: "dsd", DSDIFF: "dsd", Musepack: "musepack",
    TrueAudio: "tta", OptimFROG: "optimfrog", AAC: "aac", AC3: "ac3",
}


def _mp4_codec(codec: str) -> str:
    lowered = codec.lower()
    if lowered in ("mp4a.40.34", "mp4a.69", "mp4a.6b"):
        return "mp3"
    if lowered.startswith("mp4a.40") or lowered in ("mp4a", "mp4a.67"):
        return "aac"
    return {"ac-3": "ac3", "ec-3": "eac3", "flac": "flac", "opus": "opus", "alac": "alac"}.get(lowered, lowered)


# ---------------------------------------------------------------- tags


def _read_tags(audio, path: str, raw: RawTags) -> None:
    tags = audio.tags
    if isinstance(audio, MP3):
        _read_mp3_tags(tags, path, raw)
    elif isinstance(audio, FLAC):
        read_vorbis_comments(tags, audio.pictures, raw)
    elif isinstance(audio, (OggVorbis, OggOpus, OggFLAC, OggSpeex)):
        read_vorbis_comments(tags, None, raw)
    elif isinstance(audio, MP4):
        if tags is not None:
            read_mp4(tags, raw)
    elif isinstance(audio, ASF):
        if tags is not None:
            read_asf(tags, raw)
    elif isinstance(tags, APEv2):
        read_apev2(tags, raw)
    elif tags is not None:  # AIFF, WAV, DSF, DSDIFF, TTA, AAC, AC3: ID3
        read_id3(tags, raw)


def _read_mp3_tags(tags, path: str, raw: RawTags) -> None:
    """ID3v2; else APEv2 (foobar2000 and mp3gain leave files with only that); ID3v1 fills what remains."""
    if tags is not None and tags.version >= (2, 2, 0):
        read_id3(tags, raw)
        return
    try:
        ape_tags = APEv2(path)
    except APENoHeaderError:
        ape_tags = None
    except Exception as error:
        _raise_if_os_error(error)
        raw.warnings.append(f"unreadable APEv2 tag ignored ({error or type(error).__name__})")
        ape_tags = None
    if ape_tags is not None:
        read_apev2(ape_tags, raw)
    if tags is not None:  # ID3v1: 30 latin-1 characters a field, the least trustworthy source
        id3v1 = RawTags(raw.warnings)
        read_id3(tags, id3v1)
        for key, values in id3v1.values.items():
            raw.values.setdefault(key, values)


_SINGLE_TEXT_FIELDS = {
    "title": "title",
    "album": "album",
    "musicbrainz_trackid": "mb_track_id",
    "musicbrainz_releasetrackid": "mb_release_track_id",
    "musicbrainz_albumid": "mb_album_id",
    "musicbrainz_releasegroupid": "mb_release_group_id",
}
_REPLAYGAIN_FIELDS = {
    "replaygain_track_gain": "replaygain_track_gain",
    "replaygain_track_peak": "replaygain_track_peak",
    "replaygain_album_gain": "replaygain_album_gain",
    "replaygain_album_peak": "replaygain_album_peak",
}


def _fill_tag_fields(record: TrackRecord, raw: RawTags) -> None:
    """Move each field's tag out of ``raw.values``; what is left over becomes ``record.tags``.

    A value that cannot become its field (track "A1", gain "loud") stays in ``tags`` under its key, so the
    catalogue loses nothing the file says.
    """
    values, warnings = raw.values, raw.warnings

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

    for key, field_name in _SINGLE_TEXT_FIELDS.items():
        setattr(record, field_name, take_first(key))

    record.artists, record.album_artists = _names(values, "artist"), _names(values, "albumartist")
    record.genres = values.pop("genre", [])
    record.composers = values.pop("composer", [])
    record.mb_artist_ids = _identifiers(values.pop("musicbrainz_artistid", []))
    record.mb_album_artist_ids = _identifiers(values.pop("musicbrainz_albumartistid", []))

    compilation = take_first("compilation")
    if compilation is not None:
        flag = parse_flag(compilation, "compilation", warnings)
        if flag is None:
            values.setdefault("compilation", []).insert(0, compilation)
        record.is_compilation = bool(flag)

    record.track_number, record.track_total = _position(values, "track", take_first, warnings)
    record.disc_number, record.disc_total = _position(values, "disc", take_first, warnings)

    date = take_first("date")
    if date is None:
        date = take_first("year")
    if date is not None:
        record.date = date
        record.year = parse_year(date, warnings)

    for key, field_name in _REPLAYGAIN_FIELDS.items():
        text = take_first(key)
        if text is not None:
            number = parse_decibels(text, key, warnings)
            if number is None:
                values.setdefault(key, []).insert(0, text)
            setattr(record, field_name, number)

    record.tags = values


def _names(values: dict[str, list[str]], key: str) -> list[str]:
    """Picard writes a display string ("A feat. B") to ARTIST and the list to ARTISTS: the list wins.

    The display string then stays in tags, as it is the only place the catalogue has it.
    """
    plural = values.pop(key + "s", None)
    singular = values.pop(key, [])
    if not plural:
        return singular
    if singular and singular != plural:
        values[key] = singular
    return plural


def _identifiers(items: list[str]) -> list[str]:
    # ID3v2.3 and some taggers join several ids with "/" or ";" into one value; a MusicBrainz id contains neither.
    identifiers = []
    for item in items:
        identifiers.extend(part.strip() for part in item.replace(";", "/").split("/") if part.strip())
    return identifiers


def _position(values, name: str, take_first, warnings) -> tuple[int | None, int | None]:
    number_key, total_key = f"{name}number", f"{name}total"
    number = total = None
    text = take_first(number_key)
    if text is not None:
        number, total, understood = parse_position(text, number_key, warnings)
        if not understood:
            values.setdefault(number_key, []).insert(0, text)
    total_text = take_first(total_key)
    if total is None and total_text is not None:
        total = parse_total(total_text, total_key, warnings)
    return number, total
