"""Real, tagged audio files for the test suite, the benchmarks and the single-host demo.

Each (format, duration) is encoded once into a cache directory (soundfile, ffmpeg, or plain Python for DSF); every
file of a library is then a copy of those bytes with its own tags written by mutagen in memory, which is what makes
tens of thousands of files cheap. A library comes with the answer key: one ``ExpectedTrack`` per file, holding
exactly what ``worker_app.metadata.reader.read_track`` must return for it.

    library = make_library(tmp_path / "music", n_files=60, formats=ALL_FORMATS)
    for expected in library.tracks:
        assert expected.mismatches(read_track(expected.path)) == []
    library.corrupt            # files read_track must refuse
    library.retag(library.tracks[0].path, title="New title")   # mutate, get the new answer

Library helpers for tests that change a library between scans, each keeping the answer key right: ``retag``,
``add_track``, ``remove_track``, ``move_track``, ``touch`` (mtime only), ``corrupt_track``, ``set_folder_cover``.
Tag keys in ``ExpectedTrack.tags`` are Picard's internal names, as ``TrackRecord.tags`` uses them.

Command line (also the README's demo): ``python -m tests.audio_factory ROOT --files 2000 [--seed 0]``.

Formats: ``REAL_FORMATS`` are really encoded (playable). ``SYNTHETIC_FORMATS`` (Monkey's Audio, Musepack) have no
encoder on these machines: their files are a valid header followed by filler bytes, enough for taggers and for
mutagen, not for a decoder. ``make_library`` uses the real ones unless told otherwise.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import mutagen
import numpy
import soundfile
from mutagen.aiff import AIFF
from mutagen.apev2 import BINARY, APEv2, APEValue
from mutagen.asf import ASF, ASFByteArrayAttribute, ASFUnicodeAttribute
from mutagen.dsdiff import DSDIFF
from mutagen.dsf import DSF
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    TALB,
    TCMP,
    TCOM,
    TCON,
    TDRC,
    TIT2,
    TPE1,
    TPE2,
    TPOS,
    TPUB,
    TRCK,
    TSRC,
    TXXX,
    UFID,
    BitPaddedInt,
)
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.trueaudio import TrueAudio
from mutagen.wave import WAVE
from PIL import Image, ImageDraw

from worker_app.metadata.covers import find_folder_cover  # the rule the answer key must agree with

FACTORY_VERSION = 1  # part of every cached template's name: bump it when templates change
DEFAULT_CACHE_DIR = Path(os.environ.get("AUDIO_FACTORY_CACHE", Path.home() / ".cache" / "soniquebay-audio-templates"))
TEMPLATE_DURATIONS = (0.3, 0.6, 1.0)
DURATION_TOLERANCE = 0.1  # encoders pad: MP3 ~50 ms, AAC ~23 ms, Opus pre-skip
VARIOUS_ARTISTS = "Various Artists"
VARIOUS_ARTISTS_MBID = "89ad4ac3-39f7-470e-963a-56509c546377"  # MusicBrainz's special "Various Artists"
MUSICBRAINZ_UFID_OWNER = "http://musicbrainz.org"


# ---------------------------------------------------------------- formats


@dataclass(frozen=True)
class AudioFormat:
    name: str  # what ``formats=`` takes
    extension: str
    container: str  # TrackRecord.format
    codec: str
    tag_styles: tuple[str, ...]  # how files of this format get tagged; the first is the usual one
    sample_rate: int
    channels: int
    bits_per_sample: int | None  # lossless only, as TrackRecord reports it
    nominal_bitrate: int | None  # constant-bitrate encodes only
    encoder: str  # "soundfile", "ffmpeg", "dsf", "ape", "musepack", "tak", "dff", "optimfrog"
    encoder_args: tuple[str, ...] = ()
    max_duration: float | None = None
    synthetic: bool = False
    weight: int = 1  # share in a default library
    rare: bool = False  # in no default list (RARE_FORMATS): the reader must read it, libraries seldom hold it


_FORMAT_LIST = [
    AudioFormat("mp3", ".mp3", "mp3", "mp3", ("id3v2.4", "id3v2.3", "id3v2.4+v1", "id3v1", "apev2"),
                44100, 2, None, 128000, "ffmpeg", ("-c:a", "libmp3lame", "-b:a", "128k"), weight=30),
    AudioFormat("mp3-vbr", ".mp3", "mp3", "mp3", ("id3v2.3", "id3v2.4"), 44100, 2, None, None, "ffmpeg",
                ("-c:a", "libmp3lame", "-q:a", "5"), weight=8),
    AudioFormat("flac", ".flac", "flac", "flac", ("vorbis",), 44100, 2, 16, None, "soundfile", ("FLAC", "PCM_16"),
                weight=20),
    AudioFormat("flac-24", ".flac", "flac", "flac", ("vorbis",), 96000, 2, 24, None, "soundfile",
                ("FLAC", "PCM_24"), max_duration=0.6, weight=3),
    AudioFormat("ogg", ".ogg", "ogg", "vorbis", ("vorbis",), 44100, 2, None, None, "soundfile", ("OGG", "VORBIS"),
                weight=6),
    AudioFormat("opus", ".opus", "opus", "opus", ("vorbis",), 48000, 2, None, None, "ffmpeg",
                ("-c:a", "libopus", "-b:a", "64k"), weight=5),
    AudioFormat("m4a-aac", ".m4a", "m4a", "aac", ("mp4",), 44100, 2, None, None, "ffmpeg",
                ("-c:a", "aac", "-b:a", "96k", "-f", "ipod"), weight=10),
    AudioFormat("m4a-alac", ".m4a", "m4a", "alac", ("mp4",), 44100, 2, 16, None, "ffmpeg",
                ("-c:a", "alac", "-f", "ipod"), weight=3),
    AudioFormat("wma", ".wma", "wma", "wma", ("asf",), 44100, 2, None, 128000, "ffmpeg",
                ("-c:a", "wmav2", "-b:a", "128k", "-f", "asf"), weight=3),
    AudioFormat("wavpack", ".wv", "wavpack", "wavpack", ("apev2",), 44100, 2, 16, None, "ffmpeg",
                ("-c:a", "wavpack", "-f", "wv"), weight=3),
    AudioFormat("aiff", ".aiff", "aiff", "pcm", ("id3v2.4", "id3v2.3"), 44100, 2, 16, 1411200, "soundfile",
                ("AIFF", "PCM_16"), max_duration=0.6, weight=2),
    AudioFormat("wav", ".wav", "wav", "pcm", ("id3v2.4", "id3v2.3"), 44100, 2, 16, 1411200, "soundfile",
                ("WAV", "PCM_16"), max_duration=0.6, weight=2),
    AudioFormat("dsf", ".dsf", "dsf", "dsd", ("id3v2.4", "id3v2.3"), 2822400, 2, 1, 5644800, "dsf",
                max_duration=0.25, weight=1),
    AudioFormat("ape", ".ape", "ape", "ape", ("apev2",), 44100, 2, 16, None, "ape", synthetic=True, weight=1),
    AudioFormat("musepack", ".mpc", "musepack", "musepack", ("apev2",), 44100, 2, None, None, "musepack",
                synthetic=True, weight=1),
    # Containers mutagen reads under other names than the usual ones.
    AudioFormat("3gp-aac", ".3gp", "m4a", "aac", ("mp4",), 44100, 2, None, None, "ffmpeg",
                ("-c:a", "aac", "-b:a", "96k", "-f", "3gp"), rare=True),
    AudioFormat("3g2-aac", ".3g2", "m4a", "aac", ("mp4",), 44100, 2, None, None, "ffmpeg",
                ("-c:a", "aac", "-b:a", "96k", "-f", "3g2"), rare=True),
    AudioFormat("tak", ".tak", "tak", "tak", ("apev2",), 44100, 2, 16, None, "tak", synthetic=True, rare=True),
    AudioFormat("tta", ".tta", "tta", "tta", ("id3v2.4",), 44100, 2, 16, None, "ffmpeg", ("-c:a", "tta", "-f", "tta"),
                rare=True),
    AudioFormat("dff", ".dff", "dff", "dsd", ("id3v2.4",), 2822400, 2, 1, 5644800, "dff", max_duration=0.25,
                synthetic=True, rare=True),
    AudioFormat("optimfrog", ".ofr", "optimfrog", "optimfrog", ("apev2",), 44100, 2, 16, None, "optimfrog",
                synthetic=True, rare=True),
    AudioFormat("speex", ".spx", "ogg", "speex", ("vorbis",), 16000, 1, None, None, "ffmpeg",
                ("-c:a", "libspeex", "-ar", "16000", "-ac", "1", "-f", "ogg"), rare=True),
    AudioFormat("aac-adts", ".aac", "aac", "aac", ("id3v2.4",), 44100, 2, None, None, "ffmpeg",
                ("-c:a", "aac", "-b:a", "96k", "-f", "adts"), rare=True),
    AudioFormat("ac3", ".ac3", "ac3", "ac3", ("apev2",), 48000, 2, None, 192000, "ffmpeg",
                ("-c:a", "ac3", "-b:a", "192k", "-f", "ac3"), rare=True),
]
FORMATS: dict[str, AudioFormat] = {audio_format.name: audio_format for audio_format in _FORMAT_LIST}


@functools.lru_cache(maxsize=1)
def _ffmpeg_encoders() -> frozenset[str]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return frozenset()
    listing = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return frozenset(line.split()[1] for line in listing.splitlines() if line.startswith(" A"))


def is_available(format_name: str) -> bool:
    audio_format = FORMATS[format_name]
    if audio_format.encoder != "ffmpeg":
        return True
    return audio_format.encoder_args[1] in _ffmpeg_encoders()


REAL_FORMATS = tuple(name for name, spec in FORMATS.items()
                     if not spec.synthetic and not spec.rare and is_available(name))
SYNTHETIC_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.synthetic and not spec.rare)
RARE_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.rare and (spec.synthetic or is_available(name)))
ALL_FORMATS = REAL_FORMATS + SYNTHETIC_FORMATS


# ---------------------------------------------------------------- templates (encoded once, cached)


@dataclass(frozen=True)
class Template:
    format: AudioFormat
    duration: float  # seconds of audio actually encoded
    data: bytes


class TemplateCache:
    """Encoded, tag-free audio, one file per (format, duration), shared across runs and processes."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else DEFAULT_CACHE_DIR
        self._templates: dict[tuple[str, float], Template] = {}

    def get(self, format_name: str, duration: float) -> Template:
        audio_format = FORMATS[format_name]
        if audio_format.max_duration is not None:
            duration = min(duration, audio_format.max_duration)
        key = (format_name, duration)
        template = self._templates.get(key)
        if template is None:
            name = f"v{FACTORY_VERSION}-{format_name}-{round(duration * 1000)}ms{audio_format.extension}"
            path = self.directory / name
            if not path.exists():
                self.directory.mkdir(parents=True, exist_ok=True)
                _encode_template(audio_format, duration, path)
            template = self._templates[key] = Template(audio_format, duration, path.read_bytes())
        return template


