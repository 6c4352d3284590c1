"""The relay: what the ledger holds but the broker may not have, sent within seconds.

Every unit is registered with its message before it is sent, and ``sent_at`` records when it went. Two kinds of
message can still be missing from the broker:

- a unit registered but never sent: its sender died between its commit and its send, or the broker refused the
  send. The relay sends units that stay unsent for a few seconds.
- what a broker restart lost. Redis writes its AOF once a second: the messages pushed in the last second before a
  crash are gone, and so are the ones that had just been popped, while the consumers' reservations (messages
  handed out but not yet started) die with their connections. Once the relay sees a new broker (its run_id), it
  puts back on their queues the messages handed out before the restart and never acknowledged (they wait in the
  broker's unacked hash for the visibility timeout otherwise, an hour), sends again the units sent in the seconds
  before the broker went down and not delivered since, and the start or end of each queued or finalizing scan.

Each worker that consumes the deferred queue sends ``relay_units`` every ``SONIQUEBAY_RELAY_INTERVAL`` seconds.
Duplicates cost a lookup: every unit's delivery skips work already done (unit_task.py).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from kombu.transport.redis import Mutex, MutexHeld
from sqlalchemy import and_, func, select, text
from sqlalchemy.dialects.postgresql import insert

from worker_app.celery_app import app
from worker_app.db.models import BrokerEpoch, Scan, ScanUnit
from worker_app.db.session import transaction
from worker_app.db.statuses import ScanStatus
from worker_app.limits import DEFERRED_FINALIZE
from worker_app.pipeline.ledger import publish, reset_units, send_units, send_unsent
from worker_app.pipeline.periodic import PeriodicSend
from worker_app.pipeline.unit_task import is_passing_error
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# Redis's AOF is written to disk once a second ("appendfsync everysec"): what was sent in the last seconds before a
# crash may be lost. Sends within this window of the last one before the broker went down are sent again.
AOF_LOSS_WINDOW = timedelta(seconds=5)
# Units sent at most this many at once by one relay task.
RELAY_BATCH = 2000


def unsent_age() -> int:
    """How long a unit may stay registered and unsent before the relay sends it: its own sender is quicker."""
    return max(10, 2 * get_settings().relay_interval)


def send_unsent_units() -> int:
    """Send the units registered a while ago and never sent; returns how many."""
    with transaction() as session:
        by_scan = send_unsent(session, ScanUnit.updated_at < func.now() - timedelta(seconds=unsent_age()),
                              limit=RELAY_BATCH)
    for scan_id, keys in by_scan.items():
        log.warning("scan %s: sent %d units that were registered and never sent", scan_id, len(keys))
    return sum(len(keys) for keys in by_scan.values())


def broker_identity() -> tuple[str, float, float]:
    """(run_id, uptime in seconds, the broker's clock when it started) of the broker Redis."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        info = client.info("server")
        seconds, microseconds = client.time()
    now = seconds + microseconds / 1e6
    return str(info["run_id"]), float(info["uptime_in_seconds"]), now - float(info["uptime_in_seconds"])


def notice_broker(run_id: str) -> bool:
    """Record the broker's run_id; True the first time a new one is seen after another (a restart), once in the
    whole fleet."""
    with transaction() as session:
        known = session.execute(select(func.count()).select_from(BrokerEpoch)).scalar_one()
        new = session.execute(
            insert(BrokerEpoch).values(run_id=run_id).on_conflict_do_nothing().returning(BrokerEpoch.run_id)
        ).scalar()
    return new is not None and known > 0


def restore_orphans(broker_started: float) -> int:
    """Put back on their queues the messages the broker handed out before it restarted and that were never
    acknowledged: their consumers' connections died with it. (The ones still running finish and acknowledge
    nothing: their copy runs again and finds its work done.)"""
    restored = 0
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos, client = channel.qos, channel.client
        try:
            with Mutex(client, qos.unacked_mutex_key, qos.unacked_mutex_expire):
                for tag in client.zrangebyscore(qos.unacked_index_key, 0, broker_started):
                    qos.restore_by_tag(tag, client, leftmost=True)
                    restored += 1
        except MutexHeld:
            log.warning("another worker is restoring unacknowledged messages; leaving them to it")
    return restored


def resend_lost_with_broker(uptime: float) -> dict[str, int]:
    """After a broker restart: send again what its last seconds may have lost (see the module docstring)."""
    figures = {"units": 0, "starts": 0, "ends": 0}
    resets: dict[int, list[tuple[str, str]]] = {}
    with transaction() as session:
        started = session.execute(text("SELECT now() - make_interval(secs => :uptime)"), {"uptime": uptime}).scalar()
        running = select(Scan.id).where(Scan.status == ScanStatus.RUNNING).scalar_subquery()
        last_send = session.execute(
            select(func.max(ScanUnit.sent_at)).where(ScanUnit.scan_id.in_(running), ScanUnit.state == "pending",
                                                     ScanUnit.sent_at < started)
        ).scalar()
        if last_send is not None:
            lost = session.execute(
                select(ScanUnit.scan_id, ScanUnit.key).where(
                    ScanUnit.scan_id.in_(running), ScanUnit.state == "pending", ScanUnit.deliveries == 0,
                    and_(ScanUnit.sent_at >= last_send - AOF_LOSS_WINDOW, ScanUnit.sent_at < started),
                )
            ).all()
            keys_by_scan: dict[int, list[str]] = {}
            for scan_id, key in lost:
                keys_by_scan.setdefault(scan_id, []).append(key)
            for scan_id, keys in keys_by_scan.items():
                resets[scan_id] = reset_units(session, scan_id, keys)
        queued = session.execute(select(Scan.id).where(Scan.status == ScanStatus.QUEUED, Scan.after_scan_id.is_(None))
                                 ).scalars().all()
        finalizing = session.execute(select(Scan.id).where(Scan.status == ScanStatus.FINALIZING)).scalars().all()
    for scan_id, stored in resets.items():
        send_units(scan_id, stored)
        figures["units"] += len(stored)
    for scan_id in queued:
        publish("scan_directory_parallel", [scan_id])
    for scan_id in finalizing:
        publish("cleanup_finish_scan", [scan_id])
    figures["starts"], figures["ends"] = len(queued), len(finalizing)
    return figures


@app.task(name="relay_units", acks_late=True, ignore_result=True, **DEFERRED_FINALIZE.options)
def relay_units() -> dict[str, Any]:
    """Send unsent units; after a broker restart, what it lost. Returns figures for the log. Not retried: the next
    tick (a second or a few later) is the retry."""
    try:
        return _relay()
    except Exception as error:
        if not is_passing_error(error):
            raise
        log.warning("relay: %s: %s (next tick tries again)", type(error).__name__, error)
        return {"error": str(error)}


def _relay() -> dict[str, Any]:
    figures: dict[str, Any] = {"unsent": send_unsent_units()}
    run_id, uptime, broker_started = broker_identity()
    if notice_broker(run_id):
        figures["restored"] = restore_orphans(broker_started)
        figures.update(resend_lost_with_broker(uptime))
        log.warning("the broker restarted (run_id %s, up %.0f s): %s", run_id, uptime, figures)
    return figures


class RelayWatch(PeriodicSend):
    """The relay's clock. A relay message that waited longer than two periods is dropped."""

    what = "relaying unsent units"
    expires_periods = 2

    def task(self) -> Any:
        return relay_units

    def interval(self) -> int:
        return get_settings().relay_interval


app.steps["worker"].add(RelayWatch)
