"""`soniquebay`: start a scan and watch it, read a scan's figures and failures, migrate the catalogue."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from worker_app.db.statuses import COUNTS, ENDED, STARTED, ScanStatus
from worker_app.limits import QUEUES
from worker_app.settings import ConfigurationError

if TYPE_CHECKING:
    from worker_app.db.catalogue_queries import TrackRow
    from worker_app.pipeline.scan import ScanStart

stderr = Console(stderr=True)
stdout = Console()

SUMMARY_FIELDS = ("scan_id", "root", "status", "discovered", "unchanged", "extracted", "inserted", "failed",
                  "removed", "seconds", "error")


def _fail(message: str, code: int = 2) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _progress(scan_id: int) -> dict[str, Any]:
    from worker_app.db.session import transaction
    from worker_app.pipeline.ledger import progress

    with transaction() as session:
        return progress(session, scan_id)


def _latest_scan_id() -> int:
    from sqlalchemy import func, select

    from worker_app.db.models import Scan
    from worker_app.db.session import transaction

    with transaction() as session:
        scan_id = session.execute(select(func.max(Scan.id))).scalar()
    if scan_id is None:
        _fail("no scan has been run yet")
    return scan_id


class ReportingGroup(click.Group):
    """Turns an unreachable service or a bad setting into one line that says which, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except ConfigurationError as error:
            _fail(f"configuration: {error}")
        except OperationalError as error:
            _fail(f"cannot reach the catalogue database: {str(error.orig).strip().splitlines()[0]}", 3)


@click.group(cls=ReportingGroup)
def main() -> None:
    """SoniqueBay Fleet: catalogue a music library into PostgreSQL with Celery workers."""
    # Every command reads with the reader role (worker_app/db/privileges.py) unless it says otherwise below:
    # scan, cancel, db load and the scheduler write as the operator, the migrations as the owner.
    _connect_as("reader")


def _connect_as(duty: str | None) -> None:
    from worker_app.db.duty import use_duty

    use_duty(duty)


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--wait", is_flag=True, help="Show a live progress bar and exit when the scan is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on standard output.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--no-worker-grace", type=float, default=30.0, show_default=True,
              help="With --wait: give up waiting when no worker has consumed a queue the scan needs for this long.")
def scan(path: str, wait: bool, as_json: bool, timeout: float | None, no_worker_grace: float) -> None:
    """Scan PATH (a folder or a file inside the library roots) into the catalogue.

    A second scan of a root that is being scanned starts when the first ends (so that it sees every change made
    meanwhile); a scan of a root already queued joins that one. Scans of overlapping roots (a folder and one of
    its subfolders) run side by side: neither removes what the other adds."""
    from worker_app.paths import PathRefused
    from worker_app.pipeline.scan import StartFailed, start_scan

    _connect_as("operator")
    try:
        start = start_scan(path)
    except (PathRefused, ConfigurationError) as refusal:
        _fail(str(refusal))
    except StartFailed as error:
        _fail(f"the scan could not start: {error} (recorded as failed; nothing will start it later)", 3)
    except Exception as error:  # the broker or the database cannot be reached: say which, not a traceback
        _fail(f"cannot start the scan: {type(error).__name__}: {error}", 3)
    _say_how_it_started(start)
    scan_id = start.scan_id
    if not wait:
        summary = _progress(scan_id)
        _print_summary(summary, as_json)
        return
    summary = _watch(scan_id, timeout, no_worker_grace, quiet=as_json and not sys.stderr.isatty())
    _print_summary(summary, as_json)
    if summary["status"] != ScanStatus.COMPLETE:
        code = 4 if summary["status"] == "no worker" else 1
        _fail(summary.get("error") or f"scan {scan_id} ended as {summary['status']}", code)


def _say_how_it_started(start: ScanStart) -> None:
    if start.how == "joined":
        stderr.print(f"scan {start.scan_id} of this root is already queued: following it", highlight=False)
    elif start.how == "queued":
        stderr.print(f"scan {start.after_scan_id} of this root is running: scan {start.scan_id} starts when it "
                     f"ends", highlight=False)
    for other, root in start.beside:
        stderr.print(f"scan {other} of {root} (an overlapping root) is running: both run; neither removes what "
                     f"the other adds", highlight=False)


