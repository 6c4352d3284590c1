"""The operator's page of `soniquebay exporter` (``/dashboard``): the scan under way and its progress, the throughput
of each stage, the queues and the workers. Rendered on the server from the very figures /metrics serves (the same
registry, collected once per page view) and reloaded by the browser every few seconds: no script and no asset, so it
opens wherever the exporter's port does (behind the same filter)."""
from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client.registry import CollectorRegistry

from worker_app.db.statuses import COUNTS, ScanStatus
from worker_app.limits import QUEUES

REFRESH_SECONDS = 5
# The pipeline's stages, in order: its queues.
STAGES = QUEUES
# A stage's throughput: what it did over the last this many seconds.
WINDOW_SECONDS = 60
# The scan figure that measures each stage's files (the ledger's: worker_app.pipeline.ledger.progress).
STAGE_FILES = {"scan": "discovered", "extract": "extracted", "insert": "inserted"}


class StageThroughput:
    """Tasks each stage ended, per outcome, counted from the workers' task events as they arrive
    (TaskEvents.on_event), kept per second over the last WINDOW_SECONDS: bounded whatever the traffic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, str], deque[list[int]]] = {}

    def count(self, stage: str, outcome: str) -> None:
        now = int(self._clock())
        with self._lock:
            seconds = self._seconds.setdefault((stage, outcome), deque(maxlen=WINDOW_SECONDS + 1))
            if seconds and seconds[-1][0] == now:
                seconds[-1][1] += 1
            else:
                seconds.append([now, 1])

    def per_second(self, stage: str, outcome: str) -> float:
        now = self._clock()
        span = min(float(WINDOW_SECONDS), max(now - self._started, 1.0))
        with self._lock:
            done = sum(n for second, n in self._seconds.get((stage, outcome), ()) if second > now - span)
        return done / span


class ScanHistory:
    """The current scan's figures as the exporter read them (every scrape and page view), over the last
    WINDOW_SECONDS: the files each stage handled per second lately, not since the scan began."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: deque[tuple[float, int, dict[str, int]]] = deque()

    def add(self, scan_id: int, figures: dict[str, int]) -> None:
        now = self._clock()
        with self._lock:
            self._readings.append((now, scan_id, dict(figures)))
            while self._readings and self._readings[0][0] < now - WINDOW_SECONDS:
                self._readings.popleft()

    def per_second(self, scan_id: int, figure: str) -> float | None:
        """None until two readings of the scan, at least a second apart, are at hand."""
        with self._lock:
            readings = [reading for reading in self._readings if reading[1] == scan_id]
        if len(readings) < 2 or readings[-1][0] - readings[0][0] < 1:
            return None
        (first, _, old), (last, _, new) = readings[0], readings[-1]
        return max(new.get(figure, 0) - old.get(figure, 0), 0) / (last - first)


