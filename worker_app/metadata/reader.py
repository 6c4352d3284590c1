"""The extractor: one audio file in, one ``TrackRecord`` out, or ``UnreadableFileError`` with a reason for people.

mutagen's parsing is the pipeline's throughput limit (~0.6 ms of CPU per file, bench/README.md), so this module
asks mutagen for one parse per file: the class is chosen from the file's extension (``mutagen.File`` would read the
header and score every format first), and content sniffing is only the fallback for a wrong or missing extension.

Hostile files (see tests/test_extractor_hostile.py): every read runs under a per-file time limit (``time_limit``,
default the ``file_time_limit`` setting), through a ``SafeFile`` that never lets a corrupt length field allocate
more than the file holds, with mutagen's strict spots made lenient (``lenient.py``), and with pictures above
``max_cover_bytes`` left out before mutagen reads them (``oversize.py``). Strings in the record never hold NUL or
lone surrogates (the path excepted: it is the file's name, surrogate-escaped where it is not UTF-8).

Several tag formats in one MP3: ID3v2 wins, then APEv2 fills the fields ID3v2 lacks, then ID3v1 (30 Latin-1
characters a field, the least trustworthy) fills what is still missing. A field is taken whole from one format.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

# Celery's soft time limit must stop a batch, not become one more unreadable file (billiard comes with celery)
from billiard.exceptions import SoftTimeLimitExceeded as _SoftTimeLimitExceeded
from mutagen import FileType, StreamInfo
from mutagen.aac import AAC
from mutagen.ac3 import AC3
from mutagen.aiff import AIFF
from mutagen.apev2 import APENoHeaderError, APEv2, _APEv2Data  # _APEv2Data: where a tag starts
from mutagen.asf import ASF
from mutagen.dsf import DSF
from mutagen.flac import FLAC
from mutagen.flac import StreamInfo as FLACStreamInfo
from mutagen.id3 import ID3, ID3NoHeaderError
from mutagen.id3._id3v1 import find_id3v1
from mutagen.mp3 import MP3, MPEGInfo
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.trueaudio import TrueAudio
from mutagen.wave import WAVE

from worker_app.metadata import fastpaths, lenient
from worker_app.metadata.cleaning import (
    MAX_TAGS_BYTES,
    finish_warnings,
    format_size,
    positive_number,
    shown,
    storable,
)
from worker_app.metadata.covers import (
    EmbeddedPicture,
    choose_cover,
    cover_from_bytes,
    find_folder_cover,
    read_folder_cover,
)
from worker_app.metadata.fields import fill_fields
from worker_app.metadata.formats import AUDIO_EXTENSIONS, CLASS_BY_EXTENSION, CONTAINERS, leading_id3_size
from worker_app.metadata.lenient import ReadContext, picture_skipped_warning
from worker_app.metadata.oversize import CAPPED_CLASSES, plan_edits
from worker_app.metadata.record import TrackRecord, UnreadableFileError
from worker_app.metadata.safefile import ReadBudgetExceeded, SafeFile
from worker_app.metadata.tagmaps import (
    RawTags,
    merge_missing,
    read_apev2,
    read_asf,
    read_id3,
    read_mp4,
    read_riff_info,
    read_vorbis_comments,
)
from worker_app.metadata.timelimit import FileTimeLimit, FileTimeLimitExceeded

# Both sets of changes to mutagen's internals are made where files are read, under lenient.py's pin of the mutagen
# release (checked when it was imported above): its leniency, and a faster equivalent of its UTF-16 decoding.
fastpaths.install()

__all__ = ["read_track", "read_stream_info", "read_folder_cover", "find_folder_cover", "current_limits", "ReadLimits",
           "AUDIO_EXTENSIONS"]

if TYPE_CHECKING:
    from worker_app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_FILE_TIME_LIMIT = 30.0  # seconds; mutagen reads a file in about a millisecond
DEFAULT_MAX_COVER_BYTES = 16 * 1024 * 1024

_T = TypeVar("_T")
AudioClass = type[FileType]


# Sniffing candidates: the catalogue's formats. Not mutagen.File's whole default list: its ID3FileType accepts any junk
# behind an ID3 tag, and MIDI or video-only Ogg are not catalogue audio.
_SNIFFABLE_CLASSES = tuple(CONTAINERS)

_LOSSLESS_CODECS = frozenset({"flac", "alac", "wavpack", "ape", "tta", "optimfrog", "tak", "pcm", "pcm_float", "dsd"})
_WAVE_CODECS = {1: "pcm", 3: "pcm_float", 0xFFFE: "pcm", 6: "alaw", 7: "mulaw", 0x55: "mp3", 2: "adpcm"}
_MPEG_LAYER_CODECS = {1: "mp1", 2: "mp2", 3: "mp3"}
_OPUS_OUTPUT_RATE = 48000  # Opus always decodes at 48 kHz; mutagen does not expose the (informative) input rate


@dataclass(frozen=True)
class ReadLimits:
    time_limit: float | None  # seconds one file may take; None or <= 0: no limit
    max_cover_bytes: int  # pictures (and other tag items) above this are skipped unread


_settings_failure_logged = False


def _get_settings() -> Settings:
    from worker_app.settings import get_settings  # here, not at import: settings read the environment

    global _get_settings
    _get_settings = get_settings
    return get_settings()


def current_limits(time_limit: float | None = None, max_cover_bytes: int | None = None) -> ReadLimits:
    """The limits a read uses: the arguments where given, else the worker settings, read lazily.

    Settings: ``max_cover_bytes`` (SONIQUEBAY_MAX_COVER_BYTES) and ``file_time_limit`` (the per-file time limit in
    seconds; until settings.py has it, DEFAULT_FILE_TIME_LIMIT).
    """
    global _settings_failure_logged
    if time_limit is None or max_cover_bytes is None:
        try:
            settings = _get_settings()
        except Exception as error:  # the worker refuses to start on bad settings; a read just uses defaults
            if not _settings_failure_logged:
                log.warning("extractor limits: settings unreadable (%s), using the defaults", error)
                _settings_failure_logged = True
            settings = None
        if time_limit is None:
            time_limit = getattr(settings, "file_time_limit", DEFAULT_FILE_TIME_LIMIT)
        if max_cover_bytes is None:
            max_cover_bytes = getattr(settings, "max_cover_bytes", DEFAULT_MAX_COVER_BYTES)
    return ReadLimits(time_limit, max(int(max_cover_bytes), 0))


def read_track(path: str | os.PathLike[str], stat_result: os.stat_result | None = None, *,
               time_limit: float | None = None, max_cover_bytes: int | None = None) -> TrackRecord:
    """Everything the catalogue keeps about one file. Raises only UnreadableFileError.

    ``stat_result`` saves a stat call when the scanner already has it (from ``os.scandir``). ``time_limit``
    (seconds) and ``max_cover_bytes`` default to the worker settings (see ``current_limits``).
    """
    path_text = os.fsdecode(path)
    return _run(current_limits(time_limit, max_cover_bytes), _read_track, path_text, stat_result)


def read_stream_info(path: str | os.PathLike[str], *, time_limit: float | None = None,
                     max_cover_bytes: int | None = None) -> dict[str, Any]:
    """Only the stream facts: format, codec, duration_seconds, bitrate, sample_rate, channels, bits_per_sample.

    Skips the tags where that is cheap (MP3: the MPEG header search skips ID3; FLAC: the first block is
    STREAMINFO); other formats are parsed whole. Raises only UnreadableFileError.
    """
    path_text = os.fsdecode(path)
    return _run(current_limits(time_limit, max_cover_bytes), _read_stream_info, path_text)


def _run(limits: ReadLimits, function: Callable[..., _T], *args: Any) -> _T:
    """``function(context, *args)`` under the time limit, any failure turned into UnreadableFileError."""
    context = ReadContext(limits.max_cover_bytes)
    token = lenient.enter(context)
    try:
        timer = FileTimeLimit(limits.time_limit)
        try:
            with timer:
                return _guarded(function, context, *args)
        except FileTimeLimitExceeded:
            timer.stop()  # again: the alarm may have cut the first stop short
            raise UnreadableFileError(f"took longer than {limits.time_limit:g} s to read", passing=True) from None
    finally:
        lenient.leave(token)


def _guarded(function: Callable[..., _T], *args: Any) -> _T:
    try:
        return function(*args)
    except (UnreadableFileError, _SoftTimeLimitExceeded):
        raise
    except ReadBudgetExceeded as error:
        raise UnreadableFileError(f"corrupt file: {error}") from None
    except MemoryError:  # the process's memory, not the file's content: read again at the next scan
        raise UnreadableFileError("ran out of memory while reading it", passing=True) from None
    except Exception as error:  # a bug in mutagen or here must cost one file, not the batch
        detail = str(error)
        if len(detail) > 200:
            detail = detail[:200] + "..."
        raise UnreadableFileError(storable(f"unexpected {type(error).__name__} while reading: {detail}")) from error


def _read_stream_info(context: ReadContext, path: str) -> dict[str, Any]:
    file_stat = _stat(path)
    _check_regular_nonempty(file_stat)
    warnings: list[str] = []
    extension = os.path.splitext(path)[1].lower()
    with _opened(path, file_stat.st_size, context) as view:
        info: StreamInfo | None = None
        expected_class = CLASS_BY_EXTENSION.get(extension)
        if (expected_class is MP3 or expected_class is FLAC) and not view.spliced:
            info = _read_bare_stream_info(view, expected_class)
        if expected_class is not None and info is not None:
            audio_class = expected_class
        else:
            audio = _load(view, path, warnings)
            audio_class, info = _base_class(type(audio)), audio.info
            _check_has_audio(audio_class, info)
            _add_true_audio_format(audio, view)
        return {"format": CONTAINERS[audio_class].format,
                **_stream_fields(audio_class, info, file_stat.st_size, warnings, _audio_share(audio_class, view))}


def _read_track(context: ReadContext, path: str, stat_result: os.stat_result | None) -> TrackRecord:
    file_stat = stat_result if stat_result is not None else _stat(path)
    _check_regular_nonempty(file_stat)
    warnings: list[str] = []
    with _opened(path, file_stat.st_size, context) as view:
        audio = _load(view, path, warnings)
        audio_class = _base_class(type(audio))
        _check_has_audio(audio_class, audio.info)
        _add_true_audio_format(audio, view)
        record = TrackRecord(
            path=path,
            size_bytes=file_stat.st_size,
            mtime=file_stat.st_mtime,
            format=CONTAINERS[audio_class].format,
            warnings=warnings,
            **_stream_fields(audio_class, audio.info, file_stat.st_size, warnings, _audio_share(audio_class, view)),
        )
        raw = RawTags(warnings)
        _read_tags(audio, view, raw)
    fill_fields(record, raw.values, warnings)
    record.tags = _within_tags_budget(raw.values, warnings)
    picture = choose_cover(_pictures_within_limit(raw.pictures, context, warnings) + context.skipped_pictures)
    if picture is not None and picture.data is not None:
        record.cover = cover_from_bytes(picture.data, picture.mime, "embedded", warnings)
    # Every string above went through cleaning.clean_text (tag values), a pattern (codec, MusicBrainz ids) or
    # cleaning.storable (cover MIME type, reasons): none holds NUL or a lone surrogate.
    warnings.extend(context.notes)
    record.warnings = finish_warnings(warnings)
    return record


def _pictures_within_limit(pictures: list[EmbeddedPicture], context: ReadContext,
                           warnings: list[str]) -> list[EmbeddedPicture]:
    """Pictures mutagen did read (the file was under the limit, or a format without a scanner) but that are above
    the limit anyway (e.g. an ID3 frame inflated from zlib): dropped before anything hashes or copies them."""
    kept = []
    for picture in pictures:
        if picture.data is not None and picture.size > context.max_cover_bytes:
            warnings.append(picture_skipped_warning(picture.size, context.max_cover_bytes))
            picture = EmbeddedPicture(None, picture.mime, picture.picture_type, size=picture.size)
        kept.append(picture)
    return kept


# ---------------------------------------------------------------- opening


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as error:
        raise _access_error(error) from None


def _check_regular_nonempty(file_stat: os.stat_result) -> None:
    if not stat.S_ISREG(file_stat.st_mode):
        raise UnreadableFileError("not a regular file")
    if file_stat.st_size == 0:
        raise UnreadableFileError("zero-byte file")


def _access_error(error: OSError) -> UnreadableFileError:
    """An error of the file system, not of the content: passing (the next scan reads the file again), except a
    folder where a file was expected."""
    return UnreadableFileError(_os_error_reason(error), passing=not isinstance(error, IsADirectoryError))


def _os_error_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file vanished before it could be read"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "not a regular file"
    return f"I/O error: {error.strerror or error}"


def _raise_if_os_error(error: BaseException) -> None:
    """mutagen wraps I/O errors in its own types; an unreadable disk or file is not a corrupt file, and neither is a
    process short of memory (a MemoryError under the worker's memory limit, which _guarded makes a passing error)."""
    seen = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None and current.errno != errno.EINVAL:
            raise _access_error(current) from None
        if isinstance(current, MemoryError):
            raise current
        pending.extend([current.__cause__, current.__context__])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))


