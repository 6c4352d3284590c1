"""One fault stack for the fault tests that leave it as they found it (tests/faults/stack.py)."""
from __future__ import annotations

import pytest

from tests.faults.stack import fault_stack


@pytest.fixture(scope="session")
def faults(workspace):
    """(stack, library root) shared by the fault tests."""
    root = workspace / "fault-library"
    root.mkdir(exist_ok=True)
    with fault_stack(workspace / "fault-services", [root]) as stack:
        yield stack, root