def _consumed_queues() -> set[str] | None:
    """The pipeline queues some running worker says it consumes; None when that cannot be known (broker down)."""
    from worker_app.celery_app import app

    try:
        replies = app.control.inspect(timeout=2.0).active_queues() or {}
    except Exception:  # noqa: BLE001 - the broker is down: unknown, not "no worker"
        return None
    return {queue["name"] for queues in replies.values() for queue in queues}


def _watch(scan_id: int, timeout: float | None, no_worker_grace: float, quiet: bool) -> dict[str, Any]:
    from sqlalchemy.exc import OperationalError

    started = time.monotonic()
    columns = [
        TextColumn("[bold]scan {task.fields[scan_id]}[/] {task.fields[status]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("found {task.fields[discovered]} · extracted {task.fields[extracted]} · inserted "
                   "{task.fields[inserted]} · failed {task.fields[failed]} · removed {task.fields[removed]} · "
                   "{task.fields[rate]:.0f} files/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    summary: dict[str, Any] = {"scan_id": scan_id, "status": "unknown"}
    database_down_since: float | None = None
    # When each queue was last seen consumed (or the scan last moved, which needs every queue): a worker that is
    # restarting, or too busy to answer within the inspect timeout, does not count as missing at once.
    seen = {queue: started for queue in QUEUES}
    warned: set[str] = set()
    last_figures: tuple[Any, ...] = ()
    next_queue_check = started + min(5.0, no_worker_grace)
    with Progress(*columns, console=stderr, disable=quiet, transient=False) as bar:
        task = bar.add_task("scan", total=None, scan_id=scan_id, status=ScanStatus.QUEUED, discovered=0, extracted=0,
                            inserted=0, failed=0, removed=0, rate=0.0)
        while True:
            now = time.monotonic()
            elapsed = max(now - started, 1e-6)
            try:
                summary = _progress(scan_id)
            except OperationalError as error:
                # The scan goes on without us (its units retry); keep waiting, and say why nothing moves.
                if database_down_since is None:
                    database_down_since = now
                    bar.console.print(f"[yellow]the catalogue database is unreachable "
                                      f"({str(error.orig).strip().splitlines()[0]}): still waiting[/]",
                                      highlight=False)
                bar.update(task, status="db down")
            else:
                if database_down_since is not None:
                    bar.console.print(f"the catalogue database is back after {now - database_down_since:.0f} s",
                                      highlight=False)
                    database_down_since = None
                figures = tuple(summary[name] for name in COUNTS)
                if figures != last_figures:
                    last_figures = figures
                    seen = {queue: now for queue in QUEUES}
                done = summary["unchanged"] + summary["extracted"] + summary["failed"]
                walking = summary["pending_units"].get("chunk", 0) > 0
                bar.update(
                    task, total=None if walking and summary["status"] != ScanStatus.COMPLETE else summary["discovered"],
                    completed=done, status=summary["status"], rate=summary["extracted"] / elapsed,
                    **{k: summary[k] for k in ("discovered", "extracted", "inserted", "failed", "removed")},
                )
                if summary["status"] in ENDED:
                    return summary
            if now >= next_queue_check:
                next_queue_check = now + 5
                consumed = _consumed_queues()
                if consumed is not None:
                    seen.update({queue: now for queue in QUEUES if queue in consumed})
                    idle = [queue for queue in QUEUES if now - seen[queue] >= 5]
                    if idle and set(idle) - warned:
                        warned |= set(idle)
                        bar.console.print(f"[yellow]no worker consumes the queue(s) {', '.join(idle)}: "
                                          f"the scan cannot finish until one does[/]", highlight=False)
                    missing = [queue for queue in QUEUES if now - seen[queue] >= no_worker_grace]
                    if missing:
                        return {**summary, "status": "no worker",
                                "error": f"no worker consumed the queue(s) {', '.join(missing)} for "
                                         f"{no_worker_grace:.0f} s while the scan did not move: scan {scan_id} "
                                         f"stays as it is and goes on when workers run "
                                         f"(`soniquebay status {scan_id}`)"}
            if timeout is not None and elapsed > timeout:
                return {**summary, "status": "timeout",
                        "error": f"scan {scan_id} not complete after {timeout:.0f} s (are the workers running?)"}
            time.sleep(min(0.5, 0.05 + elapsed / 10))  # a small rescan ends within a second: look often at first


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({k: summary.get(k) for k in SUMMARY_FIELDS}))
        return
    table = Table(show_header=False, box=None)
    for key in SUMMARY_FIELDS:
        if summary.get(key) is not None:
            table.add_row(key, str(summary[key]))
    if summary.get("pending_units"):
        table.add_row("pending", ", ".join(f"{n} {k}" for k, n in summary["pending_units"].items()))
    for error, units in (summary.get("retrying") or {}).items():
        table.add_row("retrying", f"{units} unit(s) after {error}")
    if summary.get("after_scan_id") and summary.get("status") == ScanStatus.QUEUED:
        table.add_row("waits for", f"scan {summary['after_scan_id']} (same root) to end")
    stdout.print(table)


@main.command()
@click.argument("scan_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(scan_id: int | None, as_json: bool) -> None:
    """Show the figures of SCAN_ID (the latest scan by default)."""
    scan_id = scan_id or _latest_scan_id()
    try:
        summary = _progress(scan_id)
    except LookupError as error:
        _fail(str(error))
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary, False)


@main.command()
@click.argument("scan_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled scan's figures as JSON.")
def cancel(scan_id: int | None, as_json: bool) -> None:
    """Stop SCAN_ID (the latest running scan by default): its pending units are dropped, running ones stop at their
    next unit, what was catalogued stays, and nothing is swept or deleted. Its status becomes `cancelled`."""
    from sqlalchemy import func, select

    from worker_app.db.models import Scan
    from worker_app.db.session import transaction
    from worker_app.pipeline.ledger import cancel_scan
    from worker_app.pipeline.scan import start_queued_after

    _connect_as("operator")
    with transaction() as session:
        if scan_id is None:
            scan_id = session.execute(
                select(func.max(Scan.id)).where(Scan.status.in_(STARTED))
            ).scalar()
            if scan_id is None:
                _fail("no scan is running (give a SCAN_ID to cancel a queued one)", 1)
        try:
            outcome = cancel_scan(session, scan_id)
        except LookupError as error:
            _fail(str(error))
    if not outcome.cancelled:
        _fail(f"scan {scan_id} is {outcome.status}: nothing to cancel", 1)
    # A scan of the same root queued behind this one starts now, as it would have after its end.
    started = start_queued_after(scan_id)
    stderr.print(f"scan {scan_id} cancelled ({outcome.status} before; {outcome.dropped} pending units dropped)"
                 + (f"; queued scan(s) {', '.join(map(str, started))} started" if started else ""), highlight=False,
                 soft_wrap=True)
    _print_summary(_progress(scan_id), as_json)


@main.command()
@click.argument("scan_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the failures as a JSON list.")
def failures(scan_id: int | None, as_json: bool) -> None:
    """List the files (and folders) SCAN_ID could not catalogue, each with its reason."""
    from sqlalchemy import select

    from worker_app.db.models import ScanFailure
    from worker_app.db.session import transaction

    scan_id = scan_id or _latest_scan_id()
    with transaction() as session:
        rows = session.execute(
            select(ScanFailure.path, ScanFailure.stage, ScanFailure.kind, ScanFailure.reason)
            .where(ScanFailure.scan_id == scan_id).order_by(ScanFailure.path)
        ).all()
    if as_json:
        click.echo(json.dumps([{"path": p, "stage": s, "kind": k, "reason": r} for p, s, k, r in rows]))
        return
    # kind: "verdict" (the content; not read again while the file is unchanged) or "passing" (read again next scan)
    table = Table("path", "stage", "kind", "reason", title=f"scan {scan_id}: {len(rows)} failures")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Give up after this many seconds.")
def tags(path: str, as_json: bool, timeout: float) -> None:
    """Show what the extract workers read in PATH (a file inside the library roots): the record the catalogue
    would hold, or why the file cannot be catalogued. A worker reads it, with the readers and versions that scans
    use, on a host that has the library."""
    from worker_app.paths import PathRefused, resolve_scan_path
    from worker_app.pipeline.extract import extract_single_file
    from worker_app.settings import get_settings

    try:
        real, _ = resolve_scan_path(path, get_settings().library_roots)
    except (PathRefused, ConfigurationError) as refusal:
        _fail(str(refusal))
    try:
        answer = extract_single_file.apply_async((real,), ignore_result=False).get(timeout=timeout)
    except Exception as error:  # no worker answered, or the broker cannot be reached: say which
        _fail(f"no answer from the extract workers: {type(error).__name__}: {error}", 3)
    if as_json:
        click.echo(json.dumps(answer))
    elif "error" in answer:
        stdout.print(f"{answer['path']}: cannot be catalogued: {answer['error']}")
    else:
        record = {key: value for key, value in answer["record"].items() if value not in (None, [], {})}
        if record.get("cover"):
            record["cover"] = {key: value for key, value in record["cover"].items() if key != "data"}
        table = Table(show_header=False, box=None, title=answer["path"])
        for key, value in record.items():
            table.add_row(key, str(value))
        stdout.print(table)
    if "error" in answer:
        sys.exit(1)


@main.command()
@click.option("--port", type=int, default=9808, show_default=True, help="TCP port to serve /metrics on.")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (the monitor host's fleet address: the metrics name the library's folders).")
@click.option("--analysis-refresh", type=float, default=None, metavar="SECONDS",
              help="Read the audio analysis backlog (a count over the whole catalogue) at most this often "
                   "[default: 60].")
def exporter(port: int, bind: str, analysis_refresh: float | None) -> None:
    """Serve Prometheus metrics on /metrics: queue depths, workers per queue, the current scan's figures, scans
    by status, pending and retrying units, the audio analysis backlog. One per fleet; read at each scrape from the
    broker and PostgreSQL."""
    import logging

    from worker_app.monitoring.exporter import serve
    from worker_app.settings import get_settings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from worker_app.monitoring.exporter import ANALYSIS_REFRESH_SECONDS

    get_settings()  # a bad setting fails here, in one line (ReportingGroup), not at the first scrape
    serve(port, bind, ANALYSIS_REFRESH_SECONDS if analysis_refresh is None else analysis_refresh)


@main.command()
@click.argument("nodes", nargs=-1, required=True)
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Kill a worker that answered no ping for this many seconds while the broker answers.")
def watchdog(nodes: tuple[str, ...], timeout: float) -> None:
    """Supervisor event listener (events PROCESS_STATE,TICK_5): ping this host's workers, named as on their
    command line (e.g. extract@%h), and kill the process group of one that stopped answering, so that supervisor
    starts it again (worker_app/monitoring/watchdog.py); each kill is sent as an event the exporter counts. Logs go
    to standard error: standard output is supervisor's."""
    import logging

    from celery.utils.nodenames import host_format

    from worker_app.celery_app import app
    from worker_app.monitoring.watchdog import Watchdog, broker_ping, broker_report, listen

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(__name__).info("watching %s: a worker silent for %d s is killed", ", ".join(nodes), timeout)
    listen(Watchdog(nodes, timeout, broker_ping(app), supervisord=os.getppid(), expand=host_format,
                    report=broker_report(app)))


@main.command()
def scheduler() -> None:
    """Run the scheduled rescans of SONIQUEBAY_SCAN_SCHEDULES (one scheduler per fleet, on the monitor host): each
    root is scanned at the times of its cron expression; a run that finds a scan of its root queued or under way
    is skipped. The state is in the catalogue: a restart neither misses nor doubles a run."""
    import logging
    from zoneinfo import ZoneInfo

    from worker_app.scheduling.scheduler import Run, run_forever
    from worker_app.settings import get_settings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _connect_as("operator")
    settings = get_settings()
    zone = ZoneInfo(settings.timezone)
    for root, expression in settings.scan_schedules:
        logging.info("schedule %s: %r (%s)", root, expression, settings.timezone)
    if not settings.scan_schedules:
        logging.info("no schedule configured (SONIQUEBAY_SCAN_SCHEDULES): idle")

    def report(run: Run) -> None:
        scan = f" scan {run.scan_id}" if run.scan_id is not None else ""
        logging.info("run of %s due at %s: %s%s%s", run.root, run.due_at.astimezone(zone).isoformat(), run.outcome,
                     scan, f" ({run.detail})" if run.detail else "")

    run_forever(settings.scan_schedules, zone, report=report)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as a JSON list.")
def schedule(as_json: bool) -> None:
    """List the scheduled rescans: each root's cron expression, next run, last run and its scan."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from worker_app.scheduling.scheduler import listing
    from worker_app.settings import get_settings

    settings = get_settings()
    zone = ZoneInfo(settings.timezone)
    rows = listing(settings.scan_schedules, datetime.now(UTC), zone)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("root", "cron", "next run", "last run", "last outcome", "last scan", "runs (skipped)",
                  title=f"scheduled rescans ({settings.timezone})")
    for row in rows:
        last_scan = (f"{row['last_scan_id']} ({row['last_scan_status']})" if row["last_scan_id"] is not None
                     else "")
        table.add_row(row["root"], row["expression"] or "",
                      row["next_run_at"] or "not configured", row["last_run_at"] or "never",
                      row["last_outcome"] or "", last_scan, f"{row['runs']} ({row['skipped']})")
    stdout.print(table)


@main.group()
def db() -> None:
    """The catalogue's schema."""


def _log_migrations() -> None:
    """Alembic's "Running upgrade" lines and the retries' (worker_app.migrate) on standard error."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@db.command()
def upgrade() -> None:
    """Apply every Alembic migration not yet applied (safe while the workers run: see docs/deploy.md)."""
    from worker_app.db.migrate import current_revision
    from worker_app.db.migrate import upgrade as run_upgrade

    _connect_as(None)
    _log_migrations()
    retries = run_upgrade()
    click.echo(f"catalogue at revision {current_revision()}" + (f" ({retries} retries)" if retries else ""))


@db.command()
def grant() -> None:
    """Give each duty's role exactly its privileges (worker_app/db/privileges.py), as the owner. `db upgrade` does
    it after every migration; this is for a role created after the last upgrade. Prints what it did as JSON."""
    from worker_app.db.migrate import apply_grants

    _connect_as(None)
    click.echo(json.dumps(dataclasses.asdict(apply_grants())))


@db.command(context_settings={"ignore_unknown_options": True})  # "-1" is a revision, not an option
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Undo migrations down to REVISION ("-1": the latest one). Workers of this release refuse to start after."""
    from worker_app.db.migrate import current_revision
    from worker_app.db.migrate import downgrade as run_downgrade

    _connect_as(None)
    _log_migrations()
    run_downgrade(revision)
    click.echo(f"catalogue at revision {current_revision()}")


@db.command()
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Give up waiting after this long.")
def orphans(timeout: float) -> None:
    """Delete every album, artist and cover no track uses, wherever it is in the catalogue (a deferred worker
    checks every row: the end of each scan removes only those its own changes left, so run this once after an
    upgrade to a release with orphan candidates, or after editing the catalogue by hand)."""
    from worker_app.pipeline.deferred import cleanup_orphans

    try:
        deleted = cleanup_orphans.apply_async(ignore_result=False).get(timeout=timeout)
    except Exception as error:  # no worker answered, or the broker cannot be reached: say which
        _fail(f"no answer from the deferred workers: {type(error).__name__}: {error}", 3)
    click.echo(json.dumps(deleted))


@db.command()
@click.option("--all", "every_track", is_flag=True, help="Every track, not only those without a vector.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Give up when the deferred workers have not answered one batch after this long.")
def reindex(every_track: bool, timeout: float) -> None:
    """Build full-text search vectors again on the deferred workers (`vectorize_tracks`): for the tracks without
    one (written by a release whose `db load` left them out), or with --all for every track (after a change to
    worker_app/db/search_vector.py). A scan writes each track's vector with the track. Prints the count."""
    from worker_app.pipeline.deferred import tracks_to_vectorize, vectorize_tracks

    in_flight: list[Any] = []
    rebuilt = 0
    try:
        for ids in tracks_to_vectorize(every_track):
            in_flight.append(vectorize_tracks.apply_async((None, None, ids), ignore_result=False))
            if len(in_flight) >= 4:  # a few batches queued at a time, not the whole catalogue
                rebuilt += in_flight.pop(0).get(timeout=timeout)["tracks"]
        for pending in in_flight:
            rebuilt += pending.get(timeout=timeout)["tracks"]
    except Exception as error:  # no worker answered, or the broker cannot be reached: say which
        _fail(f"no answer from the deferred workers: {type(error).__name__}: {error}", 3)
    click.echo(json.dumps({"tracks": rebuilt}))


@db.command()
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Give up when the insert workers have not answered one message after this long.")
def load(source: Any, as_json: bool, timeout: float) -> None:
    """Put records into the catalogue without a scan: SOURCE ("-" for standard input) holds what `soniquebay tags
    --json` prints, one answer a line (or a JSON list of answers or records). The insert workers write covers,
    artists, albums, then tracks, as a scan's batch stage groups them; files under no library root are refused.
    The pictures wait in PostgreSQL (staged as the operator's database role: run it where `soniquebay scan`
    runs), so no message carries one. Exit 1 when an entry was refused, else 0 (unreadable files' answers are
    counted, not loaded); 3 when the workers did not load them or a record is too large for a message."""
    from worker_app.pipeline.load import load as load_records
    from worker_app.pipeline.load import read_entries
    from worker_app.settings import get_settings

    # It stages the records' pictures for the insert workers (staged_covers): the operator's writing duty.
    _connect_as("operator")
    try:
        entries = read_entries(source.read())
    except ValueError as error:
        _fail(f"{source.name}: not JSON records: {error}")
    roots = get_settings().library_roots
    try:
        report = load_records(entries, roots, timeout=timeout)
    except Exception as error:  # no worker answered, the broker is unreachable, or a task failed: say which
        _fail(f"the insert workers did not load the records: {type(error).__name__}: {error}", 3)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"loaded {report.tracks} tracks, {report.albums} albums, {report.artists} artists, "
                   f"{report.covers} covers; {len(report.unreadable)} unreadable files skipped")
        for what, why in report.refused:
            stderr.print(f"refused {what}: {why}", highlight=False, soft_wrap=True)
    if report.refused:
        sys.exit(1)


