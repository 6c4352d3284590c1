"""Losing a host mid-scan, and messages the broker lost.

Losing a host: every worker process is killed at once (SIGKILL to each supervisor program's process
group: the Celery main process and its pool, so nothing acknowledges or hands back a message), twice during one
scan. supervisord starts the workers again, Redis hands their unacknowledged messages out again once the visibility
timeout has passed, and the scan ends with every track catalogued exactly once.

This runs on a stack of its own, with a short visibility timeout (and time limits scaled below it), so that the
lost messages come back within the test's patience.

Messages can also vanish with no worker to blame in the ledger: Redis hands a message over with BRPOP and kombu
records it as unacknowledged only once it arrived, so a worker lost in between takes it along (nothing brings it
back). Here such messages are taken out of Redis during a scan; the deferred workers' periodic check sees the scan
stall and sends them again."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.services import VENV_BIN, Stack, wait_for
from worker_app.db.models import Album, Artist, ScanUnit, Track
from worker_app.limits import QUEUES
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)

VISIBILITY_TIMEOUT = 45
N_FILES = 1500
PROGRAMS = QUEUES  # one supervisor program per queue


@pytest.fixture(scope="module")
def lossy_stack(workspace):
    root = workspace / "loss-library"
    root.mkdir()
    stack = Stack(workspace / "loss-services", [root], extra_env={
        "SONIQUEBAY_BATCH_SIZE": "20",
        # The longest time limit becomes 36 s, below the 45 s visibility timeout.
        "SONIQUEBAY_TIME_LIMIT_SCALE": "0.02",
        "SONIQUEBAY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        # The shortest time limit becomes 5.4 s.
        "SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT": "4",
        # A scan that does not move for 50 s is sent its pending messages again (checked every 8 s).
        "SONIQUEBAY_STALL_TIMEOUT": "50",
        "SONIQUEBAY_AUDIO_ANALYSIS": "off",
    })
    stack.start_services()
    try:
        stack.soniquebay("db", "upgrade")
        stack.start_workers()
        yield stack, root
    finally:
        stack.stop()


def _progress(session: Session, scan_id: int) -> tuple[int, int]:
    """(units done, units known) of a scan."""
    done, known = session.execute(
        select(func.count().filter(ScanUnit.state == "done"), func.count()).where(ScanUnit.scan_id == scan_id)
    ).one()
    return done, known


def test_a_scan_survives_losing_every_worker_twice(lossy_stack):
    stack, root = lossy_stack
    library = make_library(root / "music", n_files=N_FILES, seed=31)
    engine = create_engine(stack.postgres.url)
    scan = subprocess.Popen(
        [str(VENV_BIN / "soniquebay"), "scan", str(library.root), "--wait", "--json", "--timeout", "600",
         "--no-worker-grace", "600"],
        env=stack.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    with Session(engine) as session:
        scan_id = wait_for(lambda: session.execute(text("SELECT max(id) FROM scans")).scalar(), 60, "the scan row")

    kills = []
    for share in (0.25, 0.6):
        def far_enough(share: float = share) -> bool:
            with Session(engine) as session:
                done, known = _progress(session, scan_id)
            return known > 40 and done >= share * known
        try:
            wait_for(far_enough, 120, f"{share:.0%} of the scan's units done", interval=0.05)
        except TimeoutError as error:
            raise AssertionError(stack.diagnostics()) from error
        with Session(engine) as session:
            kills.append(_progress(session, scan_id))
        for program in PROGRAMS:
            stack.supervisor.kill_program(program)
        wait_for(stack.supervisor.all_running, 60, "supervisord to start the killed workers again")

    out, err = scan.communicate(timeout=600)
    assert scan.returncode == 0, err + out + stack.diagnostics()
    summary = json.loads(out)
    assert summary["status"] == "complete", summary

    expected = {db_path(path)[0]: track for path, track in library.by_path.items()}
    prefix = os.fsdecode(library.root) + "/"
    with Session(engine) as session:
        rows = session.execute(
            select(Track.path, Track.title).where(Track.path.startswith(prefix))
        ).all()
        redelivered = session.execute(
            select(func.count()).where(ScanUnit.scan_id == scan_id, ScanUnit.redeliveries > 0)
        ).scalar()
        pending = session.execute(
            select(func.count()).where(ScanUnit.scan_id == scan_id, ScanUnit.state == "pending")
        ).scalar()
        artist_names = session.execute(select(Artist.name_key, func.count()).group_by(Artist.name_key)
                                       .having(func.count() > 1)).all()
        album_keys = session.execute(select(Album.album_artist_id, Album.title_key, func.count())
                                     .group_by(Album.album_artist_id, Album.title_key).having(func.count() > 1)).all()

    catalogued = [path for path, _ in rows]
    assert len(catalogued) == len(set(catalogued)), "a track is catalogued twice"
    assert sorted(set(expected) - set(catalogued)) == [], f"lost tracks (killed at units done/known {kills})"
    assert sorted(set(catalogued) - set(expected)) == []
    assert all(expected[path].title == title for path, title in rows)
    assert artist_names == [] and album_keys == []
    assert pending == 0
    assert summary["inserted"] == len(expected)
    assert summary["failed"] == len(library.corrupt)
    assert summary["discovered"] == len(expected) + len(library.corrupt)
    # The kills hit work in flight: some messages were delivered again.
    assert redelivered > 0, f"no unit was delivered twice: the kills (at {kills}) hit nothing"

    # And nothing is left half-done: a rescan finds nothing to do.
    rescan = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
    assert rescan.returncode == 0, rescan.stderr + stack.diagnostics()
    again = json.loads(rescan.stdout)
    assert again["unchanged"] == len(expected) and again["extracted"] == 0 and again["removed"] == 0


def _take_extract_messages(stack, count: int) -> list[str]:
    """Take up to ``count`` extract messages out of the broker's lists, as a worker lost right after its BRPOP
    would; returns their units' keys."""
    taken = []
    deadline = time.monotonic() + 60
    while len(taken) < count and time.monotonic() < deadline:
        for priority in range(10):
            queue = "extract" if priority == 0 else f"extract:{priority}"
            raw = stack.broker.cli("RPOP", queue)
            if raw:
                match = re.match(r"\[\d+, '([^']+)'", json.loads(raw)["headers"]["argsrepr"])
                taken.append(match.group(1))
                break
        else:
            time.sleep(0.02)
    return taken