def _signal(audio_format: AudioFormat, duration: float) -> numpy.ndarray:
    frames = round(audio_format.sample_rate * duration) if audio_format.encoder != "dsf" else round(44100 * duration)
    rate = audio_format.sample_rate if audio_format.encoder != "dsf" else 44100
    time_axis = numpy.arange(frames) / rate
    frequency = 220.0 * (1 + _FORMAT_LIST.index(audio_format) % 5)
    tone = 0.3 * numpy.sin(2 * numpy.pi * frequency * time_axis)
    if audio_format.bits_per_sample is None:  # lossy: some noise so encoders have real work; lossless stays small
        tone = tone + numpy.random.default_rng(frames).normal(0, 0.02, frames)
    return numpy.repeat(tone[:, None], audio_format.channels, axis=1).astype("float32")


def _encode_template(audio_format: AudioFormat, duration: float, path: Path) -> None:
    # Written under a temporary name, then renamed: concurrent test processes never see half a template.
    handle, temporary_name = tempfile.mkstemp(suffix=audio_format.extension, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        if audio_format.encoder == "soundfile":
            container, subtype = audio_format.encoder_args
            soundfile.write(temporary, _signal(audio_format, duration), audio_format.sample_rate,
                            format=container, subtype=subtype)
        elif audio_format.encoder == "ffmpeg":
            wav = io.BytesIO()
            soundfile.write(wav, _signal(audio_format, duration), audio_format.sample_rate, format="WAV",
                            subtype="PCM_16")
            subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "wav", "-i", "pipe:0",
                 "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
                 *audio_format.encoder_args, str(temporary)],
                input=wav.getvalue(), check=True, capture_output=True,
            )
        elif audio_format.encoder == "dsf":
            temporary.write_bytes(_dsf_bytes(audio_format, duration))
        elif audio_format.encoder == "ape":
            temporary.write_bytes(_monkeys_audio_bytes(audio_format, duration))
        elif audio_format.encoder == "musepack":
            temporary.write_bytes(_musepack_bytes(audio_format, duration))
        elif audio_format.encoder == "tak":
            temporary.write_bytes(_tak_bytes(audio_format, duration))
        elif audio_format.encoder == "dff":
            temporary.write_bytes(_dsdiff_bytes(audio_format, duration))
        elif audio_format.encoder == "optimfrog":
            temporary.write_bytes(_optimfrog_bytes(audio_format, duration))
        else:
            raise ValueError(audio_format.encoder)
        encoded = mutagen.File(temporary)
        if encoded is not None and encoded.tags is not None:  # encoders leave "encoder" tags or empty ID3 headers
            encoded.delete()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _dsf_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """DSD64 in a DSF file: a first-order sigma-delta modulation of the tone (so it is real, playable DSD)."""
    samples_per_channel = round(audio_format.sample_rate * duration)
    oversampled_time = numpy.arange(samples_per_channel) / audio_format.sample_rate
    tone = 0.5 * numpy.sin(2 * numpy.pi * 1000 * oversampled_time)
    # A first-order modulator emits a 1 each time the running sum of the input (scaled to 0..1) passes an integer.
    running_sum = numpy.floor(numpy.cumsum((tone + 1) / 2))
    bits = numpy.diff(running_sum, prepend=0).astype(numpy.uint8)
    block_size = 4096
    channel_bytes = numpy.packbits(bits, bitorder="little").tobytes()
    padded_length = -(-len(channel_bytes) // block_size) * block_size
    channel_bytes = channel_bytes.ljust(padded_length, b"\x00")
    blocks = []
    for offset in range(0, padded_length, block_size):  # channels interleaved block by block
        blocks.extend([channel_bytes[offset:offset + block_size]] * audio_format.channels)
    data = b"".join(blocks)
    fmt_chunk = b"fmt " + struct.pack("<QIIIIIIQII", 52, 1, 0, 2 if audio_format.channels == 2 else 1,
                                      audio_format.channels, audio_format.sample_rate, 1, samples_per_channel,
                                      block_size, 0)
    data_chunk = b"data" + struct.pack("<Q", 12 + len(data)) + data
    total_size = 28 + len(fmt_chunk) + len(data_chunk)
    return b"DSD " + struct.pack("<QQQ", 28, total_size, 0) + fmt_chunk + data_chunk


def _monkeys_audio_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """A Monkey's Audio 3.99 descriptor and header (what taggers read), then filler instead of frames."""
    blocks = round(audio_format.sample_rate * duration)
    filler = random.Random(blocks).randbytes(2048)
    descriptor = b"MAC " + struct.pack("<HHIIIIIII", 3990, 0, 52, 24, 0, 0, len(filler), 0, 0) + bytes(16)
    header = struct.pack("<HHIIIHHI", 2000, 0, 73728, blocks, 1, audio_format.bits_per_sample,
                         audio_format.channels, audio_format.sample_rate)
    return descriptor + header + filler


def _sv8_size(value: int) -> bytes:
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def _sv8_packet(key: bytes, payload: bytes) -> bytes:
    size = len(payload) + 3
    while len(key) + len(_sv8_size(size)) + len(payload) != size:
        size = len(key) + len(_sv8_size(size)) + len(payload)
    return key + _sv8_size(size) + payload


def _musepack_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """A Musepack SV8 stream header and ReplayGain packet (what taggers read), then a filler audio packet."""
    samples = round(audio_format.sample_rate * duration)
    header_body = bytes([8]) + _sv8_size(samples) + _sv8_size(0) + bytes([
        (0 << 5) | 31,  # sample rate index 0 = 44100 Hz, 32 bands
        ((audio_format.channels - 1) << 4) | (1 << 3) | 4,  # channels, mid-side, 4 frames per packet
    ])
    stream_header = _sv8_packet(b"SH", struct.pack(">I", zlib.crc32(header_body)) + header_body)
    replay_gain = _sv8_packet(b"RG", bytes([1]) + bytes(8))
    audio = _sv8_packet(b"AP", random.Random(samples).randbytes(2048))
    return b"MPCK" + stream_header + replay_gain + audio + _sv8_packet(b"SE", b"")


def _tak_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """A TAK stream info block (fields packed least significant bit first, as TAK does) and an end block, then
    filler instead of frames."""
    fields = [(0, 6), (0, 4), (0, 4), (round(audio_format.sample_rate * duration), 35), (0, 3),  # codec .. data type
              (audio_format.sample_rate - 6000, 18), (audio_format.bits_per_sample - 8, 5),
              (audio_format.channels - 1, 4), (0, 1)]
    bits = position = 0
    for value, width in fields:
        bits |= value << position
        position += width
    stream_info = bits.to_bytes((position + 7) // 8, "little") + bytes(3)  # then a CRC-24 mutagen does not check
    block = bytes([1]) + len(stream_info).to_bytes(3, "little") + stream_info  # type 1: stream info
    end = bytes(4)  # type 0: end of metadata
    return b"tBaK" + block + end + random.Random(position).randbytes(2048)


def _dsdiff_chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack(">Q", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _dsdiff_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """A DSDIFF file: format version, sound properties (rate, channels, no compression), then filler as DSD data."""
    channels = audio_format.channels
    properties = b"SND " + b"".join([
        _dsdiff_chunk(b"FS  ", struct.pack(">I", audio_format.sample_rate)),
        _dsdiff_chunk(b"CHNL", struct.pack(">H", channels) + b"SLFTSRGT"[:4 * channels]),
        _dsdiff_chunk(b"CMPR", b"DSD " + bytes([14]) + b"not compressed"),
    ])
    sound = random.Random(channels).randbytes(round(audio_format.sample_rate * duration / 8) * channels)
    body = b"DSD " + b"".join([_dsdiff_chunk(b"FVER", struct.pack(">I", 0x01050000)),
                               _dsdiff_chunk(b"PROP", properties), _dsdiff_chunk(b"DSD ", sound)])
    return b"FRM8" + struct.pack(">Q", len(body)) + body


def _optimfrog_bytes(audio_format: AudioFormat, duration: float) -> bytes:
    """An OptimFROG header (samples of all channels, sample type, channels, rate, encoder 5.100), then filler."""
    samples = round(audio_format.sample_rate * duration) * audio_format.channels
    sample_type = {8: 0, 16: 2, 24: 4, 32: 6}[audio_format.bits_per_sample]
    header = b"OFR " + struct.pack("<IIHBBIH", 15, samples & 0xFFFFFFFF, samples >> 32, sample_type,
                                   audio_format.channels - 1, audio_format.sample_rate, 600 << 4)
    return header.ljust(76, b"\x00") + random.Random(samples).randbytes(2048)


# ---------------------------------------------------------------- the answer key


@dataclass
class ExpectedTrack:
    """What the catalogue must show for one file: ``TrackRecord``'s fields, with the cover as its digest.

    Stream fields are the encoder's nominal values: compare them with ``mismatches`` (tolerances), not ``==``.
    The fields after ``folder_cover_path`` say how the factory wrote the file (for ``Library.retag``); they are
    not catalogue data.
    """

    path: str
    size_bytes: int
    mtime: float
    format: str
    codec: str | None = None
    title: str | None = None
    artists: list[str] = field(default_factory=list)
    album: str | None = None
    album_artists: list[str] = field(default_factory=list)
    is_compilation: bool = False
    track_number: int | None = None
    track_total: int | None = None
    disc_number: int | None = None
    disc_total: int | None = None
    date: str | None = None
    year: int | None = None
    genres: list[str] = field(default_factory=list)
    composers: list[str] = field(default_factory=list)
    duration_seconds: float | None = None
    bitrate: int | None = None  # None: not predictable (VBR), any positive value will do
    sample_rate: int | None = None
    channels: int | None = None
    bits_per_sample: int | None = None
    mb_track_id: str | None = None
    mb_release_track_id: str | None = None
    mb_album_id: str | None = None
    mb_release_group_id: str | None = None
    mb_artist_ids: list[str] = field(default_factory=list)
    mb_album_artist_ids: list[str] = field(default_factory=list)
    replaygain_track_gain: float | None = None
    replaygain_track_peak: float | None = None
    replaygain_album_gain: float | None = None
    replaygain_album_peak: float | None = None
    tags: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # compared in any order
    cover_sha256: str | None = None  # embedded cover
    cover_mime: str | None = None
    cover_width: int | None = None
    cover_height: int | None = None
    folder_cover_sha256: str | None = None  # the image find_folder_cover picks in the file's own directory
    folder_cover_path: str | None = None
    # how the factory wrote the file
    format_name: str = ""
    tag_style: str = ""
    template_duration: float = 0.0
    position_style: str = "slash"  # "slash": TRACKNUMBER=3/12; "split": TRACKNUMBER=3 + TRACKTOTAL=12
    back_cover_sha256: str | None = None  # a back cover written before the front one
    raw_overrides: dict[str, list[str]] = field(default_factory=dict)  # raw Vorbis values written instead

    @property
    def tagged(self) -> bool:
        return self.tag_style != "none"

    def mismatches(self, record) -> list[str]:
        """Every difference between this and a ``TrackRecord`` (empty when it matches), for assertion messages."""
        problems = []
        exact_fields = [
            "path", "size_bytes", "mtime", "format", "codec", "title", "artists", "album", "album_artists",
            "is_compilation", "track_number", "track_total", "disc_number", "disc_total", "date", "year", "genres",
            "composers", "sample_rate", "channels", "bits_per_sample", "mb_track_id", "mb_release_track_id",
            "mb_album_id", "mb_release_group_id", "mb_artist_ids", "mb_album_artist_ids", "tags",
        ]
        for name in exact_fields:
            if getattr(record, name) != getattr(self, name):
                problems.append(f"{name}: expected {getattr(self, name)!r}, got {getattr(record, name)!r}")
        for name in ("replaygain_track_gain", "replaygain_track_peak", "replaygain_album_gain",
                     "replaygain_album_peak"):
            expected, actual = getattr(self, name), getattr(record, name)
            if (expected is None) != (actual is None) or (expected is not None and abs(expected - actual) > 1e-6):
                problems.append(f"{name}: expected {expected!r}, got {actual!r}")
        if record.duration_seconds is None or abs(record.duration_seconds - self.duration_seconds) > DURATION_TOLERANCE:
            problems.append(f"duration_seconds: expected ~{self.duration_seconds}, got {record.duration_seconds!r}")
        if self.bitrate is not None:
            if record.bitrate is None or abs(record.bitrate - self.bitrate) > 0.25 * self.bitrate:
                problems.append(f"bitrate: expected ~{self.bitrate}, got {record.bitrate!r}")
        elif record.bitrate is not None and record.bitrate <= 0:
            problems.append(f"bitrate: expected a positive number or None, got {record.bitrate!r}")
        cover = record.cover
        if self.cover_sha256 is None:
            if cover is not None:
                problems.append(f"cover: expected none, got {cover!r}")
        elif cover is None:
            problems.append("cover: expected one, got none")
        else:
            actual = (cover.sha256, cover.mime, cover.width, cover.height, cover.source)
            expected = (self.cover_sha256, self.cover_mime, self.cover_width, self.cover_height, "embedded")
            if actual != expected:
                problems.append(f"cover: expected {expected}, got {actual}")
        if sorted(record.warnings) != sorted(self.warnings):
            problems.append(f"warnings: expected {sorted(self.warnings)}, got {sorted(record.warnings)}")
        return problems

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class CoverArt:
    data: bytes
    mime: str
    width: int | None
    height: int | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return {"image/jpeg": "jpg", "image/png": "png"}.get(self.mime, "bin")


NOT_AN_IMAGE = CoverArt(b"this is not an image, whatever the tag says", "image/jpeg", None, None)
_NOT_AN_IMAGE_WARNING = "embedded cover is not a readable image"


def make_cover_art(rng: random.Random, width: int | None = None, height: int | None = None,
                   mime: str | None = None) -> CoverArt:
    """A small real image: a coloured field with a few shapes, JPEG or PNG."""
    width = width or rng.choice([48, 64, 120, 200, 300, 500])
    height = height or rng.choice([width, width, width, round(width * 0.75)])
    mime = mime or rng.choice(["image/jpeg", "image/jpeg", "image/png"])
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = rng.randrange(x0, width + 1), rng.randrange(y0, height + 1)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mime == "image/jpeg" else "PNG", quality=70)
    return CoverArt(buffer.getvalue(), mime, width, height)


# ---------------------------------------------------------------- writing tags


_ID3_EXTRA_FRAMES = {"label": TPUB, "isrc": TSRC}
_APE_EXTRA_KEYS = {"label": "Label", "comment": "Comment", "catalognumber": "CatalogNumber", "isrc": "ISRC",
                   "artist": "Artist", "albumartist": "Album Artist"}
_MP4_EXTRA_KEYS = {"comment": "\xa9cmt", "artist": "\xa9ART", "albumartist": "aART"}
_ASF_EXTRA_KEYS = {"label": "WM/Publisher", "isrc": "WM/ISRC", "catalognumber": "WM/CatalogNo",
                   "comment": "Description", "artist": "Author", "albumartist": "WM/AlbumArtist"}


def _position_text(number: int | None, total: int | None) -> str | None:
    if number is None:
        return None
    return f"{number}/{total}" if total else str(number)


def _gain_text(gain: float) -> str:
    return f"{gain:+.2f} dB"


def _peak_text(peak: float) -> str:
    return f"{peak:.6f}"


def _tag_items(track: ExpectedTrack) -> list[tuple[str, list[str]]]:
    """The track's tags as (Picard name, values), the vocabulary every writer below translates from."""
    items: list[tuple[str, list[str]]] = []

    def put(key: str, values) -> None:
        values = [values] if isinstance(values, str) else [value for value in values if value is not None]
        if values:
            items.append((key, values))

    extra = dict(track.tags)
    put("title", [track.title])
    if "artist" in extra:  # Picard's convention: a display string in ARTIST, the list in ARTISTS
        put("artist", extra.pop("artist"))
        put("artists", track.artists)
    else:
        put("artist", track.artists)
    put("album", [track.album])
    if "albumartist" in extra:
        put("albumartist", extra.pop("albumartist"))
        put("albumartists", track.album_artists)
    else:
        put("albumartist", track.album_artists)
    if track.is_compilation:
        put("compilation", ["1"])
    put("date", [track.date])
    put("genre", track.genres)
    put("composer", track.composers)
    put("musicbrainz_trackid", [track.mb_track_id])
    put("musicbrainz_releasetrackid", [track.mb_release_track_id])
    put("musicbrainz_albumid", [track.mb_album_id])
    put("musicbrainz_releasegroupid", [track.mb_release_group_id])
    put("musicbrainz_artistid", track.mb_artist_ids)
    put("musicbrainz_albumartistid", track.mb_album_artist_ids)
    for scope in ("track", "album"):
        gain, peak = getattr(track, f"replaygain_{scope}_gain"), getattr(track, f"replaygain_{scope}_peak")
        if gain is not None:
            put(f"replaygain_{scope}_gain", [_gain_text(gain)])
        if peak is not None:
            put(f"replaygain_{scope}_peak", [_peak_text(peak)])
    for key, values in extra.items():
        put(key, values)
    return items


_MB_DESCRIPTIONS = {
    "musicbrainz_releasetrackid": "MusicBrainz Release Track Id",
    "musicbrainz_albumid": "MusicBrainz Album Id",
    "musicbrainz_releasegroupid": "MusicBrainz Release Group Id",
    "musicbrainz_artistid": "MusicBrainz Artist Id",
    "musicbrainz_albumartistid": "MusicBrainz Album Artist Id",
    "musicbrainz_trackid": "MusicBrainz Track Id",
}
_ID3_FRAMES = {"title": TIT2, "artist": TPE1, "album": TALB, "albumartist": TPE2, "compilation": TCMP,
               "date": TDRC, "genre": TCON, "composer": TCOM}


def _write_id3(tags: ID3, track: ExpectedTrack, pictures: list[tuple[CoverArt, int]]) -> None:
    for key, values in _tag_items(track):
        if key in _ID3_FRAMES:
            tags.add(_ID3_FRAMES[key](encoding=3, text=values))
        elif key == "musicbrainz_trackid":
            tags.add(UFID(owner=MUSICBRAINZ_UFID_OWNER, data=values[0].encode("ascii")))
        elif key in _MB_DESCRIPTIONS:
            tags.add(TXXX(encoding=3, desc=_MB_DESCRIPTIONS[key], text=values))
        elif key in _ID3_EXTRA_FRAMES:
            tags.add(_ID3_EXTRA_FRAMES[key](encoding=3, text=values))
        elif key == "comment":
            tags.add(COMM(encoding=3, lang="eng", desc="", text=values))
        else:  # artists, replaygain_*, catalognumber, custom keys
            tags.add(TXXX(encoding=3, desc=key.upper(), text=values))
    track_text = _position_text(track.track_number, track.track_total)
    if track_text:
        tags.add(TRCK(encoding=3, text=[track_text]))
    disc_text = _position_text(track.disc_number, track.disc_total)
    if disc_text:
        tags.add(TPOS(encoding=3, text=[disc_text]))
    for cover, picture_type in pictures:
        tags.add(APIC(encoding=3, mime=cover.mime, type=picture_type, desc=f"picture {picture_type}",
                      data=cover.data))


def _write_vorbis(comments, track: ExpectedTrack) -> None:
    """``comments`` is an empty VComment: a list of (KEY, value) pairs, appended to directly (no lookups)."""
    items = [(key.upper(), values) for key, values in _tag_items(track)]
    if track.track_number is not None:
        if track.position_style == "slash":
            items.append(("TRACKNUMBER", [_position_text(track.track_number, track.track_total)]))
        else:
            items.append(("TRACKNUMBER", [str(track.track_number)]))
            if track.track_total:
                items.append(("TRACKTOTAL", [str(track.track_total)]))
    if track.disc_number is not None:
        items.append(("DISCNUMBER", [str(track.disc_number)]))
        if track.disc_total:
            items.append(("DISCTOTAL", [str(track.disc_total)]))
    overridden = {key.upper() for key in track.raw_overrides}
    items = [item for item in items if item[0] not in overridden]
    items.extend((key.upper(), values) for key, values in track.raw_overrides.items())
    comments.extend((key, value) for key, values in items for value in values)


def _vorbis_picture(cover: CoverArt, picture_type: int) -> Picture:
    picture = Picture()
    picture.type, picture.mime, picture.data = picture_type, cover.mime, cover.data
    picture.width, picture.height = cover.width or 0, cover.height or 0
    picture.depth = 24
    return picture


def _write_apev2(tags: APEv2, track: ExpectedTrack, pictures: list[tuple[CoverArt, int]]) -> None:
    names = {"title": "Title", "artists": "Artists", "album": "Album", "albumartist": "Album Artist",
             "albumartists": "AlbumArtists", "compilation": "Compilation", "date": "Year", "genre": "Genre",
             "composer": "Composer", **_APE_EXTRA_KEYS}
    names["artist"] = "Artist"
    for key, values in _tag_items(track):
        tags[names.get(key, key.upper())] = values
    track_text = _position_text(track.track_number, track.track_total)
    if track_text:
        tags["Track"] = track_text
    disc_text = _position_text(track.disc_number, track.disc_total)
    if disc_text:
        tags["Disc"] = disc_text
    for cover, picture_type in pictures:
        key = "Cover Art (Front)" if picture_type == 3 else "Cover Art (Back)"
        tags[key] = APEValue(f"{key[11:-1].lower()}.{cover.extension}".encode() + b"\x00" + cover.data, BINARY)


def _write_mp4(tags, track: ExpectedTrack, pictures: list[tuple[CoverArt, int]]) -> None:
    atoms = {"title": "\xa9nam", "album": "\xa9alb", "date": "\xa9day", "genre": "\xa9gen",
             "composer": "\xa9wrt", **_MP4_EXTRA_KEYS}
    for key, values in _tag_items(track):
        if key == "compilation":
            tags["cpil"] = True
        elif key in atoms:
            tags[atoms[key]] = values
        else:
            name = _MB_DESCRIPTIONS.get(key, key.upper())
            tags[f"----:com.apple.iTunes:{name}"] = [MP4FreeForm(value.encode()) for value in values]
    if track.track_number is not None:
        tags["trkn"] = [(track.track_number, track.track_total or 0)]
    if track.disc_number is not None:
        tags["disk"] = [(track.disc_number, track.disc_total or 0)]
    if pictures:  # MP4 has no picture types: the front cover goes first
        formats = {"image/jpeg": MP4Cover.FORMAT_JPEG, "image/png": MP4Cover.FORMAT_PNG}
        ordered = sorted(pictures, key=lambda item: item[1] != 3)
        tags["covr"] = [MP4Cover(cover.data, formats.get(cover.mime, MP4Cover.FORMAT_JPEG)) for cover, _ in ordered]


def _asf_picture(cover: CoverArt, picture_type: int) -> ASFByteArrayAttribute:
    blob = (struct.pack("<BI", picture_type, len(cover.data)) + cover.mime.encode("utf-16-le") + b"\x00\x00"
            + "cover".encode("utf-16-le") + b"\x00\x00" + cover.data)
    return ASFByteArrayAttribute(blob)


def _write_asf(tags, track: ExpectedTrack, pictures: list[tuple[CoverArt, int]]) -> None:
    names = {"title": "Title", "album": "WM/AlbumTitle", "compilation": "WM/IsCompilation", "date": "WM/Year",
             "genre": "WM/Genre", "composer": "WM/Composer", "artists": "WM/ARTISTS",
             **{key: f"MusicBrainz/{description[12:]}" for key, description in _MB_DESCRIPTIONS.items()},
             **_ASF_EXTRA_KEYS}
    for key, values in _tag_items(track):
        tags[names.get(key, key.upper())] = values
    if track.track_number is not None:  # WMA has no track total
        tags["WM/TrackNumber"] = str(track.track_number)
    disc_text = _position_text(track.disc_number, track.disc_total)
    if disc_text:
        tags["WM/PartOfSet"] = disc_text
    if pictures:
        tags["WM/Picture"] = [_asf_picture(cover, picture_type) for cover, picture_type in pictures]


_ID3_CLASSES = {"mp3": MP3, "wav": WAVE, "aiff": AIFF, "dsf": DSF, "dff": DSDIFF, "tta": TrueAudio}
_VORBIS_CLASSES = {"flac": FLAC, "vorbis": OggVorbis, "opus": OggOpus, "speex": OggSpeex}  # by codec


def _tagged_bytes(template: Template, track: ExpectedTrack, covers: dict[str, CoverArt]) -> bytes:
    """The template's bytes with the track's tags, all in memory."""
    buffer = io.BytesIO(template.data)
    style = track.tag_style
    if style == "none":
        return template.data
    pictures = []
    if track.back_cover_sha256:
        pictures.append((covers[track.back_cover_sha256], 4))
    if track.cover_sha256:
        pictures.append((covers[track.cover_sha256], 3))
    audio_format = template.format
    if style.startswith("id3") and audio_format.container not in _ID3_CLASSES:
        # ADTS AAC: mutagen reads its stream only; taggers put an ID3v2 tag in front, as in an MP3
        tags = ID3()
        _write_id3(tags, track, pictures)
        tags.save(buffer, v2_version=4)
    elif style.startswith("id3"):
        audio = _ID3_CLASSES[audio_format.container](buffer)
        if audio.tags is None:
            audio.add_tags()
        if style == "id3v1":  # mutagen writes ID3v1 beside ID3v2 only: write both, then drop the ID3v2 tag
            _write_id3(audio.tags, track, [])
            buffer.seek(0)
            audio.save(buffer, v1=2)
            buffer.seek(0)
            mutagen.id3.delete(buffer, delete_v1=False, delete_v2=True)
        else:
            _write_id3(audio.tags, track, pictures)
            buffer.seek(0)
            audio.save(buffer, v2_version=3 if style == "id3v2.3" else 4, v23_sep=None,
                       **({"v1": 2} if style.endswith("+v1") else {}))
    elif style == "vorbis":
        audio = _VORBIS_CLASSES[audio_format.codec](buffer)
        if audio.tags is None:
            audio.add_tags()
        _write_vorbis(audio.tags, track)
        if isinstance(audio, FLAC):
            for cover, picture_type in pictures:
                audio.add_picture(_vorbis_picture(cover, picture_type))
        elif pictures:
            audio.tags["METADATA_BLOCK_PICTURE"] = [
                base64.b64encode(_vorbis_picture(cover, picture_type).write()).decode("ascii")
                for cover, picture_type in pictures
            ]
        buffer.seek(0)
        audio.save(buffer)
    elif style == "apev2":
        tags = APEv2()
        _write_apev2(tags, track, pictures)
        buffer.seek(0)
        tags.save(buffer)
    elif style == "mp4":
        audio = MP4(buffer)
        if audio.tags is None:
            audio.add_tags()
        _write_mp4(audio.tags, track, pictures)
        buffer.seek(0)
        audio.save(buffer)
    elif style == "asf":
        audio = ASF(buffer)
        _write_asf(audio.tags, track, pictures)
        buffer.seek(0)
        audio.save(buffer)
    else:
        raise ValueError(f"unknown tag style {style!r}")
    return buffer.getvalue()


# ---------------------------------------------------------------- what each tag style can hold

_ID3V1_FIELD_LENGTH = 30


def _fit_to_style(track: ExpectedTrack) -> None:
    """Make the answer key say what the format will really hold."""
    style = track.tag_style
    if style == "asf":
        track.track_total = None  # WM/TrackNumber has no total
    if style == "id3v1":
        def cut(text):  # what mutagen's ID3v1 writer and reader do to a field
            if not text:
                return None
            return text.encode("latin-1", "replace")[:_ID3V1_FIELD_LENGTH].split(b"\x00")[0].strip().decode(
                "latin-1") or None
        track.title = cut(track.title)
        first_artist = cut(track.artists[0]) if track.artists else None
        track.artists = [first_artist] if first_artist else []
        track.album = cut(track.album)
        track.date = track.date[:4] if track.date else None
        track.genres = track.genres[:1] if track.genres and track.genres[0] in TCON.GENRES else []
        track.tags = {}  # mutagen's ID3v1 writer drops the comment (it looks for a bare "COMM" key)
        track.album_artists, track.composers = [], []
        track.is_compilation = False
        track.track_total = track.disc_number = track.disc_total = None
        track.mb_track_id = track.mb_release_track_id = track.mb_album_id = track.mb_release_group_id = None
        track.mb_artist_ids, track.mb_album_artist_ids = [], []
        track.replaygain_track_gain = track.replaygain_track_peak = None
        track.replaygain_album_gain = track.replaygain_album_peak = None
        track.cover_sha256 = track.back_cover_sha256 = None
    if track.cover_sha256 is None:
        track.cover_mime = track.cover_width = track.cover_height = None


# ---------------------------------------------------------------- the library

_FIRST_WORDS = ["Blue", "Silent", "Electric", "Golden", "Hidden", "Northern", "Broken", "Velvet", "Neon", "Paper",
                "Crimson", "Quiet", "Wild", "Hollow", "Lunar", "Iron", "Glass", "Distant", "Midnight", "Summer"]
_SECOND_WORDS = ["Foxes", "Harbour", "Engines", "Gardens", "Rivers", "Machines", "Satellites", "Ghosts", "Pilots",
                 "Orchards", "Tides", "Signals", "Lanterns", "Mountains", "Wolves", "Echoes", "Cities", "Horses"]
_TITLE_NOUNS = ["Fox", "Harbour", "Engine", "Garden", "River", "Machine", "Satellite", "Ghost", "Pilot", "Tide",
                "Signal", "Lantern", "Mountain", "Wolf", "Echo", "City", "Horse", "Morning", "Letter", "Parade"]
_UNICODE_ARTISTS = ["Björk Guðmundsdóttir", "Sigur Rós", "坂本龍一", "Motörhead", "Beyoncé", "Ólafur Arnalds",
                    "AC/DC", "Zoë Keating", "Дельфин", "Αλκίνοος Ιωαννίδης", "東京事変", "방탄소년단",
                    "🎵 Lo-Fi Beats 🌙", "Mónica Naranjo", "Søren Kierkegaard Ensemble", "Ñu"]
_UNICODE_TITLES = ["Café del Mar", "Ça plane pour moi", "夜に駆ける", "Für Elise", "Señorita 🌶️", "Ægir",
                   "Straße nach Süden", "Ne me quitte pas", "Łódź by Night", "Ελπίδα", "Ночь", "🌊 Waves 🌊"]
_GENRES = ["Rock", "Jazz", "Electronic", "Hip-Hop", "Classical", "Ambient", "Pop", "Folk", "Metal", "Soundtrack",
           "Blues", "Reggae", "Funk", "Techno", "Trip-Hop", "Chanson"]
_LABELS = ["Warp", "Blue Note", "Sub Pop", "ECM", "Ninja Tune", "4AD", "Domino", "Rough Trade"]
_FOLDER_COVER_NAMES = ["cover.jpg", "folder.png", "front.jpg", "Cover.JPG", "folder.jpg"]


@dataclass
class Library:
    """A generated library and its answer key."""

    root: Path
    tracks: list[ExpectedTrack]
    corrupt: list[Path]  # files read_track must refuse
    corrupt_kinds: dict[str, str]  # str(path) -> "random-bytes" | "truncated" | "zero-byte"
    folder_covers: dict[str, str]  # directory holding tracks -> the image find_folder_cover picks there
    seed: int
    templates: TemplateCache
    covers: dict[str, CoverArt] = field(default_factory=dict)  # sha256 -> image, to rewrite tags
    tag_style_counts: dict[str, int] = field(default_factory=dict, repr=False)  # format name -> files written

    @property
    def by_path(self) -> dict[str, ExpectedTrack]:
        return {track.path: track for track in self.tracks}

    @property
    def formats(self) -> set[str]:
        return {track.format_name for track in self.tracks}

    def track(self, path: str | os.PathLike) -> ExpectedTrack:
        path = os.fsdecode(path)
        for track in self.tracks:
            if track.path == path:
                return track
        raise KeyError(path)

    def retag(self, path: str | os.PathLike, **fields) -> ExpectedTrack:
        """Rewrite a file's tags with some fields changed; returns (and keeps) the new ExpectedTrack.

        ``fields`` are ExpectedTrack tag fields (title, artists, album, track_number, tags, ...). ``year`` follows
        ``date`` unless given. The file's mtime always moves forward, even within the clock's resolution.
        """
        old = self.track(path)
        stream_fields = {"path", "size_bytes", "mtime", "format", "codec", "duration_seconds", "bitrate",
                         "sample_rate", "channels", "bits_per_sample"}
        if stream_fields & fields.keys():
            raise ValueError(f"retag changes tags only, not {sorted(stream_fields & fields.keys())}")
        if "date" in fields and "year" not in fields:
            fields["year"] = int(fields["date"][:4]) if fields["date"] else None
        if "raw_overrides" not in fields and old.raw_overrides:  # rewritten clean: only the cover's warning stays
            fields["raw_overrides"] = {}
            fields.setdefault("warnings", [w for w in old.warnings if w == _NOT_AN_IMAGE_WARNING])
        new = dataclasses.replace(old, **fields)
        if new.tag_style == "none" and any(value for value in fields.values()):
            new.tag_style = FORMATS[new.format_name].tag_styles[0]
        if new.tag_style == "id3v1":
            new.tag_style = "id3v2.4"  # ID3v1 would truncate the new values
        _fit_to_style(new)
        self._write(new, previous_mtime=old.mtime)
        self.tracks[self.tracks.index(old)] = new
        return new

    def add_track(self, artist: str, album: str, title: str, format_name: str = "flac", *,
                  directory: str | os.PathLike | None = None, file_name: str | None = None,
                  **fields) -> ExpectedTrack:
        """Write one more tagged file (default: ROOT/artist/album/NN title.ext) and return its ExpectedTrack."""
        audio_format = FORMATS[format_name]
        track_number = fields.pop("track_number", 1)
        folder = Path(directory) if directory is not None else self.root / _safe_name(artist) / _safe_name(album)
        name = file_name or f"{track_number:02d} {_safe_name(title)}{audio_format.extension}"
        template = self.templates.get(format_name, TEMPLATE_DURATIONS[0])
        track = ExpectedTrack(
            path=os.fsdecode(folder / name), size_bytes=0, mtime=0.0, format=audio_format.container,
            title=title, artists=[artist], album=album, album_artists=[artist], track_number=track_number,
            format_name=format_name, tag_style=audio_format.tag_styles[0], template_duration=template.duration,
            **fields,
        )
        _set_stream_fields(track, template)
        _fit_to_style(track)
        folder.mkdir(parents=True, exist_ok=True)
        self._write(track)
        self._refresh_folder_cover(folder)
        self.tracks.append(track)
        return track

    def remove_track(self, path: str | os.PathLike) -> None:
        track = self.track(path)
        os.unlink(track.path)
        self.tracks.remove(track)

    def move_track(self, path: str | os.PathLike, new_path: str | os.PathLike) -> ExpectedTrack:
        """Rename a file (mtime and content unchanged); relative ``new_path`` is taken from the library root."""
        track = self.track(path)
        destination = Path(new_path) if os.path.isabs(new_path) else self.root / new_path
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(track.path, destination)
        track.path = os.fsdecode(destination)
        self._refresh_folder_cover(destination.parent)
        return track

    def touch(self, path: str | os.PathLike) -> ExpectedTrack:
        """Move the mtime forward without changing the content."""
        track = self.track(path)
        track.mtime = _bump_mtime(track.path, track.mtime, always=True)
        return track

    def corrupt_track(self, path: str | os.PathLike) -> Path:
        """Overwrite a good file with random bytes (same size); it moves from ``tracks`` to ``corrupt``."""
        track = self.track(path)
        Path(track.path).write_bytes(random.Random(os.fsencode(track.path)).randbytes(track.size_bytes))
        _bump_mtime(track.path, track.mtime)
        self.tracks.remove(track)
        self.corrupt.append(Path(track.path))
        self.corrupt_kinds[track.path] = "random-bytes"
        return Path(track.path)

    def set_folder_cover(self, directory: str | os.PathLike, name: str = "cover.jpg",
                         cover: CoverArt | None = None) -> CoverArt:
        """Write (or replace) a folder image and update the tracks of that directory."""
        cover = cover or make_cover_art(random.Random(os.fsencode(directory)), mime=_mime_for_name(name))
        (Path(directory) / name).write_bytes(cover.data)
        self._refresh_folder_cover(Path(directory))
        return cover

    def _refresh_folder_cover(self, directory: Path, tracks: list[ExpectedTrack] | None = None) -> None:
        """Point the tracks of ``directory`` (default: all of them, found by scanning) at its folder image."""
        directory_text = os.fsdecode(directory)
        chosen = find_folder_cover(os.listdir(directory))
        path = os.path.join(directory_text, chosen) if chosen else None
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
        if path:
            self.folder_covers[directory_text] = path
        else:
            self.folder_covers.pop(directory_text, None)
        for track in self.tracks if tracks is None else tracks:
            if os.path.dirname(track.path) == directory_text:
                track.folder_cover_path, track.folder_cover_sha256 = path, digest

    def _write(self, track: ExpectedTrack, previous_mtime: float | None = None) -> None:
        template = self.templates.get(track.format_name, track.template_duration)
        data = _tagged_bytes(template, track, self.covers)
        with open(track.path, "wb") as audio_file:
            audio_file.write(data)
            audio_file.flush()
            written_mtime = os.fstat(audio_file.fileno()).st_mtime
        track.size_bytes = len(data)
        track.mtime = _bump_mtime(track.path, previous_mtime) if previous_mtime is not None else written_mtime

    def save_manifest(self, path: str | os.PathLike) -> None:
        """The answer key as JSON (paths and tags only, no image bytes), for tools outside this process."""
        manifest = {
            "root": os.fsdecode(self.root), "seed": self.seed,
            "tracks": [track.to_json() for track in self.tracks],
            "corrupt": {os.fsdecode(path): self.corrupt_kinds[os.fsdecode(path)] for path in self.corrupt},
            "folder_covers": self.folder_covers,
        }
        # ASCII JSON: a file name that is not UTF-8 travels as a "\udcXX" escape that json.loads gives back
        Path(path).write_text(json.dumps(manifest, indent=1, default=str), encoding="ascii")


def _mime_for_name(name: str) -> str:
    return "image/png" if name.lower().endswith(".png") else "image/jpeg"


def _bump_mtime(path: str, previous_mtime: float | None, always: bool = False) -> float:
    """Make mtime later than ``previous_mtime``: a rewrite within one clock tick would otherwise look unchanged."""
    if previous_mtime is not None and (always or os.stat(path).st_mtime <= previous_mtime):
        target = max(time.time_ns(), int(previous_mtime * 1e9) + 1_000_000_000)
        os.utime(path, ns=(target, target))
    return os.stat(path).st_mtime


def _safe_name(text: str) -> str:
    """A path component: no "/" or NUL, not hidden, at most ~150 bytes of UTF-8."""
    name = text.replace("/", "_").replace("\x00", "").strip().lstrip(".") or "_"
    while len(name.encode("utf-8", "surrogateescape")) > 150:
        name = name[:-1]
    return name


def _set_stream_fields(track: ExpectedTrack, template: Template) -> None:
    audio_format = template.format
    track.codec = audio_format.codec
    track.duration_seconds = template.duration
    track.bitrate = audio_format.nominal_bitrate
    track.sample_rate = audio_format.sample_rate
    track.channels = audio_format.channels
    track.bits_per_sample = audio_format.bits_per_sample
    track.template_duration = template.duration


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Names:
    """Unique artist names: a few with accents, scripts and emoji, the rest made of two words."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()
        self.in_order: list[str] = []  # sampling from a list keeps the library deterministic and cheap
        self.unicode_pool = list(_UNICODE_ARTISTS)
        rng.shuffle(self.unicode_pool)
        self.ids: dict[str, str] = {VARIOUS_ARTISTS: VARIOUS_ARTISTS_MBID}

    def artist(self) -> str:
        if self.unicode_pool and self.rng.random() < 0.3:
            name = self.unicode_pool.pop()
        else:
            name = f"The {self.rng.choice(_FIRST_WORDS)} {self.rng.choice(_SECOND_WORDS)}"
        base, counter = name, 2
        while name in self.used:
            name, counter = f"{base} {counter}", counter + 1
        self.used.add(name)
        self.in_order.append(name)
        return name

    def artist_id(self, name: str) -> str:
        if name not in self.ids:
            self.ids[name] = _uuid(self.rng)
        return self.ids[name]

    def title(self) -> str:
        if self.rng.random() < 0.12:
            return self.rng.choice(_UNICODE_TITLES)
        return f"{self.rng.choice(_FIRST_WORDS)} {self.rng.choice(_TITLE_NOUNS)}"


@dataclass
class _AlbumPlan:
    artists: list[str]
    title: str
    format_name: str
    tracks_per_disc: list[int]
    compilation: bool = False
    single_folder_discs: bool = True  # multi-disc: "1-01 Title" in one folder, else "Disc 1/01 Title"


def make_library(root: str | os.PathLike, n_files: int, seed: int = 0, formats=None, *,
                 cache_dir: str | os.PathLike | None = None, corrupt: bool = True, untagged: bool = True,
                 odd_file_names: bool = True, tracks_per_album: tuple[int, int] | None = None) -> Library:
    """Write ``n_files`` readable audio files under ``root`` (plus a few corrupt ones) and return the answer key.

    Layout: Artist/Album/NN Title.ext, several albums per artist, some multi-disc (one folder or Disc N folders),
    "Various Artists" compilations (Artist/Album/NN Artist - Title.ext), Unicode in tags and names, an "Unsorted"
    folder of untagged files, and (``odd_file_names``) one file whose name is not valid UTF-8. The first FLAC album
    opens with a sloppily tagged track (NUL, spaces, track 0, year 0000) and a picture that is not an image; their
    ExpectedTrack lists the warnings read_track must give. Corrupt files (``corrupt``) are extra, not in n_files.
    ``formats``: names from FORMATS (default REAL_FORMATS); every one appears when n_files allows (about 3 files
    per format). Same seed, same library: names, tags, covers and audio bytes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = _Names(rng)
    format_names = list(formats) if formats is not None else list(REAL_FORMATS)
    unknown = set(format_names) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; known: {sorted(FORMATS)}")
    library = Library(root, [], [], {}, {}, seed, TemplateCache(cache_dir))
    if tracks_per_album is None:
        tracks_per_album = (2, 4) if n_files < 40 * len(format_names) else (5, 14)

    n_untagged = max(1, n_files // 100) if untagged and n_files >= 10 else 0
    n_tagged = n_files - n_untagged
    albums = _plan_albums(rng, names, n_tagged, format_names, tracks_per_album)
    first_flac = next((album for album in albums if album.format_name == "flac"), None)
    first_mp3 = next((album for album in albums if album.format_name == "mp3"), None)
    for album_index, album in enumerate(albums):
        _write_album(library, rng, names, album, album_index, dirty=album is first_flac,
                     odd_name=odd_file_names and album is first_mp3)
    _write_untagged(library, rng, n_untagged, format_names)
    if corrupt:
        _write_corrupt(library, rng, max(6, n_files // 200))
    return library


def _plan_albums(rng, names: _Names, n_tracks: int, format_names: list[str],
                 tracks_per_album: tuple[int, int]) -> list[_AlbumPlan]:
    plans: list[_AlbumPlan] = []
    weights = [FORMATS[name].weight for name in format_names]
    remaining = n_tracks
    artist_albums_left = 0
    artists: list[str] = []
    while remaining > 0:
        # Round-robin first so every requested format appears; then the formats' real-world weights.
        format_name = format_names[len(plans)] if len(plans) < len(format_names) else \
            rng.choices(format_names, weights)[0]
        compilation = len(plans) % 17 == 5  # the 6th album, then one in 17
        multi_disc = not compilation and len(plans) % 9 == 3
        low, high = tracks_per_album
        discs = [rng.randint(low, high) for _ in range(rng.randint(2, 3) if multi_disc else 1)]
        if len(plans) < len(format_names):  # room for each of the format's tag styles in its first album
            discs[0] = max(discs[0], len(FORMATS[format_name].tag_styles))
        while sum(discs) > remaining and (len(discs) > 1 or discs[0] > 1):
            if discs[-1] > 1:
                discs[-1] -= 1
            else:
                discs.pop()
        remaining -= sum(discs)
        if compilation:
            album_artists = [VARIOUS_ARTISTS]
        else:
            if artist_albums_left == 0:
                artists = [names.artist()]
                if rng.random() < 0.08:  # a duo credited as two album artists
                    artists.append(names.artist())
                artist_albums_left = rng.randint(2, 4)
            artist_albums_left -= 1
            album_artists = artists
        title = rng.choice([f"{names.title()}", f"{names.title()} Sessions", f"Live at {rng.choice(_SECOND_WORDS)}",
                            rng.choice(_UNICODE_TITLES) + " (Deluxe)"])
        plans.append(_AlbumPlan(album_artists, title, format_name, discs, compilation,
                                single_folder_discs=rng.random() < 0.5))
    return plans


def _album_directory(library: Library, album: _AlbumPlan, album_index: int) -> Path:
    artist_folder = _safe_name(" & ".join(album.artists))
    return library.root / artist_folder / _safe_name(f"{album.title} [{album_index:04d}]")


def _write_album(library: Library, rng, names: _Names, album: _AlbumPlan, album_index: int, *, dirty: bool,
                 odd_name: bool) -> None:
    audio_format = FORMATS[album.format_name]
    directory = _album_directory(library, album, album_index)
    date = rng.choice([f"{rng.randint(1960, 2024)}", f"{rng.randint(1960, 2024)}-{rng.randint(1, 12):02d}-"
                       f"{rng.randint(1, 28):02d}", f"{rng.randint(1960, 2024)}-{rng.randint(1, 12):02d}"])
    genres = rng.sample(_GENRES, rng.choice([1, 1, 2]))
    has_musicbrainz = rng.random() < 0.8
    album_ids = (_uuid(rng), _uuid(rng)) if has_musicbrainz else (None, None)
    album_gain = (round(rng.uniform(-12, 3), 2), round(rng.uniform(0.5, 1.0), 6)) if rng.random() < 0.7 else None
    cover_choice = rng.random()
    embedded_cover = make_cover_art(rng) if cover_choice < 0.55 else None
    if embedded_cover:
        library.covers[embedded_cover.sha256] = embedded_cover
    back_cover = make_cover_art(rng, width=64) if embedded_cover and rng.random() < 0.2 else None
    if back_cover:
        library.covers[back_cover.sha256] = back_cover
    folder_cover_name = rng.choice(_FOLDER_COVER_NAMES) if 0.35 < cover_choice < 0.8 else None
    label, catalog_number = rng.choice(_LABELS), f"CAT-{rng.randint(100, 9999)}"
    disc_total = len(album.tracks_per_disc)
    position_style = rng.choice(["slash", "split"])
    written = 0
    album_tracks: list[ExpectedTrack] = []
    for disc_index, tracks_on_disc in enumerate(album.tracks_per_disc, start=1):
        if disc_total > 1 and not album.single_folder_discs:
            folder = directory / f"Disc {disc_index}"
        else:
            folder = directory
        folder.mkdir(parents=True, exist_ok=True)
        for track_number in range(1, tracks_on_disc + 1):
            if album.compilation:
                artists = [names.artist() if rng.random() < 0.3 else rng.choice(names.in_order)]
            else:
                artists = list(album.artists)
                if rng.random() < 0.15:
                    guest = rng.choice(names.in_order)
                    if guest not in artists:
                        artists.append(guest)
            title = names.title()
            tag_style = _next_tag_style(library, rng, audio_format)
            template = library.templates.get(album.format_name, rng.choice(TEMPLATE_DURATIONS))
            extra: dict[str, list[str]] = {"label": [label], "catalognumber": [catalog_number],
                                           "isrc": [f"QZ{rng.randint(10, 99)}{rng.randint(10**6, 10**7 - 1)}"],
                                           "sbay_fixture": [
                                               f"{library.seed}:{album_index}:{disc_index}:{track_number}"]}
            if rng.random() < 0.3:
                extra["comment"] = [rng.choice(["Remastered", "Bonus track", "Recorded live — 🎤", "Demo"])]
            if len(artists) > 1 and rng.random() < 0.5:
                extra["artist"] = [" feat. ".join(artists)]
            if audio_format.container == "opus":
                extra["r128_track_gain"] = [str(rng.randint(-2000, 500))]
            track_gain = (round(rng.uniform(-12, 3), 2), round(rng.uniform(0.5, 1.0), 6)) \
                if album_gain and audio_format.container != "opus" else None
            if disc_total > 1 and album.single_folder_discs:
                stem = f"{disc_index}-{track_number:02d}"
            else:
                stem = f"{track_number:02d}"
            display = f"{artists[0]} - {title}" if album.compilation else title
            file_name = _safe_name(f"{stem} {display}") + audio_format.extension
            path = os.fsdecode(folder / file_name)
            if odd_name and written == 0:
                path = os.fsdecode(os.fsencode(folder) + b"/" + stem.encode() + b" Caf\xe9 (latin-1 name)"
                                   + audio_format.extension.encode())
            track = ExpectedTrack(
                path=path, size_bytes=0, mtime=0.0, format=audio_format.container,
                title=title, artists=artists, album=album.title, album_artists=list(album.artists),
                is_compilation=album.compilation, track_number=track_number,
                track_total=tracks_on_disc if rng.random() < 0.85 else None,
                disc_number=disc_index if disc_total > 1 or rng.random() < 0.5 else None,
                disc_total=disc_total if disc_total > 1 or rng.random() < 0.5 else None,
                date=date, year=int(date[:4]), genres=genres,
                composers=rng.sample(names.in_order[-50:], min(len(names.in_order), rng.choice([0, 1, 1, 2]))),
                mb_track_id=_uuid(rng) if has_musicbrainz else None,
                mb_release_track_id=_uuid(rng) if has_musicbrainz else None,
                mb_album_id=album_ids[0], mb_release_group_id=album_ids[1],
                mb_artist_ids=[names.artist_id(artist) for artist in artists] if has_musicbrainz else [],
                mb_album_artist_ids=[names.artist_id(artist) for artist in album.artists] if has_musicbrainz else [],
                replaygain_track_gain=track_gain[0] if track_gain else None,
                replaygain_track_peak=track_gain[1] if track_gain else None,
                replaygain_album_gain=album_gain[0] if track_gain else None,
                replaygain_album_peak=album_gain[1] if track_gain else None,
                tags=extra,
                cover_sha256=embedded_cover.sha256 if embedded_cover else None,
                cover_mime=embedded_cover.mime if embedded_cover else None,
                cover_width=embedded_cover.width if embedded_cover else None,
                cover_height=embedded_cover.height if embedded_cover else None,
                format_name=album.format_name, tag_style=tag_style, position_style=position_style,
                back_cover_sha256=back_cover.sha256 if back_cover else None,
            )
            if track.disc_number is None:
                track.disc_total = None
            _set_stream_fields(track, template)
            if dirty and written == 0:
                _make_dirty(track)
            if dirty and written == 1:
                _give_broken_cover(library, track)
            _fit_to_style(track)
            library._write(track)
            library.tracks.append(track)
            album_tracks.append(track)
            written += 1
    folders = sorted({Path(track.path).parent for track in album_tracks})
    if folder_cover_name:
        # In the album folder; with Disc N folders, half the time in each of them too (else their tracks have none:
        # a folder image counts for the files beside it only).
        cover_folders = [directory] + (folders if directory not in folders and rng.random() < 0.5 else [])
        folder_cover = make_cover_art(rng, mime=_mime_for_name(folder_cover_name))
        for folder in cover_folders:
            (folder / folder_cover_name).write_bytes(folder_cover.data)
        if rng.random() < 0.3:  # a scan that is not a cover, to be ignored
            (directory / "back.jpg").write_bytes(make_cover_art(rng, width=48).data)
    for folder in folders:
        library._refresh_folder_cover(folder, album_tracks)


def _next_tag_style(library: Library, rng, audio_format: AudioFormat) -> str:
    """Each of a format's tag styles once (so small libraries have them all), then mostly the usual one."""
    styles = audio_format.tag_styles
    written = library.tag_style_counts.get(audio_format.name, 0)
    library.tag_style_counts[audio_format.name] = written + 1
    if written < len(styles):
        return styles[written]
    return styles[0] if rng.random() < 0.6 else rng.choice(styles)


def _make_dirty(track: ExpectedTrack) -> None:
    """Values that need cleaning, as sloppy taggers write them (Vorbis comments hold anything)."""
    track.raw_overrides = {"TITLE": [f"  {track.title}\x00 "], "TRACKNUMBER": ["0"], "DATE": ["0000"],
                           "TRACKTOTAL": [], "GENRE": [*track.genres, "   "]}
    track.track_number = track.track_total = None
    track.date, track.year = "0000", None
    track.warnings = ["NUL removed from title", "whitespace stripped from title", "tracknumber 0 ignored",
                      "year 0 ignored (outside 1000..2100)"]


def _give_broken_cover(library: Library, track: ExpectedTrack) -> None:
    library.covers[NOT_AN_IMAGE.sha256] = NOT_AN_IMAGE
    track.cover_sha256, track.cover_mime = NOT_AN_IMAGE.sha256, NOT_AN_IMAGE.mime
    track.cover_width = track.cover_height = None
    track.back_cover_sha256 = None
    track.warnings = [*track.warnings, _NOT_AN_IMAGE_WARNING]


def _write_untagged(library: Library, rng, count: int, format_names: list[str]) -> None:
    if count == 0:
        return
    folder = library.root / "Unsorted"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        format_name = format_names[index % len(format_names)]
        audio_format = FORMATS[format_name]
        template = library.templates.get(format_name, rng.choice(TEMPLATE_DURATIONS))
        track = ExpectedTrack(path=os.fsdecode(folder / f"track_{index + 1:03d}{audio_format.extension}"),
                              size_bytes=0, mtime=0.0, format=audio_format.container, format_name=format_name,
                              tag_style="none")
        _set_stream_fields(track, template)
        library._write(track)
        library.tracks.append(track)
    library._refresh_folder_cover(folder, library.tracks[-count:])


def _write_corrupt(library: Library, rng, count: int) -> None:
    """Files that look like music by name: random bytes, a FLAC and an M4A cut short, an empty file."""
    candidates = [track for track in library.tracks if track.tagged]
    kinds = ["random-bytes", "random-bytes", "truncated", "truncated", "zero-byte"]
    for index in range(count):
        kind = kinds[index % len(kinds)]
        folder = Path(rng.choice(candidates).path).parent if candidates else library.root
        if kind == "random-bytes":
            extension = [".mp3", ".flac"][index % 2]
            path = folder / f"{90 + index:02d} Damaged Track{extension}"
            path.write_bytes(rng.randbytes(rng.randint(2048, 16384)))
        elif kind == "truncated":
            path = folder / f"{90 + index:02d} Interrupted Download{'.flac' if index % 2 else '.m4a'}"
            path.write_bytes(_truncated_bytes(library, rng, path.suffix))
        else:
            path = folder / f"{90 + index:02d} Empty.ogg"
            path.write_bytes(b"")
        library.corrupt.append(path)
        library.corrupt_kinds[os.fsdecode(path)] = kind


def _truncated_bytes(library: Library, rng, extension: str) -> bytes:
    """A tagged file cut where a tag reader must notice: inside FLAC's metadata, before MP4's moov box."""
    format_name = "flac" if extension == ".flac" else "m4a-aac"
    cover = make_cover_art(rng, width=300)
    library.covers[cover.sha256] = cover
    template = library.templates.get(format_name, 1.0)
    track = ExpectedTrack(path="", size_bytes=0, mtime=0.0, format="", title="Interrupted", artists=["Nobody"],
                          format_name=format_name, tag_style=FORMATS[format_name].tag_styles[0],
                          cover_sha256=cover.sha256)
    data = _tagged_bytes(template, track, library.covers)
    if format_name == "flac":
        return data[:data.find(cover.data) + len(cover.data) // 2]
    moov = data.find(b"moov")
    return data[:moov - 4] if moov > 4 else data[:len(data) // 2]


# ---------------------------------------------------------------- files for one reader rule each


def syncsafe(number: int) -> bytes:
    """An ID3v2 size: 28 bits in four bytes of seven."""
    return BitPaddedInt.to_str(number, width=4)


def _atom(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), name) + body


def metadata_only_mp4(tags: dict[str, list]) -> bytes:
    """An M4A made only of metadata boxes (ftyp, then moov/udta/meta/ilst, no track, no media data), with
    ``tags`` (MP4 atom name -> values) written by mutagen: what an aborted download or a tagger's template leaves.
    It holds no audio, so the reader must refuse it."""
    handler = _atom(b"hdlr", bytes(8) + b"mdirappl" + bytes(9))
    skeleton = (_atom(b"ftyp", b"M4A " + struct.pack(">I", 0x200) + b"M4A isomiso2")
                + _atom(b"moov", _atom(b"udta", _atom(b"meta", bytes(4) + handler + _atom(b"ilst", b"")))))
    buffer = io.BytesIO(skeleton)
    audio = MP4(buffer)
    for key, values in tags.items():
        audio[key] = values
    buffer.seek(0)
    audio.save(buffer)
    return buffer.getvalue()


_ASF_HEADER_LENGTH = 30  # GUID, object size (u64), number of objects (u32), two reserved bytes
_ASF_STREAM_OBJECTS = {uuid.UUID("B7DC0791-A9B7-11CF-8EE6-00C00C205365").bytes_le,  # stream properties
                       uuid.UUID("86D15240-311D-11D0-A3A4-00A0C90348F6").bytes_le}  # codec list


def asf_without_audio_stream(wma: bytes) -> bytes:
    """A WMA file (tags included) cut down to its header without the stream properties and codec list objects,
    and without its data object: tags, no audio stream."""
    header_size, count = struct.unpack_from("<QI", wma, 16)
    kept, position = [], _ASF_HEADER_LENGTH
    for _ in range(count):
        size = struct.unpack_from("<Q", wma, position + 16)[0]
        if wma[position:position + 16] not in _ASF_STREAM_OBJECTS:
            kept.append(wma[position:position + size])
        position += size
    body = b"".join(kept)
    return (wma[:16] + struct.pack("<QI", _ASF_HEADER_LENGTH + len(body), len(kept))
            + wma[28:_ASF_HEADER_LENGTH] + body)


def with_raw_tags(template: Template, items: list[tuple[str, str]]) -> bytes:
    """The template's bytes with exactly ``items`` (key, value) as its format's free-form tags, spelt as given: Vorbis
    comments, APEv2 items, ID3v2.4 TXXX descriptions, MP4 "----:com.apple.iTunes:" names, ASF attribute names.
    What other taggers write, for the reader's alias rules; no answer key (the test states what it expects)."""
    buffer = io.BytesIO(template.data)
    style = template.format.tag_styles[0]
    if style == "apev2":
        tags = APEv2()
        for key, value in items:
            tags[key] = tags[key] + [value] if key in tags else value
        tags.save(buffer)
        return buffer.getvalue()
    if style.startswith("id3"):
        audio = _ID3_CLASSES[template.format.container](buffer)
        if audio.tags is None:
            audio.add_tags()
        for key, value in items:
            audio.tags.add(TXXX(encoding=3, desc=key, text=[value]))
    elif style == "vorbis":
        audio = _VORBIS_CLASSES[template.format.codec](buffer)
        if audio.tags is None:
            audio.add_tags()
        audio.tags.extend(items)
    elif style == "mp4":
        audio = MP4(buffer)
        if audio.tags is None:
            audio.add_tags()
        for key, value in items:
            audio.tags.setdefault(f"----:com.apple.iTunes:{key}", []).append(MP4FreeForm(value.encode()))
    elif style == "asf":
        audio = ASF(buffer)
        for key, value in items:
            audio.tags.append((key, ASFUnicodeAttribute(value)))
    else:
        raise ValueError(f"unknown tag style {style!r}")
    buffer.seek(0)
    audio.save(buffer)
    return buffer.getvalue()


def with_damaged_stream_header(template: Template, *, sample_rate: int | None = None, channels: int | None = None,
                               total_samples: int | None = None, mp4_duration: tuple[int, int] | None = None) -> bytes:
    """The template's bytes with stream header fields overwritten, as a damaged header gives them: FLAC's STREAMINFO
    (sample rate, channels, total samples), WAV's fmt chunk (sample rate, channels), MP4's mdhd (timescale,
    duration)."""
    data = bytearray(template.data)
    container = template.format.container
    if container == "flac":
        assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must be the first block"
        packed = int.from_bytes(data[18:26], "big")  # rate 20 bits, channels-1 3, bits-1 5, total samples 36
        rate, channel_code = packed >> 44, (packed >> 41) & 0x7
        bits_code, samples = (packed >> 36) & 0x1F, packed & (2**36 - 1)
        rate = rate if sample_rate is None else sample_rate
        channel_code = channel_code if channels is None else channels - 1
        samples = samples if total_samples is None else total_samples
        data[18:26] = ((rate << 44) | (channel_code << 41) | (bits_code << 36) | samples).to_bytes(8, "big")
    elif container == "wav":
        fmt = data.index(b"fmt ")
        if channels is not None:
            data[fmt + 10:fmt + 12] = struct.pack("<H", channels)
        if sample_rate is not None:
            data[fmt + 12:fmt + 16] = struct.pack("<I", sample_rate)
    elif container == "m4a" and mp4_duration is not None:
        header = data.index(b"mdhd")
        assert data[header + 4] == 0, "version 0 mdhd: 32-bit times"
        data[header + 16:header + 24] = struct.pack(">II", *mp4_duration)  # timescale, duration
    else:
        raise ValueError(f"no stream header fields to damage in {template.format.name}")
    return bytes(data)


def wav_with_riff_info(duration: float, info: dict[str, str]) -> bytes:
    """A 16-bit WAV whose only tags are a RIFF INFO list, written by libsndfile as audio editors write it; ``info``
    holds soundfile's names (title, artist, album, date, genre, tracknumber, comment, copyright, software)."""
    audio_format = FORMATS["wav"]
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", audio_format.sample_rate, audio_format.channels, format="WAV",
                             subtype="PCM_16") as sound:
        for name, value in info.items():
            setattr(sound, name, value)
        sound.write(_signal(audio_format, duration))
    return buffer.getvalue()


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.audio_factory",
                                     description="Generate a tagged sample music library.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--files", type=int, default=500, help="readable audio files to write (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", help=f"comma-separated, from: {', '.join(FORMATS)} (default: real ones)")
    parser.add_argument("--cache", type=Path, help=f"template cache directory (default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--manifest", type=Path, help="also write the answer key as JSON to this file")
    parser.add_argument("--no-corrupt", action="store_true", help="no corrupt files")
    options = parser.parse_args(argv)
    formats = options.formats.split(",") if options.formats else None
    started = time.perf_counter()
    library = make_library(options.root, options.files, options.seed, formats, cache_dir=options.cache,
                           corrupt=not options.no_corrupt)
    elapsed = time.perf_counter() - started
    if options.manifest:
        library.save_manifest(options.manifest)
    print(f"{len(library.tracks)} audio files ({', '.join(sorted(library.formats))}), {len(library.corrupt)} corrupt, "
          f"{len(library.folder_covers)} folder covers in {options.root} — {elapsed:.1f} s, "
          f"{len(library.tracks) / elapsed:.0f} files/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