class _opened:
    """``with _opened(path, size, context) as view``: the file open once for every reader, as a ``SafeFile``;
    for a file above the picture limit, a view with the oversized tag items cut out (``oversize.plan_edits``)."""

    def __init__(self, path: str, size: int, context: ReadContext):
        self.path = path
        self.size = size  # from the stat already made: a file that grows meanwhile is read as it was
        self.context = context
        self.file: BinaryIO | None = None

    def __enter__(self) -> SafeFile:
        size = self.size
        try:
            self.file = file = open(self.path, "rb")
        except OSError as error:
            raise _access_error(error) from None
        try:
            edits = []
            capped = size > self.context.max_cover_bytes
            if capped:
                edits = plan_edits(file, size, self.context)
            return SafeFile(file, size, edits, name=self.path, capped=capped)
        except OSError as error:
            file.close()
            raise _access_error(error) from None
        except BaseException:  # the time limit, or a bug: __exit__ will not run
            file.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.file is not None:
            self.file.close()


# Per mutagen class: arguments for loading. MP3: ID3v1 is read separately (see _read_mp3_tags). AIFF, WAV, DSF:
# their ID3 tag is a chunk; "TAG" in the last 128 bytes of audio samples is not an ID3v1 tag.
_LOAD_OPTIONS: dict[AudioClass, dict[str, Any]] = {MP3: {"load_v1": False}, AIFF: {"load_v1": False},
                                             WAVE: {"load_v1": False}, DSF: {"load_v1": False}}
