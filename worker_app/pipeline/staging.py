"""The claim check: a batch unit's records and pictures wait in PostgreSQL, and its messages carry only its key.

The extract stage writes what it read once (``stage_extracted``: the records and failures in ``staged_units``, each
picture once by its sha256 in ``staged_covers``, skipped when ``covers`` has it already); the batch stage reads the
records by (scan, unit key) and writes the insert stage's payload beside them (``stage_payload``); the insert stage
reads the payload under a row lock (``take_payload``), moves the pictures it needs into ``covers``
(``claim_covers``) and deletes the unit's row (``release``) in the transaction that closes the unit. So the batch
and insert messages are a few dozen bytes, whatever the covers weigh, and the broker holds no catalogue data.

A delivery finds its unit's row unless the unit is done (the ledger skips it first) or the row went missing some
other way (a message sent by the previous release, which carried the data itself; a row removed by hand): the unit
then starts its chain again from its extract message (``restart_unit``), which is idempotent like every delivery.
A unit closed as failed drops its row too (``unit_task.close_unit_as_failed``); retention drops the rows of scans
that ended without inserting them, and pictures no unit uses any more (``prune_staging``).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.db import json_text
from worker_app.db.models import Cover, Scan, StagedCover, StagedUnit
from worker_app.db.session import rowcount, transaction
from worker_app.metadata.cleaning import json_may_hold_unstorable
from worker_app.metadata.record import CoverImage
from worker_app.pipeline.ledger import ACTIVE, reset_units, send_units

log = logging.getLogger(__name__)

# A staged picture no unit refers to is pruned once nobody staged it for this long: an extract stage staging it
# again touches it in the transaction that also writes its unit's row.
UNUSED_COVER_AGE = timedelta(hours=1)


def stage_covers(session: Session, covers: Mapping[str, CoverImage], catalogued_too: bool = False) -> None:
    """Keep each picture once by sha256 (a picture staged already is only touched: its ``staged_at`` moves on).
    Those the catalogue has are skipped unless ``catalogued_too`` (``db load``: see pipeline/load.py)."""
    shas = sorted(covers)
    if not shas:
        return
    known: set[str] = set() if catalogued_too else set(
        session.execute(select(Cover.sha256).where(Cover.sha256.in_(shas))).scalars())
    rows = [{"sha256": sha, "mime": covers[sha].mime, "width": covers[sha].width, "height": covers[sha].height,
             "size_bytes": covers[sha].size_bytes, "source": covers[sha].source, "data": covers[sha].data}
            for sha in shas if sha not in known]
    if rows:
        statement = insert(StagedCover)
        session.execute(statement.on_conflict_do_update(index_elements=["sha256"],
                                                        set_={"staged_at": func.now()}), rows)


def stage_extracted(session: Session, scan_id: int, key: str, records: list[dict[str, Any]],
                    failures: list[list[Any]], covers: dict[str, CoverImage]) -> None:
    """Keep a unit's records and failures, and its pictures that the catalogue does not have yet. Written again
    by a redelivery of the extract stage (the batch stage's payload, if any, goes with the old records)."""
    shas = sorted(covers)
    stage_covers(session, covers)
    statement = insert(StagedUnit).values(scan_id=scan_id, key=key, records=json_text.dumps([records, failures]),
                                          payload=None, cover_shas=shas)
    session.execute(statement.on_conflict_do_update(
        index_elements=["scan_id", "key"],
        set_={"records": statement.excluded.records, "payload": None, "cover_shas": statement.excluded.cover_shas,
              "staged_at": func.now()},
    ))


class Extracted(NamedTuple):
    """A unit's staged records and failures; ``storable``: its JSON can hold no value that ``cleaning.storable``
    would change (most units), so the batch stage need not walk through every value to clean it."""
    records: list[dict[str, Any]]
    failures: list[list[Any]]
    storable: bool


def read_extracted(session: Session, scan_id: int, key: str) -> Extracted | None:
    """A unit's records and failures, or None when it has no row."""
    body = session.execute(select(StagedUnit.records).where(StagedUnit.scan_id == scan_id, StagedUnit.key == key)
                           ).scalar()
    if body is None:
        return None
    records, failures = json_text.loads(body)
    return Extracted(records, failures, not json_may_hold_unstorable(body))


def stage_payload(session: Session, scan_id: int, key: str, payload: dict[str, Any]) -> bool:
    """Keep the insert stage's payload beside the records; False when the unit's row is gone."""
    return session.execute(
        update(StagedUnit).where(StagedUnit.scan_id == scan_id, StagedUnit.key == key)
        .values(payload=json_text.dumps(payload)).returning(StagedUnit.key)
    ).first() is not None


def take_payload(session: Session, scan_id: int, key: str) -> tuple[dict[str, Any] | None, bool]:
    """(payload, found) of a unit, its row locked until the caller's transaction ends: a duplicate delivery of the
    insert waits here, then finds the row gone. The payload is None when only the records are there (a redelivered
    extract stage wrote them again after the batch stage): the caller makes it from ``read_extracted``."""
    row = session.execute(
        select(StagedUnit.payload).where(StagedUnit.scan_id == scan_id, StagedUnit.key == key).with_for_update()
    ).first()
    if row is None:
        return None, False
    return (json_text.loads(row.payload) if row.payload is not None else None), True


def claim_covers(session: Session, shas: list[str], keep_staged: bool = False) -> dict[str, int]:
    """The catalogue's cover ids of these pictures, moving the staged ones into ``covers`` first (in sha256 order,
    the order every insert worker locks them in). ``keep_staged``: copy them and leave the staged rows, for a
    later step that claims them again (``db load``, which drops them at its end: ``unstage_catalogued``)."""
    if not shas:
        return {}
    shas = sorted(set(shas))
    session.execute(text(
        "INSERT INTO covers (sha256, mime, width, height, size_bytes, source, data) "
        "SELECT sha256, mime, width, height, size_bytes, source, data FROM staged_covers "
        "WHERE sha256 = ANY(:shas) ORDER BY sha256 ON CONFLICT (sha256) DO NOTHING"), {"shas": shas})
    ids = {sha: cover_id for cover_id, sha in session.execute(
        select(Cover.id, Cover.sha256).where(Cover.sha256.in_(shas)))}
    if len(ids) < len(shas):
        log.warning("pictures neither staged nor catalogued (their tracks go without): %s",
                    sorted(set(shas) - set(ids)))
    if keep_staged:
        return ids
    # In the catalogue now: a unit that staged the same picture finds it there.
    session.execute(delete(StagedCover).where(StagedCover.sha256.in_(list(ids))))
    return ids


def unstage_catalogued(session: Session, shas: list[str]) -> int:
    """Drop the staged copies of these pictures that the catalogue has (a unit that staged one of them finds it
    there); those it has not are left to ``prune_staging``, since a scan's unit may be waiting for one."""
    if not shas:
        return 0
    return rowcount(session.execute(delete(StagedCover).where(
        StagedCover.sha256.in_(sorted(set(shas))), exists().where(Cover.sha256 == StagedCover.sha256))))


def release(session: Session, scan_id: int, key: str) -> None:
    """Drop a unit's row, in the transaction that closes the unit."""
    session.execute(delete(StagedUnit).where(StagedUnit.scan_id == scan_id, StagedUnit.key == key))


def staged_paths(scan_id: int, key: str) -> list[str]:
    """The files a staged unit is about (its records' and failures' paths), for the failure records of a unit
    that cannot be done; [] when it has no row."""
    with transaction() as session:
        found = read_extracted(session, scan_id, key)
    if found is None:
        return []
    return [record["path"] for record in found.records] + [failure[0] for failure in found.failures]


def restart_unit(scan_id: int, key: str, why: str) -> None:
    """Start a unit's chain again from its extract message (stored with the unit), as the stall check would."""
    log.warning("scan %s unit %s: %s; starting it again from its extract stage", scan_id, key, why)
    with transaction() as session:
        stored = reset_units(session, scan_id, [key])
    send_units(scan_id, stored)


def prune_staging() -> dict[str, int]:
    """Delete the staged rows of scans that ended (their units will never be inserted), and staged pictures that
    no unit uses and nobody staged for ``UNUSED_COVER_AGE``."""
    with transaction() as session:
        units = rowcount(session.execute(
            delete(StagedUnit).where(exists().where(Scan.id == StagedUnit.scan_id, Scan.status.not_in(ACTIVE)))
        ))
        covers = rowcount(session.execute(
            delete(StagedCover).where(
                StagedCover.staged_at < func.now() - UNUSED_COVER_AGE,
                ~exists().where(StagedCover.sha256 == func.any(StagedUnit.cover_shas)),
            )
        ))
    if units or covers:
        log.info("dropped the staged records of %d units of ended scans and %d unused staged pictures",
                 units, covers)
    return {"staged_units": units, "staged_covers": covers}
