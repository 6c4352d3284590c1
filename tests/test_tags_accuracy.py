"""The reader against the kinds of mistakes an independent reader found: each kind on files the generator makes.

- a container holding no audio stream is a failure with a reason, not a track without duration;
- the aliases common taggers write (MusicBrainz Picard's tag map, as beets' mediafile and Navidrome read it);
- every container mutagen reads is scanned, whatever extension it goes by;
- impossible stream values from a damaged header are not stored, and the track says why.
"""
from __future__ import annotations

import io

import pytest
from mutagen.asf import ASF

from tests.audio_factory import TemplateCache, asf_without_audio_stream, metadata_only_mp4
from worker_app.metadata.reader import read_stream_info, read_track
from worker_app.metadata.record import UnreadableFileError


@pytest.fixture(scope="module")
def templates():
    return TemplateCache()


# ---------------------------------------------------------------- containers without audio


def test_an_m4a_made_only_of_metadata_boxes_is_refused(tmp_path):
    path = tmp_path / "01 Only Tags.m4a"
    path.write_bytes(metadata_only_mp4({"\xa9nam": ["Only tags"], "\xa9ART": ["Somebody"]}))
    for read in (read_track, read_stream_info):
        with pytest.raises(UnreadableFileError) as caught:
            read(path)
        assert caught.value.reason == "no audio stream in the MP4/M4A file (only metadata or other tracks)"


def test_a_wma_without_a_stream_is_refused(tmp_path, templates):
    buffer = io.BytesIO(templates.get("wma", 0.3).data)
    audio = ASF(buffer)
    audio["Title"] = ["Only tags"]
    buffer.seek(0)
    audio.save(buffer)
    path = tmp_path / "01 Only Tags.wma"
    path.write_bytes(asf_without_audio_stream(buffer.getvalue()))
    with pytest.raises(UnreadableFileError) as caught:
        read_track(path)
    assert caught.value.reason == "no audio stream in the WMA/ASF file (only metadata or other tracks)"


@pytest.mark.parametrize("format_name", ["m4a-aac", "m4a-alac", "wma"])
def test_the_same_containers_with_audio_are_tracks(tmp_path, templates, format_name):
    template = templates.get(format_name, 0.3)
    path = tmp_path / f"track{template.format.extension}"
    path.write_bytes(template.data)
    record = read_track(path)
    assert record.codec == template.format.codec and record.duration_seconds == pytest.approx(0.3, abs=0.1)
