"""A mood estimate from the measured features: valence (sad to happy) and arousal (calm to excited), each 0..1,
and the quadrant's name. A documented rule of thumb, not a trained model and not a listener's judgement.

What it rests on (the music-psychology findings the valence/arousal plane comes from: Russell's circumplex;
Gabrielsson and Lindstrom's survey of musical cues): arousal rises with tempo, loudness, onset density and
brightness, and with a clear pulse; valence rises with the major mode and, less, with tempo and brightness. So:

  arousal = 0.4 * energy + 0.3 * tempo term + 0.3 * beat confidence
  valence = 0.5 + 0.3 * mode * key strength + 0.2 * (tempo term - 0.5) + 0.2 * (brightness - 0.5)

where energy is ``rhythm.energy`` (level, onset rate, spectral centroid); the tempo term is (BPM - 60) / 120
clipped to 0..1, pulled towards 0.3 (a slow pace) as the beat confidence falls below 0.5, since a tempo read off a
beatless pad says nothing; mode is +1 major, -1 minor, 0 without a key; key strength the key's correlation 0..1;
brightness the spectral centroid over 4 kHz clipped to 0..1. The quadrants: "happy"
(valence >= 0.5, arousal >= 0.5), "tense" (valence < 0.5, arousal >= 0.5), "sad" (both < 0.5), "calm"
(valence >= 0.5, arousal < 0.5).

What it is not: lyrics, harmony beyond major/minor, timbre beyond brightness and the cultural context all move a
listener's mood and none is seen here; a minor-key dance track reads "tense", a slow major ballad "calm". It
orders a library coarsely (the generated techno reads more aroused than the ambient pads, major progressions more
positive on average than minor ones: tests/test_analysis_accuracy.py); it does not label a song.
"""
from __future__ import annotations

from typing import Any

MOODS_VERSION = 1


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def estimate(features: dict[str, Any]) -> dict[str, Any]:
    bpm = features.get("bpm")
    confidence = float(features.get("beat_confidence") or 0.0)
    trust = _clip(confidence / 0.5) if bpm else 0.0
    tempo = trust * (_clip((float(bpm) - 60) / 120) if bpm else 0.0) + (1 - trust) * 0.3
    energy = float(features.get("energy") or 0.0)
    scale = features.get("scale")
    mode = 1.0 if scale == "major" else -1.0 if scale == "minor" else 0.0
    strength = float(features.get("key_strength") or 0.0)
    brightness = _clip(float(features.get("spectral_centroid_hz") or 0.0) / 4000)
    arousal = _clip(0.4 * energy + 0.3 * tempo + 0.3 * confidence)
    valence = _clip(0.5 + 0.3 * mode * strength + 0.2 * (tempo - 0.5) + 0.2 * (brightness - 0.5))
    if arousal >= 0.5:
        mood = "happy" if valence >= 0.5 else "tense"
    else:
        mood = "calm" if valence >= 0.5 else "sad"
    return {"valence": round(valence, 4), "arousal": round(arousal, 4), "mood": mood}
