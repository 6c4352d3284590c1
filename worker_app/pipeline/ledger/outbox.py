"""The outbox: units and their messages.

A task registers the units it creates in the same transaction in which it marks its own unit done, and sends
their messages only after that commit, recording when each was sent. A message never sent (its sender died, the
broker refused it) stays with its unit, for the relay and for a duplicate delivery of the task that registered it.
Every message goes out through ``publish`` (which refuses one whose arguments exceed MAX_ARGS_BYTES): no task
result is ever stored, so the pipeline never waits on the result Redis.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from worker_app.celery_app import app
from worker_app.db.models import Scan, ScanUnit
from worker_app.db.session import transaction
from worker_app.db.statuses import ScanStatus

log = logging.getLogger(__name__)


# Every message of the pipeline stays under 64 KB in the broker: its arguments carry references (unit keys, file
# names, ids), never catalogue data (pipeline/staging.py). This bounds their JSON; gzip, base64 and Celery's
# headers (about 2 KB, its argsrepr capped at 1 KB) keep the broker's copy under 64 KB.
MAX_ARGS_BYTES = 48 * 1024


class MessageTooLarge(ValueError):
    """A task message whose arguments exceed MAX_ARGS_BYTES: a sender that should have split its work."""


def check_args_size(task: str, args: list[Any]) -> int:
    """The size of a message's arguments as JSON; MessageTooLarge above MAX_ARGS_BYTES."""
    size = len(json.dumps(args))
    if size > MAX_ARGS_BYTES:
        raise MessageTooLarge(f"{task}: {size} bytes of arguments, more than {MAX_ARGS_BYTES}")
    return size


def publish(task: str, args: list[Any]) -> None:
    """Send one task message; refuse one whose arguments exceed MAX_ARGS_BYTES. Results are never stored (the
    pipeline does not wait on them), so sending needs only the broker: a lost or black-holed result Redis costs
    nothing."""
    check_args_size(task, args)
    app.send_task(task, args=args, ignore_result=True)


@dataclass(frozen=True)
class Unit:
    """A piece of a scan's work: its ledger key and kind, and the task message that does it."""

    key: str
    kind: str
    task: str
    args: list[Any]

    def send(self) -> None:
        publish(self.task, self.args)


def _stored_message(task: str, args: list[Any]) -> str:
    """A task message as the ledger keeps it (scan_units.message), to be sent again by ``send_stored``."""
    return json.dumps({"task": task, "args": args})


def send_stored(message: str) -> None:
    stored = json.loads(message)
    publish(stored["task"], stored["args"])


def mark_sent(session: Session, scan_id: int, keys: list[str]) -> None:
    if keys:
        session.execute(update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key.in_(keys))
                        .values(sent_at=func.now()))


def register_units(session: Session, scan_id: int, parent: str, units: list[Unit]) -> None:
    """Record units as pending, with their messages; a unit already known keeps its state. ``parent`` is the key of
    the unit whose task creates them ('' for the scan's first unit)."""
    if units:
        rows = [{"scan_id": scan_id, "key": unit.key, "kind": unit.kind, "parent": parent,
                 "message": _stored_message(unit.task, unit.args)} for unit in units]
        session.execute(insert(ScanUnit).values(rows).on_conflict_do_nothing())


def send_after_commit(scan_id: int, units: list[Unit], finished: bool) -> None:
    """Send the messages of units just committed and record that they went; then, when that commit closed the
    scan's last unit, send its end. A send that fails leaves its unit unsent, for the relay."""
    for unit in units:
        unit.send()
    if units:
        with transaction() as session:
            mark_sent(session, scan_id, [unit.key for unit in units])
    if finished:
        publish("cleanup_finish_scan", [scan_id])


def send_unsent(session: Session, *conditions: ColumnElement[bool], limit: int | None = None) -> dict[int, list[str]]:
    """Send the pending units matching ``conditions`` that were never sent, and record them as sent (in
    ``session``'s transaction; a unit another sender holds is skipped). Returns {scan id: keys sent}."""
    rows = session.execute(
        select(ScanUnit.scan_id, ScanUnit.key, ScanUnit.message)
        .where(*conditions, ScanUnit.state == "pending", ScanUnit.sent_at.is_(None), ScanUnit.message.is_not(None))
        .order_by(ScanUnit.scan_id, ScanUnit.key).limit(limit).with_for_update(skip_locked=True)
    ).all()
    by_scan: dict[int, list[str]] = {}
    for scan_id, key, message in rows:
        if message is None:  # excluded by the query: the column is nullable
            continue
        send_stored(message)
        by_scan.setdefault(scan_id, []).append(key)
    for scan_id, keys in by_scan.items():
        mark_sent(session, scan_id, keys)
    return by_scan


def resend_unsent(scan_id: int, parent: str) -> int:
    """For a task delivered again after its unit was done: send the messages of the units it registered that were
    never sent, and the scan's end if it is due. The worker that did the unit may have died after its commit and
    before sending them."""
    with transaction() as session:
        keys = send_unsent(session, ScanUnit.scan_id == scan_id, ScanUnit.parent == parent).get(scan_id, [])
        status = session.execute(select(Scan.status).where(Scan.id == scan_id)).scalar()
    if status == ScanStatus.FINALIZING:
        publish("cleanup_finish_scan", [scan_id])
    if keys:
        log.warning("scan %s: sent %d unsent units of %r", scan_id, len(keys), parent or "the scan")
    return len(keys)


def reset_units(session: Session, scan_id: int, keys: list[str] | None = None) -> list[tuple[str, str]]:
    """Make pending units start their chain again from its first stage, as unsent: their stage and delivery count
    start afresh (a message sent again is no worker's death) and their clock restarts. ``keys`` None: every
    pending unit of the scan. Returns (key, stored message) to send once this transaction has committed (until
    then, or if the sender dies, they are unsent units, which the relay sends)."""
    condition = [ScanUnit.scan_id == scan_id, ScanUnit.state == "pending", ScanUnit.message.is_not(None)]
    if keys is not None:
        condition.append(ScanUnit.key.in_(keys))
    rows = session.execute(
        update(ScanUnit).where(*condition)
        .values(stage=0, deliveries=0, deaths=0, sent_at=None, updated_at=func.now())
        .returning(ScanUnit.key, ScanUnit.message)
    ).all()
    return sorted((key, message) for key, message in rows if message is not None)  # None: excluded by the query


def send_units(scan_id: int, stored: list[tuple[str, str]]) -> None:
    """Send (key, stored message) pairs, then record them as sent."""
    for _, message in stored:
        send_stored(message)
    if stored:
        with transaction() as session:
            mark_sent(session, scan_id, [key for key, _ in stored])
