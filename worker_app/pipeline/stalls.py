"""Scans that stopped moving: messages the broker lost.

Redis hands a message to a worker with BRPOP, and kombu records it as unacknowledged only once it has arrived. A
worker lost in between (its host killed, its process OOM-killed) takes the message with it, and no visibility
timeout brings it back: kombu kept no copy. The scan would wait for that unit for ever. The ledger still knows
the unit is pending and keeps its message, so every worker that consumes the deferred queue sends
``cleanup_stalled_scans`` every few minutes, and a scan that made no progress for longer than the visibility
timeout gets its pending messages again (``ledger.resend_stalled``). A message that was only waiting in a long
queue then runs twice, which costs a lookup: units are idempotent.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from worker_app.celery_app import app
from worker_app.limits import DEFERRED_FINALIZE
from worker_app.pipeline.ledger import resend_stalled
from worker_app.pipeline.periodic import PeriodicSend
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


@app.task(name="cleanup_stalled_scans", acks_late=True, autoretry_for=(OperationalError,), max_retries=3,
          retry_backoff=2, ignore_result=True, **DEFERRED_FINALIZE.options)
def cleanup_stalled_scans() -> dict[str, int]:
    """Send again the messages that stalled scans wait for; {scan id: messages sent}."""
    return {str(scan_id): count for scan_id, count in resend_stalled(get_settings().stall_timeout).items()}


class StalledScanWatch(PeriodicSend):
    """The clock of the check."""

    what = "looking for stalled scans"

    def task(self) -> Any:
        return cleanup_stalled_scans

    def interval(self) -> int:
        return get_settings().stall_check_interval


app.steps["worker"].add(StalledScanWatch)
