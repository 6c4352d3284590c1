"""Scans that stopped moving: the messages they wait for, sent again."""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, func, or_, select

from worker_app.db.models import Scan, ScanUnit
from worker_app.db.session import transaction
from worker_app.db.statuses import STARTED, ScanStatus
from worker_app.pipeline.ledger.outbox import publish, reset_units, send_units

log = logging.getLogger(__name__)


def resend_stalled(stall_timeout: int) -> dict[int, int]:
    """Send again what scans that stopped moving are waiting for; returns {scan id: messages sent}.

    A scan is stalled when none of its units changed (delivered, done) for ``stall_timeout`` seconds, or when it
    has been queued that long. It then gets again: its start if it is queued, the messages of its pending units if
    it is running (which restarts their clock, so the next check leaves them alone for another period), its end if
    it is finalizing. Concurrent checks take different scans (SKIP LOCKED)."""
    cutoff = func.now() - timedelta(seconds=stall_timeout)
    last_move = (select(func.max(ScanUnit.updated_at)).where(ScanUnit.scan_id == Scan.id)
                 .correlate(Scan).scalar_subquery())
    sent: dict[int, int] = {}
    resets: dict[int, list[tuple[str, str]]] = {}
    with transaction() as session:
        stalled = session.execute(
            select(Scan.id, Scan.status).where(or_(
                and_(Scan.status == ScanStatus.QUEUED, Scan.after_scan_id.is_(None), Scan.requested_at < cutoff),
                and_(Scan.status.in_(STARTED),
                     func.coalesce(last_move, Scan.requested_at) < cutoff),
            )).order_by(Scan.id).with_for_update(key_share=True, skip_locked=True)
        ).all()
        for scan_id, status in stalled:
            if status == ScanStatus.QUEUED:
                publish("scan_directory_parallel", [scan_id])
                sent[scan_id] = 1
            elif status == ScanStatus.FINALIZING:
                publish("cleanup_finish_scan", [scan_id])
                sent[scan_id] = 1
            else:
                resets[scan_id] = reset_units(session, scan_id)
                sent[scan_id] = len(resets[scan_id])
    for scan_id, stored in resets.items():
        send_units(scan_id, stored)
    for scan_id, count in sent.items():
        log.warning("scan %s made no progress for %d s: sent %d of its messages again (lost by the broker?)",
                    scan_id, stall_timeout, count)
    return sent
