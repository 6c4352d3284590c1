"""Celery's control commands reach every worker through the broker, where the monitor user may publish (the exporter,
Flower and `soniquebay status` ask the workers which queues they consume): the workers answer the commands that
read and refuse the ones that would stop, reconfigure or starve them, whoever sends them."""
from __future__ import annotations

import pytest

from worker_app.celery_app import app
from worker_app.limits import QUEUES

pytestmark = pytest.mark.timeout(300)

# What a forger on the monitor host would send: each would stop a worker, change what it consumes or how fast, or
# drop work.
STEERING = {
    "shutdown": {},
    "pool_restart": {"reload": True},
    "cancel_consumer": {"queue": "insert"},
    "add_consumer": {"queue": "forged-queue"},
    "rate_limit": {"task_name": "extract_metadata_batch", "rate_limit": "1/h"},
    "time_limit": {"task_name": "insert_batch_direct", "soft": 1, "hard": 2},
    "revoke": {"task_id": ["00000000-0000-0000-0000-000000000000"], "terminate": True},
    "disable_events": {},
    "conf": {},
}


def consumed_queues() -> dict[str, set[str]]:
    """Each worker's queues: every answer within the timeout (no limit: the only way to see a worker nobody
    expected)."""
    replies = app.control.inspect(timeout=5).active_queues() or {}
    return {node: {queue["name"] for queue in queues} for node, queues in replies.items()}


def main_pids(stack) -> dict[str, int]:
    return {name: int(stack.supervisor.ctl("pid", stack.supervisor.process(name)).strip()) for name in QUEUES}


def test_workers_answer_what_reads_and_refuse_what_steers(stack):
    before, pids = consumed_queues(), main_pids(stack)
    assert {queue for queues in before.values() for queue in queues} >= set(QUEUES), before
    for command, arguments in STEERING.items():
        # Returns once every worker answered (limit), else at the timeout, with the answers it got.
        replies = app.control.broadcast(command, arguments=arguments, reply=True, timeout=5, limit=len(before))
        answered = {node: answer for reply in replies for node, answer in reply.items()}
        assert set(answered) == set(before), (command, answered)
        assert all(str(answer.get("error", "")).startswith(f"refused: {command}") for answer in answered.values()), \
            (command, answered)

    assert main_pids(stack) == pids  # none shut down or restarted
    assert consumed_queues() == before  # none stopped consuming insert nor started on another queue
    assert len(app.control.inspect(timeout=5, limit=len(before)).ping() or {}) == len(before)  # reading still works
    stats = app.control.inspect(timeout=5, limit=len(before)).stats() or {}
    assert stats and all("password" not in str(node.get("broker")) for node in stats.values())
    log = stack.supervisor.log("insert").read_text(errors="replace")
    assert "refused the remote control command cancel_consumer" in log
    assert "refused the remote control command shutdown" in log
