"""The fleet's ceiling: how many files a second the central services absorb, and how many extract hosts fill them.

    bench/run ceiling [--files 20000] [--extract 1,2,4] [--templates 2000]

Scans one library of ``--files`` hard links (bench/scale.py's layout, one album a folder) twice over:
- once as it is, with the pipeline's programs: the extract stage's CPU per file with the real reader;
- then once per count in ``--extract`` with the extract program's reader replaced by a replay of records prepared
  once from the templates (bench/replay.py: a stat and a lookup), that many extract processes: the central
  services (scan, broker, ledger, batch, insert, deferred, PostgreSQL) do all the real work.

From the replay runs' CPU per file by process kind it writes the model (bench/README.md, "The fleet's ceiling"):
each central component's CPU per file, which one saturates first given the cores it runs on, the ceiling in
files/s, and how many extract hosts of N cores reach it; and it checks the model's prediction for this machine
(every process on its 2 cores) against the replay runs' measured files/s. Results: bench/results/ceiling.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import library as libraries  # noqa: E402
from bench import replay  # noqa: E402
from bench.main import DEFAULT_CACHE, RESULTS, _scan_measured  # noqa: E402
from bench.pipeline import PIPELINE, BenchStack, WorkerConfig  # noqa: E402
from bench.scale import ScaledLibrary  # noqa: E402
from tests.services import QUEUES  # noqa: E402

# Where each central component's CPU goes in a fleet (inventory/prod): the process kinds of CpuAccount.
CENTRAL = ("worker:scan", "worker:batch", "worker:insert", "worker:deferred", "postgresql", "redis")


def log(message: str) -> None:
    print(message, flush=True)


def replay_config(extract_processes: int) -> WorkerConfig:
    programs: dict[str, dict] = {queue: {} for queue in QUEUES}
    programs["extract"] = {"concurrency": extract_processes}
    return WorkerConfig(f"replay-{extract_processes}", programs,
                        role_vars={"supervisor_worker_extra_args": "--include bench.replay"})


def model(real: dict, replays: dict[int, dict], cores: int, host_cores: int) -> dict:
    """The ceiling from the replay runs' CPU per file (their median by component)."""
    runs = list(replays.values())
    per_file = {kind: sorted(run["cpu_ms_per_file"].get(kind, 0.0) for run in runs)[len(runs) // 2]
                for kind in CENTRAL}
    central_ms = sum(per_file.values())
    replay_extract_ms = sorted(run["cpu_ms_per_file"].get("worker:extract", 0.0) for run in runs)[len(runs) // 2]
    extract_ms = real["cpu_ms_per_file"].get("worker:extract", 0.0)
    # Every central component on its own host of ``host_cores`` cores: each saturates at host_cores * 1000 / its
    # CPU ms per file; the smallest of those is the fleet's ceiling.
    saturation = {kind: round(host_cores * 1000 / ms) for kind, ms in per_file.items() if ms > 0}
    first = min(saturation, key=lambda kind: saturation[kind])
    per_extract_host = host_cores * 1000 / extract_ms if extract_ms else float("inf")
    # This machine: every process on its ``cores`` cores, less what other work took meanwhile (a shared machine),
    # the replayed extract and the command line's polling included. Measured below the prediction means something
    # other than CPU holds the pipeline back (a lock, a stage waiting on another).
    predicted_here = {n: round((cores - run["cores_used_by_others"]) * 1000
                               / sum(value for value in run["cpu_ms_per_file"].values()))
                      for n, run in replays.items()}
    return {
        "central_cpu_ms_per_file": {kind: round(ms, 3) for kind, ms in per_file.items()},
        "central_cpu_ms_per_file_total": round(central_ms, 3),
        "extract_cpu_ms_per_file_real_reader": round(extract_ms, 3),
        "extract_cpu_ms_per_file_replay": round(replay_extract_ms, 3),
        "host_cores": host_cores,
        "saturation_files_per_s_by_component": saturation,
        "saturates_first": first,
        "ceiling_files_per_s": saturation[first],
        "files_per_s_per_extract_host": round(per_extract_host),
        "extract_hosts_to_reach_ceiling": round(saturation[first] / per_extract_host, 1),
        "predicted_files_per_s_this_machine": predicted_here,
        "measured_files_per_s_this_machine": {n: round(run["files_per_s"]) for n, run in replays.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--extract", default="1,2,4", help="extract processes of the replay runs (default 1,2,4)")
    parser.add_argument("--templates", type=int, default=2000)
    parser.add_argument("--host-cores", type=int, default=8,
                        help="cores of each central host in the model (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--output", type=Path, default=RESULTS / "ceiling.json")
    options = parser.parse_args(argv)
    counts = [int(count) for count in options.extract.split(",") if count.strip()]

    options.cache.mkdir(parents=True, exist_ok=True)
    templates = libraries.ensure_library(options.cache, options.templates, options.seed, log=log,
                                         template_cache=options.cache / "templates")
    scaled = ScaledLibrary(options.cache, templates, options.files, 20, False)
    lib = scaled.ensure()
    work = Path(tempfile.mkdtemp(prefix="ceiling-", dir=options.cache))
    os.chmod(work, 0o755)  # the postgres user must reach its data folder inside
    records = work / "replay.pickle"
    prepared = replay.prepare(templates.files, str(records))
    log(f"prepared {prepared} from {len(templates.files)} templates")
    # The workers inherit supervisord's environment (not the SONIQUEBAY_* settings, which they read from their
    # env file): the records' file, and this repository for `--include bench.replay`.
    os.environ[replay.RECORDS_ENV] = str(records)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    libraries.warm_page_cache(templates)  # hard links share their pages

    bench = BenchStack(work / "services", [options.cache / "libraries"])
    results: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                     "host": socket.gethostname(), "cores": os.cpu_count(), "files": len(lib.files)}
    started = time.monotonic()
    replays: dict[int, dict] = {}
    try:
        bench.start()
        for config in [PIPELINE, *(replay_config(count) for count in counts)]:
            bench.use(config)
            bench.empty_catalogue()
            bench.sql("TRUNCATE failed_files")
            measured = _scan_measured(bench, lib, config.name, rss=True)
            if config is PIPELINE:
                results["real"] = measured
            else:
                replays[int(config.name.split("-")[1])] = measured
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["replay"] = {str(count): run for count, run in replays.items()}
    results["model"] = model(results["real"], replays, os.cpu_count() or 1, options.host_cores)
    results["run_seconds"] = round(time.monotonic() - started, 1)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2) + "\n")
    log("\n" + json.dumps(results["model"], indent=2))
    log(f"\nwrote {options.output} ({results['run_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
