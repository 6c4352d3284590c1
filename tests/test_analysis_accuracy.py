"""Accuracy of the audio analysis on generated audio whose truth is known (tests/analysis_factory.py).

The targets: tempo within 2% on at least 90% of click and drum-like tracks from 60 to 180 BPM
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
    ffmpeg_true_peak,
    kind_track,
    write,
)
from worker_app.analysis.decode import ANALYSIS_RATE, DecodeError, DecodeStats, open_mp3, stream_pcm, to_analysis_rate
from worker_app.analysis.loudness import TruePeakMeter, true_peak_phases
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


def test_a_read_that_fails_is_a_passing_error_even_mid_file(tmp_path):
    """A disk or a share failing a read says nothing of the file: the error is passing (not stored as the file's
    analysis). Mid-file, ffmpeg ends with status 0 after writing the audio it read before the failure: features of
    that part must not pass for the file's. The failing read is real: ffmpeg's concat protocol reads half a FLAC,
    then /proc/self/mem at offset 0, where no page is mapped (EIO)."""
    whole = write(drum_track(120, 20, seed=3251), tmp_path / "whole.flac")
    half = tmp_path / "half.flac"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    unreadable = tmp_path / "unreadable.flac"
    unreadable.symlink_to("/proc/self/mem")
    with pytest.raises(OSError):
        unreadable.read_bytes()
    # The half alone is a truncated file: it decodes, shorter (a verdict on the content, not an error).
    decoded = sum(len(chunk) for chunk in stream_pcm(str(half), 2, time_limit=60, max_seconds=1e6))
    assert 0 < decoded < 20 * RATE
    for name in (f"concat:{half}|{unreadable}", str(unreadable)):
        with pytest.raises(DecodeError) as raised:
            list(stream_pcm(name, 2, time_limit=60, max_seconds=1e6))
        assert raised.value.passing, raised.value.reason
        assert "Input/output error" in raised.value.reason
    not_audio = tmp_path / "not-audio.flac"
    not_audio.write_bytes(b"x" * 4096)
    with pytest.raises(DecodeError) as raised:
        list(stream_pcm(str(not_audio), 2, time_limit=60, max_seconds=1e6))
    assert not raised.value.passing, raised.value.reason


def test_decoding_is_bounded_by_its_time_limit(tmp_path):
    path = write(drum_track(120, 30, seed=3201), tmp_path / "long.flac")
    with pytest.raises(DecodeError, match="longer than"):
        analyse(str(path), time_limit=0.001)


def test_silence_has_no_tempo_no_key_and_no_loudness(tmp_path):
    path = write(numpy.zeros((RATE * 5, 2), numpy.float32), tmp_path / "silence.wav")
    features = analyse(str(path))
    assert features["bpm"] is None and features["key"] is None and features["loudness_lufs"] is None
    assert features["danceability"] == 0


def clipped(signal: numpy.ndarray, drive: float) -> numpy.ndarray:
    """A loud master: driven past full scale and clipped, which is what leaves inter-sample peaks above 0 dBFS."""
    return numpy.clip(signal / numpy.abs(signal).max() * drive, -1.0, 1.0).astype(numpy.float32)


TRUE_PEAK_CASES = [
    ("noise-rock-clipped.mp3", lambda: clipped(kind_track("noise-rock", 12, seed=3401), 1.6), RATE),
    ("noise-rock-clipped.flac", lambda: clipped(kind_track("noise-rock", 12, seed=3402), 1.6), RATE),
    ("drums-clipped.wav", lambda: clipped(drum_track(128, 12, seed=3403), 1.3), RATE),
    ("chords.ogg", lambda: chord_track("E", "major", 12, seed=3404), RATE),
    # Decoding resamples to 44.1 kHz (decode.py), which drops what lies between 22.05 and 24 kHz of a 48 kHz file;
    # the generated drums hold a lot there (their hi-hats), music seldom does: a 48 kHz file of chords.
    ("chords-48k.flac", lambda: chord_track("F#", "minor", 12, seed=3405), 48_000),
    ("mono-clicks.wav", lambda: click_track(100, 12, seed=3406).reshape(-1) * 0.5, RATE),
]


@pytest.mark.parametrize("name, make, rate", TRUE_PEAK_CASES, ids=[case[0] for case in TRUE_PEAK_CASES])
def test_true_peak_agrees_with_ffmpeg_ebur128(tmp_path, name, make, rate):
    path = write(make(), tmp_path / name, rate=rate)
    features = analyse(str(path), channels=1 if name.startswith("mono") else 2)
    reference = ffmpeg_true_peak(path)
    assert abs(features["true_peak_dbtp"] - reference) <= 0.5, (features["true_peak_dbtp"], reference)
    # A true peak is never below the sample peak.
    assert features["true_peak_dbtp"] >= features["peak_dbfs"] - 0.01
    if "clipped" in name:  # clipping at full scale leaves overs between the samples
        assert features["true_peak_dbtp"] > 0.5


def test_true_peak_computes_only_near_the_peak_and_finds_what_upsampling_everything_finds(tmp_path):
    signal = clipped(kind_track("noise-rock", 20, seed=3501), 1.4) * numpy.linspace(0.2, 1, 20 * RATE)[:, None]
    meter = TruePeakMeter(2)
    for start in range(0, len(signal), RATE):
        meter.add(signal[start:start + RATE])
    phases = true_peak_phases()
    everything = max(float(numpy.abs(numpy.lib.stride_tricks.sliding_window_view(signal[:, c], len(phases)) @ phases)
                           .max()) for c in range(2))
    assert meter.peak == pytest.approx(max(everything, float(numpy.abs(signal).max())), rel=1e-6)
    assert meter.computed < 0.2 * len(signal) * 2


def test_mp3_decoded_in_process_reads_like_ffmpeg(tmp_path):
    """MP3 goes through libsndfile (decode.py): the same audio as ffmpeg decodes, to the loudness meter's eye."""
    path = write(drum_track(100, 10, seed=3601), tmp_path / "drums.mp3")
    assert open_mp3(str(path)) is not None
    from worker_app.analysis.decode import _stream_ffmpeg
    from worker_app.analysis.loudness import measure

    ours = numpy.concatenate(list(stream_pcm(str(path), 2, time_limit=60, max_seconds=1e6)))
    theirs = numpy.concatenate(list(_stream_ffmpeg(str(path), 2, time_limit=60, max_seconds=1e6,
                                                   stats=DecodeStats())))
    assert abs(len(ours) - len(theirs)) <= 0.06 * RATE  # encoder delay and padding handled alike, within a frame
    assert measure(ours, RATE)["loudness_lufs"] == pytest.approx(measure(theirs, RATE)["loudness_lufs"], abs=0.05)
    # Not an MP3 by name, or not at 44.1 kHz: ffmpeg's.
    assert open_mp3(str(write(drum_track(100, 2, seed=3602), tmp_path / "drums.flac"))) is None
    assert open_mp3(str(write(drum_track(100, 2, seed=3603), tmp_path / "drums-48k.mp3", rate=48_000))) is None


