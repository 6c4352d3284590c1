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

The sketch: a GiST index on a 47-dimension cube prunes badly (355 ms a query at a million vectors), so
``soniquebay similar`` first fetches candidates by a 6-dimension ``sketch`` of each vector, which has its own GiST
index, then ranks those candidates by the exact distance on the whole vector (``pipeline.analysis.nearest``).
GiST still prunes well in 6 dimensions and no longer in 8 to 16 (bench/similarity.py; README, "Audio analysis").
The sketch is a fixed linear projection stated from the feature definitions rather than fitted on a library (it
never changes as tracks arrive, like the vector). It keeps the components that vary most between two tracks and
move together: tempo; the drive (beat confidence, danceability and energy pooled); the key's place on the circle
of fifths (cos, sin: weight 0.75, and the key differs between any two songs of one kind); brightness (its four
measures pooled); the genre buckets laid along one axis. Its rows are orthonormal, so a sketch distance never
exceeds the full distance.
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


# The sketch's rows, over the vector's components by index (the order ``build`` appends them), each scaled to unit
# length below: tempo 0, beat confidence 1, danceability 2, energy 3, loudness 4, key cos 5, sin 6, mode 7,
# brightness 8-11, MFCC means 12-23, MFCC deviations 24-36, genre buckets 37-44, year 45, duration 46.
_MFCC_MEANS = 12
_MFCC_DEVIATIONS = _MFCC_MEANS + N_MFCC - 1
_GENRE = _MFCC_DEVIATIONS + N_MFCC
_SKETCH_ROWS: list[dict[int, float]] = [
    {0: 1.0},                                                     # tempo
    {1: 1.0, 2: 1.0, 3: 1.0},                                     # drive: beat confidence, danceability, energy
    {5: 1.0}, {6: 1.0},                                           # key on the circle of fifths
    {8: 1.0, 9: 1.0, 10: 1.0, 11: 1.0},                           # brightness, pooled
    {_GENRE + b: math.cos(2 * math.pi * b / GENRE_BUCKETS) for b in range(GENRE_BUCKETS)},  # genre, on one axis
]
SKETCH_DIMENSIONS = len(_SKETCH_ROWS)
SKETCH_PROJECTION = numpy.zeros((SKETCH_DIMENSIONS, DIMENSIONS))
for _row, _weights in enumerate(_SKETCH_ROWS):
    for _index, _weight in _weights.items():
        SKETCH_PROJECTION[_row, _index] = _weight
SKETCH_PROJECTION /= numpy.linalg.norm(SKETCH_PROJECTION, axis=1, keepdims=True)


def sketch(vector: list[float]) -> list[float]:
    """The low-dimension projection of a vector that the candidate index searches (see the module docstring)."""
    return [round(float(v), 5) for v in SKETCH_PROJECTION @ numpy.asarray(vector, dtype=float)]


def sketch_sql(column: str) -> str:
    """The same projection as a SQL expression over a cube column, for set-wise updates in migrations."""
    axes = []
    for weights in SKETCH_PROJECTION:
        terms = [f"{float(w)!r} * cube_ll_coord({column}, {i + 1})" for i, w in enumerate(weights) if w != 0.0]
        axes.append("round((" + " + ".join(terms) + ")::numeric, 5)")
    return "cube(ARRAY[" + ", ".join(axes) + "]::float8[])"


def distance(a: list[float], b: list[float]) -> float:
    return float(numpy.linalg.norm(numpy.asarray(a) - numpy.asarray(b)))
