"""Test-only, and off unless SONIQUEBAY_TEST_CRASH_MARKER is set: lets the test suite make a real worker die on a
chosen file or folder, as a crash in a C library or the kernel's OOM killer would, to prove that the scan survives
it. A path whose name holds ``MARKER-exit`` kills the worker process; one holding ``MARKER-nomem`` runs out of
memory."""
from __future__ import annotations

import os

from worker_app.settings import get_settings


def crash_if_marked(path: str) -> None:
    marker = get_settings().test_crash_marker
    if marker:
        name = os.path.basename(path)
        if f"{marker}-exit" in name:
            os._exit(70)
        if f"{marker}-nomem" in name:
            raise MemoryError(f"test hook: {name}")