_BASE_CLASS = {capped: base for base, capped in CAPPED_CLASSES.items()}


def _base_class(audio_class: AudioClass) -> AudioClass:
    return _BASE_CLASS.get(audio_class, audio_class)


def _reader_class(audio_class: AudioClass, view: SafeFile) -> AudioClass:
    return CAPPED_CLASSES.get(audio_class, audio_class) if view.capped else audio_class


def _load(view: SafeFile, path: str, warnings: list[str]) -> FileType:
    extension = os.path.splitext(path)[1].lower()
    expected_class = CLASS_BY_EXTENSION.get(extension)
    first_error: Exception | None = None
    if expected_class is not None:
        try:
            view.seek(0)
            return _reader_class(expected_class, view)(view, **_LOAD_OPTIONS.get(expected_class, {}))
        except Exception as error:
            _raise_if_os_error(error)
            _raise_if_looping(error, expected_class)
            first_error = error
    try:
        audio = _sniff(view, path, [kind for kind in _SNIFFABLE_CLASSES if kind is not expected_class])
    except Exception as error:
        _raise_if_os_error(error)
        _raise_if_looping(error, None)
        audio = None
    if audio is None:
        if first_error is not None and expected_class is not None:
            raise UnreadableFileError(_corrupt_reason(view, path, expected_class, first_error)) from None
        raise UnreadableFileError("not an audio file mutagen can read")
    if expected_class is not None:
        warnings.append(f"extension {extension} but the content is {CONTAINERS[_base_class(type(audio))].label}")
    return audio


