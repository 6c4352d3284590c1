"""Kill an extract host's container while one of its pool processes runs a task it has only just started.

Run on the Molecule host: `kill-mid-task.py SCAN_HOST VICTIM`. A watcher on the scan host asks the victim's
extract worker for its active tasks (one Python process, polls ~0.05 s apart) and prints a line as soon as one
started less than FRESH seconds ago; this process kills the victim's container the moment it reads that line.
Watching and killing from two Ansible tasks left a second or more between them, long enough for a task of 50
small files to finish, and a finished task is never delivered again. A task that ran when the host died is
counted in the ledger, so the scan's redeliveries show it come back; prefetched ones come back unnoticed.
"""

import subprocess
import sys

WATCH = """
import sys, time
from worker_app.celery_app import app
node, fresh = sys.argv[1], float(sys.argv[2])
inspect = app.control.inspect(destination=[node], timeout=1.0, limit=1)
started = time.monotonic()
while time.monotonic() - started < 180:
    tasks = (inspect.active() or {}).get(node) or []
    ages = [time.time() - task["time_start"] for task in tasks if task.get("time_start")]
    # After a minute without a fresh start (long tasks), any running task will do.
    if ages and (min(ages) < fresh or time.monotonic() - started > 60):
        print(f"running: {node} holds {len(tasks)} tasks, the newest started {min(ages):.2f} s ago", flush=True)
        sys.exit(0)
    time.sleep(0.05)
print(f"{node} ran no task for 180 s", flush=True)
sys.exit(1)
"""

FRESH = 0.3


def main() -> int:
    scan_host, victim = sys.argv[1:3]
    watcher = subprocess.Popen(
        ["podman", "exec", scan_host, "runuser", "-u", "soniquebay", "--",
         "/opt/soniquebay/venv/bin/python", "-c", WATCH, f"extract@{victim}", str(FRESH)],
        stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    line = watcher.stdout.readline().strip()
    if line.startswith("running"):
        subprocess.run(["podman", "kill", victim], check=True, stdout=subprocess.DEVNULL)
    watcher.wait()
    print(line)
    return 0 if line.startswith("running") else 1


if __name__ == "__main__":
    sys.exit(main())
