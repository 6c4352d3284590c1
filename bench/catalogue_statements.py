"""The pipeline's statements on the 1,000,000-track catalogue of bench/catalogue.py, each EXPLAINed as it is sent.

The real worker_app functions run (a 200-track unit staged, batched and inserted, its follow-ups, the end of a scan
of one artist's folder and of the whole library, the orphan sweep, and the periodic work: retention, the
stalled-scan check, the relay, the exporter's scrape, the analysis backlog's drain) on one connection inside a
transaction that is rolled back at the end, so each sees the same catalogue and leaves it as it was. A
``before_cursor_execute`` listener catches every statement they send and, just before it runs, runs ``EXPLAIN
(ANALYZE, BUFFERS, FORMAT JSON)`` of it with its parameters inside a savepoint rolled back at once (ANALYZE executes
the DML): the plan is the one PostgreSQL uses on the rows the statement really meets, and no SQL is copied here.
Each statement is recorded with the function that sent it, its code location, its scan nodes (Seq Scan vs Index Scan
on which table or index), the rows they examined, its execution time and the time of the triggers it fired (the
foreign keys' checks and cascades, whose own plans EXPLAIN does not show). A Seq Scan over a table of at least
``BIG_TABLE`` rows, or a statement examining that many, is flagged: its cost follows the catalogue.
"""
from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parent.parent
WORKER_APP = str(REPO / "worker_app")
# A scan node over a table this big, or a statement examining this many rows, follows the catalogue, not the unit.
BIG_TABLE = 100_000
UNIT_TRACKS = 200
DML = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
SCAN_NODES = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan", "CTE Scan")


def _scan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if plan["Node Type"] in SCAN_NODES and (plan.get("Relation Name") or plan.get("Index Name")):
        yield plan
    for child in plan.get("Plans", []):
        yield from _scan_nodes(child)


def _examined(node: dict[str, Any]) -> int:
    """Rows a scan node read: those it returned and those its filter or recheck threw away, over every loop."""
    per_loop = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0))
    return int(per_loop * node.get("Actual Loops", 1))


