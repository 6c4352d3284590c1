"""Audio analysis in the running system: real workers, PostgreSQL with the cube extension, generated audio.

A scan of a small library of several distinct kinds of sound (tests/analysis_factory.py: techno, ballad,
noise-rock, ambient) must leave every track with its features and a similarity vector, and `soniquebay similar`
must list tracks of the same kind first. The analysis is idempotent, follows changed files only, and records a
file it cannot decode with the reason.
"""
from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import select, text

from tests.analysis_factory import KINDS, kind_track, write
from tests.audio_factory import TemplateCache
from worker_app.analysis import ANALYSIS_VERSION
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)

PER_KIND = 11  # ten neighbours of its own kind to find, for every track
EXTENSIONS = (".mp3", ".flac", ".ogg")


@pytest.fixture(scope="module")
def kinds_library(library_root):
    root = library_root / "analysis-kinds"
    truth = {}
    for kind_index, kind in enumerate(KINDS):
        for number in range(PER_KIND):
            seed = 7000 + 100 * kind_index + number
            path = root / kind / f"{kind}-{number:02d}{EXTENSIONS[number % len(EXTENSIONS)]}"
            write(kind_track(kind, 12, seed), path)
            truth[os.fsdecode(path)] = kind
    return root, truth


def scan(stack, root) -> dict:
    """Scan, then wait for the analysis the scan started: it runs after the scan is complete, not within it."""
    from sqlalchemy import create_engine, func
    from sqlalchemy.orm import Session

    from tests.services import wait_for
    from worker_app.db.models import ScanUnit
    from worker_app.pipeline.ledger import BACKGROUND_KINDS

    result = stack.soniquebay("scan", str(root), "--wait", "--json", "--timeout", "600", check=False)
    assert result.returncode == 0, result.stderr + result.stdout + stack.diagnostics()
    summary = json.loads(result.stdout)
    engine = create_engine(stack.postgres.url)

    def analysed():
        with Session(engine) as session:
            return session.execute(select(func.count()).where(
                ScanUnit.scan_id == summary["scan_id"], ScanUnit.state == "pending",
                ScanUnit.kind.in_(BACKGROUND_KINDS))).scalar() == 0

    wait_for(analysed, 300, f"scan {summary['scan_id']}'s analysis", interval=0.3)
    engine.dispose()
    return summary


def features_under(db_session_factory, root) -> dict[str, dict]:
    with db_session_factory() as session:
        rows = session.execute(text("""
            SELECT t.id, t.path, f.analysis_version, f.analysed_at, f.error, f.bpm, f.key, f.scale, f.camelot,
                   f.loudness_lufs, f.track_gain_db, f.energy, f.danceability, f.mfcc_mean,
                   v.embedding IS NOT NULL AND v.sketch IS NOT NULL AS has_vector
            FROM tracks t LEFT JOIN audio_features f ON f.track_id = t.id
            LEFT JOIN track_vectors v ON v.track_id = t.id
            WHERE starts_with(t.path, :prefix)
        """), {"prefix": os.fsdecode(root) + "/"}).mappings().all()
    return {row["path"]: dict(row) for row in rows}


