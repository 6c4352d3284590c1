"""A folder with more entries than a chunk's budget is catalogued in full, by slice units whose messages stay
small; a rescan finds what vanished from it and what changed in it."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.report import record
from tests.faults.stack import catalogue_under, engine_of, fault_stack, scan

pytestmark = pytest.mark.timeout(1200)

CHUNK_ENTRIES = 50
FILES = 600
# Long names: the folder's names need several slices.
NAME = "{:04d} " + "a long file name that fills the slices " * 5 + ".mp3"


def test_slices_of_names_keep_each_message_under_64_kb():
    from worker_app.pipeline.scan import slice_names

    names = [NAME.format(i) + "é" * (i % 50) for i in range(5000)]
    slices = slice_names(names)
    assert [name for piece in slices for name in piece] == names
    assert max(len(json.dumps([1, "c/s0.0", ["/some/folder"], piece, "/some/folder/cover.jpg"]))
               for piece in slices) < 64 * 1024


def test_a_folder_bigger_than_a_chunk_is_catalogued_in_full_and_rescanned(workspace):
    from worker_app.db.models import ScanUnit

    base = workspace / "big-folder"
    root = base / "library"
    template_library = make_library(base / "templates", n_files=3, seed=91, corrupt=False, untagged=False,
                                    odd_file_names=False, formats=["mp3"])
    template = template_library.tracks[0].path
    big = root / "flat dump"
    big.mkdir(parents=True)
    for i in range(FILES):
        os.link(template, big / NAME.format(i))
    (big / "an album").mkdir()
    shutil.copy(template, big / "an album" / "01 inside.mp3")
    expected = sorted([str(big / NAME.format(i)) for i in range(FILES)] + [str(big / "an album" / "01 inside.mp3")])

    with fault_stack(base / "stack", [root], SONIQUEBAY_CHUNK_ENTRIES=str(CHUNK_ENTRIES)) as stack:
        engine = engine_of(stack)
        first = scan(stack, root)
        assert first["status"] == "complete" and first["failed"] == 0, first
        assert first["discovered"] == first["inserted"] == len(expected)
        assert sorted(catalogue_under(engine, root)) == expected
        with Session(engine) as session:
            slices = session.execute(select(ScanUnit.key).where(
                ScanUnit.scan_id == first["scan_id"], ScanUnit.kind == "chunk", ScanUnit.key.like("%/s%")
            )).scalars().all()
        assert len(slices) >= 2, slices

        # Twenty files go, five are replaced by new files (a new inode: hard links share their mtime).
        for i in range(20):
            os.unlink(big / NAME.format(i))
        for i in range(20, 25):
            target = big / NAME.format(i)
            target.unlink()
            shutil.copy(template, target)
            os.utime(target, (1_800_000_000, 1_800_000_000))
        second = scan(stack, root)
        assert second["status"] == "complete" and second["failed"] == 0, second
        assert second["removed"] == 20
        assert second["extracted"] == 5
        assert second["unchanged"] == len(expected) - 25
        assert sorted(catalogue_under(engine, root)) == expected[20:]
        engine.dispose()
        record("big folder", files=len(expected), chunk_entries=CHUNK_ENTRIES, slices=len(slices),
               first_scan_seconds=first["seconds"], rescan_seconds=second["seconds"])
