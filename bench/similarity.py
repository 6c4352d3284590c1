"""How long `soniquebay similar` takes on N stored vectors, and how much of the exact answer it finds (the
target: 1,000,000 vectors, under 50 ms median, warm).

    bench/run similarity [--count 1000000] [--queries 50] [--candidates 200,500,1000,2000] [--exact]

Starts a private PostgreSQL (tests/services.py), migrates it, fills ``track_vectors`` with ``--count`` vectors of
the real dimension drawn around 40 cluster centres (real libraries are clustered: genres, artists), each with its
sketch (``worker_app.analysis.vector.sketch``), then times ``worker_app.pipeline.analysis.nearest`` (the query the
command runs: candidates by the sketch's GiST index, ranked by the exact distance) for ``--queries`` random stored
vectors, after one warm-up pass, once per candidate count. For each it prints the median and 95th percentile,
the recall@10 against the exact 10 nearest (computed here with numpy over the same stored values) and the share of
the 10 found that come from the query's own cluster (the "of its kind" precision). ``--exact`` also times the
previous design, GiST k-nearest-neighbour on the whole 47-dimension cube. Ends with the plan of one query
(EXPLAIN ANALYZE, BUFFERS).

The vectors here are isotropic noise around the centres, the hardest case for any projection: within a cluster
no direction carries more of the distance than another, so a 6-dimension sketch sees an eighth of it and
recall@10 is low, while every answer stays within the query's cluster. Real vectors have correlated components
(brightness and the MFCCs move together), which the sketch pools: on tests/test_analysis_similarity.py's generated
feature figures, 100 candidates of 20,000 find 0.93 of the exact ten.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _cube(values: numpy.ndarray, digits: int) -> str:
    return "(" + ",".join(f"{v:.{digits}f}" for v in values) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--candidates", default="", help="candidate counts to time, comma-separated "
                        "(default: the one `similar` uses, worker_app.pipeline.analysis.CANDIDATES)")
    parser.add_argument("--exact", action="store_true", help="also time the single-step query on the whole cube")
    options = parser.parse_args()

    from tests.services import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="soniquebay-bench-similarity-"))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg").start()
    try:
        os.environ["SONIQUEBAY_DATABASE_URL"] = server.url
        os.environ["SONIQUEBAY_ENV_FILE"] = "/nonexistent"
        from sqlalchemy import text

        from worker_app.analysis.vector import DIMENSIONS, SKETCH_DIMENSIONS, SKETCH_PROJECTION
        from worker_app.db.migrate import upgrade
        from worker_app.db.session import transaction
        from worker_app.pipeline.analysis import CANDIDATES, nearest

        candidate_counts = [int(c) for c in options.candidates.split(",") if c] or [CANDIDATES]
        upgrade()
        rng = numpy.random.default_rng(0)
        centres = rng.normal(0, 1.5, (40, DIMENSIONS))
        labels = rng.integers(0, len(centres), options.count)
        # As stored: 4 decimals (what the cube column returns, and so what a query starts from).
        points = numpy.round(centres[labels] + rng.normal(0, 0.5, (options.count, DIMENSIONS)), 4)
        started = time.monotonic()
        with transaction() as session:
            # Tracks are needed for the foreign key; a minimal row each, inserted set-wise.
            session.execute(text("""
                INSERT INTO tracks (id, path, folder, format, size_bytes, mtime)
                SELECT g, '/bench/' || g, '/bench', 'mp3', 1, 0 FROM generate_series(1, :n) g
            """), {"n": options.count})
            # The indexes the migrations made, built once after the load rather than row by row during it.
            indexes = dict(session.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'track_vectors' "
                "AND indexname <> 'track_vectors_pkey'")).all())
            for name in indexes:
                session.execute(text(f"DROP INDEX {name}"))
            raw = session.connection().connection.dbapi_connection
            assert raw is not None
            row = ("%d\t1\t(" + ",".join(["%.4f"] * DIMENSIONS) + ")\t("
                   + ",".join(["%.5f"] * SKETCH_DIMENSIONS) + ")")
            with raw.cursor() as cursor:
                batch = 20_000
                for offset in range(0, options.count, batch):
                    chunk = points[offset:offset + batch]
                    table = numpy.column_stack((numpy.arange(offset + 1, offset + len(chunk) + 1), chunk,
                                                numpy.round(chunk @ SKETCH_PROJECTION.T, 5)))
                    rows = "\n".join(row % (int(values[0]), *values[1:]) for values in table.tolist())
                    cursor.copy_expert("COPY track_vectors (track_id, vector_version, embedding, sketch) FROM STDIN",
                                       io.StringIO(rows + "\n"))
            print(f"loaded in {time.monotonic() - started:.0f} s", flush=True)
            session.execute(text("SET maintenance_work_mem = '512MB'"))
            for name, definition in indexes.items():
                building = time.monotonic()
                session.execute(text(definition))
                print(f"{name} built in {time.monotonic() - building:.0f} s", flush=True)
        with transaction() as session:
            session.execute(text("ANALYZE track_vectors"))
        print(f"{options.count} vectors of {DIMENSIONS} dimensions (sketch {SKETCH_DIMENSIONS}) loaded and "
              f"indexed in {time.monotonic() - started:.0f} s")

        targets = [int(t) for t in rng.choice(options.count, options.queries, replace=False) + 1]
        squared = numpy.einsum("ij,ij->i", points, points)
        exact: dict[int, set[int]] = {}
        for track_id in targets:
            distances = squared - 2 * points @ points[track_id - 1] + squared[track_id - 1]
            distances[track_id - 1] = numpy.inf
            exact[track_id] = {int(i) + 1 for i in numpy.argpartition(distances, 10)[:10]}

        def timed(query: Callable[[Any, list[float], int], list[int]]) -> tuple[list[float], list[list[int]]]:
            timings, answers = [], []
            with transaction() as session:
                for warm_up in (True, False):
                    for track_id in targets:
                        start = time.perf_counter()
                        found = query(session, [float(v) for v in points[track_id - 1]], track_id)
                        if not warm_up:
                            timings.append(time.perf_counter() - start)
                            answers.append(found)
            return sorted(timings), answers

        def report(name: str, timings: list[float], answers: list[list[int]]) -> None:
            recall = statistics.mean(len(set(found[:10]) & exact[t]) / 10 for t, found in zip(targets, answers,
                                                                                               strict=True))
            kind = statistics.mean(sum(labels[n - 1] == labels[t - 1] for n in found[:10]) / 10
                                   for t, found in zip(targets, answers, strict=True))
            print(f"{name}: median {statistics.median(timings) * 1000:.1f} ms, "
                  f"p95 {timings[int(0.95 * (len(timings) - 1))] * 1000:.1f} ms over {len(timings)} queries; "
                  f"recall@10 {recall:.3f}, of its cluster {kind:.3f}", flush=True)

        for count in candidate_counts:
            timings, answers = timed(lambda session, values, track_id, count=count: [
                row["track_id"] for row in nearest(session, values, options.limit, exclude=track_id,
                                                   candidates=count)])
            report(f"nearest {options.limit}, {count} candidates", timings, answers)
        if options.exact:
            def single_step(session: Any, values: list[float], track_id: int) -> list[int]:
                return list(session.execute(text(
                    "SELECT track_id FROM track_vectors WHERE track_id <> :id "
                    "ORDER BY embedding <-> CAST(:q AS cube) LIMIT :limit"),
                    {"id": track_id, "q": _cube(numpy.asarray(values), 4), "limit": options.limit}).scalars())
            timings, answers = timed(single_step)
            report(f"nearest {options.limit}, single step on the {DIMENSIONS}-dimension cube", timings, answers)

        from worker_app.analysis.vector import sketch

        query = [float(v) for v in points[targets[0] - 1]]
        with transaction() as session:
            plan = session.execute(text("""
                EXPLAIN (ANALYZE, BUFFERS)
                WITH candidate AS MATERIALIZED (
                    SELECT track_id, embedding FROM track_vectors WHERE track_id <> :id
                    ORDER BY sketch <-> CAST(:sketch AS cube) LIMIT :candidates)
                SELECT track_id, embedding <-> CAST(:q AS cube) AS distance FROM candidate
                ORDER BY distance LIMIT 10"""),
                {"id": targets[0], "q": _cube(numpy.asarray(query), 4),
                 "sketch": _cube(numpy.asarray(sketch(query)), 5), "candidates": candidate_counts[0]}).scalars()
            print("\n".join(plan))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
