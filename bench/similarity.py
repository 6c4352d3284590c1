"""How long `soniquebay similar` takes on N stored vectors (the issue's target: 1,000,000 vectors, under 50 ms
median, warm).

    python -m bench.similarity [--count 100000] [--queries 50]

Starts a private PostgreSQL (tests/services.py), migrates it, fills ``track_vectors`` with ``--count`` vectors of
the real dimension drawn around 40 cluster centres (real libraries are clustered: genres, artists), then times
``worker_app.pipeline.analysis.nearest`` (the query the command runs: GiST k-nearest-neighbour on cube) for
``--queries`` random stored vectors, after one warm-up pass. Prints the median and the 95th percentile.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--limit", type=int, default=10)
    options = parser.parse_args()

    from tests.services import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="soniquebay-bench-similarity-"))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg").start()
    try:
        os.environ["SONIQUEBAY_DATABASE_URL"] = server.url
        os.environ["SONIQUEBAY_ENV_FILE"] = "/nonexistent"
        from sqlalchemy import text

        from worker_app.analysis.vector import DIMENSIONS
        from worker_app.db.migrate import upgrade
        from worker_app.db.session import transaction
        from worker_app.pipeline.analysis import nearest

        upgrade()
        rng = numpy.random.default_rng(0)
        centres = rng.normal(0, 1.5, (40, DIMENSIONS))
        started = time.monotonic()
        with transaction() as session:
            # Tracks are needed for the foreign key; a minimal row each, inserted set-wise.
            session.execute(text("""
                INSERT INTO tracks (id, path, folder, format, size_bytes, mtime)
                SELECT g, '/bench/' || g, '/bench', 'mp3', 1, 0 FROM generate_series(1, :n) g
            """), {"n": options.count})
            raw = session.connection().connection.dbapi_connection
            with raw.cursor() as cursor:
                batch = 20_000
                for offset in range(0, options.count, batch):
                    size = min(batch, options.count - offset)
                    points = centres[rng.integers(0, len(centres), size)] + rng.normal(0, 0.5, (size, DIMENSIONS))
                    rows = "\n".join(f"{offset + i + 1}\t1\t(" + ",".join(f"{v:.4f}" for v in point) + ")"
                                     for i, point in enumerate(points))
                    import io

                    cursor.copy_expert("COPY track_vectors (track_id, vector_version, embedding) FROM STDIN",
                                       io.StringIO(rows + "\n"))
        with transaction() as session:
            session.execute(text("ANALYZE track_vectors"))
        print(f"{options.count} vectors of {DIMENSIONS} dimensions loaded and indexed in "
              f"{time.monotonic() - started:.0f} s")
        targets = rng.integers(1, options.count + 1, options.queries)
        timings = []
        with transaction() as session:
            for warm_up in (True, False):
                for track_id in targets:
                    embedding = session.execute(text("SELECT embedding FROM track_vectors WHERE track_id = :id"),
                                                {"id": int(track_id)}).scalar()
                    values = [float(v) for v in embedding.strip("()").split(",")]
                    start = time.perf_counter()
                    nearest(session, values, options.limit, exclude=int(track_id))
                    if not warm_up:
                        timings.append(time.perf_counter() - start)
            plan = session.execute(text(
                "EXPLAIN SELECT track_id FROM track_vectors ORDER BY embedding <-> "
                "(SELECT embedding FROM track_vectors WHERE track_id = 1) LIMIT 10")).scalars().all()
        timings.sort()
        print(f"nearest {options.limit}: median {statistics.median(timings) * 1000:.1f} ms, "
              f"p95 {timings[int(0.95 * (len(timings) - 1))] * 1000:.1f} ms over {len(timings)} queries")
        print("\n".join(plan))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
