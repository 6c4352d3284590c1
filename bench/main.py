"""`bench/run`: throughput of the pipeline against its limit, the seed's configuration and a peer, at several
library sizes, in one run on the same files. See bench/README.md."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import library as libraries
from bench import peer, report
from bench.pipeline import BEFORE, PIPELINE, BenchStack, CpuAccount, RssSampler, task_seconds

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("SONIQUEBAY_BENCH_CACHE", "/var/tmp/soniquebay-bench"))
RESULTS = REPO / "bench" / "results"


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,50000",
                        help="library sizes in audio files, comma-separated (default 1000,10000,50000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--skip-peer", action="store_true", help="do not measure beets")
    parser.add_argument("--skip-before", action="store_true", help="do not measure the seed's configuration")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where libraries, beets and the services' files live (default {DEFAULT_CACHE})")
    parser.add_argument("--regenerate", action="store_true", help="generate the libraries again")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json",
                        help="results file (default bench/results/latest.json; the plot goes beside it)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each pipeline first scan this many times and keep the median (default 1)")
    parser.add_argument("--before-files", type=int, default=1000,
                        help="measure the seed's 'before' (one task per file: about an hour for 50,000 files) on "
                             "the library's first N files, whole folders, hard-linked (default 1000; 0: all)")
    parser.add_argument("--before-seconds", type=float, default=None,
                        help="stop the 'before' scan after this long and rate it by the files it finished (a "
                             "lower bound: it reads every file before it inserts any)")
    parser.add_argument("--apply", action="append", type=Path, default=[], metavar="PATCH",
                        help="measure the code with this patch applied (repeatable; the run always works on a copy "
                             "of the work tree, made at its start, and applies the patches to that copy)")
    parser.add_argument("--peer-seconds", type=float, default=600,
                        help="stop beets after this long and rate it by the items it imported (its rate falls as "
                             "its library grows: the figure favours beets; default 600)")
    parser.add_argument("--keep-services", action="store_true", help="leave the services' folder in place")
    options = parser.parse_args(argv)
    options.sizes = [int(size.replace("_", "")) for size in options.sizes.split(",") if size.strip()]
    return options


# ---------------------------------------------------------------- the limit


def _limit(files: list[str], work: Path, mode: str) -> dict:
    list_file = work / "files.txt"
    if not list_file.exists():
        list_file.write_bytes(b"\n".join(os.fsencode(path) for path in files))
    command = [sys.executable, "-m", "bench.limit", mode, str(list_file)]
    if mode == "all":
        command.append(str(os.cpu_count()))
    with CpuAccount({"limit": [os.getpid()]}) as cpu:
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {**json.loads(out), **cpu.result}


# ---------------------------------------------------------------- one size


def _scan_measured(bench: BenchStack, lib: libraries.Library, what: str, rss: bool = False,
                   time_limit: float | None = None) -> dict:
    """One scan through the running workers, with its figures: files/s, CPU by process kind, task timings, and
    (``rss``) the peak memory of each worker program. With ``time_limit``, a scan still running then is measured
    by what it finished so far, and its workers are stopped and its queues purged."""
    offsets = {program: (path.stat().st_size if path.exists() else 0)
               for program, path in bench.worker_logs().items()}
    sampler = RssSampler(bench.program_pids()) if rss else None
    with CpuAccount(bench.cpu_roots()) as cpu:
        if sampler:
            with sampler:
                summary = bench.scan(lib.root, timeout=time_limit or 7200, partial=time_limit is not None)
        else:
            summary = bench.scan(lib.root, timeout=time_limit or 7200, partial=time_limit is not None)
    seconds = summary["seconds"]
    complete = summary["status"] == "complete"
    done = len(lib.files) if complete else summary["inserted"] + summary["failed"]
    result = {
        "seconds": seconds,
        "complete": complete,
        "files_done": done,
        "files_per_s": done / seconds,
        "command_seconds": round(summary["command_seconds"], 3),
        "summary": {k: summary[k] for k in ("discovered", "unchanged", "extracted", "inserted", "failed", "removed")},
        "cpu_seconds": cpu.cpu_seconds,
        "cpu_ms_per_file": {name: round(1000 * value / max(done, 1), 3) for name, value in cpu.cpu_seconds.items()},
        **cpu.result,
    }
    result["task_seconds"] = task_seconds(bench.worker_logs(), offsets)
    if not complete:
        bench.stop_workers()
        bench.purge_queues()
    if sampler:
        result["rss_mb"] = sampler.megabytes(sampler.peak_total)
        result["rss_mb_largest_process"] = sampler.megabytes(sampler.peak_process)
        result["processes"] = sampler.processes
    total_cpu = sum(value for name, value in cpu.cpu_seconds.items() if name != "bench + command line")
    note = "" if complete else f"stopped at its {time_limit:.0f} s limit after {done} files; "
    log(f"    {what:<22} {seconds:8.2f} s  {result['files_per_s']:9.0f} files/s   ({note}found "
        f"{summary['discovered']}, extracted {summary['extracted']}, unchanged {summary['unchanged']}, failed "
        f"{summary['failed']}, removed {summary['removed']}; {1000 * total_cpu / max(done, 1):.2f} ms CPU per file; "
        f"other load {cpu.result['cores_used_by_others']} cores)")
    if rss:
        log("      CPU ms per file: " + ", ".join(f"{name.removeprefix('worker:')} {value:.2f}"
                                                 for name, value in result["cpu_ms_per_file"].items()))
    return result


def measure_size(size: int, options, bench: BenchStack, beet: Path | None, work: Path) -> dict:
    log(f"\n== {size} files")
    lib = libraries.ensure_library(options.cache, size, options.seed, options.regenerate, log=lambda m: log(m),
                                   template_cache=options.cache / "templates")
    cache_state = libraries.warm_page_cache(lib)
    log(f"  library {lib.root}: {len(lib.files)} audio files, {lib.megabytes} MB, formats {lib.formats}")
    log(f"  page cache warm: read {cache_state['bytes_read'] / 1e6:.0f} MB in {cache_state['read_seconds']} s, "
        f"{cache_state['resident_fraction_sample']} of a sample resident")
    entry: dict = {"files": len(lib.files), "library_mb": lib.megabytes, "formats": lib.formats,
                   "page_cache": cache_state, "details": {}}
    details = entry["details"]
    size_work = work / f"n{size}"
    size_work.mkdir(parents=True, exist_ok=True)
    (size_work / "files.txt").write_bytes(b"\n".join(os.fsencode(path) for path in lib.files))

    # 1. the limit (measured before and after the pipeline runs; the mean is reported, to even out the drift of
    #    a shared machine's load over the run)
    first_one, first_all = _limit(lib.files, size_work, "one"), _limit(lib.files, size_work, "all")
    log(f"    {'limit, 1 process':<22} {first_one['seconds']:8.2f} s  {first_one['files_per_s']:9.0f} files/s   "
        f"({first_one['cpu_ms_per_file']:.3f} ms CPU per file)")
    log(f"    {'limit, all cores':<22} {first_all['seconds']:8.2f} s  {first_all['files_per_s']:9.0f} files/s")

    # 2. + 5. + 6. the pipeline: first scan (median of --repeat), rescans, memory
    bench.use(PIPELINE)
    firsts = []
    for _ in range(options.repeat):
        bench.empty_catalogue()
        firsts.append(_scan_measured(bench, lib, "pipeline, first scan", rss=True))
    first = sorted(firsts, key=lambda r: r["seconds"])[len(firsts) // 2]
    entry["catalogue"] = bench.counts()
    bench.analyze()
    nochange = _scan_measured(bench, lib, "rescan, no change")
    changed_files = libraries.change_files(lib, 0.01, options.seed)
    changed = _scan_measured(bench, lib, f"rescan, {len(changed_files)} changed")
    removed_files = libraries.remove_files(lib, 0.01, options.seed, avoid=set(changed_files))
    removed = _scan_measured(bench, lib, f"rescan, {len(removed_files)} removed")
    libraries.restore_mutations(lib, log=lambda m: None)
    bench.stop_workers()
    _check(changed["summary"]["extracted"] + changed["summary"]["failed"] >= len(changed_files),
           f"the rescan after changing {len(changed_files)} files extracted {changed['summary']}")
    _check(removed["summary"]["removed"] == len(removed_files),
           f"the rescan after removing {len(removed_files)} files removed {removed['summary']['removed']}")

    entry.update(
        pipeline=first["files_per_s"],
        rescan_nochange=nochange["files_per_s"],
        rescan_1pct_changed=changed["files_per_s"],
        rescan_1pct_removed=removed["files_per_s"],
        rss_mb=first["rss_mb"],
        rss_mb_largest_process=first["rss_mb_largest_process"],
    )
    details.update(pipeline=first, pipeline_runs=[r["seconds"] for r in firsts], rescan_nochange=nochange,
                   rescan_1pct_changed={**changed, "files_changed": len(changed_files)},
                   rescan_1pct_removed={**removed, "files_removed": len(removed_files)})

    # 3. the seed's "before"
    if not options.skip_before:
        before_lib = libraries.subset(lib, options.before_files)
        bench.use(BEFORE)
        bench.empty_catalogue()
        before = _scan_measured(bench, before_lib, "before (seed config)", rss=True,
                                time_limit=options.before_seconds)
        before["library"] = "whole" if before_lib is lib else \
            f"first {len(before_lib.files)} files (whole folders, hard links to the same files)"
        bench.stop_workers()
        entry["before"] = before["files_per_s"]
        details["before"] = before

    # 4. the peer
    if beet is not None:
        result = peer.beets_import(beet, lib.root, len(lib.files), size_work, options.peer_seconds)
        entry["beets"] = result["files_per_s"]
        details["beets"] = result
        note = "" if result["complete"] else f"stopped at its {options.peer_seconds:.0f} s limit; "
        log(f"    {'beets import -A':<22} {result['seconds']:8.2f} s  {result['files_per_s']:9.0f} files/s   "
            f"({note}{result['items_imported']} items imported)")

    # the limit again, after
    second_one, second_all = _limit(lib.files, size_work, "one"), _limit(lib.files, size_work, "all")
    log(f"    {'limit, 1 process':<22} {second_one['seconds']:8.2f} s  {second_one['files_per_s']:9.0f} files/s")
    log(f"    {'limit, all cores':<22} {second_all['seconds']:8.2f} s  {second_all['files_per_s']:9.0f} files/s")
    entry["limit_1proc"] = statistics.mean([first_one["files_per_s"], second_one["files_per_s"]])
    entry["limit_all_cores"] = statistics.mean([first_all["files_per_s"], second_all["files_per_s"]])
    details["limit_1proc"] = [first_one, second_one]
    details["limit_all_cores"] = [first_all, second_all]
    return entry


def _check(condition: bool, message: str) -> None:
    if not condition:
        log(f"  WARNING: {message}")


# ---------------------------------------------------------------- the run


SNAPSHOT_ENV = "SONIQUEBAY_BENCH_SNAPSHOT"


def _code_state() -> dict:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "worker_app", "tests", "bench").splitlines()
               if len(line) > 3]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_files": changed}


def run_in_snapshot(options, argv: list[str]) -> int:
    """Copy the work tree (other people edit worker_app while a run takes minutes; every worker restart would pick
    up their edits), apply the ``--apply`` patches to the copy, and run this benchmark from there."""
    import hashlib

    patches = [patch.resolve() for patch in options.apply]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(b"".join(patch.read_bytes() for patch in patches)).hexdigest()[:8] if patches else "none"
    tree = options.cache / "trees" / f"{stamp}-{digest}"
    # roles/ goes too: the test stack renders the supervisor role's programs (tests/supervisor_role.py).
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-*", "__pycache__", "results", ".pytest_cache", "molecule", ".run"))
    for patch in patches:
        log(f"applying {patch}")
        subprocess.run(["patch", "-p1", "--forward", "--quiet", "-i", str(patch)], cwd=tree, check=True)
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--apply", "--output"):
            skip = True
        elif not arg.startswith(("--apply=", "--output=")):
            rest.append(arg)
    output = options.output.resolve()
    code = {**_code_state(), "snapshot": str(tree), "patches": [str(patch) for patch in patches]}
    # The venv's editable install points at the work tree: PYTHONPATH makes the copy's worker_app the one that this
    # process, the command line and the workers (supervisord passes its environment on) import.
    env = {**os.environ, SNAPSHOT_ENV: json.dumps(code),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.run([sys.executable, "-m", "bench.main", *rest, "--output", str(output)], cwd=tree,
                              env=env).returncode
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_args(argv)
    if SNAPSHOT_ENV not in os.environ:
        return run_in_snapshot(options, argv)
    options.cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cores = os.cpu_count()
    log(f"bench: sizes {options.sizes}, seed {options.seed}, {cores} cores, cache {options.cache}")
    beet = None
    if not options.skip_peer:
        beet = peer.ensure_beets(options.cache, log=log)
    for size in options.sizes:  # every library first, so that generating one does not sit between measurements
        libraries.ensure_library(options.cache, size, options.seed, options.regenerate, log=log,
                                 template_cache=options.cache / "templates")
    options.regenerate = False
    work = Path(tempfile.mkdtemp(prefix="run-", dir=options.cache))
    os.chmod(work, 0o755)  # the postgres user must reach its data folder inside
    bench = BenchStack(work / "services", [options.cache / "libraries"])
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cores": cores,
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "python": platform.python_version(),
        "versions": _versions(),
        "seed": options.seed,
        "code": json.loads(os.environ[SNAPSHOT_ENV]),
        "page_cache": "warm: every file of a library is read once before its measurements (see each size's "
                      "page_cache)",
        "configs": {"pipeline": PIPELINE.describe(), "before": BEFORE.describe()},
        "sizes": {},
    }
    if beet is not None:
        results["versions"]["beets"] = peer.BEETS_VERSION
    try:
        bench.start()
        for size in options.sizes:
            results["sizes"][str(size)] = measure_size(size, options, bench, beet, work)
            _write(results, options.output, partial=True)  # a long run keeps what it measured
    finally:
        bench.stop()
        if not options.keep_services:
            shutil.rmtree(work, ignore_errors=True)
    results["run_seconds"] = round(time.monotonic() - started, 1)
    plot = _write(results, options.output, partial=False)
    log("")
    log(report.table(results))
    log("")
    log(report.targets_text(results["targets"]))
    log(f"\nwrote {options.output} and {plot} ({results['run_seconds'] / 60:.1f} min)")
    return 0


def _write(results: dict, output: Path, partial: bool) -> Path:
    results["targets"] = report.targets(results)
    results["partial"] = partial
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    plot = output.with_suffix(".png")
    report.plot(results, plot)
    return plot


def _memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("mutagen", "celery", "kombu", "redis", "SQLAlchemy", "psycopg2-binary")}


if __name__ == "__main__":
    sys.exit(main())
