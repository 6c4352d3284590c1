"""Where the time goes: `python -m bench.profile [--size N] [--config pipeline|before] [--reader]`.

- pipeline mode (default): starts the same services and worker programs as bench/run, then runs one first scan of
  the cached library of N files while `py-spy record` samples every worker program's process tree (on-CPU samples
  only). Writes the collapsed stacks per worker kind and prints, per kind, the CPU seconds it used and how they
  split between mutagen, the extractor's own code, Pillow, serialisation (JSON, gzip, base64), SQLAlchemy and
  psycopg2, Celery/kombu/redis-py and the rest; plus the heaviest functions. The workers' own task timings (from
  their INFO logs) say how long each task kind's bodies ran.
- --reader: pyinstrument around ``read_track`` over the library, in this process, next to a plain
  ``mutagen.File`` loop over the same files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import library as libraries
from bench.main import DEFAULT_CACHE, RESULTS
from bench.pipeline import BEFORE, PIPELINE, BenchStack, task_seconds

VENV_BIN = Path(sys.executable).parent

# Leaf first: a sample goes to the category of the innermost frame that matches one of these.
CATEGORIES = [
    ("mutagen", ("mutagen/",)),
    ("Pillow", ("PIL/",)),
    ("extractor (worker_app.metadata)", ("worker_app/metadata/",)),
    ("serialisation (json, gzip/zlib, base64, asdict)", ("json/", "gzip.py", "zlib", "base64.py",
                                                         "kombu/serialization", "kombu/compression",
                                                         "dataclasses.py", "copy.py")),
    ("SQLAlchemy + psycopg2 (client side)", ("sqlalchemy/", "psycopg2")),
    ("Celery, kombu, redis-py, billiard", ("celery/", "kombu/", "redis/", "billiard/", "vine/", "amqp/")),
    ("pipeline code (worker_app.pipeline)", ("worker_app/pipeline/", "worker_app/paths.py")),
    ("logging", ("logging/",)),
]
# Frames that wrap everything a worker does: left out of the "heaviest" list.
WRAPPERS = ("click/", "celery/bin/", "celery/bootsteps.py", "celery/worker/worker.py", "billiard/popen_fork.py",
            "billiard/process.py", "billiard/pool.py", "celery/concurrency/", "celery/__main__.py", "process ",
            "<module>", "celery/app/trace.py", "celery/worker/loops.py", "celery/worker/consumer/",
            "kombu/asynchronous/hub.py")


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        if frame.startswith("process "):
            continue
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other (interpreter, stdlib)"


def summarise(raw: Path, rate: int) -> dict:
    """Category shares and the heaviest functions (self and inclusive) from py-spy's raw collapsed stacks."""
    categories: Counter = Counter()
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        total += count
        categories[classify(stack)] += count
        frames = stack.split(";")
        if frames:
            self_time[_short(frames[-1])] += count
        for frame in set(_short(frame) for frame in frames):
            inclusive[frame] += count
    return {
        "cpu_seconds": round(total / rate, 2),
        "samples": total,
        "categories": {name: round(count / total, 3) for name, count in categories.most_common()} if total else {},
        "top_self": [(name, round(count / total, 3)) for name, count in self_time.most_common(15)] if total else [],
        "top_inclusive": [(name, round(count / total, 3)) for name, count in inclusive.most_common(80)
                          if not any(marker in name for marker in WRAPPERS)][:30] if total else [],
    }


def _short(frame: str) -> str:
    # "read_track (worker_app/metadata/reader.py:123)" -> "read_track (worker_app/metadata/reader.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def profile_pipeline(options) -> dict:
    config = {"pipeline": PIPELINE, "before": BEFORE}[options.config]
    lib = libraries.ensure_library(options.cache, options.size, options.seed,
                                   template_cache=options.cache / "templates")
    libraries.warm_page_cache(lib)
    out = RESULTS / "profile" / f"{options.config}-{options.size}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=options.cache))
    os.chmod(work, 0o755)
    bench = BenchStack(work / "services", [options.cache / "libraries"])
    spies = {}
    try:
        bench.start()
        bench.use(config)
        bench.empty_catalogue()
        for program, pid in bench.program_pids().items():
            command = [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--rate",
                       str(options.rate), "--format", "raw", "--output", str(out / f"{program}.txt"),
                       "--nonblocking"]
            spies[program] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2)  # py-spy attaches
        offsets = {program: path.stat().st_size for program, path in bench.worker_logs().items()}
        started = time.perf_counter()
        summary = bench.scan(lib.root)
        wall = time.perf_counter() - started
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for program, spy in spies.items():
            _, error = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT):
                print(f"py-spy for {program}: {error.decode(errors='replace')[-500:]}")
        tasks = task_seconds(bench.worker_logs(), offsets)
    finally:
        for spy in spies.values():
            if spy.poll() is None:
                spy.kill()
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {"config": options.config, "size": options.size, "files": len(lib.files),
              "scan_seconds": summary["seconds"], "files_per_s": len(lib.files) / summary["seconds"],
              "command_seconds": round(wall, 2), "rate_hz": options.rate, "tasks": tasks, "kinds": {}}
    for program in config.programs:
        raw = out / f"{program}.txt"
        if raw.exists():
            result["kinds"][program] = summarise(raw, options.rate)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print_pipeline(result)
    print(f"\ncollapsed stacks and summary.json in {out}")
    return result


def print_pipeline(result: dict) -> None:
    print(f"{result['config']}, {result['files']} files: scan {result['scan_seconds']:.2f} s "
          f"({result['files_per_s']:.0f} files/s)")
    for tasks in result["tasks"].values():
        for name, figures in tasks.items():
            print(f"  task {name:<24} x{figures['tasks']:<6} {figures['seconds']:8.2f} s of task bodies "
                  f"({figures['seconds'] / result['scan_seconds']:.0%} of the scan's wall time)")
    for program, kind in result["kinds"].items():
        print(f"\n[{program}] {kind['cpu_seconds']} CPU s on-CPU samples "
              f"({kind['cpu_seconds'] / result['scan_seconds']:.2f} cores over the scan)")
        for name, share in kind["categories"].items():
            print(f"    {share:6.1%}  {name}")
        print("  heaviest (inclusive):")
        for name, share in kind["top_inclusive"][:15]:
            print(f"    {share:6.1%}  {name}")


def profile_reader(options) -> None:
    import mutagen
    from pyinstrument import Profiler

    from worker_app.metadata.reader import read_track
    from worker_app.metadata.record import UnreadableFileError

    lib = libraries.ensure_library(options.cache, options.size, options.seed,
                                   template_cache=options.cache / "templates")
    libraries.warm_page_cache(lib)
    files = lib.files

    def plain():
        for path in files:
            try:
                mutagen.File(path)
            except Exception:
                pass

    def extractor():
        for path in files:
            try:
                read_track(path).to_message()
            except UnreadableFileError:
                pass

    for loop in (plain, extractor, plain, extractor):
        cpu = time.process_time()
        loop()
        print(f"{loop.__name__:<10} {1000 * (time.process_time() - cpu) / len(files):.3f} ms CPU per file")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    extractor()
    profiler.stop()
    out = RESULTS / "profile"
    out.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (out / f"reader-{options.size}.txt").write_text(text)
    print(text[:12000])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", choices=["pipeline", "before"], default="pipeline")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--reader", action="store_true", help="profile read_track in this process instead")
    options = parser.parse_args(argv)
    if options.reader:
        profile_reader(options)
    else:
        profile_pipeline(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