def test_a_scan_analyses_every_track_and_similar_finds_its_kind(stack, kinds_library, db_session_factory):
    root, truth = kinds_library
    summary = scan(stack, root)
    assert summary["status"] == "complete" and summary["inserted"] == len(truth)

    found = features_under(db_session_factory, root)
    assert sorted(found) == sorted(truth)
    problems = {path: row for path, row in found.items()
                if row["analysis_version"] != ANALYSIS_VERSION or row["error"] or not row["has_vector"]
                or row["loudness_lufs"] is None or len(row["mfcc_mean"] or []) != 13}
    assert not problems, f"{len(problems)} tracks without features or vector, e.g. {next(iter(problems.items()))}"
    # What a user checks first: the techno is around 128 BPM, the ambient pad has no beat to dance to.
    techno = [row for path, row in found.items() if truth[path] == "techno"]
    assert all(row["bpm"] and 118 <= row["bpm"] <= 138 for row in techno), [row["bpm"] for row in techno]
    ambient = [row for path, row in found.items() if truth[path] == "ambient"]
    assert max(row["danceability"] for row in ambient) < min(row["danceability"] for row in techno)

    # Precision at 10 over every track, through the query `soniquebay similar` runs. The session's catalogue
    # also holds other tests' libraries: neighbours are counted among this library's tracks.
    from worker_app.db.models import TrackVector
    from worker_app.pipeline.analysis import nearest

    by_id = {row["id"]: path for path, row in found.items()}
    precisions = {}
    with db_session_factory() as session:
        for track_id, path in by_id.items():
            embedding = session.get(TrackVector, track_id).embedding
            neighbours = [row["track_id"] for row in nearest(session, embedding, 400, exclude=track_id)
                          if row["track_id"] in by_id][:10]
            precisions[path] = sum(truth[by_id[n]] == truth[path] for n in neighbours) / 10
    mean_precision = sum(precisions.values()) / len(precisions)
    worst = sorted(precisions.items(), key=lambda item: item[1])[:3]
    assert mean_precision >= 0.8, f"precision@10 {mean_precision:.2f}; worst {worst}"

    # The command itself, by track id and by file name, nearest first.
    some_track = next(iter(by_id))
    listed = json.loads(stack.soniquebay("similar", str(some_track), "-n", "5", "--json").stdout)
    assert len(listed) == 5 and some_track not in [row["track_id"] for row in listed]
    distances = [row["distance"] for row in listed]
    assert distances == sorted(distances)
    by_path = json.loads(stack.soniquebay("similar", by_id[some_track], "-n", "5", "--json").stdout)
    assert [row["track_id"] for row in by_path] == [row["track_id"] for row in listed]
    figures = json.loads(stack.soniquebay("analysis", "--json").stdout)
    assert figures["analysed"] >= len(truth) and figures["vectors"] >= len(truth)
    assert figures["rate_per_minute"] > 0 and figures["backlog"] <= figures["tracks"] - len(truth)
    shown = json.loads(stack.soniquebay("features", by_id[some_track], "--json").stdout)
    assert shown["stored"] and shown["bpm"] == found[by_id[some_track]]["bpm"]
    assert shown["camelot"] == found[by_id[some_track]]["camelot"]


def test_a_rescan_analyses_only_changed_files(stack, kinds_library, db_session_factory):
    root, truth = kinds_library
    before = features_under(db_session_factory, root)
    if not before or any(row["analysed_at"] is None for row in before.values()):
        scan(stack, root)
        before = features_under(db_session_factory, root)
    changed = sorted(truth)[3]
    write(kind_track("techno", 12, seed=7999), changed)  # new audio (and size, mtime) under the same name
    summary = scan(stack, root)
    assert summary["extracted"] == 1 and summary["unchanged"] == len(truth) - 1
    after = features_under(db_session_factory, root)
    reanalysed = sorted(path for path in after if after[path]["analysed_at"] != before[path]["analysed_at"])
    assert reanalysed == [changed]
    assert 118 <= after[changed]["bpm"] <= 138


def test_a_file_ffmpeg_cannot_decode_is_recorded_with_its_reason(stack, library_root, db_session_factory):
    root = library_root / "analysis-undecodable"
    root.mkdir()
    # Monkey's Audio header and filler bytes: mutagen reads it (it is catalogued), no decoder can play it.
    path = root / "header-only.ape"
    path.write_bytes(TemplateCache().get("ape", 1.0).data)
    write(kind_track("ballad", 8, seed=7101), root / "fine.flac")
    summary = scan(stack, root)
    assert summary["status"] == "complete" and summary["inserted"] == 2
    found = features_under(db_session_factory, root)
    assert found[db_path(os.fsdecode(path))[0]]["error"], found
    assert found[os.fsdecode(root / "fine.flac")]["error"] is None
    failures = json.loads(stack.soniquebay("failures", str(summary["scan_id"]), "--json").stdout)
    assert [(f["path"], f["stage"]) for f in failures] == [(os.fsdecode(path), "analysis")]
    assert failures[0]["reason"]
    scan_figures = json.loads(stack.soniquebay("analysis", str(summary["scan_id"]), "--json").stdout)["scan"]
    assert (scan_figures["analysed"], scan_figures["failed"], scan_figures["pending_batches"]) == (1, 1, 0)


