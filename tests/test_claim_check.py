"""The claim check: a scan's records and pictures wait in PostgreSQL (pipeline/staging.py) and its messages carry
references only. Every message of the extract -> batch -> insert chain is read back from the broker's own lists,
where it waits (each stage's workers stopped in turn), with pictures of megabytes in the files; and nothing is left
staged once the scan is over."""
from __future__ import annotations

import hashlib
import io
import os
import random

import pytest
import redis
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, ID3NoHeaderError
from PIL import Image
from sqlalchemy import func, select

from tests.audio_factory import CoverArt, make_library
from tests.catalogue import forget_library
from tests.faults.stack import finish, start_scan
from tests.services import wait_for

pytestmark = pytest.mark.timeout(900)

MAX_MESSAGE_BYTES = 64 * 1024
STAGES = ("extract", "batch", "insert")


def big_picture(seed: int, side: int) -> bytes:
    """A real JPEG of noise (it does not compress): about 1.5 MB at 1000 x 1000."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def embed_front_cover(path: str, format_name: str, data: bytes) -> bool:
    if format_name == "flac":
        audio = FLAC(path)
        audio.clear_pictures()
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", data
        audio.add_picture(picture)
        audio.save()
        return True
    if format_name == "mp3":
        try:
            tags = ID3(path)
        except ID3NoHeaderError:  # tagged with ID3v1 or APEv2 only
            return False
        tags.delall("APIC")
        tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="front", data=data))
        tags.save(path)
        return True
    return False


def test_no_message_of_a_scan_exceeds_64_kb_and_nothing_stays_staged(stack, library_root, db_session_factory):
    from worker_app.celery_app import app
    from worker_app.db.models import Cover, Scan, ScanUnit, StagedCover, StagedUnit, Track
    from worker_app.paths import db_path
    from worker_app.pipeline.backpressure import queue_keys

    library = make_library(library_root / "claim-check", n_files=150, seed=97, corrupt=False)
    embedded = big_picture(1, 1000)
    folder_image = big_picture(2, 1100)
    with_embedded = [track.path for track in library.tracks if embed_front_cover(track.path, track.format, embedded)]
    assert len(with_embedded) >= 4, "the library has too few FLAC and MP3 files for the test"
    folder = next(os.path.dirname(track.path) for track in library.tracks if track.path not in with_embedded)
    library.set_folder_cover(folder, "cover.jpg", CoverArt(folder_image, "image/jpeg", 1100, 1100))
    pictures = {hashlib.sha256(data).hexdigest(): len(data) for data in (embedded, folder_image)}
    assert min(pictures.values()) > 16 * MAX_MESSAGE_BYTES

    broker = redis.Redis.from_url(stack.broker.url())
    groups = {name: stack.supervisor.group(name) for name in STAGES}

    def waiting(queue: str) -> list[bytes]:
        sep = app.conf.broker_transport_options.get("sep", ":")
        return [message for key in queue_keys(queue, sep) for message in broker.lrange(key, 0, -1)]

    def units(scan_id: int, *conditions) -> int:
        with db_session_factory() as session:
            return session.execute(select(func.count()).select_from(ScanUnit).where(
                ScanUnit.scan_id == scan_id, ScanUnit.kind == "extract", *conditions)).scalar_one()

    largest: dict[str, int] = {}
    sizes: dict[str, list[int]] = {}
    for group in groups.values():
        stack.supervisor.ctl("stop", group)
    try:
        process = start_scan(stack, library.root, 600)

        def running() -> int | None:
            with db_session_factory() as session:
                return session.execute(select(func.max(Scan.id)).where(
                    Scan.root == str(library.root), Scan.status == "running")).scalar()

        scan_id = wait_for(running, 60, "the scan to start")
        # Every chunk listed: the extract units are all registered and their messages wait in the extract queue.
        wait_for(lambda: units(scan_id) > 0 and len(waiting("extract")) == units(scan_id), 120,
                 "the extract messages")
        total = units(scan_id)
        for stage, next_stage in zip(STAGES, STAGES[1:] + ("",), strict=True):
            sizes[stage] = [len(message) for message in waiting(stage)]
            assert len(sizes[stage]) == total, (stage, sizes[stage], total)
            largest[stage] = max(sizes[stage])
            stack.supervisor.ctl("start", groups[stage])
            if next_stage:
                wait_for(lambda next_stage=next_stage: len(waiting(next_stage)) == total, 300,
                         f"every {next_stage} message")
            if stage == "extract":
                with db_session_factory() as session:
                    staged = session.execute(select(StagedUnit.key, func.length(StagedUnit.records))
                                             .where(StagedUnit.scan_id == scan_id)).all()
                    staged_pictures = dict(session.execute(
                        select(StagedCover.sha256, StagedCover.size_bytes)
                        .where(StagedCover.sha256.in_(list(pictures)))).all())
                assert len(staged) == total
                # The pictures are staged once each, beside the records, not inside them.
                assert staged_pictures == pictures
                assert max(length for _, length in staged) < min(pictures.values())
        summary = finish(stack, process)
    finally:
        for group in groups.values():
            stack.supervisor.ctl("start", group, check=False)

    assert summary["status"] == "complete", summary
    print(f"largest message in the broker per stage (bytes): {largest}; {total} units")
    assert max(largest.values()) < MAX_MESSAGE_BYTES, largest
    with db_session_factory() as session:
        assert session.execute(select(func.count()).select_from(StagedUnit)
                               .where(StagedUnit.scan_id == scan_id)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(StagedCover)
                               .where(StagedCover.sha256.in_(list(pictures)))).scalar_one() == 0
        catalogued = dict(session.execute(select(Cover.sha256, Cover.size_bytes)
                                          .where(Cover.sha256.in_(list(pictures)))).all())
        covered = dict(session.execute(select(Track.path, Cover.sha256).join(Cover, Cover.id == Track.cover_id)
                                       .where(Track.path.in_([db_path(p)[0] for p in with_embedded]))).all())
    assert catalogued == pictures
    assert covered == {db_path(path)[0]: hashlib.sha256(embedded).hexdigest() for path in with_embedded}
    with db_session_factory() as session, session.begin():
        forget_library(session, str(library.root))
