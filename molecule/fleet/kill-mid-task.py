"""Kill an extract host's container while one of its pool processes runs a task it has only just started.

Run on the Molecule host: `kill-mid-task.py SCAN_HOST VICTIM`. A watcher on the scan host asks the victim's
extract worker for its active tasks (one Python process, polls ~0.05 s apart) and prints a line as soon as one
started 0.03 to 0.15 s ago (FRESH): late enough that the task's delivery is committed in the ledger, early enough
that it is still running. This process then sends SIGKILL to the container's init from the host: the kernel kills
every process of the container's PID namespace with it, within a millisecond (`podman kill` takes a few tenths of a
second to start, and a task of 50 small files can end in that time; a finished task is never delivered again).
The messages the host ran or held come back from the broker marked redelivered, and the ledger counts each in its
unit's redeliveries, which the scenario's verify reads.
"""

import os
import signal
import subprocess
import sys

WATCH = """
import sys, time
from worker_app.celery_app import app
node, fresh_from, fresh_to = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
inspect = app.control.inspect(destination=[node], timeout=1.0, limit=1)
started = time.monotonic()
while time.monotonic() - started < 180:
    tasks = (inspect.active() or {}).get(node) or []
    ages = [time.time() - task["time_start"] for task in tasks if task.get("time_start")]
    fresh = [age for age in ages if fresh_from <= age < fresh_to]
    # After a minute without a fresh start (long tasks), any running task will do.
    if fresh or (ages and time.monotonic() - started > 60):
        print(f"running: {node} holds {len(tasks)} tasks, one started {(fresh or ages)[0]:.3f} s ago", flush=True)
        sys.exit(0)
    time.sleep(0.05)
print(f"{node} ran no task for 180 s", flush=True)
sys.exit(1)
"""

FRESH = (0.03, 0.15)


def main() -> int:
    scan_host, victim = sys.argv[1:3]
    init = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", victim],
                              capture_output=True, text=True, check=True).stdout)
    watcher = subprocess.Popen(
        ["podman", "exec", scan_host, "runuser", "-u", "soniquebay", "--",
         "/opt/soniquebay/venv/bin/python", "-c", WATCH, f"extract@{victim}", *map(str, FRESH)],
        stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    line = watcher.stdout.readline().strip()
    if line.startswith("running"):
        os.kill(init, signal.SIGKILL)
        # podman's own record of it (the container is already gone; this only waits for podman to see it).
        subprocess.run(["podman", "kill", victim], check=False, capture_output=True)
    watcher.wait()
    print(line)
    return 0 if line.startswith("running") else 1


if __name__ == "__main__":
    sys.exit(main())