def _raise_if_looping(error: BaseException, audio_class: AudioClass | None) -> None:
    seen: BaseException | None = error
    for _ in range(10):  # mutagen may wrap it
        if seen is None:
            return
        if isinstance(seen, ReadBudgetExceeded):
            label = CONTAINERS[audio_class].label if audio_class is not None else "file"
            raise UnreadableFileError(f"corrupt {label}: {seen}") from None
        seen = seen.__cause__ or seen.__context__


def _sniff(view: SafeFile, path: str, candidates: list[AudioClass]) -> FileType | None:
    """mutagen.File's choice (best score, ties by class name), with this module's load options."""
    view.seek(0)
    header = view.read(128)
    scored = sorted(((_score(kind, path, view, header), kind.__name__), kind) for kind in candidates)
    (score, _), kind = scored[-1]
    if score <= 0:
        return None
    view.seek(0)
    return _reader_class(kind, view)(view, **_LOAD_OPTIONS.get(kind, {}))


def _score(kind: AudioClass, path: str, view: SafeFile, header: bytes) -> int:
    """mutagen's score, and for ADTS AAC, which mutagen knows only by its extension, its frame sync: 12 bits set,
    then a layer field of 0 (an MPEG audio frame, which MP3 scores, has a layer of 1 to 3). Above the 2 an ID3v2
    tag gives MP3, as taggers put one in front of both."""
    score: int = kind.score(path, view, header)
    if kind is AAC:
        view.seek(leading_id3_size(header))
        sync = view.read(2)
        if len(sync) == 2 and sync[0] == 0xFF and sync[1] & 0xF6 == 0xF0:
            score += 3
    return score


