"""A seeded chaos run: one long scan during which worker processes, whole workers, the broker, the result Redis and
PostgreSQL are killed and restarted at random (kinds, targets and times drawn from --chaos-seed, bounded, so a
failing run can be replayed). At the end the catalogue equals the library: every file once, no duplicate, exact
figures.

It runs on a stack of its own whose timeouts are short enough for a whole worker's lost messages to come back
within the test (a visibility timeout of 45 s, the task time limits scaled below it, a stall check after 60 s, and
the watchdog's verdict on a worker that stopped answering after 60 s)."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.faults.report import record
from tests.faults.stack import (
    Timer,
    assert_catalogue_exact,
    engine_of,
    fault_stack,
    finish,
    newest_scan_id,
    scan_started_after,
    start_scan,
    unit_failures,
    wait_until_under_way,
)
from tests.services import wait_for
from worker_app.db.models import Album, Artist, ScanUnit
from worker_app.limits import QUEUES

pytestmark = pytest.mark.timeout(1500)

# Sized so that the scan outlasts the first round (every kind once) by a wide margin: at 4,000 files the scan ended
# about 3 s after the first round's last fault, and a slower draw left a kind out.
N_FILES = 10000
MAX_FAULTS = 12
KINDS = ("worker child", "whole worker", "broker", "result redis", "postgresql")
PROGRAMS = QUEUES  # one supervisor program per queue


@pytest.fixture(scope="module")
def chaos(workspace):
    root = workspace / "chaos-library"
    root.mkdir()
    with fault_stack(workspace / "chaos-services", [root], role_vars={"supervisor_watchdog_timeout": 60},
                     SONIQUEBAY_TIME_LIMIT_SCALE="0.02", SONIQUEBAY_VISIBILITY_TIMEOUT="45",
                     SONIQUEBAY_STALL_TIMEOUT="60", SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT="4",
                     SONIQUEBAY_MAX_DELIVERIES="5") as stack:
        yield stack, root


class Chaos:
    """Draws and applies faults until told to stop; every fault leaves its service running again."""

    def __init__(self, stack, seed: int):
        self.stack = stack
        self.rng = random.Random(seed)
        self.events: list[tuple[float, str]] = []
        self.kinds: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.first_round_seconds: float | None = None

    def run(self) -> None:
        # Every kind once, in a drawn order and close together, so that each one lands while the scan is under way;
        # then drawn kinds (worker children twice as likely) at a slower pace until the scan ends.
        first_round = self.rng.sample(KINDS, len(KINDS))
        rest = [self.rng.choice(KINDS + ("worker child",)) for _ in range(MAX_FAULTS - len(KINDS))]
        try:
            for index, kind in enumerate(first_round + rest):
                pause = self.rng.uniform(0.3, 1.0) if index < len(first_round) else self.rng.uniform(1.0, 3.0)
                if self.stop.wait(pause):
                    return
                self.events.append((self.elapsed(), self.apply(kind)))
                self.kinds.append(kind)
                if index == len(first_round) - 1:
                    self.first_round_seconds = self.elapsed()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def apply(self, kind: str) -> str:
        stack, rng = self.stack, self.rng
        if kind == "worker child":
            program = rng.choice(PROGRAMS)
            children = stack.supervisor.pool_pids(program)
            if not children:
                return f"worker child of {program}: none running"
            victim = rng.choice(children)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return f"worker child {victim} of {program} killed"
        if kind == "whole worker":
            program = rng.choice(PROGRAMS)
            stack.supervisor.kill_program(program)
            wait_for(stack.supervisor.all_running, 60, "supervisord to start the killed worker again")
            return f"whole {program} worker killed (process group)"
        if kind == "broker":
            down = rng.uniform(0.5, 3.0)
            stack.broker.crash()
            time.sleep(down)
            stack.broker.start()
            return f"broker killed (-9), restarted from its AOF after {down:.1f} s"
        if kind == "result redis":
            stack.cache.crash()
            time.sleep(rng.uniform(0.5, 3.0))
            stack.cache.start()
            return "result Redis killed and restarted"
        down = rng.uniform(3.0, 10.0)
        stack.postgres.stop()
        time.sleep(down)
        stack.postgres.start_again()
        return f"PostgreSQL stopped for {down:.1f} s"


def test_a_long_scan_under_seeded_chaos(chaos, request):
    stack, root = chaos
    seed = request.config.getoption("--chaos-seed")
    library = make_library(root / "music", n_files=N_FILES, seed=seed % 1000)
    engine = engine_of(stack)
    chaos_run = Chaos(stack, seed)
    with Timer() as took:
        previous = newest_scan_id(engine)
        process = start_scan(stack, library.root, 1200)
        scan_id = scan_started_after(engine, previous)
        wait_until_under_way(stack, engine, scan_id, 0.05)
        thread = threading.Thread(target=chaos_run.run, daemon=True)
        thread.start()
        try:
            summary = finish(stack, process, 1300)
            scan_seconds = chaos_run.elapsed()
        finally:
            chaos_run.stop.set()
            thread.join(120)
    report = f"seed {seed}: scan ended {scan_seconds} s into the chaos, faults {chaos_run.events}"
    assert chaos_run.error is None, f"{report}: the chaos thread failed: {chaos_run.error!r}"
    assert set(chaos_run.kinds) == set(KINDS), f"{report}: the scan ended before every kind of fault"
    engine.dispose()
    wait_for(stack.supervisor.all_running, 60, "every worker program RUNNING")

    assert_catalogue_exact(engine, library, summary)
    assert summary["discovered"] == len(library.by_path) + len(library.corrupt), (report, summary)
    assert summary["inserted"] == len(library.by_path), (report, summary)
    assert unit_failures(engine, scan_id) == [], report
    with Session(engine) as session:
        pending = session.execute(select(func.count()).where(ScanUnit.scan_id == scan_id,
                                                             ScanUnit.state == "pending")).scalar()
        artists = session.execute(select(Artist.name_key).group_by(Artist.name_key)
                                  .having(func.count() > 1)).all()
        albums = session.execute(select(Album.album_artist_id, Album.title_key)
                                 .group_by(Album.album_artist_id, Album.title_key).having(func.count() > 1)).all()
    assert pending == 0 and artists == [] and albums == [], report
    kinds = {kind: chaos_run.kinds.count(kind) for kind in KINDS}
    record(f"chaos, seed {seed}", injected=len(chaos_run.events), kinds=kinds, completed=1, lost_tracks=0,
           duplicates=0, unit_failures=0, seconds=round(took.seconds, 1), files=N_FILES,
           first_round_seconds=chaos_run.first_round_seconds, scan_seconds_under_chaos=scan_seconds,
           events=chaos_run.events)
