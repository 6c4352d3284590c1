"""The audio formats the catalogue reads: mutagen's class for each, by file extension. The one list of extensions:
the scanner (``worker_app.paths``) looks only at files the reader reads, and the reader reads every file mutagen
knows as audio.

Extensions mutagen recognises that are not here hold no recorded sound (MIDI) or are video (MPEG program
streams): ``NOT_AUDIO_EXTENSIONS`` says why for each, and tests/test_tags_accuracy.py checks both lists against
mutagen's own.
"""
from __future__ import annotations

from mutagen.aac import AAC
from mutagen.ac3 import AC3
from mutagen.aiff import AIFF
from mutagen.asf import ASF
from mutagen.dsdiff import DSDIFF
from mutagen.dsf import DSF
from mutagen.flac import FLAC
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

# TrackRecord.format (the container) and a label for messages, by mutagen class.
FORMATS: dict[type, tuple[str, str]] = {
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
    TAK: ("tak", "TAK"),
    AAC: ("aac", "ADTS AAC"),
    AC3: ("ac3", "AC-3"),
}

CLASS_BY_EXTENSION: dict[str, type] = {
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