_TRUNCATION_HINTS = ("truncated", "unexpected", "eof", "end of file", "not enough", "too short", "ended", "said")
def _corrupt_reason(view: SafeFile, path: str, audio_class: AudioClass, error: Exception) -> str:
    """Why a file whose extension promised ``audio_class`` could not be parsed as it, nor sniffed as anything."""
    label = CONTAINERS[audio_class].label
    view.seek(0)
    head = view.read(512)
    header = head[:16]
    if not _has_signature(audio_class, header):
        extension = os.path.splitext(path)[1].lower()
        content = _recognisable_content(head)
        if content:
            return f"not an audio file mutagen can read (a {extension} file holding {content})"
        return f"not an audio file mutagen can read (a {extension} file without a valid {label} header)"
    if _is_invalid_seek(error):
        return f"corrupt {label}: a length or offset in it points outside the file"
    detail = (str(error) or type(error).__name__).replace(repr(path), "the file").replace(path, "the file")
    if len(detail) > 200:  # some messages quote the bytes they choked on
        detail = detail[:200] + "..."
    detail = storable(detail)
    if audio_class is MP4 and detail == "not a MP4 file":
        detail = "no moov box"  # the index MP4 writes last: what an interrupted copy loses
        return f"truncated or corrupt {label}: {detail}"
    if any(hint in detail.lower() for hint in _TRUNCATION_HINTS):
        return f"truncated {label}: {detail}"
    return f"corrupt {label}: {detail}"


_CONTENT_SIGNATURES = (
    (b"\x00\x05\x16\x07", "AppleDouble data: macOS metadata for another file"),  # "._name" files
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)


def _recognisable_content(head: bytes) -> str | None:
    """What a file that is not audio holds, when that is obvious: for the reason people read."""
    for signature, content in _CONTENT_SIGNATURES:
        if head.startswith(signature):
            return content
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:
            return None
        text = head[:error.start].decode("utf-8")  # a character cut by the 512-byte read
    if text and all(character.isprintable() or character in "\t\r\n\f" for character in text):
        return "text"
    return None


