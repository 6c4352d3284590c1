"""How often insert workers deadlock on each other, by insert concurrency.

    python -m bench.deadlocks [--size 10000] [--concurrency 1,4,8] [--batch-sizes 200,50]

For each combination: an empty catalogue, a first scan of the cached library through the supervisord workers, then
PostgreSQL's "deadlock detected" errors (its log), the tasks Celery retried (the insert and deferred worker logs)
and whether the catalogue holds every track once. A deadlock costs a retry, never a row; this says how many."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench import library as libraries
from bench.main import DEFAULT_CACHE, log
from bench.pipeline import PIPELINE, BenchStack, WorkerConfig


def _count(path: Path, needle: str, offset: int) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read().decode("utf-8", "replace").count(needle)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", default="1,4,8", help="insert worker processes to try")
    parser.add_argument("--batch-sizes", default="200", help="SONIQUEBAY_BATCH_SIZE values to try")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    options = parser.parse_args(argv)

    lib = libraries.ensure_library(options.cache, options.size, options.seed, log=log,
                                   template_cache=options.cache / "templates")
    libraries.warm_page_cache(lib)
    work = Path(tempfile.mkdtemp(prefix="deadlocks-", dir=options.cache))
    os.chmod(work, 0o755)  # the postgres user must reach its data folder inside
    bench = BenchStack(work / "services", [options.cache / "libraries"]).start()
    pg_log = bench.stack.postgres.base / "postgres.log"
    rows = []
    try:
        for batch_size in (int(value) for value in options.batch_sizes.split(",")):
            for concurrency in (int(value) for value in options.concurrency.split(",")):
                programs = dict(PIPELINE.programs)
                programs["insert"] = {"concurrency": concurrency}
                bench.use(WorkerConfig(f"insert x{concurrency}", programs,
                                       env={"SONIQUEBAY_BATCH_SIZE": str(batch_size)}))
                bench.empty_catalogue()
                logs = bench.worker_logs()
                offsets = {"pg": _size(pg_log), **{name: _size(path) for name, path in logs.items()}}
                summary = bench.scan(lib.root)
                deadlocks = _count(pg_log, "deadlock detected", offsets["pg"])
                retries = {name: _count(path, "Retry in", offsets[name]) for name, path in logs.items()}
                tracks, distinct = bench.sql("SELECT count(*), count(DISTINCT path) FROM tracks")[0]
                row = {"batch_size": batch_size, "insert_processes": concurrency, "seconds": summary["seconds"],
                       "deadlocks": deadlocks, "retried_tasks": sum(retries.values()), "tracks": tracks,
                       "distinct_paths": distinct, "inserted": summary["inserted"]}
                rows.append(row)
                log(f"  batch {batch_size:>4}, insert x{concurrency}: {summary['seconds']:6.1f} s, "
                    f"{deadlocks} deadlocks, {row['retried_tasks']} retried tasks ({retries}), "
                    f"{tracks} tracks, {distinct} distinct paths, {summary['inserted']} inserted")
    finally:
        bench.stop_workers()
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    complete = all(row["tracks"] == row["distinct_paths"] == row["inserted"] for row in rows)
    log("every run catalogued each inserted track once" if complete else "A RUN LOST OR DOUBLED TRACKS")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
