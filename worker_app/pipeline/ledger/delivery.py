"""Deliveries of a unit's messages: counted per stage, deaths told from duplicates, the paths that killed a worker.

A unit's chain of messages (extract -> batch -> insert for a batch of files) moves through stages: each delivery is
counted at its stage (``begin_delivery``), a stage hands the unit to the next after sending its message
(``hand_off``), and a message of a stage the unit has passed is a duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Boolean, Row, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from worker_app.db.models import Scan, ScanUnit, table_of
from worker_app.db.session import transaction
from worker_app.paths import display_path
from worker_app.pipeline.ledger.cancel import drop_pending
from worker_app.pipeline.ledger.states import CANCELLED, FOLLOW_UPS


@dataclass(frozen=True)
class Delivery:
    """What a delivery of a unit's message found: ``action`` is "run", "done" (the unit is done: a duplicate),
    "passed" (the unit is at a later stage: a duplicate of this stage's message) or "missing" (no such unit).
    ``poison``: the paths that killed a worker handling the unit, to be left out (see ``mark_current_path``)."""

    action: str
    deliveries: int = 0
    deaths: int = 0
    poison: tuple[str, ...] = ()


UNITS, SCANS = table_of(ScanUnit), table_of(Scan)

# The statements every delivery runs, built once per process (building them cost more CPU than running them) as
# Core statements (the ORM's bulk UPDATE path adds as much again). Parameters: b_scan, b_key, b_stage,
# b_retries, b_redelivered (the b_: SQLAlchemy keeps a column's own name for its SET clause).
_this_unit = and_(UNITS.c.scan_id == bindparam("b_scan"), UNITS.c.key == bindparam("b_key"), UNITS.c.state == "pending")
_same_stage = UNITS.c.stage == bindparam("b_stage")
_came_back = and_(_same_stage, UNITS.c.deliveries > 0, UNITS.c.last_retries == bindparam("b_retries"))
# A unit of a cancelled scan is never run, but for the follow-ups of tracks already catalogued: checked in the same
# statement that counts the delivery (a lookup of the scan's row by its key), so that no delivery starts work after
# the cancel committed.
_not_cancelled = or_(UNITS.c.kind.in_(FOLLOW_UPS),
                     ~exists().where(SCANS.c.id == bindparam("b_scan"), SCANS.c.status == CANCELLED))
_COUNT_DELIVERY = (
    update(UNITS)
    .where(_this_unit, UNITS.c.stage <= bindparam("b_stage"), _not_cancelled)
    .values(deaths=case((_came_back, UNITS.c.deaths + 1), (_same_stage, UNITS.c.deaths), else_=0),
            redeliveries=case((or_(_came_back, bindparam("b_redelivered", type_=Boolean)), UNITS.c.redeliveries + 1),
                              else_=UNITS.c.redeliveries),
            deliveries=case((_same_stage, UNITS.c.deliveries + 1), else_=1),
            last_retries=bindparam("b_retries"), stage=bindparam("b_stage"), updated_at=func.now())
    .returning(UNITS.c.deliveries, UNITS.c.deaths, UNITS.c.poison_paths, UNITS.c.current_path)
)
_HAND_OFF = (
    update(UNITS)
    .where(_this_unit, UNITS.c.stage < bindparam("b_stage"))
    .values(stage=bindparam("b_stage"), deliveries=0, deaths=0, sent_at=func.now(), updated_at=func.now())
)


def begin_delivery(scan_id: int, key: str, stage: int, retries: int, redelivered: bool = False) -> Delivery:
    """Count one more delivery of a unit's message at ``stage``, committed at once so that it survives the worker
    dying. The first delivery at a stage counts 1; a message of an earlier stage than the unit's is not run. The
    same message delivered again (same ``retries``, Celery's retry count) means the worker that had it died.
    ``redelivered``: the broker says it gave this message out before (kombu marks the messages it restores from a
    lost consumer, including those it held without starting them): counted as a redelivery, not as a death."""
    with transaction() as session:
        row = session.execute(_COUNT_DELIVERY, {"b_scan": scan_id, "b_key": key, "b_stage": stage,
                                                "b_retries": retries, "b_redelivered": redelivered}).first()
        if row is not None:
            return Delivery("run", row.deliveries, row.deaths, _take_poison(session, scan_id, key, row))
        found = session.execute(
            select(ScanUnit.state, Scan.status).join(Scan, Scan.id == ScanUnit.scan_id)
            .where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
        ).first()
        if found is not None and found.state == "pending" and found.status == CANCELLED:
            # Registered after the cancel (by a unit that was running then): dropped like the others.
            drop_pending(session, scan_id)
            return Delivery(CANCELLED)
    if found is None:
        return Delivery("missing")
    return Delivery({"done": "done", CANCELLED: CANCELLED}.get(found.state, "passed"))


def hand_off(scan_id: int, key: str, stage: int) -> None:
    """Record that the unit's message for ``stage`` was just sent (the previous stage is over): its deliveries
    count from zero there. Never moves a unit back (the next stage may already have begun)."""
    with transaction() as session:
        session.execute(_HAND_OFF, {"b_scan": scan_id, "b_key": key, "b_stage": stage})


def note_passing_error(scan_id: int, key: str, error: str) -> None:
    """Keep the passing error a unit met (for `soniquebay status`); best effort, the database may be what failed."""
    with transaction() as session:
        session.execute(update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                        .values(last_error=error[:500]))


def _take_poison(session: Session, scan_id: int, key: str, row: Row[int, int, list[str], str | None]
                 ) -> tuple[str, ...]:
    """The poison paths of a unit being delivered. A path still marked as being read when the unit comes back is
    the one that killed the worker last time: it joins the unit's poison list, committed with the delivery."""
    poison = list(row.poison_paths)
    if row.current_path and row.current_path not in poison:
        poison.append(row.current_path)
        session.execute(
            update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
            .values(poison_paths=poison, current_path=None)
        )
    return tuple(poison)


def mark_current_path(scan_id: int, key: str, path: str | None) -> None:
    """Commit the path a unit is about to touch (None: done touching), so that its next delivery knows which one
    killed the worker."""
    with transaction() as session:
        session.execute(
            update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
            .values(current_path=display_path(path) if path is not None else None)
        )
