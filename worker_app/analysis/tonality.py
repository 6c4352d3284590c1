"""Key and scale (major/minor) with the Camelot code, from a chromagram.

The chroma folds the peaks of a long-window spectrum (8,192 points, 2.7 Hz apart at 22,050 Hz) from 80 Hz to
5 kHz onto the twelve pitch classes, each frame scaled to its own maximum so loud passages do not outvote the
rest. The key is the best Pearson correlation of the mean chroma with the 24 rotations of a key profile. A sung or
played note also sounds its harmonics (the 3rd is a fifth up, the 5th a major third up), so the profiles are
first spread over the harmonics the chroma will see (Gomez, 2006), which keeps minor keys from reading as major.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy
from scipy.fft import rfft

from worker_app.analysis.spectral import frame

N_FFT = 8192
HOP = 4096
LOWEST_HZ, HIGHEST_HZ = 80.0, 5000.0
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Temperley's (Kostka-Payne corpus) profiles, tonic first.
MAJOR_PROFILE = numpy.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
MINOR_PROFILE = numpy.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
HARMONICS = 4
HARMONIC_DECAY = 0.6


def camelot(tonic: int, scale: str) -> str:
    """The Camelot wheel code: C major 8B, A minor 8A; one step round the wheel is a fifth."""
    major_tonic = tonic if scale == "major" else (tonic + 3) % 12  # a minor key shares its relative major's number
    return f"{((7 * major_tonic) % 12 + 7) % 12 + 1}{'B' if scale == 'major' else 'A'}"


@functools.lru_cache(maxsize=1)
def _templates() -> numpy.ndarray:
    """(24, 12): rows 0-11 the major keys C..B, rows 12-23 the minor keys; each a harmonic-spread profile."""
    def spread(profile: numpy.ndarray) -> numpy.ndarray:
        out = numpy.zeros(12)
        for pitch, weight in enumerate(profile):
            for harmonic in range(1, HARMONICS + 1):
                interval = int(round(12 * numpy.log2(harmonic)))
                out[(pitch + interval) % 12] += weight * HARMONIC_DECAY ** (harmonic - 1)
        return out

    major, minor = spread(MAJOR_PROFILE), spread(MINOR_PROFILE)
    return numpy.array([numpy.roll(major, k) for k in range(12)] + [numpy.roll(minor, k) for k in range(12)])


@functools.lru_cache(maxsize=4)
def _pitch_map(rate: int) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """(bins used, their pitch class, their weight: 1 at a semitone's centre, falling off half a semitone away)."""
    freqs = numpy.arange(N_FFT // 2 + 1) * rate / N_FFT
    used = numpy.flatnonzero((freqs >= LOWEST_HZ) & (freqs <= min(HIGHEST_HZ, rate / 2)))
    semitones = 12 * numpy.log2(freqs[used] / 440.0) + 9  # 0 = C
    nearest = numpy.rint(semitones)
    weight = numpy.cos(numpy.pi * (semitones - nearest)) ** 2
    return used, nearest.astype(int) % 12, weight


def chroma(signal: numpy.ndarray, rate: int) -> numpy.ndarray:
    """(frames, 12) chroma, each frame scaled to its maximum (silent frames left at zero)."""
    frames = frame(numpy.ascontiguousarray(signal, dtype=numpy.float32), N_FFT, HOP)
    spectrum = numpy.abs(rfft(frames * numpy.hanning(N_FFT).astype(numpy.float32), axis=1, workers=1))
    used, pitch_class, weight = _pitch_map(rate)
    magnitude = spectrum[:, used]
    # Only spectral peaks: the window's leakage around a strong partial would otherwise colour its neighbours.
    peaks = numpy.zeros_like(magnitude)
    is_peak = (magnitude[:, 1:-1] > magnitude[:, :-2]) & (magnitude[:, 1:-1] >= magnitude[:, 2:])
    peaks[:, 1:-1] = numpy.where(is_peak, magnitude[:, 1:-1], 0.0)
    folded = numpy.zeros((len(frames), 12))
    for pc in range(12):
        folded[:, pc] = (peaks[:, pitch_class == pc] * weight[pitch_class == pc]).sum(axis=1)
    top = folded.max(axis=1, keepdims=True)
    result: numpy.ndarray = numpy.divide(folded, top, out=numpy.zeros_like(folded), where=top > 0)
    return result


def key(signal: numpy.ndarray, rate: int) -> dict[str, Any]:
    """{key, scale, camelot, key_strength (0..1: the winning correlation)}; all None without tonal content."""
    chromagram = chroma(signal, rate)
    profile = chromagram.mean(axis=0) if len(chromagram) else numpy.zeros(12)
    if not profile.any() or numpy.allclose(profile, profile[0]):
        return {"key": None, "scale": None, "camelot": None, "key_strength": 0.0, "chroma": None}
    templates = _templates()
    centered = templates - templates.mean(axis=1, keepdims=True)
    observed = profile - profile.mean()
    correlation = centered @ observed / (numpy.linalg.norm(centered, axis=1) * numpy.linalg.norm(observed))
    best = int(numpy.argmax(correlation))
    tonic, scale = best % 12, "major" if best < 12 else "minor"
    return {
        "key": PITCH_NAMES[tonic],
        "scale": scale,
        "camelot": camelot(tonic, scale),
        "key_strength": round(float(max(correlation[best], 0.0)), 4),
        "chroma": [round(float(v), 4) for v in profile],
    }
