"""The track's fields are defined twice on purpose: the extractor's record (worker_app/metadata/record.py) and the
catalogue's table (worker_app/db/models.py). The insert stage copies the fields they share by name
(insert.TRACK_FIELDS, derived from both); these tests make sure nothing falls between them."""
from __future__ import annotations

from dataclasses import fields

from worker_app.db.models import Track
from worker_app.metadata.record import TrackRecord
from worker_app.pipeline import insert

# Record fields that become other rows or columns in the batch stage (worker_app/pipeline/batch.py): artists and
# albums with their MusicBrainz ids, the cover's hash.
BECOME_OTHER_ROWS = {"artists", "album", "album_artists", "is_compilation", "mb_track_id", "mb_album_id",
                     "mb_release_group_id", "mb_artist_ids", "mb_album_artist_ids", "cover"}
# Columns the database fills (id, added_at, updated_at) or the upsert statement makes from the row (search_vector:
# worker_app/db/search_vector.py).
FILLED_ELSEWHERE = {"id", "added_at", "updated_at", "search_vector"}


def _written_columns(monkeypatch) -> set[str]:
    """The columns of the row the insert stage writes for one record, as the batch stage passes it on."""
    written: list[dict] = []

    def capture(session, statement, rows):
        written.extend(rows)
        return []

    class NoDatabase:  # a session and its connection, for the statements other than the upsert
        def execute(self, *args, **kwargs):
            return []

        def connection(self):
            return self

    monkeypatch.setattr(insert, "_execute_rows", capture)
    record = TrackRecord(path="/music/a.flac", size_bytes=1, mtime=0.0, format="flac").to_message()
    track = {**record, "artist_keys": [], "album_key": None, "cover": None, "folder_cover": None}
    insert.upsert_tracks(NoDatabase(), 1, [track], {}, {}, {})
    (row,) = written
    return set(row)


def test_every_track_column_is_written(monkeypatch):
    columns = {column.name for column in Track.__table__.columns}
    assert columns - _written_columns(monkeypatch) == FILLED_ELSEWHERE


def test_every_record_field_is_stored(monkeypatch):
    record_fields = {field.name for field in fields(TrackRecord)}
    stored = _written_columns(monkeypatch)
    assert record_fields - stored == BECOME_OTHER_ROWS
    assert set(insert.TRACK_FIELDS) == record_fields & stored - {"path"}