def test_a_scan_survives_messages_the_broker_lost(lossy_stack):
    stack, root = lossy_stack
    library = make_library(root / "lost-messages", n_files=400, seed=37, corrupt=False)
    engine = create_engine(stack.postgres.url)
    scan = subprocess.Popen(
        [str(VENV_BIN / "soniquebay"), "scan", str(library.root), "--wait", "--json", "--timeout", "600",
         "--no-worker-grace", "600"],
        env=stack.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    taken = _take_extract_messages(stack, 3)
    assert taken, "no extract message was ever waiting in the broker"

    out, err = scan.communicate(timeout=600)
    assert scan.returncode == 0, err + out + stack.diagnostics()
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["extracted"] == len(library.by_path), summary
    prefix = os.fsdecode(library.root) + "/"
    with Session(engine) as session:
        catalogued = session.execute(select(Track.path).where(Track.path.startswith(prefix))).scalars().all()
        scan_id = summary["scan_id"]
        lost_units = dict(session.execute(
            select(ScanUnit.key, ScanUnit.deliveries).where(ScanUnit.scan_id == scan_id, ScanUnit.key.in_(taken))
        ).all())
    assert sorted(catalogued) == sorted(db_path(path)[0] for path in library.by_path)
    # Each unit whose message was taken ran once: from the copy the stalled-scan check sent.
    assert lost_units == {key: 1 for key in taken}