def test_moods_order_major_above_minor_and_techno_above_ambient():
    """The mood estimate (moods.py) is a rule of thumb; what it must get right is the order on clear cases. Valence
    leans on the detected mode, and a progression read as its relative key (about one in twenty) takes the other
    mode's side: so the means over all twelve tonics, not every pair."""
    major = [excerpt_features(chord_track(t, "major", 12, seed=3700 + i)) for i, t in enumerate(PITCH_CLASSES)]
    minor = [excerpt_features(chord_track(t, "minor", 12, seed=3750 + i)) for i, t in enumerate(PITCH_CLASSES)]
    assert numpy.mean([f["valence"] for f in major]) - numpy.mean([f["valence"] for f in minor]) >= 0.2
    techno = [excerpt_features(kind_track("techno", 12, seed=3720 + i)) for i in range(3)]
    ambient = [excerpt_features(kind_track("ambient", 12, seed=3730 + i)) for i in range(3)]
    assert min(f["arousal"] for f in techno) > max(f["arousal"] for f in ambient)
    for features in major + minor + techno + ambient:
        assert 0 <= features["valence"] <= 1 and 0 <= features["arousal"] <= 1
        assert features["mood"] in ("happy", "tense", "sad", "calm")


def test_a_fifo_named_mp3_is_left_to_ffmpeg_and_its_time_limit(tmp_path):
    """Opening a FIFO blocks until a writer comes, where no time limit reaches an in-process decoder: only regular
    files are opened in-process; ffmpeg gets the rest, under its timer."""
    import os

    fifo = tmp_path / "a fifo.mp3"
    os.mkfifo(fifo)
    assert open_mp3(str(fifo)) is None
    with pytest.raises(DecodeError, match="longer than"):
        analyse(str(fifo), time_limit=1.0)
