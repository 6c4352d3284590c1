"""Generated audio whose musical truth is known, for the accuracy tests of ``worker_app.analysis``.

Every signal is built from a seed, so a failing case can be played back (``write(...)`` then any player):

    click_track(bpm=97, seconds=20, seed=1)        # a metronome: accented downbeat, clicks on every beat
    drum_track(bpm=128, seconds=20, seed=2)        # kick on 1 and 3, snare on 2 and 4, hi-hats on the eighths
    chord_track("F#", "minor", seconds=20, seed=3) # cadential chord progression with a bass line, in that key
    kind_track("techno", seconds=20, seed=4)       # one of several distinct kinds of sound, for similarity

Signals are float32, mono or (frames, 2) stereo, at 44,100 Hz unless told otherwise. ``write`` encodes to WAV,
FLAC (soundfile) or MP3 / Ogg (Debian's ffmpeg); ``ffmpeg_ebur128`` measures a file with ffmpeg's own ``ebur128``
filter, the independent reference the loudness meter is checked against.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy
import soundfile

RATE = 44_100
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Scale degrees (semitones above the tonic) of each chord's root, and the chord's quality.
MAJOR_PROGRESSIONS = (
    ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),  # I IV V I
    ((0, "maj"), (9, "min"), (2, "min"), (7, "maj")),  # I vi ii V
    ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),  # I V vi IV
)
MINOR_PROGRESSIONS = (
    ((0, "min"), (5, "min"), (7, "maj"), (0, "min")),  # i iv V i (harmonic minor's major V)
    ((0, "min"), (8, "maj"), (5, "min"), (7, "maj")),  # i VI iv V
    ((0, "min"), (3, "maj"), (5, "min"), (7, "min")),  # i III iv v (natural minor)
)
CHORD_INTERVALS = {"maj": (0, 4, 7), "min": (0, 3, 7)}


def _rng(seed: int) -> numpy.random.Generator:
    return numpy.random.default_rng(seed)


def _envelope(length: int, attack: float, decay: float, rate: int = RATE) -> numpy.ndarray:
    t = numpy.arange(length) / rate
    return numpy.minimum(1.0, t / max(attack, 1e-4)) * numpy.exp(-t / decay)


def _place(out: numpy.ndarray, sound: numpy.ndarray, at: int) -> None:
    end = min(len(out), at + len(sound))
    if at < end:
        out[at:end] += sound[:end - at]


def _note(frequency: float, seconds: float, rng: numpy.random.Generator, harmonics: int = 6,
          decay: float = 1.5, rate: int = RATE) -> numpy.ndarray:
    """A plucked/bowed-like tone: harmonics falling as 1/k with a little random colour, slightly detuned."""
    t = numpy.arange(int(seconds * rate)) / rate
    tone = numpy.zeros_like(t)
    for k in range(1, harmonics + 1):
        if frequency * k >= rate / 2:
            break
        tone += rng.uniform(0.6, 1.0) / k * numpy.sin(2 * numpy.pi * frequency * k * t + rng.uniform(0, 6.28))
    return tone * _envelope(len(t), 0.01, decay, rate)


def _click(rng, accent: bool) -> numpy.ndarray:
    frequency = 1800.0 if accent else 1200.0
    t = numpy.arange(int(0.03 * RATE)) / RATE
    return (1.0 if accent else 0.6) * numpy.sin(2 * numpy.pi * frequency * t) * numpy.exp(-t / 0.006)


def _kick(rng) -> numpy.ndarray:
    t = numpy.arange(int(0.25 * RATE)) / RATE
    sweep = 2 * numpy.pi * (50 * t + (150 - 50) * 0.03 * (1 - numpy.exp(-t / 0.03)))
    return numpy.sin(sweep) * numpy.exp(-t / 0.12)


def _snare(rng) -> numpy.ndarray:
    length = int(0.18 * RATE)
    t = numpy.arange(length) / RATE
    return (0.6 * rng.normal(0, 1, length) * numpy.exp(-t / 0.05)
            + 0.4 * numpy.sin(2 * numpy.pi * 190 * t) * numpy.exp(-t / 0.08))


def _hat(rng) -> numpy.ndarray:
    length = int(0.04 * RATE)
    noise = rng.normal(0, 1, length)
    bright = numpy.diff(noise, prepend=0)  # a first difference: most of its energy above 5 kHz
    return 0.25 * bright * numpy.exp(-numpy.arange(length) / RATE / 0.012)


def _normalise(signal: numpy.ndarray, peak: float) -> numpy.ndarray:
    top = float(numpy.abs(signal).max())
    return (signal * (peak / top if top > 0 else 1.0)).astype(numpy.float32)


def _stereo(mono: numpy.ndarray, rng, width: float = 0.15) -> numpy.ndarray:
    """Two channels that are not identical (a little delayed, differently coloured), as real stereo is."""
    delay = int(rng.integers(5, 40))
    other = numpy.concatenate([numpy.zeros(delay, mono.dtype), mono[:-delay]])
    return numpy.stack([(1 - width) * mono + width * other, (1 - width) * other + width * mono], axis=1)


def click_track(bpm: float, seconds: float, seed: int, beats_per_bar: int = 4) -> numpy.ndarray:
    rng = _rng(seed)
    out = numpy.zeros(int(seconds * RATE))
    period = 60.0 / bpm
    start = rng.uniform(0, period)
    for beat, at in enumerate(numpy.arange(start, seconds, period)):
        _place(out, _click(rng, beat % beats_per_bar == 0), int(at * RATE))
    out += rng.normal(0, 0.003, len(out))  # a noise floor, as any recording has
    return _normalise(out, rng.uniform(0.3, 0.9))


def drum_track(bpm: float, seconds: float, seed: int, with_bass: bool = True) -> numpy.ndarray:
    """A four-on-the-floor-ish rock pattern, stereo, with a bass line on the beats (in some random key)."""
    rng = _rng(seed)
    out = numpy.zeros(int(seconds * RATE))
    period = 60.0 / bpm
    start = rng.uniform(0, period)
    hat_level = rng.uniform(0.3, 0.7)
    root = 55.0 * 2 ** (rng.integers(0, 12) / 12)
    for beat, at in enumerate(numpy.arange(start, seconds, period)):
        position = int(at * RATE)
        _place(out, _kick(rng) if beat % 2 == 0 else _snare(rng), position)
        _place(out, hat_level * _hat(rng), position)
        _place(out, hat_level * 0.7 * _hat(rng), position + int(period / 2 * RATE))
        if with_bass:
            step = (0, 0, 7, 5)[beat // 4 % 4]
            _place(out, 0.35 * _note(root * 2 ** (step / 12), period * 0.9, rng, harmonics=3, decay=0.3), position)
    return _normalise(_stereo(out, rng), rng.uniform(0.4, 0.95))


def chord_track(tonic: str, scale: str, seconds: float, seed: int, bpm: float | None = None) -> numpy.ndarray:
    """A chord progression that states its key (starts on the tonic chord, cadences through the dominant), with
    a bass line on the chord roots and a quiet beat, stereo."""
    rng = _rng(seed)
    bpm = bpm or float(rng.uniform(70, 130))
    progressions = MAJOR_PROGRESSIONS if scale == "major" else MINOR_PROGRESSIONS
    progression = progressions[int(rng.integers(len(progressions)))]
    tonic_pc = PITCH_CLASSES.index(tonic)
    chord_seconds = 4 * 60.0 / bpm  # a bar per chord
    out = numpy.zeros(int(seconds * RATE))
    octave = float(rng.choice([0.0, 1.0]))
    for index, at in enumerate(numpy.arange(0, seconds, chord_seconds)):
        degree, quality = progression[index % len(progression)]
        root = (tonic_pc + degree) % 12
        for interval in CHORD_INTERVALS[quality]:
            # Voicing around middle C, a random octave for some notes.
            pitch_class = (root + interval) % 12
            midi = 60 + pitch_class - (12 if pitch_class > 7 else 0) + 12 * octave * (interval == 7)
            frequency = 440.0 * 2 ** ((midi - 69) / 12)
            _place(out, 0.3 * _note(frequency, chord_seconds, rng, decay=chord_seconds), int(at * RATE))
        bass = 440.0 * 2 ** ((36 + root - 69) / 12)
        _place(out, 0.5 * _note(bass, chord_seconds, rng, harmonics=4, decay=chord_seconds / 2), int(at * RATE))
    out += rng.normal(0, 0.002, len(out))
    return _normalise(_stereo(out, rng), rng.uniform(0.3, 0.9))


# ---------------------------------------------------------------- kinds of sound, for similarity

KINDS = ("techno", "ballad", "noise-rock", "ambient")


def kind_track(kind: str, seconds: float, seed: int) -> numpy.ndarray:
    """Distinct kinds of sound, each varying with the seed within its kind (tempo within a few %, key, levels):
    techno ~128 BPM drums with a low bass, no chords; ballad: slow major-key piano-like chords at ~70 BPM;
    noise-rock: fast (~170 BPM) loud drums under broadband noise; ambient: a beatless, dark, sustained minor pad."""
    rng = _rng(seed)
    if kind == "techno":
        return drum_track(rng.uniform(124, 132), seconds, seed)
    if kind == "ballad":
        return chord_track(PITCH_CLASSES[int(rng.integers(12))], "major", seconds, seed, bpm=rng.uniform(66, 74))
    if kind == "noise-rock":
        drums = drum_track(rng.uniform(165, 175), seconds, seed, with_bass=False)
        noise = rng.normal(0, 1, drums.shape) * rng.uniform(0.15, 0.25)
        return _normalise(drums + noise, rng.uniform(0.8, 0.98))
    if kind == "ambient":
        tonic = int(rng.integers(12))
        out = numpy.zeros(int(seconds * RATE))
        for interval in (0, 3, 7, 12):
            frequency = 110.0 * 2 ** ((tonic + interval) / 12)
            tone = _note(frequency, seconds, rng, harmonics=2, decay=1e6)
            tremolo = numpy.sin(2 * numpy.pi * rng.uniform(0.05, 0.2) * numpy.arange(len(out)) / RATE)
            out += 0.2 * tone * (1 + 0.3 * tremolo)
        return _normalise(_stereo(out, rng, width=0.4), rng.uniform(0.2, 0.5))
    raise ValueError(kind)


# ---------------------------------------------------------------- files and the reference meter


def write(signal: numpy.ndarray, path: Path, rate: int = RATE) -> Path:
    """Encode by extension: .wav and .flac with soundfile, .mp3 (192 kb/s) and .ogg with ffmpeg."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".wav", ".flac"):
        soundfile.write(path, signal, rate, subtype="PCM_16")
        return path
    codec = {".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"], ".ogg": ["-c:a", "libvorbis", "-q:a", "5"]}[path.suffix]
    channels = 1 if signal.ndim == 1 else signal.shape[1]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "f32le", "-ar", str(rate),
         "-ac", str(channels), "-i", "pipe:0", *codec, str(path)],
        input=numpy.ascontiguousarray(signal, dtype="<f4").tobytes(), check=True, capture_output=True,
    )
    return path


def ffmpeg_ebur128(path: Path) -> float:
    """Integrated loudness as ffmpeg's ``ebur128`` filter reports it (LUFS, one decimal)."""
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )
    summary = result.stderr[result.stderr.rindex("Summary:"):]
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))


def ffmpeg_true_peak(path: Path) -> float:
    """True peak as ffmpeg's ``ebur128=peak=true`` reports it (dBFS, one decimal: its 4x upsampling is swresample's,
    an independent implementation)."""
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-nostdin", "-i", str(path), "-af", "ebur128=peak=true", "-f", "null",
         "-"],
        capture_output=True, text=True, check=True,
    )
    summary = result.stderr[result.stderr.rindex("Summary:"):]
    return float(re.search(r"True peak:\s+Peak:\s+(-?[\d.]+) dBFS", summary).group(1))
