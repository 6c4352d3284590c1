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

from celery import bootsteps
from sqlalchemy.exc import OperationalError

from worker_app.celery_app import app
from worker_app.limits import DEFERRED_FINALIZE
from worker_app.pipeline.ledger import resend_stalled
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


@app.task(name="cleanup_stalled_scans", acks_late=True, autoretry_for=(OperationalError,), max_retries=3,
          retry_backoff=2, ignore_result=True, **DEFERRED_FINALIZE.options)
def cleanup_stalled_scans() -> dict[str, int]:
    """Send again the messages that stalled scans wait for; {scan id: messages sent}."""
    return {str(scan_id): count for scan_id, count in resend_stalled(get_settings().stall_timeout).items()}


class StalledScanWatch(bootsteps.StartStopStep):
    """The clock of the check, in each worker that consumes the deferred queue (any one of them may be lost)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_entry = None

    def start(self, worker):
        if "deferred" not in worker.app.amqp.queues.consume_from:
            return
        interval = get_settings().stall_check_interval
        self.timer_entry = worker.timer.call_repeatedly(interval, self.send_check, priority=10)
        log.info("looking for stalled scans every %d s", interval)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    @staticmethod
    def send_check():
        try:
            cleanup_stalled_scans.apply_async()
        except Exception:  # noqa: BLE001 - a broker that is down now is tried again at the next tick
            log.exception("could not send cleanup_stalled_scans")


app.steps["worker"].add(StalledScanWatch)