def _location() -> str:
    """The innermost worker_app frame that sent the statement (not the session helper)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(WORKER_APP) and not frame.filename.endswith("db/session.py"):
            return f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno} ({frame.name})"
    return "?"


class Recorder:
    """EXPLAINs each statement the engine sends while ``function`` names the worker_app function being run."""

    def __init__(self, sizes: dict[str, float]):
        self.sizes = sizes
        self.function: str | None = None
        self.rows: list[dict[str, Any]] = []

    def before_cursor_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                              executemany: bool) -> None:
        if self.function is None or not DML.match(statement):
            return
        if executemany and isinstance(parameters, (list, tuple)):
            parameters = parameters[0]
        row: dict[str, Any] = {"function": self.function, "location": _location(),
                               "statement": " ".join(statement.split())[:160]}
        with cursor.connection.cursor() as explain:
            explain.execute("SAVEPOINT bench_explain")
            try:
                explain.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                result = explain.fetchone()[0][0]
            except Exception as error:  # recorded, and the statement itself then runs as it would have
                row["error"] = str(error).splitlines()[0]
                result = None
            explain.execute("ROLLBACK TO SAVEPOINT bench_explain")
            explain.execute("RELEASE SAVEPOINT bench_explain")
        if result is not None:
            row.update(self._summary(result))
        self.rows.append(row)

    def _summary(self, result: dict[str, Any]) -> dict[str, Any]:
        plan = result["Plan"]
        scans, flags, examined = [], [], 0
        for node in _scan_nodes(plan):
            relation = node.get("Relation Name") or node.get("CTE Name") or ""
            where = node.get("Index Name")
            rows = _examined(node)
            examined += rows if node["Node Type"] != "Bitmap Index Scan" else 0
            scans.append(node["Node Type"] + (f" on {relation}" if relation else "")
                         + (f" using {where}" if where else "") + f" ({rows})")
            if node["Node Type"] == "Seq Scan" and self.sizes.get(relation, 0) >= BIG_TABLE:
                flags.append(f"Seq Scan over {relation} ({self.sizes[relation]:,.0f} rows)")
        if examined >= BIG_TABLE:
            flags.append(f"examines {examined:,} rows")
        triggers = [f"{t['Trigger Name']} on {t['Relation']}: {t['Calls']} calls {t['Time']:.1f} ms"
                    for t in result.get("Triggers", []) if t.get("Time", 0) >= 0.05]
        return {"top": plan["Node Type"] + (f" on {plan['Relation Name']}" if plan.get("Relation Name") else ""),
                "scans": scans, "rows_examined": examined, "ms": round(result["Execution Time"], 2),
                "triggers": triggers, "flags": flags}

    @contextmanager
    def running(self, function: str | None) -> Iterator[None]:
        """Record what ``function`` sends (None: the bench's own setup, not recorded)."""
        outer, self.function = self.function, function
        try:
            yield
        finally:
            self.function = outer


def _records(folders: list[str], artist: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A unit of UNIT_TRACKS files as the extract stage stages them (pipeline/extract.py): 20 a folder, an album a
    folder, each folder's tracks with one embedded picture, named by its sha256."""
    from hashlib import sha256

    from worker_app.metadata.record import CoverImage, TrackRecord

    records, covers = [], {}
    for folder in folders:
        data = f"picture of {folder}".encode()
        cover = CoverImage(sha256(data).hexdigest(), "image/jpeg", 500, 500, len(data), "embedded", data)
        covers[cover.sha256] = cover
        for number in range(1, 21):
            records.append(TrackRecord(
                path=f"{folder}/{number:02d}.mp3", size_bytes=4_000_001, mtime=1_800_000_000.0, format="mp3",
                codec="mp3", title=f"bench title {number}", artists=[artist], album=f"album of {folder}",
                album_artists=[artist], track_number=number, disc_number=1, year=2020, genres=["bench"],
                duration_seconds=181.0).to_message() | {"cover": cover.sha256, "folder_cover": None})
    return records, covers


def explain_pipeline(url: str, root: str, albums: int, per_folder: int, albums_per_artist: int) -> list[dict[str, Any]]:
    """Run the pipeline's functions on the filled catalogue at ``url``, whose folders are under the library root
    ``root``, EXPLAIN each statement they send, roll everything back; returns one row per statement."""
    import worker_app.db.session as session_module
    from worker_app.db.models import Scan, ScanFolder
    from worker_app.monitoring.exporter import FleetCollector
    from worker_app.pipeline import analysis, deferred, relay, retention, stalls
    from worker_app.pipeline.backpressure import EXTRACT_FEED, bound_of
    from worker_app.pipeline.batch import payload_of
    from worker_app.pipeline.insert import _write_unit
    from worker_app.pipeline.ledger import Unit, register_units
    from worker_app.pipeline.scan import FoundFile, Listing, _commit_listing
    from worker_app.pipeline.staging import read_extracted, stage_extracted, stage_payload, take_payload
    from worker_app.settings import get_settings

    engine = create_engine(url)
    connection = engine.connect()
    outer = connection.begin()
    sizes = {name: float(rows) for name, rows in connection.execute(text(
        "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"))}
    recorder = Recorder(sizes)
    event.listen(engine, "before_cursor_execute", recorder.before_cursor_execute)

    # Every worker_app transaction() becomes a savepoint of this connection's transaction: what a function
    # commits stays visible to the next one, and all of it goes with the final rollback.
    def joined_session(_engine: Any) -> Session:
        return Session(bind=connection, join_transaction_mode="create_savepoint")

    original_session = session_module.Session
    session_module.Session = joined_session
    try:
        session = joined_session(None)
        # One artist's folders (the catalogue's layout, bench/catalogue.py), and UNIT_TRACKS / per_folder new
        # folders beside them: the unit rescans half its folders (changed files) and adds the rest.
        artist = 7
        first_album = (artist - 1) * albums_per_artist + 1
        artist_folders = [f"{root}/{artist}/{album}" for album in range(first_album, first_album + albums_per_artist)]
        unit_folders = (artist_folders[:UNIT_TRACKS // per_folder // 2]
                        + [f"{root}/{artist}/new-{n}" for n in range(UNIT_TRACKS // per_folder // 2)])
        artist_name = session.execute(text("SELECT name FROM artists WHERE id = :id"), {"id": artist}).scalar()
        records, covers = _records(unit_folders, artist_name)
        now = datetime.now(UTC)
        scan_id = session.execute(insert(Scan).values(root=f"{root}/{artist}", status="running", started_at=now)
                                  .returning(Scan.id)).scalar_one()
        key, chunk = "bench/0", "bench/chunk"
        register_units(session, scan_id, "", [Unit(key, "extract", "extract_metadata_batch", [scan_id, key]),
                                              Unit(chunk, "chunk", "scan_directory_chunk", [scan_id, chunk])])
        # A listing of the artist's last ten folders: in each, one file changed (to extract again) and the broken
        # file gone; in the last, one file gone (a cleanup unit).
        listed = artist_folders[-10:]
        gone = f"{listed[-1]}/{per_folder:02d}.mp3"
        listing = Listing(listed_folders=listed, files=[
            FoundFile(f"{folder}/{number:02d}.mp3", folder, 4_000_000 + (number == 1), 1_700_000_000.0)
            for folder in listed for number in range(1, per_folder + 1) if f"{folder}/{number:02d}.mp3" != gone])
        # On disk: the unit's files (changed since they were catalogued, or new) and the listed folders' files but
        # the one gone. The insert stage believes a record of a catalogued file only if the file changed on disk,
        # and a cleanup removes a track only once its file or folder is gone (deferred.verify_gone).
        on_disk = [f"{folder}/{number:02d}.mp3" for folder in dict.fromkeys(unit_folders + listed)
                   for number in range(1, per_folder + 1)]
        for path in on_disk:
            if path == gone:
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Path(path).touch()
        # What the analysis measured for every track but the unit's: the follow-ups read and write beside it.
        session.execute(text(
            "INSERT INTO audio_features (track_id, analysis_version, size_bytes, mtime, duration_seconds, "
            "loudness_lufs, sample_peak) SELECT id, :version, size_bytes, mtime, duration_seconds, "
            "-20 + 10 * random(), random() FROM tracks"), {"version": analysis.ANALYSIS_VERSION})
        # The ledger of past scans of the whole library, one every other day, kept for the retention (30 days by
        # default; the oldest is past it): their units and failure records, as the statements on the ledger meet
        # them on a library of this size (a unit per 200 files, chunks and follow-ups: about 4 per 200 files).
        session.execute(text(
            "WITH past AS (INSERT INTO scans (root, status, requested_at, started_at, finished_at) "
            "SELECT :root, 'complete', now() - make_interval(days => d), now() - make_interval(days => d), "
            "now() - make_interval(days => d) FROM generate_series(1, 31, 2) d RETURNING id) "
            "INSERT INTO scan_units (scan_id, key, kind, state, updated_at) SELECT past.id, 'past/' || g, "
            "'extract', 'done', now() FROM past, generate_series(1, :units) g"),
            {"root": root, "units": max(1, albums * per_folder // UNIT_TRACKS * 4)})
        session.execute(text(
            "INSERT INTO scan_failures (scan_id, path, stage, reason, kind) SELECT scan_id, key, 'extract', "
            "'bench', 'verdict' FROM scan_units WHERE key LIKE 'past/%' AND right(key, 2) = '00'"))
        # A file that could not be catalogued in every folder (1 in 21 files: a library in a bad state).
        session.execute(text(
            "INSERT INTO failed_files (path, folder, size_bytes, mtime, stage, reason) SELECT folder || "
            "'/broken.mp3', folder, 1, 1700000000, 'extract', 'bench' FROM (SELECT DISTINCT folder FROM tracks) f"))
        for table in ("audio_features", "scans", "scan_units", "scan_failures", "failed_files"):
            session.execute(text(f"ANALYZE {table}"))
        session.flush()
        # What a tick of the drain asks for with the extract queue empty (analysis_backlog.room_for_analysis, whose
        # queue depth comes from a broker Redis that does not run here).
        room_for_analysis = bound_of(EXTRACT_FEED) // 2
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("scan chunk: _commit_listing of 10 folders (10 files changed, 1 gone)",
             lambda: _commit_listing(scan_id, chunk, listing, get_settings().batch_size, now)),
            ("cleanup_removed_files (the file gone)",
             lambda: deferred.cleanup_removed_files.run(scan_id, f"{chunk}/rm", [gone], now.isoformat())),
            ("extract: stage_extracted (200 records, 10 pictures)",
             lambda: stage_extracted(session, scan_id, key, records, [], covers)),
            ("batch: read_extracted + stage_payload",
             lambda: stage_payload(session, scan_id, key, payload_of(read_extracted(session, scan_id, key)))),
            ("insert: take_payload + _write_unit (claim_covers, write_payload of 200 tracks, ledger)",
             lambda: state.update(written=_write_unit(session, scan_id, key, take_payload(session, scan_id, key)[0],
                                                      ("enrich_album_covers", "extract_audio_features_batch")))),
            ("enrich_album_covers (the unit's albums)",
             lambda: deferred.enrich_album_covers.run(None, None, setup(unit_albums))),
            ("vectorize_tracks (the unit's tracks)",
             lambda: deferred.vectorize_tracks.run(None, None, setup(unit_tracks))),
            ("analysis: tracks_to_analyse + store_features (the unit's tracks)",
             lambda: analysis.store_features(session, [
                 analysis.features_row(track, None, "bench: not analysed")
                 for track in analysis.tracks_to_analyse(session, setup(unit_tracks))])),
            ("vectorize_audio (the unit's tracks)",
             lambda: analysis.vectorize_audio.run(None, None, setup(unit_tracks))),
            ("enrich_album_audio (the unit's albums)",
             lambda: analysis.enrich_album_audio.run(None, None, setup(unit_albums))),
            (f"cleanup_finish_scan of an artist's folder, ROOT/{artist} (one folder of {albums_per_artist} gone)",
             lambda: finish_scan(scan_id, list(dict.fromkeys(unit_folders + artist_folders[:-1])))),
            ("cleanup_finish_scan of the library root, ROOT (every folder listed, one gone)",
             lambda: finish_scan(setup(whole_scan), None)),
            ("cleanup_finish_scan of the library root, ROOT, half its artist folders unreadable (their albums not "
             "reached: every track under them kept)", lambda: finish_scan(setup(failing_scan), None)),
            ("cleanup_orphans (everywhere)", deferred.cleanup_orphans.run),
            ("cleanup_old_scans (prune_old_scans + prune_staging)", retention.cleanup_old_scans.run),
            ("cleanup_stalled_scans (resend_stalled, every few minutes)", stalls.cleanup_stalled_scans.run),
            ("relay_units: send_unsent_units (every few seconds)", relay.send_unsent_units),
            ("exporter: FleetCollector._catalogue", lambda: FleetCollector()._catalogue()),
            ("exporter: analysis_status (the analysis backlog gauge, read at most once a minute)",
             lambda: analysis.analysis_status(session)),
            ("enrich_analysis_backlog: a whole round of backlog_batches (the backlog empty)",
             lambda: list(analysis.queue_backlog(room_for_analysis * get_settings().batch_size))),
        ]
        state: dict[str, Any] = {}

        def setup(make: Callable[[], Any]) -> Any:
            with recorder.running(None):
                return make()

        def unit_tracks() -> list[int]:
            return list(session.execute(text("SELECT id FROM tracks WHERE folder = ANY(:f) ORDER BY id"),
                                        {"f": unit_folders}).scalars())

        def unit_albums() -> list[int]:
            return list(session.execute(text("SELECT DISTINCT album_id FROM tracks WHERE folder = ANY(:f)"),
                                        {"f": unit_folders}).scalars())

        def whole_scan() -> int:
            whole = session.execute(insert(Scan).values(root=root, status="running", started_at=now)
                                    .returning(Scan.id)).scalar_one()
            session.execute(text(
                "INSERT INTO scan_folders (scan_id, folder, listed) SELECT :scan, folder, true "
                "FROM (SELECT DISTINCT folder FROM tracks) f WHERE folder <> :gone"),
                {"scan": whole, "gone": f"{root}/1/1"})
            return whole

        def failing_scan() -> int:
            """A scan of the whole library whose storage failed half way: the first half of the artist folders
            could not be listed, so none of their albums was reached; the rest were, but for the one gone."""
            failing = whole_scan()
            half = albums // albums_per_artist // 2
            session.execute(text(
                "DELETE FROM scan_folders WHERE scan_id = :scan AND folder LIKE :pattern "
                "AND split_part(substr(folder, length(:root) + 2), '/', 1)::int <= :half"),
                {"scan": failing, "root": root, "half": half, "pattern": f"{root}/%/%"})
            session.execute(text(
                "INSERT INTO scan_folders (scan_id, folder, listed) "
                "SELECT :scan, :root || '/' || a, false FROM generate_series(1, :half) a"),
                {"scan": failing, "root": root, "half": half})
            return failing

        def finish_scan(scan: int, folders: list[str] | None) -> Any:
            with recorder.running(None):
                if folders is not None:
                    session.execute(pg_insert(ScanFolder).on_conflict_do_nothing(),
                                    [{"scan_id": scan, "folder": folder} for folder in folders])
                session.execute(text("UPDATE scans SET status = 'finalizing' WHERE id = :id"), {"id": scan})
                session.flush()
            return deferred.cleanup_finish_scan.run(scan)

        for name, step in steps:
            started = time.perf_counter()
            with recorder.running(name):
                step()
            session.flush()
            print(f"{name}: {time.perf_counter() - started:.2f} s with its EXPLAINs", flush=True)
        session.execute(select(func.now()))
    finally:
        session_module.Session = original_session
        event.remove(engine, "before_cursor_execute", recorder.before_cursor_execute)
        outer.rollback()
        connection.close()
        engine.dispose()
    return recorder.rows


def print_table(rows: list[dict[str, Any]]) -> None:
    function = None
    for row in rows:
        if row["function"] != function:
            function = row["function"]
            print(f"\n== {function}")
        scans = "; ".join(row.get("scans", [])) or row.get("top", "")
        flags = f"  !! {', '.join(row['flags'])}" if row.get("flags") else ""
        print(f"  {row['statement'][:70]:70s} {row.get('ms', float('nan')):9.2f} ms "
              f"{row.get('rows_examined', 0):>9} rows  [{row['location']}]\n      {scans}{flags}"
              + (f"\n      triggers: {'; '.join(row['triggers'])}" if row.get("triggers") else "")
              + (f"\n      ERROR {row['error']}" if row.get("error") else ""))


def _short_scan(scan: str) -> str:
    """A scan node as the bench README's table spells it: "Index on tracks using ix (200)"."""
    return re.sub(r"^(Index Only|Index|Bitmap Heap|Bitmap Index) Scan", r"\1", scan).replace(
        "Bitmap Index on ", "Bitmap Index using ")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The statements as bench/README.md's table: one line each, its function named once per group."""
    lines = ["| function | statement | where (worker_app/) | plan (scan nodes, rows each) | rows | ms |",
             "|---|---|---|---|---|---|"]
    function = None
    for row in rows:
        named = row["function"] if row["function"] != function else "″"
        function = row["function"]
        words = " ".join(row["statement"].split()[:5])
        where = row["location"].split(" ")[0].removeprefix("worker_app/")
        plan = "; ".join(_short_scan(scan) for scan in row.get("scans", [])) or row.get("top", "")
        if row.get("flags"):
            plan += f" **{', '.join(row['flags'])}**"
        ms = f"{row['ms']:.2f}" if "ms" in row else "-"
        lines.append(f"| {named} | `{words}` | {where} | {plan} | {row.get('rows_examined', 0)} | {ms} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m bench.catalogue_statements RESULT.json: the table of a `bench/run catalogue --section pipeline` run.
    import json
    import sys

    print(markdown_table(json.loads(Path(sys.argv[1]).read_text())["pipeline_statements"]))
