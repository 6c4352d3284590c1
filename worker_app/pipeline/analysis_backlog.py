"""The audio analysis backlog drains by itself: ``enrich_analysis_backlog``, sent every
``SONIQUEBAY_ANALYSIS_BACKLOG_INTERVAL`` seconds by each deferred worker, tops the extract queue up with batches of
the backlog (``analysis.needs_analysis``: tracks catalogued while analysis was off, analysed by an older version, or
stopped by a passing error).

It fills at most half of the extract queue's back-pressure bound (``SONIQUEBAY_EXTRACT_BACKLOG``), so a scan that
starts meanwhile still finds room for its own units, which are served first (the analysis has the lower priority,
``limits.ANALYSE``). Where it has got to is a cursor row in ``backlog_cursors``, locked by the drain that runs
(another deferred worker's drain of the same tick skips): each tick goes on after the last track id queued, so a
batch still being analysed is not queued again. A round that reaches the end of the catalogue starts again from
the first track ``ROUND_PAUSE`` later, which is when tracks a passing error stopped are tried again.

Off while audio analysis is off (the workers' SONIQUEBAY_AUDIO_ANALYSIS), and with an interval of 0;
`soniquebay analysis --queue-backlog` queues by hand either way.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from worker_app.celery_app import app
from worker_app.db.models import BacklogCursor
from worker_app.db.session import transaction
from worker_app.limits import DEFERRED
from worker_app.pipeline.analysis import DRAIN_CURSOR as CURSOR
from worker_app.pipeline.analysis import queue_backlog
from worker_app.pipeline.backpressure import EXTRACT_FEED, backlog, bound_of
from worker_app.pipeline.periodic import PeriodicSend
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

ROUND_PAUSE = timedelta(hours=1)


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


def room_for_analysis() -> int:
    """Analysis batches the extract queue can take now: up to half its bound, less what waits in it."""
    return max(0, bound_of(EXTRACT_FEED) // 2 - backlog(EXTRACT_FEED))


@app.task(name="enrich_analysis_backlog", acks_late=True, ignore_result=True, **DEFERRED.options)
def enrich_analysis_backlog() -> dict[str, Any]:
    """Queue the next batches of the analysis backlog, as many as the extract queue has room for."""
    settings = get_settings()
    if not settings.audio_analysis:
        return {"queued": 0, "why": "audio analysis is off"}
    room = room_for_analysis()
    if room == 0:
        return {"queued": 0, "why": "the extract queue is full enough"}
    with transaction() as session:
        session.execute(insert(BacklogCursor).values(name=CURSOR).on_conflict_do_nothing())
        cursor = session.execute(select(BacklogCursor).where(BacklogCursor.name == CURSOR)
                                 .with_for_update(skip_locked=True)).scalar_one_or_none()
        if cursor is None:
            return {"queued": 0, "why": "another drain is running"}
        if cursor.after_id == 0 and cursor.round_ended_at is not None and session.execute(
                select(func.now() - cursor.round_ended_at < ROUND_PAUSE)).scalar():
            return {"queued": 0, "why": f"the last round ended less than {_hours(ROUND_PAUSE)} ago"}
        wanted = room * settings.batch_size
        queued, after = 0, cursor.after_id
        try:
            for ids in queue_backlog(wanted, after=after):
                queued, after = queued + len(ids), ids[-1]
            round_ended = queued < wanted
        except Exception as error:  # noqa: BLE001 - broker or database unreachable: the cursor keeps what went
            log.warning("queued %d tracks of the analysis backlog, then stopped: %s", queued, error)
            round_ended = False
        values: dict[str, Any] = {"after_id": 0 if round_ended else after, "updated_at": func.now()}
        if round_ended:
            values["round_ended_at"] = func.now()
        session.execute(update(BacklogCursor).where(BacklogCursor.name == CURSOR).values(**values))
    if queued:
        log.info("queued %d tracks of the analysis backlog%s", queued,
                 f", to the end of the catalogue: the next round in {_hours(ROUND_PAUSE)}" if round_ended else "")
    return {"queued": queued, "round_ended": round_ended}


class AnalysisBacklogWatch(PeriodicSend):
    """The drain's clock. A message that waited a whole period is dropped: a newer one is on its way."""

    what = "topping the extract queue up with the analysis backlog"
    expires_periods = 1

    def task(self) -> Any:
        return enrich_analysis_backlog

    def interval(self) -> int:
        settings = get_settings()
        return settings.analysis_backlog_interval if settings.audio_analysis else 0


app.steps["worker"].add(AnalysisBacklogWatch)
