"""The field table (worker_app/metadata/fields.py) is the one place a tag name is defined: what it names must exist,
and a mistake in it stops the import instead of losing a field's values."""
from __future__ import annotations

from dataclasses import fields

import pytest

from worker_app.metadata import fields as field_table
from worker_app.metadata.record import TrackRecord


def test_every_field_the_table_fills_is_a_record_field_and_every_position_has_its_total():
    record_fields = {f.name for f in fields(TrackRecord)}
    assert {entry.field for entry in field_table.FIELD_KEYS} <= record_fields
    assert field_table.TOTAL_NAME == {"tracknumber": "tracktotal", "discnumber": "disctotal"}
    # the structural readers look these keys up: they must be in the table
    assert field_table.ID3_KEYS["COMM"] == "comment" and field_table.ID3_KEYS["USLT"] == "lyrics"
    assert field_table.MP4_KEYS["trkn"] == "tracknumber" and field_table.MP4_KEYS["disk"] == "discnumber"
    assert field_table.MP4_KEYS["gnre"] == field_table.ID3_KEYS["TCON"] == "genre"
    assert field_table.ASF_KEYS["wm/tracknumber"] == "tracknumber"


@pytest.mark.parametrize("line, mistake", [
    ("compilation | is_compilation: flag | all | TCMP | cpil | | COMPILATION", "do not suit a flag field"),
    ("title | title: text | first, split /; | TIT2 | | |", "do not suit a text field"),
    ("title | title: txt | first | TIT2 | | |", "unknown type"),
    ("label | | first | TPUB | | |", "values for a name that is no field"),
    ("title | title: text | first | TIT2 | | | TITLE\nname | | | TIT2 | | |", "listed for title and name"),
    ("title | title: text | first | TIT2 | |", "columns"),
])
def test_a_mistake_in_the_table_is_refused(line, mistake):
    with pytest.raises(ValueError, match=mistake):
        field_table._parse_tag_map(line)


def test_several_values_join_as_the_table_says():
    record = TrackRecord(path="/x.flac", size_bytes=1, mtime=0.0, format="flac")
    one, two = "0383dadf-2a4e-4d10-a46a-e9e041da8eb3", "1b7b1c7f-8b0e-4c8f-9c3e-0a0b0c0d0e0f"
    values = {"title": ["First", "Second"], "musicbrainz_artistid": [f"{one}/{two}"], "genre": ["Rock", "Jazz"]}
    warnings: list[str] = []
    field_table.fill_fields(record, values, warnings)
    assert record.title == "First" and values == {"title": ["Second"]}  # "first": the others stay in tags
    assert record.mb_artist_ids == [one, two]  # "all, split /;"
    assert record.genres == ["Rock", "Jazz"]  # "all"
    assert warnings == ["title has 2 values, the first is used"]
