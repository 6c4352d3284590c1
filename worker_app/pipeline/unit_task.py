"""The base of every task that does one unit of a scan: ``run(scan_id, unit_key, ...)``.

Two guarantees live here rather than in each task:
- a message whose earlier deliveries killed their worker (the ledger counts deliveries; retries are not deaths)
  is not run once more after ``max_deliveries`` deaths: its files are parked as failed and the scan goes on;
- a task that fails for good (an error no retry cures, a time limit, a lost worker with the message acked) still
  closes its unit with failure records, so the scan finishes and says what went wrong.
"""
from __future__ import annotations

import logging

from celery import Task
from celery.signals import task_failure
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker_app.db.session import transaction
from worker_app.pipeline.ledger import (
    Failure, complete_unit, count_delivery, record_failures, resend_unstarted, send_after_commit, unit_is_done,
)
from worker_app.settings import get_settings

log = logging.getLogger(__name__)


class UnitTask(Task):
    abstract = True
    stage = "scan"
    # A database that is restarting or a deadlock between two insert workers is worth waiting for.
    autoretry_for = (OperationalError,)
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 8

    def paths_of(self, args: tuple, kwargs: dict) -> list[str]:
        """The files this unit's message is about, to be recorded as failed if the unit cannot be done."""
        return []

    def begin(self, scan_id: int, key: str) -> bool:
        """Count this delivery; False when the unit must not run (already done, or parked as poison)."""
        deliveries = count_delivery(scan_id, key)
        if deliveries == 0:
            log.warning("scan %s has no unit %s: dropping the message", scan_id, key)
            return False
        max_deliveries = get_settings().max_deliveries
        deaths = self.deaths(deliveries)
        if deaths >= max_deliveries:
            self.close_unit_as_failed(
                scan_id, key, self.paths_of(self.request.args or (), self.request.kwargs or {}),
                f"the worker died {deaths} times while handling this unit; parked after {deaths + 1} deliveries",
            )
            return False
        return not self.already_done(scan_id, key)

    def already_done(self, scan_id: int, key: str) -> bool:
        """True when this unit is done: a duplicate delivery, which then only sends again the children that no
        worker has started (the first delivery may have died before sending them)."""
        with transaction() as session:
            done = unit_is_done(session, scan_id, key)
        if done:
            resend_unstarted(scan_id, key)
        return done

    def record_unit_failure(self, session: Session, scan_id: int, key: str, paths: list[str], reason: str) -> int:
        """Record why this unit's paths were not handled; returns how many files that makes failed."""
        failures = [Failure(path, self.stage, reason) for path in paths] or [Failure(f"[{key}]", self.stage, reason)]
        record_failures(session, scan_id, failures)
        return len(paths)

    def deaths(self, deliveries: int) -> int:
        """How many earlier deliveries of this unit ended without an answer (their worker died). A Celery retry
        (a database deadlock, a restarting database) is a new delivery too, but not a death."""
        return max(deliveries - 1 - (self.request.retries or 0), 0)

    def close_unit_as_failed(self, scan_id: int, key: str, paths: list[str], reason: str) -> None:
        with transaction() as session:
            done = unit_is_done(session, scan_id, key)
            if not done:
                failed = self.record_unit_failure(session, scan_id, key, paths, reason)
                finished = complete_unit(session, scan_id, key, failed=failed)
        if done:
            # It failed after its commit (a time limit while sending its children): send what it could not.
            resend_unstarted(scan_id, key)
        else:
            send_after_commit(scan_id, [], finished)


@task_failure.connect
def close_failed_unit(sender=None, exception=None, args=None, kwargs=None, **_):
    if not isinstance(sender, UnitTask) or not args or len(args) < 2:
        return
    scan_id, key = args[0], args[1]
    reason = f"{type(exception).__name__}: {exception}"
    try:
        sender.close_unit_as_failed(scan_id, key, sender.paths_of(tuple(args), kwargs or {}), reason)
    except DBAPIError:
        # The database is down: the unit stays pending and `soniquebay status` shows it.
        log.exception("could not record the failure of unit %s of scan %s", key, scan_id)
