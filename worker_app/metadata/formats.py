"""The audio formats the catalogue reads, one line each: per mutagen class, what the catalogue calls the container,
its codec when the container fixes it, and how its files start; and the class by file extension, the one list of
extensions: the scanner (``worker_app.paths``) looks only at files the reader reads, and the reader reads every
file mutagen knows as audio.

Extensions mutagen recognises that are not here hold no recorded sound (MIDI) or are video (MPEG program
streams): ``NOT_AUDIO_EXTENSIONS`` says why for each, and tests/test_tags_accuracy.py checks both lists against
mutagen's own.
"""
from __future__ import annotations

from dataclasses import dataclass

from mutagen import FileType
from mutagen.aac import AAC
from mutagen.ac3 import AC3
from mutagen.aiff import AIFF
from mutagen.asf import ASF
from mutagen.dsdiff import DSDIFF
from mutagen.dsf import DSF
from mutagen.flac import FLAC
from mutagen.id3 import BitPaddedInt
from mutagen.monkeysaudio import MonkeysAudio
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.musepack import Musepack
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.optimfrog import OptimFROG
from mutagen.tak import TAK
from mutagen.trueaudio import TrueAudio
from mutagen.wave import WAVE
from mutagen.wavpack import WavPack


@dataclass(frozen=True)
class Container:
    format: str  # TrackRecord.format
    label: str  # for messages
    codec: str | None  # TrackRecord.codec; None: the stream says (MP3's layer, MP4's sample entry, ASF, WAV)
    signatures: tuple[bytes, ...] = ()  # how the file starts (ID3: a tag some writers put first); (): no check


_OGG = (b"OggS",)
CONTAINERS: dict[type[FileType], Container] = {
    MP3: Container("mp3", "MP3", None),  # an ID3 tag or an MPEG frame sync: see reader._has_signature
    FLAC: Container("flac", "FLAC", "flac", (b"fLaC", b"ID3")),
    OggVorbis: Container("ogg", "Ogg Vorbis", "vorbis", _OGG),
    OggFLAC: Container("ogg", "Ogg FLAC", "flac", _OGG),
    OggSpeex: Container("ogg", "Ogg Speex", "speex", _OGG),
    OggOpus: Container("opus", "Opus", "opus", _OGG),
    MP4: Container("m4a", "MP4/M4A", None),  # a box name at offset 4: see reader._has_signature
    ASF: Container("wma", "WMA/ASF", None, (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"),)),
    MonkeysAudio: Container("ape", "Monkey's Audio", "ape", (b"MAC ", b"ID3")),
    WavPack: Container("wavpack", "WavPack", "wavpack", (b"wvpk", b"ID3")),
    AIFF: Container("aiff", "AIFF", "pcm", (b"FORM",)),
    WAVE: Container("wav", "WAV", None, (b"RIFF", b"RF64")),
    DSF: Container("dsf", "DSF", "dsd", (b"DSD ",)),
    DSDIFF: Container("dff", "DSDIFF", "dsd", (b"FRM8",)),
    Musepack: Container("musepack", "Musepack", "musepack", (b"MPCK", b"MP+", b"ID3")),
    TrueAudio: Container("tta", "True Audio", "tta", (b"TTA1", b"ID3")),
    OptimFROG: Container("optimfrog", "OptimFROG", "optimfrog", (b"OFR ",)),
    TAK: Container("tak", "TAK", "tak", (b"tBaK", b"ID3")),
    AAC: Container("aac", "ADTS AAC", "aac", (b"ADIF", b"ID3")),
    AC3: Container("ac3", "AC-3", "ac3", (b"\x0b\x77",)),
}


def leading_id3_size(header: bytes) -> int:
    """The bytes an ID3v2 tag takes at the start of a file (0: none), from the file's first 10 bytes: the header,
    then the size its header gives, syncsafe (7 bits a byte, read by mutagen's BitPaddedInt)."""
    return 10 + int(BitPaddedInt(header[6:10])) if header[:3] == b"ID3" and len(header) >= 10 else 0


CLASS_BY_EXTENSION: dict[str, type[FileType]] = {
    ".mp3": MP3, ".mp2": MP3, ".mpga": MP3,
    ".flac": FLAC,
    ".ogg": OggVorbis, ".oga": OggVorbis,
    ".opus": OggOpus,
    ".spx": OggSpeex,
    # 3GPP/3GPP2 (phones' recorders) and ringtones are MP4 files under other names
    ".m4a": MP4, ".m4b": MP4, ".mp4": MP4, ".m4p": MP4, ".m4r": MP4, ".alac": MP4, ".3gp": MP4, ".3g2": MP4,
    ".wma": ASF, ".asf": ASF,
    ".ape": MonkeysAudio,
    ".wv": WavPack,
    ".aif": AIFF, ".aiff": AIFF, ".aifc": AIFF,
    ".wav": WAVE, ".wave": WAVE,
    ".dsf": DSF,
    ".dff": DSDIFF,
    ".mpc": Musepack, ".mp+": Musepack, ".mpp": Musepack,
    ".tta": TrueAudio,
    ".ofr": OptimFROG, ".ofs": OptimFROG,
    ".tak": TAK,
    ".aac": AAC, ".adts": AAC, ".adif": AAC,
    ".ac3": AC3, ".eac3": AC3,
}
AUDIO_EXTENSIONS = frozenset(CLASS_BY_EXTENSION)

NOT_AUDIO_EXTENSIONS = {
    ".mid": "MIDI holds notes for a synthesizer, not recorded sound",
    ".midi": "MIDI holds notes for a synthesizer, not recorded sound",
    ".mpg": "an MPEG program stream is a video; mutagen reads only its first audio frames",
    ".mpeg": "an MPEG program stream is a video; mutagen reads only its first audio frames",
}