def _is_invalid_seek(error: BaseException) -> bool:
    """A seek before the start of the file (SafeFile raises EINVAL, as files do), maybe wrapped by mutagen."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.EINVAL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _has_signature(audio_class: AudioClass, header: bytes) -> bool:
    if audio_class is MP3:  # an ID3 tag or an MPEG frame sync
        return header.startswith(b"ID3") or (len(header) > 1 and header[0] == 0xFF and header[1] & 0xE0 == 0xE0)
    if audio_class is MP4:
        return header[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
    return header.startswith(CONTAINERS[audio_class].signatures or (b"",))


def _read_bare_stream_info(view: SafeFile, audio_class: AudioClass) -> StreamInfo | None:
    """The stream header without the tags, or None to fall back to a full parse."""
    try:
        view.seek(0)
        if audio_class is MP3:
            mpeg_info: MPEGInfo = MPEGInfo(view)
            return mpeg_info
        header = view.read(8)
        # STREAMINFO must be the first block: type 0, 34 bytes
        if header[:4] == b"fLaC" and header[4] & 0x7F == 0 and header[5:8] == b"\x00\x00\x22":
            return _flac_stream_info(view, is_last_block=bool(header[4] & 0x80))
    except OSError as error:
        raise _access_error(error) from None
    except Exception:
        return None
    return None


def _flac_stream_info(audio_file: SafeFile, is_last_block: bool) -> FLACStreamInfo | None:
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


# Beyond these a stream number is a corrupt header, not a file (and the catalogue's integer columns overflow): the
# value is not stored, and the track's warnings say so.
MAX_DURATION = 31 * 24 * 3600.0  # the longest audiobooks are days long
MAX_BITRATE = 2**31 - 1  # bits per second (PostgreSQL integer)
MIN_BITRATE = 500  # bits per second: the lowest speech codecs (Speex, Codec2) need 700 and more
MIN_SAMPLE_RATE = 1000  # Hz: real audio starts at 8 kHz (telephone speech); 24 Hz is a field read wrong
MAX_SAMPLE_RATE = 100_000_000  # DSD1024 is 45 MHz
MAX_CHANNELS = 255  # Opus's and WAVE_FORMAT_EXTENSIBLE's practical limit; 22.2 surround is 24
MAX_BITS_PER_SAMPLE = 64
_CODEC_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,15}$")


def _stream_fields(audio_class: AudioClass, info: StreamInfo | None, size_bytes: int, warnings: list[str],
                   audio_share: float = 1.0) -> dict[str, Any]:
    """``audio_share``: the part of mutagen's length that is audio (see _audio_share)."""
    try:
        codec = _clean_codec(_codec(audio_class, info), warnings)
    except Exception:  # a property of a corrupt header
        warnings.append("codec unreadable")
        codec = None
    duration = positive_number(_info(info, "length", "duration", warnings), "duration", warnings,
                               maximum=MAX_DURATION)
    duration = float(duration) * audio_share if duration is not None else None
    if duration is not None and size_bytes * 8 / duration < MIN_BITRATE:
        # The file is too small to hold that much audio in any codec: the header's sample count or rate is wrong.
        warnings.append(f"duration {duration:g} s ignored (a {size_bytes}-byte file cannot hold it)")
        duration = None
    bitrate = positive_number(_info(info, "bitrate", "bitrate", warnings), "bitrate", warnings, maximum=MAX_BITRATE,
                              minimum=MIN_BITRATE)
    if bitrate is None and duration:
        bitrate = size_bytes * 8 / duration  # what mutagen leaves out (WavPack, APE, TTA): the file's average
        if not 1 <= bitrate <= MAX_BITRATE:  # (a corrupt duration of days over a few kB rounds to 0)
            bitrate = None
    sample_rate: int | float | None
    if audio_class is OggOpus:
        sample_rate = _OPUS_OUTPUT_RATE
    else:
        sample_rate = _info(info, "sample_rate", "sample rate", warnings)
    if codec in _LOSSLESS_CODECS:
        bits_per_sample = _info(info, "bits_per_sample", "bits per sample", warnings)
    else:
        bits_per_sample = None
    channels = _info(info, "channels", "channel count", warnings)
    return {
        "codec": codec,
        "duration_seconds": duration,
        "bitrate": round(bitrate) if bitrate and bitrate >= 0.5 else None,
        "sample_rate": _positive_int(sample_rate, "sample rate", warnings, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE),
        "channels": _positive_int(channels, "channel count", warnings, MAX_CHANNELS),
        "bits_per_sample": _positive_int(bits_per_sample, "bits per sample", warnings, MAX_BITS_PER_SAMPLE),
    }


