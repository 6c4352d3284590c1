"""The remote control commands a worker obeys: those that only read, and the ones the host is told to allow.

Celery's control commands travel on the broker's pidbox channel, where Redis's ACLs cannot tell ``inspect
active_queues`` (which the exporter, Flower and ``soniquebay status`` need, so the monitor user may publish there)
from ``shutdown``, ``cancel_consumer``, ``revoke`` or ``pool_restart``. So the worker itself refuses every command
that changes anything: whoever reaches the broker, the monitor host included, can ask a worker what it does but
cannot steer it. Workers are started, stopped and scaled by supervisor, their queues are given by the roles.
``SONIQUEBAY_CONTROL_COMMANDS`` names more commands a host's workers obey (``rate_limit`` for a while, say).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# Celery's inspect commands (and their dump_* aliases) and the two that only make a worker talk: enable_events
# (Flower sends it; the workers send events anyway) and heartbeat.
READ_ONLY = frozenset({
    "active", "dump_active", "active_queues", "clock", "hello", "ping", "query_task", "registered", "dump_tasks",
    "report", "reserved", "dump_reserved", "revoked", "dump_revoked", "scheduled", "dump_schedule", "stats",
    "enable_events", "heartbeat",
})


def _refusal(name: str) -> Callable[..., dict[str, str]]:
    def refused(state: Any, **arguments: Any) -> dict[str, str]:
        log.warning("refused the remote control command %s %s: this worker obeys only the commands that read "
                    "(and SONIQUEBAY_CONTROL_COMMANDS)", name, sorted(arguments))
        return {"error": f"refused: {name} changes the worker; use supervisorctl on its host"}

    return refused


def refuse_commands_that_change_anything(allowed_too: Iterable[str] = ()) -> list[str]:
    """Replace the handler of every control command that is neither read-only nor in ``allowed_too`` by a
    refusal; returns the refused names. Before the worker's pidbox starts: it keeps a reference to this table."""
    from celery.worker.control import Panel

    allowed = READ_ONLY | set(allowed_too)
    refused = sorted(name for name in Panel.data if name not in allowed)
    for name in refused:
        Panel.data[name] = _refusal(name)
    return refused
