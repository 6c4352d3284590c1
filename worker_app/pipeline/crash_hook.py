"""Test-only, and off unless SONIQUEBAY_TEST_CRASH_MARKER or SONIQUEBAY_TEST_CRASH_PLAN is set: lets the test suite
make a real worker die, or a real read fail, as a crash in a C library, the kernel's OOM killer or a failing disk
would, to prove that the scan survives it.

- On a chosen file or folder: a path whose name holds ``MARKER-exit`` kills the worker process; one holding
  ``MARKER-nomem`` runs out of memory.
- The crash plan (the file SONIQUEBAY_TEST_CRASH_PLAN names) holds lines:
  ``STAGE COUNT``: a delivery of that stage's task (chunk, extract, batch, insert, cleanup, enrich) kills
  its worker process before its work while COUNT is above zero, and takes one off it; ``STAGE-after COUNT`` the
  same, after its work committed and its messages went (before the broker hears it is done);
  ``hold PATH``: the extractor waits before reading PATH for as long as the line is there (at most a minute), so
  that a test can keep a scan open;
  ``read FAULT PATH``: opening PATH to read its tags or its audio fails with EIO or ESTALE, takes longer than the
  per-file time limit (slow), or kills the worker (exit), for as long as the line is there. The extractor's and the
  analysis's own ``open`` is replaced (``install_read_faults``), so their own error handling is what the tests see.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from types import ModuleType
from typing import Any

from worker_app.settings import get_settings


def crash_if_marked(path: str) -> None:
    marker = get_settings().test_crash_marker
    if marker:
        name = os.path.basename(path)
        if f"{marker}-exit" in name:
            os._exit(70)
        if f"{marker}-nomem" in name:
            raise MemoryError(f"test hook: {name}")


def _plan_lines() -> list[str]:
    """The crash plan's lines, read under a shared lock (crash_if_planned rewrites it under an exclusive one)."""
    plan = get_settings().test_crash_plan
    if not plan or not os.path.exists(plan):
        return []
    with open(plan) as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        return [line for line in handle.read().splitlines() if line.strip()]


def crash_if_planned(step: str) -> None:
    """Kill this worker process if the plan says so for ``step`` (a stage, or a stage followed by -after)."""
    plan = get_settings().test_crash_plan
    if not plan or not os.path.exists(plan):
        return
    with open(plan, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        lines = [line.split(" ", 2) for line in handle.read().splitlines() if line.strip()]
        for fields in lines:
            if len(fields) == 2 and fields[0] == step and int(fields[1]) > 0:
                fields[1] = str(int(fields[1]) - 1)
                break
        else:
            return
        handle.seek(0)
        handle.truncate()
        handle.write("".join(" ".join(fields) + "\n" for fields in lines))
        handle.flush()
        os.fsync(handle.fileno())
    os._exit(70)


def install_read_faults(module: ModuleType) -> None:
    """Make the file opening of ``module`` (the tag reader's, the analysis's) fail as planned (see above)."""
    if not get_settings().test_crash_plan or getattr(module, "open", None) is not None:
        return
    real_open = open

    def planned_open(path: str | bytes | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        wanted = os.fsdecode(path)
        for fields in (line.split(" ", 2) for line in _plan_lines()):
            if len(fields) == 3 and fields[0] == "read" and fields[2] == wanted:
                fault = fields[1]
                if fault in ("eio", "estale"):
                    code = errno.EIO if fault == "eio" else errno.ESTALE
                    raise OSError(code, os.strerror(code), wanted)
                if fault == "slow":
                    time.sleep(3600)  # the per-file time limit interrupts it
                if fault == "exit":
                    os._exit(70)
        return real_open(path, *args, **kwargs)

    # A module global named open shadows the builtin inside the module.
    module.open = planned_open  # type: ignore[attr-defined]


def hold_if_planned(path: str) -> None:
    """Wait before reading ``path`` while the plan holds it (see above)."""
    if not get_settings().test_crash_plan:
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            len(fields) == 2 and fields[0] == "hold" and fields[1] == path
            for fields in (line.split(" ", 1) for line in _plan_lines())):
        time.sleep(0.2)
