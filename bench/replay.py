"""The extract stage without its reader, for `bench/run ceiling`: loaded into the workers with
``celery worker --include bench.replay`` when ``BENCH_REPLAY_RECORDS`` names a file of records prepared once from
the template files (bench/ceiling.py). Reading a file then costs a stat and a dictionary lookup, so that only the
central services (broker, ledger, batch, insert, PostgreSQL) do real work. Each folder is its own album (the
template's title plus the folder's name), as in a real library of that many folders."""
from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any

from worker_app.metadata.record import TrackRecord, UnreadableFileError
from worker_app.pipeline import extract

RECORDS_ENV = "BENCH_REPLAY_RECORDS"


def prepare(template_files: list[str], destination: str) -> dict[str, int]:
    """Read every template once with the real reader; store what it gave (a record or its failure) by inode."""
    from worker_app.metadata.reader import read_track

    prepared: dict[tuple[int, int], Any] = {}
    failed = 0
    for path in template_files:
        status = os.stat(path)
        try:
            prepared[(status.st_dev, status.st_ino)] = read_track(path)
        except UnreadableFileError as error:
            prepared[(status.st_dev, status.st_ino)] = ("failure", error.reason, error.passing)
            failed += 1
    with open(destination, "wb") as handle:
        pickle.dump(prepared, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return {"records": len(prepared) - failed, "failures": failed}


def _replayer(prepared: dict[tuple[int, int], Any]):
    def replay_track(path: str | os.PathLike[str], stat_result: os.stat_result | None = None,
                     **_limits: Any) -> TrackRecord:
        status = stat_result or os.stat(path)
        found = prepared.get((status.st_dev, status.st_ino))
        if found is None:
            raise UnreadableFileError("not a prepared template (bench replay)", passing=False)
        if isinstance(found, tuple):
            raise UnreadableFileError(found[1], passing=found[2])
        text = os.fsdecode(path)
        folder = os.path.basename(os.path.dirname(text))
        album = f"{found.album} ({folder})" if found.album else None
        return dataclasses.replace(found, path=text, size_bytes=status.st_size, mtime=status.st_mtime, album=album,
                                   artists=list(found.artists), album_artists=list(found.album_artists))

    return replay_track


if os.environ.get(RECORDS_ENV):
    with open(os.environ[RECORDS_ENV], "rb") as _handle:
        extract.read_track = _replayer(pickle.load(_handle))  # type: ignore[assignment]
