"""The fleet's Prometheus exporter (`soniquebay exporter`): one per fleet, on the monitor host.

Every figure is read when Prometheus scrapes (a custom collector), from the two places that hold the truth: the
broker Redis (queue depths; the workers, through Celery's control broadcast) and PostgreSQL (scans and their
units). Never the result Redis: the pipeline does not use it, and it may be lost without the fleet noticing.

Names follow the common Celery exporters (danihodovic/celery-exporter, OvalMoney/celery-exporter), so that their
dashboards and alerts fit: ``celery_queue_length{queue_name}``, ``celery_active_worker_count{queue_name}``,
``celery_worker_up{hostname}``, ``celery_workers``. The scans' figures are ``soniquebay_*``.

A source that cannot be reached does not fail the scrape: its ``soniquebay_exporter_source_up`` is 0 and its
metrics are absent (an alert on a missing series, or on the source, says so).

The same server serves the operator's page, ``/dashboard`` (worker_app/monitoring/dashboard.py), from the same
registry.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select

from worker_app.db.statuses import COUNTS, STARTED, ScanStatus
from worker_app.monitoring.dashboard import Dashboard, ScanHistory, StageThroughput
from worker_app.monitoring.watchdog import KILLED_EVENT

log = logging.getLogger(__name__)

# A worker that has not answered the control broadcast within this many seconds counts as down.
INSPECT_TIMEOUT = 1.0
# The audio analysis backlog counts the whole catalogue (every track against its features): read at most this
# often, not at every scrape. It moves by a batch of tracks at a time, so a minute-old figure says the same.
ANALYSIS_REFRESH_SECONDS = 60.0


class FleetCollector(Collector):
    """Reads the broker and the catalogue at each scrape. Scrapes are serialised: each one costs a control
    broadcast (up to INSPECT_TIMEOUT) and a few small queries, and two at once would only double that."""

    def __init__(self, inspect_timeout: float = INSPECT_TIMEOUT, history: ScanHistory | None = None,
                 analysis_refresh: float = ANALYSIS_REFRESH_SECONDS):
        self.inspect_timeout = inspect_timeout
        self.analysis_refresh = analysis_refresh
        self._analysis: tuple[float, dict[str, Any]] | None = None  # (monotonic time read, analysis_status)
        # The current scan's figures at each reading: the dashboard's files per second of each stage, lately.
        self.history = history
        self._lock = threading.Lock()
        self._broker: redis.Redis | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily("soniquebay_exporter_source_up",
                                   "1 when the exporter could read the source at this scrape", labels=["source"])
            families: list[Metric] = []
            for source, read in (("broker", self._queues), ("workers", self._workers),
                                 ("postgresql", self._catalogue)):
                started = time.monotonic()
                try:
                    families += read()
                except Exception as error:  # noqa: BLE001 - one source down must not hide the others
                    log.warning("cannot read %s: %s: %s", source, type(error).__name__, error)
                    up.add_metric([source], 0)
                else:
                    up.add_metric([source], 1)
                log.debug("%s read in %.3f s", source, time.monotonic() - started)
            yield up
            yield from families

    # The broker: queue depths.

    def _broker_client(self) -> redis.Redis:
        from worker_app.settings import get_settings

        if self._broker is None:
            settings = get_settings()
            self._broker = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5,
                                                health_check_interval=25,
                                                **settings.redis_tls_options(settings.broker_url))
        return self._broker

    def _queues(self) -> list[Metric]:
        from worker_app.limits import QUEUES
        from worker_app.pipeline.backpressure import FEEDS, bound_of, queue_depths

        family = GaugeMetricFamily("celery_queue_length",
                                   "Messages waiting in the queue (its priority sub-queues summed)",
                                   labels=["queue_name"])
        depths = queue_depths(self._broker_client(), QUEUES)
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        bounds = GaugeMetricFamily("soniquebay_backlog_bound",
                                   "Messages the queues may hold before the stage that feeds them waits "
                                   "(back-pressure); compare with their celery_queue_length summed",
                                   labels=["queues"])
        for queues in FEEDS:
            bounds.add_metric(["+".join(queues)], bound_of(queues))
        return [family, bounds]

    # The workers, through Celery's control broadcast (over the broker).

    def _workers(self) -> list[Metric]:
        from worker_app.celery_app import app
        from worker_app.limits import QUEUES

        replies = app.control.inspect(timeout=self.inspect_timeout).active_queues() or {}
        workers = GaugeMetricFamily("celery_workers", "Workers that answered the control broadcast")
        workers.add_metric([], len(replies))
        up = GaugeMetricFamily("celery_worker_up", "1 for each worker that answered the control broadcast",
                               labels=["hostname"])
        per_queue = {queue: 0 for queue in QUEUES}
        for hostname, queues in sorted(replies.items()):
            up.add_metric([hostname], 1)
            for queue in queues or []:
                per_queue[queue["name"]] = per_queue.get(queue["name"], 0) + 1
        active = GaugeMetricFamily("celery_active_worker_count", "Workers consuming the queue",
                                   labels=["queue_name"])
        for queue, count in per_queue.items():
            active.add_metric([queue], count)
        return [workers, up, active]

    # PostgreSQL: the scans.

    def _catalogue(self) -> list[Metric]:
        from worker_app.db.models import Scan, ScanUnit
        from worker_app.db.session import transaction
        from worker_app.pipeline.ledger import progress

        active_scan = Scan.status.in_(STARTED)
        with transaction() as session:
            by_status = dict(session.execute(select(Scan.status, func.count()).group_by(Scan.status)).all())
            # The current scan: the latest running one, else the latest of all (its final figures).
            current = session.execute(select(func.max(Scan.id)).where(active_scan)).scalar()
            if current is None:
                current = session.execute(select(func.max(Scan.id))).scalar()
            figures = progress(session, current) if current is not None else None
            # Pending units of every scan: besides the scans under way, a scan may leave work that runs after it
            # (the follow-ups of a cancelled scan, background units). Their age only for scans under way: that is
            # what a stalled scan shows.
            pending = session.execute(
                select(ScanUnit.kind, func.count(), func.count(ScanUnit.last_error),
                       func.extract("epoch", func.now() - func.min(ScanUnit.updated_at).filter(active_scan)))
                .join(Scan, Scan.id == ScanUnit.scan_id)
                .where(ScanUnit.state == "pending").group_by(ScanUnit.kind)
            ).all()
        scans = GaugeMetricFamily("soniquebay_scans", "Scans by status", labels=["status"])
        for status in sorted(set(ScanStatus) | set(by_status)):
            scans.add_metric([status], by_status.get(status, 0))
        families: list[Metric] = [scans]
        families += self._scan_figures(figures)
        if figures is not None and self.history is not None:
            self.history.add(int(figures["scan_id"]), {name: int(figures[name]) for name in COUNTS})
        units = GaugeMetricFamily("soniquebay_units_pending",
                                  "Pending units by kind (extract: the files still to read)",
                                  labels=["kind"])
        retrying = GaugeMetricFamily("soniquebay_units_retrying",
                                     "Pending units retried after a passing error (database or broker unreachable)",
                                     labels=["kind"])
        for kind in sorted({"chunk", "extract", "cleanup", "enrich", "analysis"}
                           | {row[0] for row in pending}):
            row = next((row for row in pending if row[0] == kind), None)
            units.add_metric([kind], row[1] if row else 0)
            retrying.add_metric([kind], row[2] if row else 0)
        oldest = GaugeMetricFamily("soniquebay_oldest_pending_unit_age_seconds",
                                   "Seconds since the running scans' least recently moved pending unit last "
                                   "moved (registered, delivered); 0 without any")
        oldest.add_metric([], max((float(row[3]) for row in pending if row[3] is not None), default=0.0))
        return [*families, units, retrying, oldest, *self._analysis_backlog()]

    def _analysis_backlog(self) -> list[Metric]:
        from worker_app.db.session import transaction
        from worker_app.pipeline.analysis import analysis_status

        now = time.monotonic()
        if self._analysis is None or now - self._analysis[0] >= self.analysis_refresh:
            with transaction() as session:
                self._analysis = (now, analysis_status(session))
        status = self._analysis[1]
        backlog = GaugeMetricFamily("soniquebay_analysis_backlog_tracks",
                                    "Tracks without audio features for their current file at this analysis "
                                    f"version (read at most every {self.analysis_refresh:g} s)")
        backlog.add_metric([], status["backlog"])
        rate = GaugeMetricFamily("soniquebay_analysis_tracks_per_minute",
                                 f"Tracks analysed per minute over the last {status['window_minutes']} minutes")
        rate.add_metric([], status["rate_per_minute"])
        return [backlog, rate]

    @staticmethod
    def _scan_figures(figures: dict[str, Any] | None) -> list[Metric]:
        if figures is None:
            return []
        labels = [str(figures["scan_id"]), figures["root"]]
        info = GaugeMetricFamily("soniquebay_scan_info", "The current scan (the latest running one, else the "
                                 "latest): 1, with its status", labels=["scan_id", "root", "status"])
        info.add_metric([*labels, figures["status"]], 1)
        families: list[Metric] = [info]
        for name in COUNTS:
            # Gauges, not counters: a snapshot of the ledger, labelled by scan (each scan starts from zero).
            family = GaugeMetricFamily(f"soniquebay_scan_{name}", f"Files {name} by the current scan",
                                         labels=["scan_id", "root"])
            family.add_metric(labels, figures[name])
            families.append(family)
        seconds = max(float(figures["seconds"]), 1e-3)
        handled = figures["unchanged"] + figures["extracted"] + figures["failed"]
        rate = GaugeMetricFamily("soniquebay_scan_files_per_second",
                                 "Files the current scan handled (unchanged, extracted or failed) per second "
                                 "since it was requested", labels=["scan_id", "root"])
        rate.add_metric(labels, handled / seconds)
        elapsed = GaugeMetricFamily("soniquebay_scan_seconds", "Seconds since the current scan was requested (to "
                                    "its end, once ended)", labels=["scan_id", "root"])
        elapsed.add_metric(labels, float(figures["seconds"]))
        return [*families, rate, elapsed]


# Task runtimes span a relay tick (milliseconds) to a whole deferred finish (the longest time limit, 1800 s).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class TaskEvents:
    """Counts the task events the workers send (``worker_send_task_events``; ``task_send_sent_event`` for the
    sends), as the common Celery exporters do. A thread receives them from the broker's event exchange for the
    exporter's whole life, reconnecting after a broker outage (events sent meanwhile are not counted: Prometheus's
    rate() copes). Counters start at zero with the exporter."""

    def __init__(self, registry: CollectorRegistry, throughput: StageThroughput | None = None):
        from prometheus_client import Counter, Histogram

        from worker_app.celery_app import TASK_ROUTES

        task, worker = ["name"], ["name", "hostname"]
        self.sent = Counter("celery_task_sent", "Tasks sent", task, registry=registry)
        self.received = Counter("celery_task_received", "Tasks received by a worker", worker, registry=registry)
        self.succeeded = Counter("celery_task_succeeded", "Tasks that succeeded", worker, registry=registry)
        self.failed = Counter("celery_task_failed", "Tasks that failed for good", [*worker, "exception"],
                              registry=registry)
        self.retried = Counter("celery_task_retried", "Tasks retried (after a passing error)", worker,
                               registry=registry)
        self.rejected = Counter("celery_task_rejected", "Tasks handed back to the broker", worker,
                                registry=registry)
        self.runtime = Histogram("celery_task_runtime", "Seconds a task ran, by task name", worker,
                                 buckets=RUNTIME_BUCKETS, registry=registry)
        self.watchdog_kills = Counter("soniquebay_watchdog_kills", "Workers the watchdog of their host killed "
                                      "because they stopped answering (worker_app/monitoring/watchdog.py)", ["node"],
                                      registry=registry)
        self.connected = False
        self._names: dict[str, str] = {}  # task id -> name: only the sent and received events carry the name
        # Tasks each stage (queue) ended lately, for the dashboard.
        self.throughput = throughput
        self._stages = {name: str(route["queue"]) for name, route in TASK_ROUTES.items()}

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="task-events", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        from worker_app.celery_app import app

        while True:
            try:
                with app.connection_for_read() as connection:
                    receiver = app.events.Receiver(connection, handlers={"*": self.on_event})
                    self.connected = True
                    receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as error:  # noqa: BLE001 - the broker went away: connect again
                log.warning("task events: %s: %s; reconnecting", type(error).__name__, error)
            self.connected = False
            time.sleep(2)

    def on_event(self, event: dict[str, Any]) -> None:
        kind, uuid = event.get("type", ""), event.get("uuid")
        if kind == KILLED_EVENT:
            self.watchdog_kills.labels(str(event.get("node", "unknown"))).inc()
            return
        if not kind.startswith("task-") or uuid is None:
            return
        name = event.get("name") or self._names.get(uuid, "unknown")
        hostname = event.get("hostname", "")
        if kind == "task-sent":
            self._remember(uuid, name)
            self.sent.labels(name).inc()
        elif kind == "task-received":
            self._remember(uuid, name)
            self.received.labels(name, hostname).inc()
        elif kind == "task-succeeded":
            self.succeeded.labels(name, hostname).inc()
            self._ended(name, "succeeded")
            if event.get("runtime") is not None:
                self.runtime.labels(name, hostname).observe(float(event["runtime"]))
            self._names.pop(uuid, None)
        elif kind == "task-failed":
            # The exception's type, not its text: a label per message would grow without bound.
            exception = str(event.get("exception") or "").split("(", 1)[0] or "unknown"
            self.failed.labels(name, hostname, exception).inc()
            self._ended(name, "failed")
            self._names.pop(uuid, None)
        elif kind == "task-retried":
            self.retried.labels(name, hostname).inc()
        elif kind == "task-rejected":
            self.rejected.labels(name, hostname).inc()

    def _ended(self, name: str, outcome: str) -> None:
        if self.throughput is not None:
            self.throughput.count(self._stages.get(name, "other"), outcome)

    def _remember(self, uuid: str, name: str) -> None:
        # Bounded: the ids of tasks whose end was never seen (an event lost with a broker restart) are forgotten.
        if len(self._names) >= 100_000:
            self._names.clear()
        self._names[uuid] = name


class EventsUp(Collector):
    def __init__(self, events: TaskEvents):
        self.events = events

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("soniquebay_exporter_events_connected",
                               "1 while the exporter receives the workers' task events")
        up.add_metric([], 1 if self.events.connected else 0)
        yield up


def build_registry(events: bool = True, analysis_refresh: float = ANALYSIS_REFRESH_SECONDS
                   ) -> tuple[CollectorRegistry, Dashboard]:
    """The exporter's registry and the dashboard that renders it."""
    registry = CollectorRegistry(auto_describe=False)
    history = ScanHistory()
    registry.register(FleetCollector(history=history, analysis_refresh=analysis_refresh))
    throughput: StageThroughput | None = None
    if events:
        throughput = StageThroughput()
        receiver = TaskEvents(registry, throughput)
        registry.register(EventsUp(receiver))
        receiver.start()
    return registry, Dashboard(registry, throughput, history)


def make_app(registry: CollectorRegistry, dashboard: Dashboard) -> Callable[..., Iterable[bytes]]:
    """/dashboard: the operator's page; / : links to both; any other path: the metrics (prometheus_client's
    application, as start_http_server serves them)."""
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/dashboard", "/dashboard/"):
            body = dashboard.render().encode()
        elif path == "/":
            body = (b'<!doctype html><title>soniquebay exporter</title><a href="dashboard">dashboard</a> '
                    b'<a href="metrics">metrics</a>')
        else:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    # A page view and a scrape at once are served side by side (the collector serialises its reads).
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No line per request: Prometheus scrapes every few seconds."""


def serve(port: int, bind: str, analysis_refresh: float = ANALYSIS_REFRESH_SECONDS) -> None:
    """Serve /metrics and /dashboard on ``bind``:``port`` until the process is stopped."""
    registry, dashboard = build_registry(analysis_refresh=analysis_refresh)
    server = make_server(bind, port, make_app(registry, dashboard), server_class=_Server,
                         handler_class=_QuietHandler)
    log.info("serving metrics on http://%s:%d/metrics and the dashboard on /dashboard", bind, port)
    server.serve_forever()