@db.command()
def current() -> None:
    """Print the schema's revision and the latest one this version knows."""
    from worker_app.db.migrate import current_revision, head_revision

    click.echo(json.dumps({"current": current_revision(), "head": head_revision()}))


# ---------------------------------------------------------------- audio analysis


FEATURE_ROWS = (
    ("bpm", "tempo (BPM)"), ("beat_confidence", "beat confidence"), ("key", "key"), ("scale", "scale"),
    ("camelot", "Camelot"), ("key_strength", "key strength"), ("danceability", "danceability"),
    ("energy", "energy"), ("loudness_lufs", "loudness (LUFS)"), ("sample_peak", "sample peak"),
    ("track_gain_db", "track gain (dB, -18 LUFS)"), ("spectral_centroid_hz", "spectral centroid (Hz)"),
    ("spectral_rolloff_hz", "spectral roll-off (Hz)"), ("spectral_flatness", "spectral flatness"),
    ("zero_crossing_rate", "zero-crossing rate"), ("duration_seconds", "duration (s)"),
    ("analysis_version", "analysis version"), ("analysed_at", "analysed at"), ("error", "error"),
)


def _analyse_here(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Features and tag features of a file that is not in the catalogue, measured by this process."""
    import os

    from worker_app.analysis.decode import DecodeError
    from worker_app.analysis.track import analyse
    from worker_app.metadata.reader import read_track
    from worker_app.metadata.record import UnreadableFileError

    if not os.path.isfile(path):
        _fail(f"{path} is neither a catalogued track nor a file")
    try:
        record = read_track(path)
        channels, duration = record.channels, record.duration_seconds
        tags = {"genre": record.genres[0] if record.genres else None, "year": record.year,
                "duration_seconds": record.duration_seconds}
    except UnreadableFileError:
        channels = duration = None
        tags = {}
    try:
        features = analyse(path, channels=channels, duration=duration)
    except DecodeError as error:
        _fail(f"cannot analyse {path}: {error.reason}", 1)
    return features, tags


@main.command()
@click.argument("path_or_track_id")
@click.option("--json", "as_json", is_flag=True, help="Print the features as JSON.")
def features(path_or_track_id: str, as_json: bool) -> None:
    """Show the audio features of a track (a catalogue id or a file name). A file the catalogue does not hold,
    or holds without features yet, is analysed on the spot."""
    from worker_app.db.session import transaction
    from worker_app.pipeline.analysis import find_track, stored_features

    with transaction() as session:
        track_id = find_track(session, path_or_track_id)
        found = stored_features(session, track_id) if track_id is not None else None
    if found is None:
        found, _ = _analyse_here(path_or_track_id)
        found = {"track_id": track_id, "stored": False, **found}
    else:
        found["stored"] = True
    if as_json:
        click.echo(json.dumps(found))
        return
    table = Table(show_header=False, box=None, title=f"track {track_id}" if track_id else path_or_track_id)
    for name, label in FEATURE_ROWS:
        if found.get(name) is not None:
            table.add_row(label, str(found[name]))
    stdout.print(table)


@main.command()
@click.argument("path_or_track_id")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many tracks to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the tracks as a JSON list.")
def similar(path_or_track_id: str, count: int, as_json: bool) -> None:
    """List the tracks that sound most like a track (a catalogue id or a file name), nearest first."""
    from worker_app.analysis.vector import build
    from worker_app.db.models import TrackVector
    from worker_app.db.session import transaction
    from worker_app.pipeline.analysis import find_track, nearest

    with transaction() as session:
        track_id = find_track(session, path_or_track_id)
        stored = session.get(TrackVector, track_id) if track_id is not None else None
        embedding = stored.embedding if stored is not None else None
    if embedding is None:
        if track_id is not None and not _is_file(path_or_track_id):
            _fail(f"track {track_id} has no similarity vector yet (not analysed, or its analysis failed)", 1)
        embedding = build(*_analyse_here(path_or_track_id))
    with transaction() as session:
        rows = nearest(session, embedding, count, exclude=track_id)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("distance", "track", "artist", "title", "path", title=f"like {path_or_track_id}")
    for row in rows:
        table.add_row(f"{row['distance']:.3f}", str(row["track_id"]), row["artist"] or "", row["title"] or "",
                      row["path"])
    stdout.print(table)


def _is_file(path: str) -> bool:
    import os

    return os.path.isfile(path)


@main.command()
@click.argument("scan_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--fill-sketches", is_flag=True,
              help="First give the similarity sketch to stored vectors that lack it (written by a worker of a "
                   "release before it), so that `similar` finds their tracks. Writes as the catalogue's "
                   "database role: run it on an insert or deferred host.")
@click.option("--queue-backlog", "queue_limit", type=click.IntRange(min=1), metavar="N",
              help="First queue the analysis of up to N tracks of the backlog, oldest first, on the extract "
                   "workers (after every waiting tag read). While analysis is on the deferred workers drain the "
                   "backlog by themselves (SONIQUEBAY_ANALYSIS_BACKLOG_INTERVAL); this queues at once, e.g. a "
                   "folder with --under, or with the drain turned off. Tracks still queued are counted in "
                   "`backlog`.")
@click.option("--under", "folder", type=click.Path(), metavar="FOLDER",
              help="With --queue-backlog: only tracks under FOLDER (a library root, or a folder inside one).")
def analysis(scan_id: int | None, as_json: bool, fill_sketches: bool, queue_limit: int | None,
             folder: str | None) -> None:
    """The audio analysis backlog (tracks not yet analysed for their current file), the tracks analysed and
    failed at the current analysis version, the rate over the last 10 minutes, the vectors without a sketch
    (`similar` cannot find those tracks: --fill-sketches), where the deferred workers' periodic drain of the backlog
    has got to, and for SCAN_ID (the latest scan by default) how many of
    its tracks were analysed and how many failed."""
    import os

    from worker_app.db.session import transaction
    from worker_app.pipeline.analysis import (
        analysis_status,
        drain_position,
        fill_missing_sketches,
        queue_backlog,
        scan_analysis,
        vectors_without_sketch,
    )

    queued = None
    if queue_limit is not None:
        queued = 0
        try:
            under = os.path.abspath(folder) if folder is not None else None
            for ids in queue_backlog(queue_limit, under):
                queued += len(ids)
        except Exception as error:  # the broker cannot be reached: say so, with what was queued before
            _fail(f"queued {queued} tracks, then could not reach the broker: {type(error).__name__}: {error}", 3)
    filled = None
    if fill_sketches:
        _connect_as("catalogue")  # it writes track_vectors, which only the catalogue's role may (an insert host's)
        with transaction() as session:
            filled = fill_missing_sketches(session)
    with transaction() as session:
        figures = analysis_status(session)
        figures["vectors_without_sketch"] = vectors_without_sketch(session)
        figures["drain"] = drain_position(session)
    if filled is not None:
        figures["sketches_filled"] = filled
    if queued is not None:
        figures["queued"] = queued
    scan_id = scan_id or _latest_scan_id()
    with transaction() as session:
        figures["scan"] = scan_analysis(session, scan_id)
    if as_json:
        click.echo(json.dumps(figures))
        return
    table = Table(show_header=False, box=None)
    for key in ("tracks", "backlog", "queued", "analysed", "failed", "vectors", "vectors_without_sketch",
                "sketches_filled", "rate_per_minute", "analysis_version"):
        if key in figures:
            table.add_row(key.replace("_", " "), str(figures[key]))
    drain = figures["drain"]
    table.add_row("drain", "not started" if drain is None else
                  f"after track {drain['after_id']}, last round ended {drain['round_ended_at'] or 'never'}")
    scan = figures["scan"]
    table.add_row(f"scan {scan_id}", f"{scan['analysed']} analysed, {scan['failed']} failed "
                                     f"(soniquebay failures {scan_id}), {scan['pending_batches']} batches pending")
    stdout.print(table)


# ------------------------------------------------------------------ reading the catalogue


def _print_tracks(rows: list[TrackRow], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table("track", "artist", "album", "disc", "no.", "title", "path", title=title)
    for row in rows:
        table.add_row(str(row.id), row.artist or "", row.album or "", str(row.disc_number or ""),
                      str(row.track_number or ""), row.title or "", row.path)
    stdout.print(table)


@main.command()
@click.argument("words", nargs=-1, required=True)
@click.option("-n", "count", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many tracks to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the tracks as a JSON list.")
def search(words: tuple[str, ...], count: int, as_json: bool) -> None:
    """Find tracks by words of their title, artists, album or genres ("beat*": words that start with "beat")."""
    from worker_app.db import catalogue_queries
    from worker_app.db.session import transaction

    with transaction() as session:
        rows = catalogue_queries.search(session, " ".join(words), count)
    _print_tracks(rows, as_json, f"search: {' '.join(words)}")


@main.command()
@click.option("-n", "count", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many tracks to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the tracks as a JSON list.")
def recent(count: int, as_json: bool) -> None:
    """The tracks catalogued last, newest first."""
    from worker_app.db import catalogue_queries
    from worker_app.db.session import transaction

    with transaction() as session:
        rows = catalogue_queries.recently_added(session, count)
    _print_tracks(rows, as_json, "recently added")


@main.command()
@click.option("--album", "album_id", type=int, help="An album's tracks, in disc and track order.")
@click.option("--folder", type=click.Path(file_okay=False), help="The tracks of one folder (not below it).")
@click.option("--artist", "artist_id", type=int, help="An artist's albums (as album artist).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
def browse(album_id: int | None, folder: str | None, artist_id: int | None, as_json: bool) -> None:
    """List an album's tracks, a folder's tracks or an artist's albums."""
    from worker_app.db import catalogue_queries
    from worker_app.db.session import transaction

    if [album_id, folder, artist_id].count(None) != 2:
        _fail("give exactly one of --album, --folder and --artist")
    with transaction() as session:
        if artist_id is not None:
            albums = catalogue_queries.artist_albums(session, artist_id)
        elif album_id is not None:
            rows = catalogue_queries.album_tracks(session, album_id)
        else:
            rows = catalogue_queries.folder_tracks(session, str(folder))
    if artist_id is None:
        _print_tracks(rows, as_json, f"album {album_id}" if album_id is not None else str(folder))
    elif as_json:
        click.echo(json.dumps(albums))
    else:
        table = Table("album", "year", "title", title=f"albums of artist {artist_id}")
        for album in albums:
            table.add_row(str(album["id"]), str(album["year"] or ""), album["title"])
        stdout.print(table)
