"""The rules every task of the pipeline obeys, in Celery's ``Task.__call__`` hook rather than in each task.

``PipelineTask`` (every task of a scan, units or not): a *passing* error (the database unreachable or refusing a
whole statement, the broker unreachable) is never the end of the work. The task is retried with a capped
backoff, for as long as it takes, and nothing is recorded as failed or deleted meanwhile.

``UnitTask`` (a task that does one unit of a scan: ``run(scan_id, unit_key, ...)``), in addition:
- each delivery is counted at the unit's stage, committed before the work starts (``ledger.begin_delivery``);
- a message whose earlier deliveries at this stage killed their worker (the same message came back; a retry after a
  passing error is a new message, not a death) is not run once more after ``max_deliveries`` deaths: its files are
  parked as failed, and the scan goes on;
- a unit of a cancelled scan is not run (its scan's status is checked when the delivery is counted);
- a unit that feeds a queue waits while that queue is full (``backpressure``: a retry, never a death);
- a unit already done, or already at a later stage, is not done again (a duplicate delivery); a done unit's
  children that were never sent are sent then;
- a task that fails for good (an error no retry cures, a time limit) still closes its unit with failure records,
  so the scan finishes and says what went wrong;
- a task checks every file or folder name its message gives it against the library roots before it touches it
  (``refuse_outside_roots``, at the start of each task that takes names): any client of the broker can send a
  message, so a forged name is refused with a log line and a failure record, and the unit goes on without it.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Task
from celery.exceptions import Reject, Retry
from celery.signals import task_failure
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker_app.db.session import transaction
from worker_app.paths import PathRefused, check_task_path, printable_name
from worker_app.pipeline.backpressure import wait_for_room
from worker_app.pipeline.crash_hook import crash_if_planned
from worker_app.pipeline.ledger import (
    CANCELLED,
    PASSING,
    Failure,
    begin_delivery,
    complete_unit,
    note_passing_error,
    record_failures,
    resend_unsent,
    send_after_commit,
    unit_is_done,
)
from worker_app.pipeline.staging import release
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# SQLSTATE classes a single row can cause: data exceptions (a value out of range, bad encoding) and integrity
# constraint violations. Every other error of a statement (a missing privilege or column, a read-only or full
# database, a lost connection) would hit every row alike: it is passing, for the unit, and never a row's fault.
ROW_SQLSTATE_CLASSES = ("22", "23")
# Program limits a single value can exceed (a tsvector or an index row too large).
ROW_SQLSTATES = ("54000",)


def is_row_error(error: BaseException) -> bool:
    """True for a database error that one row of a statement caused, and only that row would cause again."""
    if not isinstance(error, DBAPIError) or isinstance(error, (OperationalError, InterfaceError)):
        return False
    code = getattr(error.orig, "pgcode", None) or ""
    return code[:2] in ROW_SQLSTATE_CLASSES or code in ROW_SQLSTATES


def is_passing_error(error: BaseException) -> bool:
    """An error that says nothing about the work, only about the services it needs: retry, record nothing."""
    if isinstance(error, DBAPIError):
        return not is_row_error(error)
    return isinstance(error, (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
                              redis.exceptions.TimeoutError, ConnectionError, TimeoutError))


class PipelineTask(Task):  # type: ignore[misc]  # celery ships no types: Task is Any
    abstract = True
    # Seconds before the first retry after a passing error, doubled each time up to the cap (times the
    # SONIQUEBAY_TIME_LIMIT_SCALE setting), with jitter so that a fleet does not come back in step.
    retry_first_delay = 2.0
    retry_delay_cap = 60.0
    # Retried for as long as the passing error lasts (None: no limit; Celery's default would give up after 3).
    max_retries = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run_delivery(*args, **kwargs)
        except Retry:
            raise
        except Exception as error:
            if not is_passing_error(error):
                raise
            self.on_passing_error(args, error)
            scale = max(get_settings().time_limit_scale, 0.02)
            cap = self.retry_delay_cap * scale
            delay = min(cap, self.retry_first_delay * scale * 2 ** min(self.request.retries or 0, 10))
            log.warning("%s %s: %s; retrying in %.0f s", self.name, _unit_of(args), _describe(error), delay)
            try:
                raise self.retry(exc=error, countdown=delay * random.uniform(0.5, 1.0)) from None
            except Reject as rejected:
                # The retry could not be sent (the broker is unreachable too): hand the message back instead. If
                # even that fails, it stays unacknowledged in the broker, which gives it out again (the relay puts
                # it back at once after a broker restart).
                raise Reject(rejected.reason, requeue=True) from None

    def run_delivery(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def on_passing_error(self, args: tuple[Any, ...], error: BaseException) -> None:
        """Called before a retry after a passing error."""


def split_by_roots(paths: list[Any], stage: str, who: str) -> tuple[list[Any], list[Failure]]:
    """Split the names a task was given into those under the library roots (``paths.check_task_path``) and a
    failure record for each other one, which ``who`` logs: the task works on the first and records the second."""
    roots = get_settings().library_roots
    kept: list[Any] = []
    refused: list[Failure] = []
    resolved_folders: dict[str, str] = {}  # for this message only: a folder moved later is resolved again
    for path in paths:
        try:
            check_task_path(path, roots, resolved_folders)
        except PathRefused as refusal:
            log.warning("%s refused a name its message gave: %s", who, refusal)
            # Passing: nothing is remembered of a name that is no file of the library.
            refused.append(Failure(printable_name(path), stage, f"refused: {refusal}", kind=PASSING))
        else:
            kept.append(path)
    return kept, refused


class UnitTask(PipelineTask):
    abstract = True
    stage = "scan"  # the stage failure records name
    # The unit's stage number in its chain (extract 1 -> batch 2 -> insert 3; a unit of one task is at 1), and the
    # name of that step (scan_units.kind of its first step: chunk, extract, batch, insert, cleanup...).
    unit_stage = 1
    unit_kind = "chunk"
    unit_deaths = 0
    unit_poison: tuple[str, ...] = ()  # the paths that killed a worker handling this unit (ledger/delivery.py)
    # The queues this unit's task feeds, whose backlog holds it back (pipeline/backpressure.py); () for none.
    feeds: tuple[str, ...] = ()

    def paths_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """The files this unit's message is about, to be recorded as failed if the unit cannot be done."""
        return []

    def run_delivery(self, scan_id: int | None, key: str | None, *args: Any, **kwargs: Any) -> Any:
        if scan_id is None or key is None:  # work sent outside any scan (a command's): no unit to count
            return self.run(scan_id, key, *args, **kwargs)
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        delivery = begin_delivery(scan_id, key, self.unit_stage, self.request.retries or 0, redelivered)
        if delivery.action == "missing":
            log.warning("scan %s has no unit %s: dropping the message", scan_id, key)
            return {"skipped": key, "why": "no such unit"}
        if delivery.action == "done":
            resend_unsent(scan_id, key)  # the first delivery may have died before sending its children
            return {"skipped": key, "why": "done"}
        if delivery.action == CANCELLED:  # its scan was cancelled: the unit stops at this boundary
            return {"skipped": key, "why": "scan cancelled"}
        if delivery.action == "passed":
            return {"skipped": key, "why": "a later stage has it"}
        # Read by the task: after a death it works carefully (one file or folder at a time, each committed first).
        self.unit_deaths = deaths = delivery.deaths
        self.unit_poison = delivery.poison
        max_deliveries = get_settings().max_deliveries
        if deaths >= max_deliveries:
            self.close_unit_as_failed(
                scan_id, key, self.paths_of((scan_id, key, *args), kwargs),
                f"the worker died {deaths} times while handling this unit; parked after {deaths + 1} deliveries",
            )
            return {"skipped": key, "why": "parked"}
        if self.feeds:
            # After the delivery is counted: a worker lost while its task waits here held the unit, and its
            # message coming back is a death like any other. A retry for room is a new message, never one.
            wait_for_room(self, self.feeds)
        crash_if_planned(self.unit_kind)
        result = self.run(scan_id, key, *args, **kwargs)
        crash_if_planned(f"{self.unit_kind}-after")
        return result

    def refuse_outside_roots(self, paths: list[Any]) -> tuple[list[Any], list[Failure]]:
        """``split_by_roots`` for the names this task's message gave."""
        return split_by_roots(paths, self.stage, f"{self.name} {_unit_of(self.request.args or ())}")

    def on_passing_error(self, args: tuple[Any, ...], error: BaseException) -> None:
        if len(args) >= 2:
            try:
                note_passing_error(args[0], args[1], _describe(error))
            except Exception:  # noqa: BLE001 - the database may be the passing error itself
                pass

    def record_unit_failure(self, session: Session, scan_id: int, key: str, paths: list[str], reason: str) -> int:
        """Record why this unit's paths were not handled (passing: the next scan reads them again); returns how
        many files that makes failed."""
        failures = ([Failure(path, self.stage, reason, kind=PASSING) for path in paths]
                    or [Failure(f"[{key}]", self.stage, reason, kind=PASSING)])
        record_failures(session, scan_id, failures)
        return len(paths)

    def close_unit_as_failed(self, scan_id: int, key: str, paths: list[str], reason: str) -> None:
        with transaction() as session:
            done = unit_is_done(session, scan_id, key)
            if not done:
                failed = self.record_unit_failure(session, scan_id, key, paths, reason)
                release(session, scan_id, key)  # its staged records, if any: nothing will insert them now
                finished = complete_unit(session, scan_id, key, failed=failed)
        if done:
            # It failed after its commit (a time limit while sending its children): send what it could not.
            resend_unsent(scan_id, key)
        else:
            send_after_commit(scan_id, [], finished)


def _unit_of(args: tuple[Any, ...]) -> str:
    return f"(scan {args[0]}, unit {args[1]})" if len(args) >= 2 and isinstance(args[1], str) else ""


def _describe(error: BaseException) -> str:
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {detail[0] if detail else ''}"


def close_failed_unit(sender: object, exception: BaseException, args: tuple[Any, ...] | list[Any] | None = None,
                      kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if not isinstance(sender, UnitTask) or not args or len(args) < 2:
        return
    if isinstance(exception, (Reject, Retry)) or is_passing_error(exception):
        return  # handed back or retried: not a failure of the unit
    scan_id, key = args[0], args[1]
    reason = f"{type(exception).__name__}: {exception}"
    try:
        sender.close_unit_as_failed(scan_id, key, sender.paths_of(tuple(args), kwargs or {}), reason)
    except DBAPIError:
        # The database is down: the unit stays pending and `soniquebay status` shows it.
        log.exception("could not record the failure of unit %s of scan %s", key, scan_id)


task_failure.connect(close_failed_unit)  # celery's signals are untyped: connected by a call, not a decorator