@dataclass
class Snapshot:
    """Every sample of one collection of the registry: {sample name: [(labels, value)]}."""

    samples: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Snapshot:
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in registry.collect():
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return self.samples.get(name, [])

    def value(self, name: str, **labels: str) -> float | None:
        for sample_labels, value in self.series(name):
            if all(sample_labels.get(key) == wanted for key, wanted in labels.items()):
                return value
        return None

    def total(self, name: str, **labels: str) -> float:
        return sum(value for sample_labels, value in self.series(name)
                   if all(sample_labels.get(key) == wanted for key, wanted in labels.items()))


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", "\u202f")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _bar(part: float, whole: float, kind: str = "") -> str:
    share = 0.0 if whole <= 0 else min(max(part / whole, 0.0), 1.0)
    return f'<div class="bar {kind}"><span style="width:{share * 100:.1f}%"></span></div>'


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header h1{font-size:18px;margin:0}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;padding:14px 18px}
section{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:2px 0 8px}
table{border-collapse:collapse;width:100%}
td,th{padding:3px 6px;text-align:right;border-bottom:1px solid #eee}
td:first-child,th:first-child{text-align:left}
.bar{background:#e6e9ef;border-radius:3px;height:10px;min-width:80px}
.bar span{display:block;height:100%;border-radius:3px;background:#3b82f6}
.bar.warn span{background:#f59e0b}
.big .bar{height:18px}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}.muted{color:#6b7280}
.badge{padding:1px 8px;border-radius:10px;font-size:12px;background:#15803d;color:#fff}
.badge.bad{background:#b91c1c}
"""


class Dashboard:
    """Renders the page from a collection of the exporter's registry."""

    def __init__(self, registry: CollectorRegistry, throughput: StageThroughput | None, history: ScanHistory):
        self.registry = registry
        self.throughput = throughput
        self.history = history

    def render(self) -> str:
        snapshot = Snapshot.of(self.registry)
        return "".join([
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
            "<title>SoniqueBay fleet</title>",
            f"<style>{CSS}</style></head><body>",
            self._header(snapshot),
            "<main>",
            self._scan(snapshot),
            self._stages(snapshot),
            self._queues(snapshot),
            self._workers(snapshot),
            "</main></body></html>",
        ])

    @staticmethod
    def _header(snapshot: Snapshot) -> str:
        badges = []
        for labels, up in snapshot.series("soniquebay_exporter_source_up"):
            source = html.escape(labels.get("source", ""))
            badges.append(f'<span class="badge{"" if up else " bad"}">{source} {"up" if up else "DOWN"}</span>')
        events = snapshot.value("soniquebay_exporter_events_connected")
        if events is not None:
            state = "on" if events else "OFF"
            badges.append(f'<span class="badge{"" if events else " bad"}">task events {state}</span>')
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return (f"<header><h1>SoniqueBay fleet</h1>{''.join(badges)}"
                f'<span class="muted">{when}, every {REFRESH_SECONDS} s</span></header>')

    def _scan(self, snapshot: Snapshot) -> str:
        infos = [labels for labels, _ in snapshot.series("soniquebay_scan_info")]
        by_status = " · ".join(f"{html.escape(labels['status'])} {int(value)}"
                               for labels, value in snapshot.series("soniquebay_scans") if value)
        if not infos:
            return f"<section><h2>Scan</h2><p class=muted>No scan yet.</p><p>{by_status}</p></section>"
        info = infos[0]
        scan = {"scan_id": info["scan_id"], "root": info["root"]}
        figures = {name: snapshot.value(f"soniquebay_scan_{name}", **scan) or 0
                   for name in COUNTS}
        handled = figures["unchanged"] + figures["extracted"] + figures["failed"]
        status = info["status"]
        rows = "".join(f"<tr><td>{name}</td><td>{_number(value)}</td></tr>" for name, value in figures.items())
        return (
            f"<section class=big><h2>Scan {html.escape(info['scan_id'])} · {html.escape(info['root'])} · "
            f'<span class="{"bad" if status in (ScanStatus.FAILED, ScanStatus.CANCELLED) else "ok"}">'
            f'{html.escape(status)}</span></h2>'
            f"{_bar(handled, figures['discovered'])}"
            f"<p>{_number(handled)} of {_number(figures['discovered'])} files found handled "
            f"({_number(100 * handled / figures['discovered'] if figures['discovered'] else 0, 1)} %), "
            f"{_number(snapshot.value('soniquebay_scan_files_per_second', **scan), 1)} files/s since it began, "
            f"{_duration(snapshot.value('soniquebay_scan_seconds', **scan))}</p>"
            f"<table>{rows}</table>"
            f"<p class=muted>Scans: {by_status}</p></section>")

    def _stages(self, snapshot: Snapshot) -> str:
        infos = [labels for labels, _ in snapshot.series("soniquebay_scan_info")]
        scan_id = int(infos[0]["scan_id"]) if infos else None
        rows = []
        for stage in STAGES:
            figure = STAGE_FILES.get(stage)
            files = (self.history.per_second(scan_id, figure) if scan_id is not None and figure else None)
            done = self.throughput.per_second(stage, "succeeded") if self.throughput else None
            failed = self.throughput.per_second(stage, "failed") * WINDOW_SECONDS if self.throughput else None
            rows.append(f"<tr><td>{stage}</td><td>{_number(files, 1)}</td><td>{_number(done, 2)}</td>"
                        f'<td class="{"bad" if failed else ""}">{_number(failed)}</td></tr>')
        pending = " · ".join(f"{html.escape(labels['kind'])} {_number(value)}"
                             for labels, value in snapshot.series("soniquebay_units_pending") if value) or "none"
        oldest = snapshot.value("soniquebay_oldest_pending_unit_age_seconds")
        retrying = snapshot.total("soniquebay_units_retrying")
        backlog = snapshot.value("soniquebay_analysis_backlog_tracks")
        analysed = snapshot.value("soniquebay_analysis_tracks_per_minute")
        return ("<section><h2>Throughput per stage (last minute)</h2><table><tr><th>stage</th><th>files/s</th>"
                "<th>tasks/s</th><th>failed tasks</th></tr>"
                f"{''.join(rows)}</table><p>Pending units: {pending}. The oldest last moved {_duration(oldest)} "
                f"ago; {_number(retrying)} retrying after a passing error.</p>"
                f"<p>Audio analysis: {_number(backlog)} tracks waiting, {_number(analysed, 1)} analysed a minute."
                "</p></section>")

    @staticmethod
    def _queues(snapshot: Snapshot) -> str:
        bounds = {labels["queues"]: value for labels, value in snapshot.series("soniquebay_backlog_bound")}
        depths = {labels["queue_name"]: value for labels, value in snapshot.series("celery_queue_length")}
        rows = []
        for queue in STAGES:
            depth = depths.get(queue)
            bound_key = next((key for key in bounds if queue in key.split("+")), None)
            bound = bounds.get(bound_key) if bound_key else None
            # A bound shared by several queues (batch+insert) holds back what they hold together.
            held = sum(depths.get(name) or 0 for name in bound_key.split("+")) if bound_key else 0
            bar = _bar(held, bound, "warn" if bound and held >= bound else "") if bound else ""
            shared = f" ({html.escape(bound_key)})" if bound_key and "+" in bound_key else ""
            rows.append(f"<tr><td>{queue}</td><td>{_number(depth)}</td><td>{_number(bound)}{shared}</td>"
                        f"<td>{bar}</td></tr>")
        return ("<section><h2>Queues</h2><table><tr><th>queue</th><th>waiting</th><th>back-pressure bound</th>"
                f"<th></th></tr>{''.join(rows)}</table></section>")

    @staticmethod
    def _workers(snapshot: Snapshot) -> str:
        counts = {labels["queue_name"]: value for labels, value in snapshot.series("celery_active_worker_count")}
        rows = []
        for queue in STAGES:
            count = counts.get(queue)
            state = ("–" if count is None else '<span class="bad">no worker</span>' if count == 0
                     else '<span class="ok">ok</span>')
            rows.append(f"<tr><td>{queue}</td><td>{_number(count)}</td><td>{state}</td></tr>")
        nodes = sorted(labels["hostname"] for labels, up in snapshot.series("celery_worker_up") if up)
        return ("<section><h2>Workers</h2><table><tr><th>queue group</th><th>workers</th><th></th></tr>"
                f"{''.join(rows)}</table><p class=muted>{len(nodes)} answered: "
                f"{html.escape(', '.join(nodes)) or 'none'}</p></section>")


def stage_of(task_name: str, routes: dict[str, Any]) -> str:
    route = routes.get(task_name)
    return str(route["queue"]) if route else "other"
