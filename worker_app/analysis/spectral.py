"""The short-time spectrum of the excerpt and the timbre statistics drawn from it: spectral centroid, roll-off,
flatness, zero-crossing rate, and MFCC means and variances.

Plain numpy (one batched real FFT) rather than librosa: librosa's features are the same textbook formulas, but its
first call in a process compiles numba code for ~74 s on a 2-core host (bench/README.md), far past the 5 s warm-up
the workers may spend. The mel filterbank is the Slaney-style triangular one; MFCCs are the orthonormal DCT-II of the
log mel energies in dB, as librosa computes them, so values are comparable in kind (not bit for bit).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy
from numpy.typing import ArrayLike
from scipy.fft import dct, rfft

N_FFT = 1024  # 46 ms at 22,050 Hz
HOP = 256  # 11.6 ms: 86 frames a second, fine enough for tempo (rhythm.py)
N_MELS = 40
N_MFCC = 13
ROLLOFF = 0.85


@dataclass
class Spectrogram:
    rate: int
    power: numpy.ndarray  # (frames, N_FFT // 2 + 1)
    signal: numpy.ndarray  # the excerpt, float32, at least N_FFT samples (for the zero-crossing rate)
    mel_db: numpy.ndarray  # (frames, N_MELS) log mel energies, dB

    @property
    def frame_rate(self) -> float:
        return self.rate / HOP

    @property
    def frequencies(self) -> numpy.ndarray:
        return numpy.arange(self.power.shape[1]) * self.rate / N_FFT


def _hz_to_mel(hz: ArrayLike) -> numpy.ndarray:
    hz = numpy.asarray(hz, dtype=float)
    linear = hz / (200.0 / 3)
    log_part = 15 + numpy.log(numpy.maximum(hz, 1e-9) / 1000) / (numpy.log(6.4) / 27)
    return numpy.where(hz >= 1000, log_part, linear)


def _mel_to_hz(mel: ArrayLike) -> numpy.ndarray:
    mel = numpy.asarray(mel, dtype=float)
    return numpy.where(mel >= 15, 1000 * numpy.exp((numpy.log(6.4) / 27) * (mel - 15)), mel * 200.0 / 3)


@functools.lru_cache(maxsize=4)
def mel_filterbank(rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> numpy.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, area-normalised, from 0 Hz to Nyquist."""
    edges = _mel_to_hz(numpy.linspace(_hz_to_mel(0), _hz_to_mel(rate / 2), n_mels + 2))
    bins = numpy.arange(n_fft // 2 + 1) * rate / n_fft
    lower = (bins[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None, :]
    upper = (edges[None, 2:] - bins[:, None]) / (edges[2:] - edges[1:-1])[None, :]
    weights = numpy.maximum(0, numpy.minimum(lower, upper))
    result: numpy.ndarray = (weights * (2.0 / (edges[2:] - edges[:-2]))[None, :]).astype(numpy.float32)
    return result


def frame(signal: numpy.ndarray, n_fft: int, hop: int) -> numpy.ndarray:
    """(frames, n_fft) overlapping views (no copy), the signal zero-padded to at least one frame."""
    if len(signal) < n_fft:
        signal = numpy.pad(signal, (0, n_fft - len(signal)))
    count = 1 + (len(signal) - n_fft) // hop
    return numpy.lib.stride_tricks.as_strided(
        signal, shape=(count, n_fft), strides=(signal.strides[0] * hop, signal.strides[0]), writeable=False)


def spectrogram(signal: numpy.ndarray, rate: int) -> Spectrogram:
    signal = numpy.ascontiguousarray(signal, dtype=numpy.float32)
    if len(signal) < N_FFT:
        signal = numpy.pad(signal, (0, N_FFT - len(signal)))
    frames = frame(signal, N_FFT, HOP)
    window = numpy.hanning(N_FFT).astype(numpy.float32)
    spectrum = rfft(frames * window, axis=1, workers=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(numpy.float32)
    mel = power @ mel_filterbank(rate)
    mel_db = 10 * numpy.log10(numpy.maximum(mel, 1e-10))
    return Spectrogram(rate, power, signal, mel_db)


def timbre(spec: Spectrogram) -> dict[str, Any]:
    """Means over the frames that carry sound (silent frames would drag every statistic towards zero)."""
    power = spec.power
    total = power.sum(axis=1)
    loud = total > max(total.max() * 1e-6, 1e-12) if len(total) else numpy.zeros(0, bool)
    if not loud.any():
        return {"spectral_centroid_hz": None, "spectral_rolloff_hz": None, "spectral_flatness": None,
                "zero_crossing_rate": None, "mfcc_mean": None, "mfcc_var": None}
    # Centroid, roll-off and flatness from every other frame: a 23 ms step over 46 ms windows still sees every
    # sample, and these per-bin passes (a cumulative sum, a logarithm) are most of this function's CPU.
    sampled = loud.copy()
    sampled[1::2] = False
    if not sampled.any():  # a single loud frame, at an odd index
        sampled = loud
    power, total = power[sampled], total[sampled]
    freqs = spec.frequencies
    centroid = (power @ freqs) / total
    cumulative = numpy.cumsum(power, axis=1)
    rolloff = freqs[numpy.argmax(cumulative >= ROLLOFF * total[:, None], axis=1)]
    floor = power + 1e-12
    flatness = numpy.exp(numpy.log(floor).mean(axis=1)) / floor.mean(axis=1)
    # Sign changes per sample over each hop-sized block (not the overlapping frames: 4x less work), loud blocks only.
    blocks = min(len(spec.power), len(spec.signal) // HOP)
    signs = numpy.signbit(spec.signal[:blocks * HOP]).reshape(blocks, HOP)
    zcr = (signs[:, 1:] != signs[:, :-1]).mean(axis=1)[loud[:blocks]]
    mfcc = dct(spec.mel_db[loud], type=2, norm="ortho", axis=1)[:, :N_MFCC]
    return {
        "spectral_centroid_hz": round(float(centroid.mean()), 1),
        "spectral_rolloff_hz": round(float(rolloff.mean()), 1),
        "spectral_flatness": round(float(flatness.mean()), 5),
        "zero_crossing_rate": round(float(zcr.mean()), 5),
        "mfcc_mean": [round(float(v), 3) for v in mfcc.mean(axis=0)],
        "mfcc_var": [round(float(v), 3) for v in mfcc.var(axis=0)],
    }
