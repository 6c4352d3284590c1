"""A track's similarity vector: fixed length, every component on a fixed scale, weighted by how much it should
count in a Euclidean distance.

Components are scaled by fixed references (not by statistics of the library), so a vector never changes because
other tracks arrived, and a query vector is comparable with one stored a year earlier. Each component is clipped
to [-4, 4] scale units, then multiplied by its weight; a group of many components (MFCCs) shares its weight so it
does not outvote the single figures. Missing figures (no beat, no key, no tag) are 0, the middle of their scale.

Audio (from audio_features):
  tempo          log2(bpm / 120) per half octave                    weight 1.0
  pulse          beat confidence, danceability ((x - 0.5) / 0.25)   weight 0.5 each
  energy         (energy - 0.5) / 0.2                               weight 1.0
  loudness       (LUFS + 14) / 6                                    weight 0.5
  key            Camelot position on the circle of fifths (cos, sin) x key strength, weight 0.75; mode (+1 major,
                 -1 minor) x key strength, weight 0.5: relative keys sit together, a fifth apart is near
  brightness     log2(centroid / 2 kHz), log2(roll-off / 4 kHz), log10(flatness) + 2, log2(ZCR / 0.1), weight 0.7 each
  timbre         MFCC 1-12 means / 20 dB, group weight 2.0; MFCC 0-12 log standard deviations - log 10 dB,
                 group weight 1.5
Tags (from tracks):
  genre          the first genre, lower-cased, hashed onto 8 one-hot components, weight 0.7 (two genres may share
                 a bucket: 1 chance in 8)
  year           (year - 2000) / 20                                 weight 0.5
  duration       log2(seconds / 210)                                weight 0.5
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy

VECTOR_VERSION = 1
GENRE_BUCKETS = 8
N_MFCC = 13
DIMENSIONS = 1 + 2 + 1 + 1 + 3 + 4 + (N_MFCC - 1) + N_MFCC + GENRE_BUCKETS + 1 + 1  # 47; cube allows 100
CLIP = 4.0


def _scaled(value: float | None, transform: Callable[[float], float], weight: float) -> float:
    if value is None:
        return 0.0
    try:
        scaled = transform(float(value))
    except (ValueError, ZeroDivisionError):
        return 0.0
    if not math.isfinite(scaled):
        return 0.0
    return weight * max(-CLIP, min(CLIP, float(scaled)))


def _log2_ratio(reference: float) -> Callable[[float], float]:
    return lambda v: math.log2(v / reference) if v > 0 else 0.0


def _camelot_angle(code: str | None) -> float | None:
    if not code:
        return None
    return 2 * math.pi * (int(code[:-1]) - 1) / 12


def build(features: dict[str, Any], tags: dict[str, Any]) -> list[float]:
    """``features``: an audio_features row as a dict; ``tags``: {genre, year, duration_seconds} of the track."""
    parts: list[float] = [
        _scaled(features.get("bpm"), lambda v: math.log2(v / 120) * 2, 1.0),
        _scaled(features.get("beat_confidence"), lambda v: (v - 0.5) / 0.25, 0.5),
        _scaled(features.get("danceability"), lambda v: (v - 0.5) / 0.25, 0.5),
        _scaled(features.get("energy"), lambda v: (v - 0.5) / 0.2, 1.0),
        _scaled(features.get("loudness_lufs"), lambda v: (v + 14) / 6, 0.5),
    ]
    angle = _camelot_angle(features.get("camelot"))
    strength = float(features.get("key_strength") or 0.0)
    if angle is None:
        parts += [0.0, 0.0, 0.0]
    else:
        mode = 1.0 if features.get("scale") == "major" else -1.0
        parts += [0.75 * strength * math.cos(angle), 0.75 * strength * math.sin(angle), 0.5 * strength * mode]
    parts += [
        _scaled(features.get("spectral_centroid_hz"), _log2_ratio(2000), 0.7),
        _scaled(features.get("spectral_rolloff_hz"), _log2_ratio(4000), 0.7),
        _scaled(features.get("spectral_flatness"), lambda v: math.log10(v) + 2 if v > 0 else -CLIP, 0.7),
        _scaled(features.get("zero_crossing_rate"), _log2_ratio(0.1), 0.7),
    ]
    means = list(features.get("mfcc_mean") or [None] * N_MFCC)[1:N_MFCC]
    means += [None] * (N_MFCC - 1 - len(means))
    parts += [_scaled(v, lambda x: x / 20, 2.0 / math.sqrt(N_MFCC - 1)) for v in means]
    variances = list(features.get("mfcc_var") or [None] * N_MFCC)[:N_MFCC]
    variances += [None] * (N_MFCC - len(variances))
    parts += [_scaled(v, lambda x: math.log(math.sqrt(x) / 10) if x > 0 else -CLIP, 1.5 / math.sqrt(N_MFCC))
              for v in variances]
    genre = [0.0] * GENRE_BUCKETS
    name = (tags.get("genre") or "").strip().lower()
    if name:
        genre[int(hashlib.sha1(name.encode()).hexdigest(), 16) % GENRE_BUCKETS] = 0.7
    parts += genre
    parts.append(_scaled(tags.get("year"), lambda v: (v - 2000) / 20, 0.5))
    parts.append(_scaled(tags.get("duration_seconds"), _log2_ratio(210), 0.5))
    assert len(parts) == DIMENSIONS
    return [round(v, 5) for v in parts]


def distance(a: list[float], b: list[float]) -> float:
    return float(numpy.linalg.norm(numpy.asarray(a) - numpy.asarray(b)))
