"""The limit: how fast plain ``mutagen.File`` reads the library, in one process and in one process per core.

Run in a fresh child process (``python -m bench.limit``) so that the benchmark's own memory and threads do not
weigh on it; prints one JSON object.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time


def _read(path: str) -> bool:
    import mutagen

    try:
        return mutagen.File(path) is not None
    except Exception:  # the generator's corrupt files: they cost a read all the same
        return False


def _read_chunk(paths: list[str]) -> int:
    return sum(_read(path) for path in paths)


def one_process(files: list[str]) -> dict:
    import mutagen  # noqa: F401  (imported before the clock starts)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    readable = sum(_read(path) for path in files)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"files_per_s": len(files) / wall, "seconds": wall, "cpu_ms_per_file": 1000 * cpu / len(files),
            "readable": readable}


def all_cores(files: list[str], processes: int) -> dict:
    chunk = max(16, min(256, len(files) // (processes * 8) or 1))
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        pool.map(_read_chunk, [files[:1]] * processes)  # start and warm every process before the clock
        wall0 = time.perf_counter()
        readable = sum(pool.imap_unordered(_read_chunk, chunks))
        wall = time.perf_counter() - wall0
    return {"files_per_s": len(files) / wall, "seconds": wall, "processes": processes, "readable": readable}


def main() -> None:
    mode, list_file = sys.argv[1], sys.argv[2]
    with open(list_file, "rb") as handle:
        files = [os.fsdecode(line) for line in handle.read().split(b"\n") if line]
    if mode == "one":
        result = one_process(files)
    else:
        result = all_cores(files, int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
