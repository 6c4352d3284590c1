"""The generator itself: real audio, the promised variety, determinism, and the mutation helpers."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import soundfile

from tests.audio_factory import (
    ALL_FORMATS,
    FORMATS,
    REAL_FORMATS,
    SYNTHETIC_FORMATS,
    VARIOUS_ARTISTS,
    main,
    make_library,
)
from worker_app.metadata.covers import find_folder_cover
from worker_app.metadata.reader import read_track
from worker_app.metadata.record import UnreadableFileError


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("factory") / "music", 60, seed=7, formats=ALL_FORMATS)


def test_every_requested_format_and_mp3_tag_style_is_present(library):
    assert library.formats == set(ALL_FORMATS)
    mp3_styles = {track.tag_style for track in library.tracks if track.format_name == "mp3"}
    assert set(FORMATS["mp3"].tag_styles) <= mp3_styles


def test_file_count_and_layout(library):
    assert len(library.tracks) == 60
    assert all(Path(track.path).is_file() for track in library.tracks)
    assert len({track.path for track in library.tracks}) == 60
    relative = [Path(track.path).relative_to(library.root) for track in library.tracks if track.tagged]
    assert all(len(path.parts) in (3, 4) for path in relative)  # Artist/Album/[Disc N/]file


def test_library_has_the_hard_cases(library):
    tracks = library.tracks
    compilation = [track for track in tracks if track.is_compilation]
    assert compilation and all(track.album_artists == [VARIOUS_ARTISTS] for track in compilation)
    assert len({tuple(track.artists) for track in compilation}) > 1
    assert any((track.disc_total or 0) > 1 for track in tracks)
    assert any(len(track.artists) > 1 for track in tracks)
    assert any(not (track.title or "").isascii() for track in tracks)
    assert any(not Path(track.path).name.isascii() for track in tracks)
    assert any("\udce9" in track.path for track in tracks)  # a latin-1 file name, surrogate-escaped
    assert [track for track in tracks if not track.tagged]
    assert any(track.cover_sha256 for track in tracks)
    assert any(track.cover_sha256 is None and track.tagged for track in tracks)
    assert any(track.warnings for track in tracks)
    assert library.folder_covers
    assert set(library.corrupt_kinds.values()) == {"random-bytes", "truncated", "zero-byte"}


def test_real_formats_decode(library):
    """The bytes are audio a decoder accepts, not just headers (libsndfile reads these five)."""
    decodable = {"wav", "flac", "ogg", "aiff", "mp3"}
    checked = set()
    for track in library.tracks:
        if track.format in decodable and track.format not in checked:
            with open(track.path, "rb") as audio_file:  # soundfile cannot take a surrogate-escaped name
                data, rate = soundfile.read(audio_file)
            assert rate == track.sample_rate
            assert abs(len(data) / rate - track.duration_seconds) < 0.1
            checked.add(track.format)
    assert checked == decodable


def test_synthetic_formats_are_marked(library):
    assert set(SYNTHETIC_FORMATS) == {"ape", "musepack"}
    assert not set(SYNTHETIC_FORMATS) & set(REAL_FORMATS)


def test_folder_covers_are_what_find_folder_cover_picks(library):
    for directory, cover_path in library.folder_covers.items():
        assert find_folder_cover(os.listdir(directory)) == os.path.basename(cover_path)
    for track in library.tracks:
        if track.folder_cover_path:
            digest = hashlib.sha256(Path(track.folder_cover_path).read_bytes()).hexdigest()
            assert digest == track.folder_cover_sha256


def test_same_seed_same_library(tmp_path):
    first = make_library(tmp_path / "a", 20, seed=3)
    second = make_library(tmp_path / "b", 20, seed=3)

    def fingerprint(library):
        return sorted(
            (os.path.relpath(os.fsencode(track.path), os.fsencode(library.root)),
             hashlib.sha256(Path(track.path).read_bytes()).hexdigest())
            for track in library.tracks
        )

    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(make_library(tmp_path / "c", 20, seed=4))


def test_retag_rewrites_tags_and_moves_mtime_forward(tmp_path):
    library = make_library(tmp_path, 12, seed=1, corrupt=False)
    dirty = [track for track in library.tracks if track.raw_overrides]
    assert dirty
    for track in dirty + [t for t in library.tracks if t.tagged][:6]:
        new = library.retag(track.path, title="Renamed ✨", artists=["Someone Else"], date="2001-02-03")
        assert new.mtime > track.mtime
        assert new.year == 2001
        assert library.track(track.path) is new
        assert new.mismatches(read_track(new.path)) == []


def test_add_move_touch_remove_and_corrupt(tmp_path):
    library = make_library(tmp_path, 10, seed=2, corrupt=False)
    added = library.add_track("Nouvel Artiste", "Premier Album", "Bonjour", "m4a-alac", track_number=3,
                              genres=["Chanson"])
    assert added.mismatches(read_track(added.path)) == []

    cover = library.set_folder_cover(os.path.dirname(added.path), "folder.png")
    assert added.folder_cover_sha256 == cover.sha256

    moved = library.move_track(added.path, "Elsewhere/03 Bonjour.m4a")
    assert moved.path.endswith("Elsewhere/03 Bonjour.m4a") and moved.folder_cover_sha256 is None
    assert moved.mismatches(read_track(moved.path)) == []

    before = moved.mtime
    assert library.touch(moved.path).mtime > before
    assert moved.mismatches(read_track(moved.path)) == []

    victim = library.tracks[0].path
    library.corrupt_track(victim)
    assert Path(victim) in library.corrupt
    with pytest.raises(UnreadableFileError):
        read_track(victim)

    library.remove_track(moved.path)
    assert not os.path.exists(moved.path)
    with pytest.raises(KeyError):
        library.track(moved.path)


def test_command_line_writes_a_library_and_manifest(tmp_path, capsys):
    assert main([str(tmp_path / "demo"), "--files", "8", "--manifest", str(tmp_path / "answers.json")]) == 0
    assert "8 audio files" in capsys.readouterr().out
    assert (tmp_path / "answers.json").stat().st_size > 0