def test_the_task_outside_a_scan_is_idempotent(stack, kinds_library, db_session_factory):
    from worker_app.pipeline.analysis import extract_audio_features_batch

    root, truth = kinds_library
    found = features_under(db_session_factory, root)
    if not found:
        scan(stack, root)
        found = features_under(db_session_factory, root)
    ids = sorted(row["id"] for row in found.values())[:4]
    again = extract_audio_features_batch.apply_async((None, None, ids), ignore_result=False).get(timeout=120)
    assert again["analysed"] == 0 and again["skipped"] == len(ids)
    forced = extract_audio_features_batch.apply_async((None, None, ids, True), ignore_result=False).get(timeout=120)
    assert forced["analysed"] == len(ids)
    after = features_under(db_session_factory, root)
    # The same audio gives the same figures.
    for path, row in after.items():
        if row["id"] in ids:
            assert (row["bpm"], row["camelot"], row["loudness_lufs"]) == (
                found[path]["bpm"], found[path]["camelot"], found[path]["loudness_lufs"])


def test_features_of_a_file_outside_the_catalogue(stack, tmp_path):
    path = write(kind_track("techno", 8, seed=7201), tmp_path / "loose.flac")
    shown = json.loads(stack.soniquebay("features", str(path), "--json").stdout)
    assert not shown["stored"] and 118 <= shown["bpm"] <= 138 and shown["loudness_lufs"] < 0


def test_album_figures_come_from_the_tracks(stack, library_root, db_session_factory, tmp_path):
    """Album gain against ffmpeg's ebur128 over the album played through (the three files concatenated)."""
    import subprocess

    from mutagen.flac import FLAC

    from tests.analysis_factory import ffmpeg_ebur128

    root = library_root / "analysis-album"
    paths = []
    for number, (kind, year) in enumerate((("techno", "1999"), ("ballad", "2001"), ("noise-rock", "2000"))):
        path = write(kind_track(kind, 10, seed=7300 + number), root / f"{number + 1:02d}.flac")
        tags = FLAC(path)
        tags.update({"artist": "Album Tester", "album": "Measured Album", "title": f"Song {number + 1}",
                     "tracknumber": str(number + 1), "date": year})
        tags.save()
        paths.append(path)
    summary = scan(stack, root)
    assert summary["status"] == "complete" and summary["inserted"] == 3
    with db_session_factory() as session:
        row = session.execute(text("""
            SELECT aa.* FROM album_audio aa JOIN albums a ON a.id = aa.album_id WHERE a.title = 'Measured Album'
        """)).mappings().one()
        peaks = session.execute(text(
            "SELECT max(f.sample_peak) FROM audio_features f JOIN tracks t ON t.id = f.track_id "
            "WHERE starts_with(t.path, :prefix)"), {"prefix": os.fsdecode(root) + "/"}).scalar()
    assert (row["track_count"], row["analysed_tracks"], row["year_min"], row["year_max"]) == (3, 3, 1999, 2001)
    assert row["total_duration_seconds"] == pytest.approx(30, abs=0.2)
    assert row["album_peak"] == pytest.approx(peaks)
    whole = tmp_path / "album.flac"
    inputs = [argument for path in paths for argument in ("-i", str(path))]
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *inputs, "-filter_complex",
                    f"concat=n={len(paths)}:v=0:a=1", str(whole)], check=True)
    assert abs(row["loudness_lufs"] - ffmpeg_ebur128(whole)) <= 0.5
    assert row["album_gain_db"] == pytest.approx(-18 - row["loudness_lufs"])


def test_a_batch_that_runs_out_of_time_hands_the_rest_to_a_new_task(stack, kinds_library, db_session_factory,
                                                                      monkeypatch):
    """Analysis costs seconds a file: a batch stops starting files after a share of its time limit and sends the
    remaining track ids on. Here the share is 0 in this process, which then analyses one file and hands over the
    rest, which the workers analyse."""
    from worker_app.pipeline import analysis

    root, truth = kinds_library
    found = features_under(db_session_factory, root)
    if not found:
        scan(stack, root)
        found = features_under(db_session_factory, root)
    ids = sorted(row["id"] for row in found.values())[-5:]
    with db_session_factory() as session, session.begin():
        session.execute(text("DELETE FROM audio_features WHERE track_id = ANY(:ids)"), {"ids": ids})
    monkeypatch.setattr(analysis, "BATCH_TIME_SHARE", 0.0)
    result = analysis.extract_audio_features_batch.run(None, None, ids)
    assert (result["analysed"], result["deferred"]) == (1, len(ids) - 1)

    def all_analysed():
        with db_session_factory() as session:
            return session.execute(text(
                "SELECT count(*) FROM audio_features WHERE track_id = ANY(:ids) AND error IS NULL"),
                {"ids": ids}).scalar() == len(ids)

    from tests.services import wait_for

    wait_for(all_analysed, 120, "the handed-over tracks to be analysed by the workers", interval=0.5)
