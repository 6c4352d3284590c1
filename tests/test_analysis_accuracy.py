"""Accuracy of the audio analysis on generated audio whose truth is known (tests/analysis_factory.py).

The targets are issue 12's: tempo within 2% on at least 90% of click and drum-like tracks from 60 to 180 BPM
(an exact double or half is counted apart, and reported); key and scale right on at least 80% of chord
progressions in every major and minor key; integrated loudness within 0.5 LU of ffmpeg's ``ebur128`` filter on
every track, encoded as a user's files would be. Seeds differ from the ones the analysis was tuned on.
"""
from __future__ import annotations

import numpy
import pytest

from tests.analysis_factory import (
    PITCH_CLASSES,
    RATE,
    chord_track,
    click_track,
    drum_track,
    ffmpeg_ebur128,
    kind_track,
    write,
)
from worker_app.analysis.decode import ANALYSIS_RATE, DecodeError, to_analysis_rate
from worker_app.analysis.track import analyse, analyse_signal

pytestmark = pytest.mark.timeout(300)

TEMPI = [60, 72, 84, 96, 108, 120, 132, 144, 156, 168, 180]


def excerpt_features(signal: numpy.ndarray) -> dict:
    return analyse_signal(to_analysis_rate(signal.reshape(len(signal), -1)), ANALYSIS_RATE)


def tempo_verdict(estimate: float | None, truth: float) -> str:
    if estimate is None:
        return "none"
    for name, factor in (("right", 1.0), ("double", 2.0), ("half", 0.5)):
        if abs(estimate / (truth * factor) - 1) <= 0.02:
            return name
    return "wrong"


def test_tempo_of_click_and_drum_tracks_from_60_to_180_bpm():
    verdicts = {}
    for index, bpm in enumerate(TEMPI):
        for kind, make in (("click", click_track), ("drums", drum_track)):
            # Tempi off the integer grid too: 0.37 BPM above the nominal value.
            truth = bpm + 0.37 * (index % 2)
            features = excerpt_features(make(truth, 16, seed=1000 + index))
            verdicts[(kind, truth)] = (tempo_verdict(features["bpm"], truth), features["bpm"])
    tally = {name: sum(1 for v, _ in verdicts.values() if v == name)
             for name in ("right", "double", "half", "wrong", "none")}
    report = f"{tally}; not right: { {k: v for k, v in verdicts.items() if v[0] != 'right'} }"
    assert tally["right"] >= 0.9 * len(verdicts), report
    assert tally["wrong"] + tally["none"] == 0, report
    # A metronome leaves no doubt about its beat: every click track is right, doubles and halves included.
    assert all(v == "right" for (kind, _), (v, _) in verdicts.items() if kind == "click"), report


def test_key_and_scale_of_chord_progressions_in_all_24_keys():
    results = {}
    for index, tonic in enumerate(PITCH_CLASSES):
        for scale in ("major", "minor"):
            features = excerpt_features(chord_track(tonic, scale, 16, seed=2000 + 2 * index + (scale == "minor")))
            results[(tonic, scale)] = (features["key"], features["scale"], features["camelot"])
    right = [truth for truth, found in results.items() if found[:2] == truth]
    wrong = {truth: found for truth, found in results.items() if found[:2] != truth}
    assert len(right) >= 0.8 * len(results), f"{len(right)}/{len(results)} right; wrong: {wrong}"
    # The Camelot code a DJ reads: C major is 8B, A minor 8A (relative keys share a number).
    camelot = {truth: found[2] for truth, found in results.items() if found[:2] == truth}
    assert camelot.get(("C", "major"), "8B") == "8B" and camelot.get(("A", "minor"), "8A") == "8A"


