"""Test-only, and off unless SONIQUEBAY_TEST_CRASH_MARKER or SONIQUEBAY_TEST_CRASH_PLAN is set: lets the test suite
make a real worker die, as a crash in a C library or the kernel's OOM killer would, to prove that the scan survives
it.
- On a chosen file or folder: a path whose name holds ``MARKER-exit`` kills the worker process; one holding
  ``MARKER-nomem`` runs out of memory.
- On a chosen file, a read that fails as a disk would: a name holding ``MARKER-eio`` or ``MARKER-estale`` fails to
  open with that error, one holding ``MARKER-slow`` takes longer than the per-file time limit to open
  (``install_read_faults``: the extractor's own ``open``, so its error handling is what is tested).
- In a chosen stage: the crash plan is a file of lines ``STAGE COUNT`` (extract, batch, insert, chunk, cleanup,
  enrich, vectorize); a delivery of that stage's task kills its worker process while COUNT is above zero, and
  takes one off it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from worker_app.settings import get_settings


def crash_if_marked(path: str) -> None:
    marker = get_settings().test_crash_marker
    if marker:
        name = os.path.basename(path)
        if f"{marker}-exit" in name:
            os._exit(70)
        if f"{marker}-nomem" in name:
            raise MemoryError(f"test hook: {name}")


def crash_if_planned(stage: str) -> None:
    plan = get_settings().test_crash_plan
    if not plan or not os.path.exists(plan):
        return
    with open(plan, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        counts = dict(line.split() for line in handle.read().splitlines() if line.strip())
        if int(counts.get(stage, 0)) <= 0:
            return
        counts[stage] = str(int(counts[stage]) - 1)
        handle.seek(0)
        handle.truncate()
        handle.write("".join(f"{name} {count}\n" for name, count in counts.items()))
        handle.flush()
        os.fsync(handle.fileno())
    os._exit(70)


def install_read_faults() -> None:
    """Make the extractor's file opening fail as a failing disk would, for marked names (see above)."""
    marker = get_settings().test_crash_marker
    from worker_app.metadata import reader

    if not marker or getattr(reader, "open", None) is not None:
        return
    real_open = open

    def faulty_open(path, *args, **kwargs):
        name = os.path.basename(os.fsdecode(path))
        for tag, code in (("eio", errno.EIO), ("estale", errno.ESTALE)):
            if f"{marker}-{tag}" in name:
                raise OSError(code, os.strerror(code), path)
        if f"{marker}-slow" in name:
            time.sleep(3600)  # the per-file time limit interrupts it
        return real_open(path, *args, **kwargs)

    reader.open = faulty_open  # type: ignore[attr-defined]
