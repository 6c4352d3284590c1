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
import subprocess
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


def heard_from_all(stack) -> bool:
    """The watchdog logged an answer of each worker's current process: each one can be judged from now on."""
    path = stack.supervisor.log("watchdog")
    log = path.read_text() if path.exists() else ""
    return all(f"{queue}@{socket.gethostname()} (pid {pid}) answers" in log for queue, pid in main_pids(stack).items())


def test_the_watchdog_watches_every_worker_program_by_the_name_on_its_command_line(watched):
    stack, _ = watched
    variables = stack.supervisor.role_variables()
    command = next(line for line in render_watchdog(variables).splitlines() if line.startswith("command="))
    config = stack.supervisor.config.read_text()
    names = re.findall(r"^command=.* worker .*?-n (\S+) ", config, flags=re.M)
    assert sorted(names) == sorted(f"{queue}@%%h" for queue in QUEUES), names
    assert command.split(" watchdog ", 1)[1].split()[2:] == names, (command, names)


# The deferred worker holds the clocks (relay, stall check) and the end of the scan; an insert worker holds a stage
# no other worker consumes: without the watchdog either one frozen stops the scan for good. Both at once, in one scan.
FROZEN = ("deferred", "insert")


def test_frozen_workers_are_killed_and_started_again_and_the_scan_completes(watched):
    stack, root = watched
    library = make_library(root / "frozen", n_files=300, seed=71, odd_file_names=False)
    engine = engine_of(stack)
    wait_for(lambda: heard_from_all(stack), 180, "the watchdog to hear from every worker")
    before = main_pids(stack)
    killed_before = kills_logged(stack)
    previous = newest_scan_id(engine)
    process = start_scan(stack, library.root, 600)
    scan_id = scan_started_after(engine, previous)
    wait_until_under_way(stack, engine, scan_id, 0.05)
    frozen = {queue: before[queue] for queue in FROZEN}
    for pid in frozen.values():
        os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in frozen.values()), 4 * WATCHDOG_TIMEOUT,
                 "the watchdog to kill the frozen workers")
        killed_after = time.monotonic() - frozen_at
    finally:
        for pid in frozen.values():
            try:
                os.kill(pid, signal.SIGCONT)  # a test that failed leaves no frozen process behind
            except ProcessLookupError:
                pass
    summary = finish(stack, process, 600)

    # Not before its timeout (a worker's last answer may precede the freeze by one probe), and by the watchdog.
    assert killed_after >= WATCHDOG_TIMEOUT - probe_interval(WATCHDOG_TIMEOUT) - 1, killed_after
    killed = kills_logged(stack)[len(killed_before):]
    assert sorted(killed) == sorted(f"{queue}@{socket.gethostname()}" for queue in FROZEN), killed
    assert "could not send the" not in stack.supervisor.log("watchdog").read_text()  # the kills' events went out
    wait_for(stack.supervisor.all_running, 60, "every program RUNNING again")
    after = main_pids(stack)
    assert all(after[queue] != pid for queue, pid in frozen.items()), (before, after)
    assert {q: pid for q, pid in after.items() if q not in FROZEN} == {q: pid for q, pid in before.items()
                                                                      if q not in FROZEN}
    assert summary["status"] == "complete", summary
    assert_catalogue_exact(engine, library, summary)
    assert unit_failures(engine, scan_id) == []
    record("frozen deferred and insert workers (SIGSTOP) under the watchdog", injected=len(FROZEN), completed=1,
           lost_tracks=0, duplicates=0, killed_after_seconds=round(killed_after, 1), watchdog_timeout=WATCHDOG_TIMEOUT)


def test_a_worker_supervisor_is_stopping_is_left_to_its_warm_shutdown(watched):
    """A warm shutdown stops answering pings while the running tasks finish: a worker that supervisor is stopping
    (PROCESS_STATE_STOPPING) is not judged, however long it takes (supervisor's stopwaitsecs bounds it)."""
    stack, _ = watched
    wait_for(stack.supervisor.all_running, 60, "every program RUNNING")
    wait_for(lambda: heard_from_all(stack), 180, "the watchdog to hear from every worker")
    killed_before = kills_logged(stack)
    worker = main_pids(stack)["deferred"]
    # Frozen, its TERM waits: it stays in its "warm shutdown" for as long as the test wants.
    os.kill(worker, signal.SIGSTOP)
    stopping = subprocess.Popen(["supervisorctl", "-c", str(stack.supervisor.config), "stop",
                                 stack.supervisor.group("deferred")], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(WATCHDOG_TIMEOUT + 15)
        assert os.path.exists(f"/proc/{worker}"), "the watchdog killed a worker that supervisor was stopping"
        assert kills_logged(stack) == killed_before
    finally:
        os.kill(worker, signal.SIGCONT)
    assert stopping.wait(120) == 0, stopping.stdout.read() if stopping.stdout else ""
    stack.supervisor.ctl("start", stack.supervisor.group("deferred"))
    wait_for(stack.supervisor.all_running, 60, "the deferred worker RUNNING again")


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