LOUDNESS_CASES = [
    ("click-120.wav", lambda: click_track(120, 12, seed=3001), RATE),
    ("drums-95-stereo.flac", lambda: drum_track(95, 12, seed=3002), RATE),
    ("chords-stereo.mp3", lambda: chord_track("D", "minor", 12, seed=3003), RATE),
    ("noise-rock.ogg", lambda: kind_track("noise-rock", 12, seed=3004), RATE),
    ("ambient-quiet.flac", lambda: kind_track("ambient", 12, seed=3005) * 0.05, RATE),
    ("mono-drums.wav", lambda: drum_track(140, 12, seed=3006)[:, 0].copy(), RATE),
    ("drums-48k.flac", lambda: drum_track(110, 12, seed=3007), 48_000),
]


@pytest.mark.parametrize("name, make, rate", LOUDNESS_CASES, ids=[case[0] for case in LOUDNESS_CASES])
def test_loudness_agrees_with_ffmpeg_ebur128(tmp_path, name, make, rate):
    path = write(make(), tmp_path / name, rate=rate)
    channels = 1 if name.startswith("mono") else 2
    features = analyse(str(path), channels=channels)
    reference = ffmpeg_ebur128(path)
    assert features["loudness_lufs"] is not None
    assert abs(features["loudness_lufs"] - reference) <= 0.5, (features["loudness_lufs"], reference)
    # ReplayGain 2.0: the gain that brings the track to -18 LUFS, and a peak that is a sample value.
    assert features["track_gain_db"] == pytest.approx(-18 - features["loudness_lufs"], abs=0.011)
    assert 0 < features["sample_peak"] <= 1.2


def test_frequency_domain_k_weighting_matches_the_time_domain_filter():
    """The meter weights each 100 ms step's spectrum instead of running the K-weighting biquads; on real signals
    both must give the same integrated loudness."""
    from scipy.signal import sosfilt

    from worker_app.analysis.loudness import LoudnessMeter, k_weighting, measure

    for signal in (drum_track(100, 10, seed=3301), kind_track("ambient", 10, seed=3302), click_track(90, 10, 3303)):
        signal = signal.reshape(len(signal), -1).astype(numpy.float64)
        filtered = sosfilt(k_weighting(RATE), signal, axis=0)
        step = RATE // 10
        whole = len(filtered) // step * step
        reference = LoudnessMeter(RATE, signal.shape[1])
        reference.energies = [(filtered[:whole] ** 2).reshape(-1, step, signal.shape[1]).sum(axis=1)]
        assert measure(signal, RATE)["loudness_lufs"] == pytest.approx(reference.integrated(), abs=0.05)


def test_loudness_covers_the_whole_track_not_the_excerpt(tmp_path):
    """A quiet first half and a loud second half: an excerpt-only measure would miss the loud part."""
    quiet = chord_track("G", "major", 20, seed=3101) * 0.03
    loud = drum_track(120, 20, seed=3102)
    path = write(numpy.concatenate([quiet, loud]), tmp_path / "quiet-then-loud.flac")
    features = analyse(str(path), channels=2, duration=40, excerpt_seconds=8)
    assert features["excerpt_seconds"] == pytest.approx(8, abs=0.05)
    assert features["duration_seconds"] == pytest.approx(40, abs=0.05)
    assert abs(features["loudness_lufs"] - ffmpeg_ebur128(path)) <= 0.5


def test_a_file_ffmpeg_cannot_decode_fails_with_a_reason(tmp_path):
    bogus = tmp_path / "not-audio.mp3"
    bogus.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40)
    with pytest.raises(DecodeError) as raised:
        analyse(str(bogus))
    assert raised.value.reason


def test_decoding_is_bounded_by_its_time_limit(tmp_path):
    path = write(drum_track(120, 30, seed=3201), tmp_path / "long.flac")
    with pytest.raises(DecodeError, match="longer than"):
        analyse(str(path), time_limit=0.001)


def test_silence_has_no_tempo_no_key_and_no_loudness(tmp_path):
    path = write(numpy.zeros((RATE * 5, 2), numpy.float32), tmp_path / "silence.wav")
    features = analyse(str(path))
    assert features["bpm"] is None and features["key"] is None and features["loudness_lufs"] is None
    assert features["danceability"] == 0
