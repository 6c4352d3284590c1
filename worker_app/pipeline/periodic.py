"""A task sent on a clock by each worker that consumes the deferred queue (any one of them may be lost): the
relay and the stalled-scan check. The clock only sends a message; the work runs in a pool process like any task."""
from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


class PeriodicSend(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types: its base is Any
    """Subclasses name the task and its period (0: no clock); ``expires_periods`` drops a message that waited that
    many periods (a newer one is on its way), None keeps it."""

    requires = {"celery.worker.components:Timer"}
    what = ""
    expires_periods: int | None = None

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entry: Any = None  # kombu's timer entry

    def task(self) -> Any:
        raise NotImplementedError

    def interval(self) -> int:
        raise NotImplementedError

    def start(self, worker: Any) -> None:
        if "deferred" not in worker.app.amqp.queues.consume_from:
            return
        interval = self.interval()
        if interval <= 0:  # this clock is turned off
            return
        self.timer_entry = worker.timer.call_repeatedly(interval, self.send, args=(interval,), priority=10)
        log.info("%s every %d s", self.what, interval)

    def stop(self, worker: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def send(self, interval: int) -> None:
        task = self.task()
        expires = self.expires_periods * interval if self.expires_periods else None
        try:
            task.apply_async(expires=expires, ignore_result=True)
        except Exception:  # noqa: BLE001 - a broker that is down now is tried again at the next tick
            log.warning("could not send %s (broker unreachable?)", task.name)
