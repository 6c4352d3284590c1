"""A worker whose main process stops answering stays RUNNING for supervisor: here it is frozen with SIGSTOP, as a
process blocked for good on a socket or a disk would be, mid-scan. The watchdog (worker_app/monitoring/watchdog.py,
the supervisor role's event listener) kills it once it answered no ping for its timeout, supervisor starts it again,
and the scan that waited on it completes with every track once. A broker down for longer than that timeout is no
reason to kill anyone: every worker keeps its process.

The stack has a short visibility timeout (and time limits scaled below it), as the chaos test's: the killed worker's
unacknowledged messages come back within the test."""
from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from tests.audio_factory import make_library
from tests.faults.report import record
from tests.faults.stack import (
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
from tests.supervisor_role import render_watchdog
from worker_app.limits import QUEUES
from worker_app.monitoring.watchdog import probe_interval

pytestmark = pytest.mark.timeout(900)

WATCHDOG_TIMEOUT = 30


@pytest.fixture(scope="module")
def watched(workspace):
    root = workspace / "watched-library"
    root.mkdir()
    with fault_stack(workspace / "watched-services", [root],
                     role_vars={"supervisor_watchdog_timeout": WATCHDOG_TIMEOUT},
                     SONIQUEBAY_TIME_LIMIT_SCALE="0.02", SONIQUEBAY_VISIBILITY_TIMEOUT="45",
                     SONIQUEBAY_STALL_TIMEOUT="60") as stack:
        yield stack, root


def main_pids(stack) -> dict[str, int]:
    return {queue: int(stack.supervisor.ctl("pid", stack.supervisor.process(queue)).strip() or 0) for queue in QUEUES}


def kills_logged(stack) -> list[str]:
    log = stack.supervisor.log("watchdog")
    return re.findall(r"ERROR .*?: (\S+) \(pid \d+\) answered no ping", log.read_text()) if log.exists() else []


def test_the_watchdog_watches_every_worker_program_by_the_name_on_its_command_line(watched):
    stack, _ = watched
    variables = stack.supervisor.role_variables()
    command = next(line for line in render_watchdog(variables).splitlines() if line.startswith("command="))
    config = stack.supervisor.config.read_text()
    names = re.findall(r"^command=.* worker .*?-n (\S+) ", config, flags=re.M)
    assert sorted(names) == sorted(f"{queue}@%%h" for queue in QUEUES), names
    assert command.split(" watchdog ", 1)[1].split()[2:] == names, (command, names)


@pytest.mark.parametrize("queue", ["deferred", "insert"])
def test_a_frozen_worker_is_killed_and_started_again_and_the_scan_completes(watched, queue):
    stack, root = watched
    library = make_library(root / f"frozen-{queue}", n_files=300, seed=71 + QUEUES.index(queue), odd_file_names=False)
    engine = engine_of(stack)
    wait_for(lambda: heard_from_all(stack), 180, "the watchdog to hear from every worker")
    before = main_pids(stack)
    killed_before = kills_logged(stack)
    previous = newest_scan_id(engine)
    process = start_scan(stack, library.root, 600)
    scan_id = scan_started_after(engine, previous)
    wait_until_under_way(stack, engine, scan_id, 0.05)
    frozen = before[queue]
    os.kill(frozen, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        wait_for(lambda: not os.path.exists(f"/proc/{frozen}"), 4 * WATCHDOG_TIMEOUT,
                 f"the watchdog to kill the frozen {queue} worker")
        killed_after = time.monotonic() - frozen_at
    finally:
        try:
            os.kill(frozen, signal.SIGCONT)  # a test that failed leaves no frozen process behind
        except ProcessLookupError:
            pass
    summary = finish(stack, process, 600)

    # Not before its timeout (the worker's last answer may precede the freeze by one probe), and by the watchdog.
    assert killed_after >= WATCHDOG_TIMEOUT - probe_interval(WATCHDOG_TIMEOUT) - 1, killed_after
    assert kills_logged(stack)[len(killed_before):] == [f"{queue}@{socket.gethostname()}"], kills_logged(stack)
    wait_for(stack.supervisor.all_running, 60, "every program RUNNING again")
    after = main_pids(stack)
    assert after[queue] != frozen
    assert {q: pid for q, pid in after.items() if q != queue} == {q: pid for q, pid in before.items() if q != queue}
    assert summary["status"] == "complete", summary
    assert_catalogue_exact(engine, library, summary)
    assert unit_failures(engine, scan_id) == []
    record(f"frozen {queue} worker (SIGSTOP) under the watchdog", injected=1, completed=1, lost_tracks=0,
           duplicates=0, killed_after_seconds=round(killed_after, 1), watchdog_timeout=WATCHDOG_TIMEOUT)


def heard_from_all(stack) -> bool:
    """The watchdog logged an answer of each worker's current process: each one can be judged from now on."""
    log = stack.supervisor.log("watchdog").read_text()
    return all(f"{queue}@{socket.gethostname()} (pid {pid}) answers" in log for queue, pid in main_pids(stack).items())


def test_a_broker_down_longer_than_the_timeout_kills_no_worker(watched):
    stack, _ = watched
    wait_for(stack.supervisor.all_running, 60, "every program RUNNING")
    wait_for(lambda: heard_from_all(stack), 180, "the watchdog to hear from every worker")
    before = main_pids(stack)
    killed_before = kills_logged(stack)
    stack.broker.stop()
    try:
        time.sleep(WATCHDOG_TIMEOUT + 15)
    finally:
        stack.broker.start()
    # The workers reconnect with a backoff; the watchdog gives them its whole timeout from the broker's return.
    time.sleep(WATCHDOG_TIMEOUT + 10)
    assert kills_logged(stack) == killed_before
    assert main_pids(stack) == before
    assert "the broker does not take a ping" in stack.supervisor.log("watchdog").read_text()