def _check_has_audio(audio_class: AudioClass, info: StreamInfo | None) -> None:
    """Containers that may hold no audio stream at all: an MP4 made only of metadata boxes (or of video), an ASF
    without a stream properties object. mutagen reads them without complaint, with every stream number zero; they
    are not tracks."""
    if audio_class is MP4:
        silent = not getattr(info, "codec", "")  # set from the sample description of the first 'soun' track
    elif audio_class is ASF:
        silent = not (getattr(info, "channels", 0) or getattr(info, "sample_rate", 0)
                      or getattr(info, "codec_name", ""))
    else:
        return
    if silent:
        label = CONTAINERS[audio_class].label
        raise UnreadableFileError(f"no audio stream in the {label} file (only metadata or other tracks)")


def _add_true_audio_format(audio: FileType, view: SafeFile) -> None:
    """mutagen's TrueAudioInfo keeps only the sample rate and length of the TTA header (after any ID3v2 tag):
    "TTA1", format, channels, bits per sample, sample rate, samples, all little-endian."""
    if not isinstance(audio, TrueAudio):
        return
    view.seek(audio.tags.size if audio.tags is not None else 0)
    header = view.read(10)
    if len(header) == 10 and header.startswith(b"TTA"):
        info: Any = audio.info  # a TrueAudioInfo: mutagen declares FileType.info as None
        info.channels, info.bits_per_sample = struct.unpack_from("<HH", header, 6)


def _audio_share(audio_class: AudioClass, view: SafeFile) -> float:
    """ADTS AAC and AC-3 have no index: mutagen guesses their length from the bytes after the first frame, tags at
    the end (APEv2 with its pictures, ID3v1) included. The share of those bytes that is audio, to correct it."""
    if audio_class is not AAC and audio_class is not AC3:
        return 1.0
    view.seek(0)
    header = view.read(10)
    lead = leading_id3_size(header)
    try:
        ape = _APEv2Data(view)
    except Exception as error:
        _raise_if_os_error(error)
        ape = None
    if ape is not None and ape.start is not None and not ape.is_at_start:
        end = ape.start
    else:
        view.seek(max(view.size - 128, 0))
        end = view.size - 128 if view.read(3) == b"TAG" else view.size
    stream = view.size - lead
    return (end - lead) / stream if stream > 0 and lead < end <= view.size else 1.0


def _info(info: StreamInfo | None, attribute: str, label: str, warnings: list[str]) -> int | float | None:
    """A stream number; some are properties that divide by header fields (DSF length by a zero sample rate)."""
    try:
        value = getattr(info, attribute, None)
    except Exception:
        warnings.append(f"{label} unreadable (corrupt header)")
        return None
    if value is not None and not isinstance(value, (int, float)):
        return None
    return value


def _positive_int(value: int | float | None, key: str, warnings: list[str], maximum: int,
                  minimum: int | None = None) -> int | None:
    value = positive_number(value, key, warnings, maximum=maximum, minimum=minimum)
    return int(value) if value is not None else None


def _clean_codec(codec: str | None, warnings: list[str]) -> str | None:
    if not codec:
        return None
    if _CODEC_NAME.match(codec):
        return codec
    warnings.append(f"codec {shown(codec)} ignored (not a codec name)")
    return None


def _codec(audio_class: AudioClass, info: StreamInfo | None) -> str:
    if audio_class is MP3:
        return _MPEG_LAYER_CODECS.get(getattr(info, "layer", 3), "mp3")
    if audio_class is MP4:
        return _mp4_codec(getattr(info, "codec", "") or "")
    if audio_class is ASF:
        description = f"{getattr(info, 'codec_type', '')} {getattr(info, 'codec_name', '')}".lower()
        for marker, codec in (("lossless", "wmalossless"), ("pro", "wmapro"), ("voice", "wmavoice")):
            if marker in description:
                return codec
        return "wma"
    if audio_class is WAVE:
        audio_format = getattr(info, "audio_format", 1)
        return _WAVE_CODECS.get(audio_format, f"wav_0x{audio_format:04x}")
    return CONTAINERS[audio_class].codec or ""




def _mp4_codec(codec: str) -> str:
    lowered = codec.lower()
    if lowered in ("mp4a.40.34", "mp4a.69", "mp4a.6b"):
        return "mp3"
    if lowered.startswith("mp4a.40") or lowered in ("mp4a", "mp4a.67"):
        return "aac"
    return {"ac-3": "ac3", "ec-3": "eac3", "flac": "flac", "opus": "opus", "alac": "alac"}.get(lowered, lowered)


