"""One track's whole feature set, from one decode of the file.

Loudness, sample peak and true peak cover the whole track (every chunk goes through the meters); tempo, key and
timbre look at an excerpt of at most ``excerpt_seconds`` from the middle of the track (intros and fade-outs say
little about it), which bounds their cost whatever the track's length. The moods (valence, arousal) are drawn from
the other features (moods.py).
"""
from __future__ import annotations

from typing import Any

import numpy

from worker_app.analysis import ANALYSIS_VERSION, moods, rhythm, spectral, tonality
from worker_app.analysis.decode import (
    ANALYSIS_RATE,
    DECODE_RATE,
    DecodeError,
    DecodeStats,
    stream_pcm,
    to_analysis_rate,
)
from worker_app.analysis.loudness import LoudnessMeter, TruePeakMeter

EXCERPT_SECONDS = 30.0
FILE_TIME_LIMIT = 60.0  # wall-clock seconds one file's decoding may take
MAX_SECONDS = 4 * 3600.0  # longer files are measured on their first four hours

__all__ = ["analyse", "analyse_signal", "DecodeError", "EXCERPT_SECONDS"]


def excerpt_window(duration: float | None, excerpt_seconds: float) -> tuple[float, float]:
    if not duration or duration <= excerpt_seconds:
        return 0.0, excerpt_seconds
    start = (duration - excerpt_seconds) / 2
    return start, start + excerpt_seconds


def analyse(path: str | bytes, *, channels: int | None = None, duration: float | None = None,
            excerpt_seconds: float = EXCERPT_SECONDS, time_limit: float = FILE_TIME_LIMIT,
            max_seconds: float = MAX_SECONDS) -> dict[str, Any]:
    """Every feature of one file; raises DecodeError (with its ``reason``) when it cannot be decoded."""
    start, end = excerpt_window(duration, excerpt_seconds)
    stats = DecodeStats()
    meter: LoudnessMeter | None = None
    true_peak: TruePeakMeter | None = None
    kept: list[numpy.ndarray] = []
    position = 0.0
    for chunk in stream_pcm(path, channels, time_limit=time_limit, max_seconds=max_seconds, stats=stats):
        if meter is None or true_peak is None:
            meter = LoudnessMeter(DECODE_RATE, chunk.shape[1])
            true_peak = TruePeakMeter(chunk.shape[1])
        meter.add(chunk)
        true_peak.add(chunk)
        chunk_end = position + len(chunk) / DECODE_RATE
        if chunk_end > start and position < end:
            first = max(0, int(round((start - position) * DECODE_RATE)))
            last = min(len(chunk), int(round((end - position) * DECODE_RATE)))
            kept.append(chunk[first:last])
        position = chunk_end
    if meter is None or true_peak is None:  # stream_pcm raises DecodeError rather than yield nothing: said again
        raise DecodeError("no audio decoded from it")
    excerpt = numpy.concatenate(kept) if kept else numpy.zeros((0, stats.channels or 1), numpy.float32)
    features = analyse_signal(to_analysis_rate(excerpt), ANALYSIS_RATE)
    features.update(meter.result())
    features["true_peak_dbtp"] = true_peak.dbtp()
    features.update({"duration_seconds": round(stats.seconds, 3), "excerpt_start": round(start, 3),
                     "decode_truncated": stats.truncated})
    return features


def analyse_signal(mono: numpy.ndarray, rate: int) -> dict[str, Any]:
    """The excerpt features of a mono float signal: rhythm, tonality, timbre."""
    spec = spectral.spectrogram(mono, rate)
    timbre = spectral.timbre(spec)
    envelope = rhythm.onset_envelope(spec)
    bpm, confidence = rhythm.tempo(envelope, spec.frame_rate)
    features: dict[str, Any] = {
        "analysis_version": ANALYSIS_VERSION,
        "excerpt_seconds": round(len(mono) / rate, 3),
        "bpm": None if bpm is None else round(float(bpm), 2),
        "beat_confidence": round(confidence, 4),
        **tonality.key(mono, rate),
        "danceability": rhythm.danceability(bpm, confidence),
        "energy": rhythm.energy(mono, envelope, spec.frame_rate, timbre["spectral_centroid_hz"]),
        **timbre,
    }
    features.update(moods.estimate(features))
    return features
