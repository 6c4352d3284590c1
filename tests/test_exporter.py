"""`soniquebay exporter` serves the fleet's metrics from the broker and PostgreSQL: they move as a scan runs, and a
queue that no worker consumes shows its backlog and its missing workers, on /metrics and on the operator's page
(/dashboard)."""
from __future__ import annotations

import html
import json
import re
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_factory import make_library
from tests.services import VENV_BIN, _port_open, free_port, wait_for
from worker_app.limits import QUEUES

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def exporter(stack):
    port = free_port()
    # The analysis backlog read at every scrape here (a minute apart by default).
    process = subprocess.Popen([str(VENV_BIN / "soniquebay"), "exporter", "--port", str(port), "--bind",
                                "127.0.0.1", "--analysis-refresh", "0"], env=stack.cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _port_open(port) or process.poll() is not None, 30, "the exporter to listen")
        assert process.poll() is None, process.stdout.read()
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def dashboard(metrics_url: str) -> str:
    """The operator's page, as a browser gets it."""
    with urllib.request.urlopen(metrics_url.replace("/metrics", "/dashboard"), timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        return response.read().decode()


def page_text(page: str) -> str:
    """What the page says, tags removed, one space between words."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def scrape_when(url: str, condition) -> dict | None:
    metrics = scrape(url)
    return metrics if condition(metrics) else None


def value(metrics: dict, name: str, **labels) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def total(metrics: dict, name: str, task: str) -> float:
    """A task metric summed over its other labels (hostname...)."""
    return sum(v for (sample, labels), v in metrics.items() if sample == name and ("name", task) in labels)


def scan_info(metrics: dict, scan_id: int) -> dict[str, str] | None:
    """The labels of a scan shown in the metrics (other tests may leave scans running: they are shown too)."""
    infos = [dict(labels) for (name, labels) in metrics
             if name == "soniquebay_scan_info" and ("scan_id", str(scan_id)) in labels]
    return infos[0] if infos else None


@pytest.fixture
def forget_afterwards(db_session_factory):
    """Libraries whose tracks (and the artists only they use) leave the shared catalogue after the test: their
    artists' names recur in other tests' libraries, with other MusicBrainz ids."""
    roots: list[str] = []
    yield roots.append
    from tests.catalogue import forget_library

    with db_session_factory() as session, session.begin():
        for root in roots:
            forget_library(session, root)


def test_the_metrics_move_as_a_scan_runs(stack, library_root, exporter, forget_afterwards):
    # The workers answer the control broadcast once they are ready (supervisor calls them RUNNING a little before).
    before = wait_for(lambda: scrape_when(exporter, lambda m: value(m, "celery_workers") == 5), 60,
                      "the five worker programs to answer", interval=0.5)
    for source in ("broker", "workers", "postgresql"):
        assert value(before, "soniquebay_exporter_source_up", source=source) == 1, source
    assert value(before, "soniquebay_exporter_events_connected") == 1
    for queue in QUEUES:
        assert value(before, "celery_active_worker_count", queue_name=queue) == 1, queue
        assert value(before, "celery_queue_length", queue_name=queue) is not None, queue
    complete_before = value(before, "soniquebay_scans", status="complete") or 0
    from worker_app.settings import get_settings

    assert value(before, "soniquebay_backlog_bound", queues="extract") == get_settings().extract_backlog
    assert value(before, "soniquebay_backlog_bound", queues="batch+insert") == get_settings().insert_backlog

    forget_afterwards(str(library_root / "exporter-moves"))
    library = make_library(library_root / "exporter-moves", n_files=60, seed=901, odd_file_names=False,
                           corrupt=False)
    result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300")
    summary = json.loads(result.stdout)

    after = scrape(exporter)
    assert value(after, "soniquebay_scans", status="complete") == complete_before + 1
    scan = scan_info(after, summary["scan_id"])
    assert scan == {"scan_id": str(summary["scan_id"]), "root": summary["root"], "status": "complete"}, scan
    assert scan_info(before, summary["scan_id"]) is None
    labels = {"scan_id": scan["scan_id"], "root": scan["root"]}
    assert value(after, "soniquebay_scan_discovered", **labels) == 60
    assert value(after, "soniquebay_scan_inserted", **labels) == summary["inserted"] == 60
    assert value(after, "soniquebay_scan_failed", **labels) == 0
    assert value(after, "soniquebay_scan_files_per_second", **labels) > 0

    # The workers' task events, counted per task name; they arrive a little after the tasks end.
    def every_stage_counted(metrics):
        return all(total(metrics, "celery_task_succeeded_total", name) >= 1
                   and total(metrics, "celery_task_runtime_count", name) >= 1
                   for name in ("scan_directory_chunk", "extract_metadata_batch", "batch_entities",
                                "insert_batch_direct"))

    events = wait_for(lambda: scrape_when(exporter, every_stage_counted), 60, "the task events", interval=0.5)
    assert total(events, "celery_task_sent_total", "extract_metadata_batch") >= 2  # 60 files, 50 a batch
    assert total(events, "celery_task_failed_total", "insert_batch_direct") == 0


def test_a_queue_without_workers_shows_its_backlog(stack, library_root, exporter, forget_afterwards):
    forget_afterwards(str(library_root / "exporter-backlog"))
    library = make_library(library_root / "exporter-backlog", n_files=60, seed=902, odd_file_names=False,
                           corrupt=False)
    stack.supervisor.ctl("stop", stack.supervisor.group("extract"))
    try:
        before = scrape(exporter)
        assert value(before, "celery_active_worker_count", queue_name="extract") == 0
        # Other tests may leave scans under way, with pending units of their own.
        pending_before = value(before, "soniquebay_units_pending", kind="extract")
        started = json.loads(stack.soniquebay("scan", str(library.root), "--json").stdout)

        def backlog():
            metrics = scrape(exporter)
            waiting = value(metrics, "celery_queue_length", queue_name="extract")
            return metrics if waiting and waiting >= 2 else None  # 60 files, 50 a batch: two extract messages

        metrics = wait_for(backlog, 120, "the extract backlog in the metrics", interval=0.5)
        assert value(metrics, "soniquebay_units_pending", kind="extract") >= pending_before + 2
        assert value(metrics, "soniquebay_scans", status="running") >= 1
        assert scan_info(metrics, started["scan_id"])["status"] == "running"
        assert value(metrics, "soniquebay_oldest_pending_unit_age_seconds") > 0
        assert value(metrics, "celery_workers") == 4

        # The operator's page shows the same: this scan (the latest running one) under way with the 60 files it
        # found, the extract backlog against its back-pressure bound, and the extract queue group with no worker.
        page = dashboard(exporter)
        assert '<meta http-equiv="refresh"' in page
        text = page_text(page)
        assert f"Scan {started['scan_id']} · {started['root']} · running" in text, text
        assert "discovered 60 " in text, text
        waiting = int(value(metrics, "celery_queue_length", queue_name="extract"))
        assert re.search(rf"\bextract {waiting} \d+ ", text), text  # the queue, waiting, its bound
        assert "extract 0 no worker" in text, text
        assert "scan 1 ok" in text, text
    finally:
        stack.supervisor.ctl("start", stack.supervisor.group("extract"))
    stack.wait_for_scan(started["scan_id"], timeout=300)
    # The scan is complete; its audio analysis (background units, on the extract queue too) may still be queued.
    after = wait_for(lambda: (lambda m: m if value(m, "celery_queue_length", queue_name="extract") == 0 else None)(
        scrape(exporter)), 120, "the extract queue to drain", interval=0.5)
    assert value(after, "soniquebay_units_pending", kind="extract") == pending_before
    assert value(after, "celery_active_worker_count", queue_name="extract") == 1
    labels = {"scan_id": str(started["scan_id"]), "root": started["root"]}
    assert value(after, "soniquebay_scan_inserted", **labels) == 60


def test_units_retried_after_a_passing_error_are_shown(stack, exporter, running_scan, db_session_factory):
    from sqlalchemy import update

    from worker_app.db.models import ScanUnit

    before = value(scrape(exporter), "soniquebay_units_retrying", kind="insert") or 0
    scan_id = running_scan("/nowhere/exporter-retrying", {"r1": "insert", "r2": "insert"})
    with db_session_factory() as session, session.begin():
        # What UnitTask.on_passing_error records before a retry.
        session.execute(update(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == "r1")
                        .values(last_error="OperationalError: the database system is shutting down"))
    metrics = scrape(exporter)
    assert value(metrics, "soniquebay_units_retrying", kind="insert") == before + 1
    assert scan_info(metrics, scan_id)["status"] == "running"


def test_the_analysis_backlog_counts_the_tracks_without_features(stack, exporter, db_session_factory,
                                                                 forget_afterwards):
    """Tracks written outside a scan (no analysis unit will come for them) are in the backlog the exporter and
    the dashboard show, as `soniquebay analysis` counts it."""
    from tests.test_idempotence import _payload
    from worker_app.pipeline.insert import insert_tracks_batch

    forget_afterwards("/exporter-analysis")
    insert_tracks_batch.apply_async((_payload("/exporter-analysis"),), ignore_result=False).get(timeout=60)

    def backlog() -> int:
        return json.loads(stack.soniquebay("analysis", "--json").stdout)["backlog"]

    def agreed():
        # Other tests' analysis may still be moving the backlog: a scrape between two equal counts of the command.
        before, metrics, after = backlog(), scrape(exporter), backlog()
        shown = value(metrics, "soniquebay_analysis_backlog_tracks")
        return metrics if shown is not None and shown >= 3 and before == shown == after else None

    metrics = wait_for(agreed, 120, "the backlog to match `soniquebay analysis`", interval=1)
    assert value(metrics, "soniquebay_units_pending", kind="analysis") is not None
    assert value(metrics, "soniquebay_analysis_tracks_per_minute") >= 0
    assert re.search(r"Audio analysis: [\d\u202f]+ tracks waiting", page_text(dashboard(exporter)))


def test_a_worker_the_watchdog_killed_is_counted_by_node(stack, exporter):
    """The watchdog sends each kill as an event on the broker (worker_app/monitoring/watchdog.py,
    tests/faults/test_frozen_worker.py shows the kill); the exporter counts it, by node, for the alert."""
    node = "deferred@a-host-of-the-watchdog-test"
    send = [str(VENV_BIN / "python"), "-c",
            "from worker_app.celery_app import app\n"
            "from worker_app.monitoring.watchdog import broker_report\n"
            f"broker_report(app)({node!r}, 4242, 301.0)\n"]
    wait_for(lambda: value(scrape(exporter), "soniquebay_exporter_events_connected") == 1, 60,
             "the exporter to receive events")
    assert value(scrape(exporter), "soniquebay_watchdog_kills_total", node=node) in (None, 0)
    subprocess.run(send, env=stack.cli_env(), check=True, capture_output=True, timeout=120)
    wait_for(lambda: scrape_when(exporter, lambda m: value(m, "soniquebay_watchdog_kills_total", node=node) == 1),
             30, "the kill counted")