# ---------------------------------------------------------------- tags


def _read_tags(audio: FileType, view: SafeFile, raw: RawTags) -> None:
    tags: Any = audio.tags  # each class's own Tags subclass: mutagen declares FileType.tags as None
    if isinstance(audio, MP3):
        _read_mp3_tags(tags, view, raw)
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
    elif isinstance(audio, (AAC, AC3)):  # mutagen reads their stream only; taggers lay tags out as in an MP3
        # (ID3v2 in front of ADTS AAC; APEv2 and ID3v1 at the end, foobar2000's choice for AC-3)
        _read_mp3_tags(_leading_id3(view, raw), view, raw)
    elif isinstance(tags, APEv2):
        read_apev2(tags, raw)
    elif tags is not None:  # AIFF, WAV, DSF, DSDIFF, TTA: ID3
        read_id3(tags, raw)
    if isinstance(audio, WAVE):  # the RIFF INFO list fills what the ID3 chunk lacks
        info = RawTags(raw.warnings)
        try:
            read_riff_info(view, info)
        except Exception as error:
            _raise_if_os_error(error)
            raw.warnings.append(f"unreadable RIFF INFO list ignored ({error or type(error).__name__})")
        merge_missing(raw, info)


def _leading_id3(view: SafeFile, raw: RawTags) -> ID3 | None:
    """The ID3v2 tag at the start of a raw stream (ADTS AAC, AC-3), as mutagen's MP3 class would load it."""
    view.seek(0)
    try:
        return ID3(view, load_v1=False)
    except ID3NoHeaderError:
        return None
    except Exception as error:
        _raise_if_os_error(error)
        raw.warnings.append(f"unreadable ID3v2 tag ignored ({error or type(error).__name__})")
        return None


def _read_mp3_tags(tags: ID3 | None, view: SafeFile, raw: RawTags) -> None:
    """ID3v2 wins; APEv2 (foobar2000 and mp3gain write it, often beside ID3v2) fills the fields ID3v2 lacks;
    ID3v1 (30 Latin-1 characters a field, the least trustworthy source) fills what is still missing."""
    if tags is not None:  # loaded with load_v1=False: ID3v2 only
        read_id3(tags, raw)
    ape_tags = None
    view.seek(max(view.size - 160, 0))
    if b"APETAGEX" in view.read(160):  # footer at the end, or before an ID3v1 tag
        try:
            ape_tags = APEv2(view)
        except APENoHeaderError:
            pass
        except Exception as error:
            _raise_if_os_error(error)
            raw.warnings.append(f"unreadable APEv2 tag ignored ({error or type(error).__name__})")
    if ape_tags is not None:
        ape = RawTags(raw.warnings)
        read_apev2(ape_tags, ape)
        merge_missing(raw, ape)
    try:
        id3v1_frames, _ = find_id3v1(view)
    except Exception as error:
        _raise_if_os_error(error)
        id3v1_frames = None
    if id3v1_frames:
        id3v1_tags = ID3()
        for frame in id3v1_frames.values():
            id3v1_tags.add(frame)
        id3v1 = RawTags(raw.warnings)
        read_id3(id3v1_tags, id3v1)
        merge_missing(raw, id3v1)


def _within_tags_budget(values: dict[str, list[str]], warnings: list[str]) -> dict[str, list[str]]:
    """``tags`` as a whole stays under MAX_TAGS_BYTES (5,000 TXXX frames fit; a file made of tags does not)."""
    if sum(len(key) + sum(map(len, items)) for key, items in values.items()) * 4 <= MAX_TAGS_BYTES:
        return values
    kept: dict[str, list[str]] = {}
    budget = MAX_TAGS_BYTES
    dropped = 0
    for key, items in values.items():
        for item in items:
            cost = len(key.encode("utf-8")) + len(item.encode("utf-8"))
            if cost <= budget:
                kept.setdefault(key, []).append(item)
                budget -= cost
            else:
                dropped += 1
    if dropped:
        warnings.append(f"{dropped} tag values ignored: the tags kept are limited to {format_size(MAX_TAGS_BYTES)}")
    return kept
