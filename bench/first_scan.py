"""A first scan with audio analysis off, then on, on the same generated library, from one run.

    bench/run first-scan [--tracks 400] [--seconds 20] [--rounds 2] [--json bench/results/first-scan.json]

The target: with analysis enabled, the catalogue of a first scan is complete within 10% of the time it takes
without (analysis runs on the extract queue below tag reading, as background units of the scan, and goes on after
the catalogue is complete). The library is real audio (tests/analysis_factory.py's kinds, a third MP3 and two
thirds FLAC, ``--seconds`` long each), generated once and cached. The workers are the supervisor role's programs
for this host (bench/pipeline.py's PIPELINE), restarted fresh for each scan with ``SONIQUEBAY_AUDIO_ANALYSIS``
off or on; the catalogue is emptied between scans. Rounds alternate off, on, on, off, ... so that a drift in the
machine's load (it is shared) weighs on both alike; the figure is the ratio of the medians.

Reported per scan: the catalogue's completion (``soniquebay scan --wait``'s wall time, which returns when the
catalogue is complete, not its background analysis) and, with analysis on, when the last track's features were
stored (the scan's background units all done).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CACHE = Path(os.environ.get("SONIQUEBAY_BENCH_CACHE", "/var/tmp/soniquebay-bench")) / "first-scan"


def library(tracks: int, seconds: float) -> Path:
    import numpy

    from tests.analysis_factory import KINDS, kind_track, write

    root = CACHE / f"library-{tracks}x{seconds:g}s"
    done = root / ".complete"
    if done.exists():
        return root
    for index in range(tracks):
        kind = KINDS[index % len(KINDS)]
        suffix = ".mp3" if index % 3 == 0 else ".flac"
        path = root / kind / f"{index // 20:03d}" / f"{kind}-{index:05d}{suffix}"
        if not path.exists():
            write(kind_track(kind, seconds, seed=50_000 + index).astype(numpy.float32), path)
    done.write_text("")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of scans (off and on)")
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args()


    from bench.pipeline import PIPELINE, BenchStack, WorkerConfig
    from tests.services import wait_for
    from worker_app.analysis import ANALYSIS_VERSION

    root = library(options.tracks, options.seconds)
    print(f"library: {options.tracks} tracks of {options.seconds:g} s in {root}", flush=True)
    configs = {mode: WorkerConfig(f"analysis-{mode}", PIPELINE.programs, PIPELINE.queues,
                                  {"SONIQUEBAY_AUDIO_ANALYSIS": mode}) for mode in ("off", "on")}
    order = [("off", "on") if round_ % 2 == 0 else ("on", "off") for round_ in range(options.rounds)]
    scans: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="soniquebay-bench-first-scan-") as base:
        os.chmod(base, 0o755)  # the postgres user must reach its data folder inside
        bench = BenchStack(Path(base) / "stack", [root])
        bench.start()
        try:
            for pair in order:
                for mode in pair:
                    bench.use(configs[mode])
                    bench.empty_catalogue()
                    bench.sql("TRUNCATE audio_features, track_vectors, album_audio")
                    started = time.perf_counter()
                    summary = bench.scan(root, timeout=3600)
                    catalogue = time.perf_counter() - started
                    record = {"analysis": mode, "scan_id": summary["scan_id"], "inserted": summary["inserted"],
                              "catalogue_seconds": round(catalogue, 2)}
                    if mode == "on":
                        def analysed(scan_id: int = int(summary["scan_id"])) -> bool:
                            pending = bench.sql("SELECT count(*) FROM scan_units WHERE scan_id = "
                                                f"{scan_id} AND state = 'pending'")[0][0]
                            return pending == 0
                        wait_for(analysed, 3600, "the scan's analysis", interval=0.5)
                        record["analysis_done_seconds"] = round(time.perf_counter() - started, 2)
                        record["analysed"] = bench.sql(
                            "SELECT count(*) FROM audio_features WHERE error IS NULL AND analysis_version = "
                            f"{ANALYSIS_VERSION}")[0][0]
                    scans.append(record)
                    print(json.dumps(record), flush=True)
        finally:
            bench.stop_workers()
            bench.stop()
    off = statistics.median(s["catalogue_seconds"] for s in scans if s["analysis"] == "off")
    on = statistics.median(s["catalogue_seconds"] for s in scans if s["analysis"] == "on")
    done = statistics.median(s["analysis_done_seconds"] for s in scans if s["analysis"] == "on")
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tracks": options.tracks,
              "seconds_per_track": options.seconds, "scans": scans,
              "catalogue_seconds_off": off, "catalogue_seconds_on": on,
              "catalogue_ratio_on_off": round(on / off, 3), "analysis_done_seconds": done,
              "analysed_tracks_per_second": round(options.tracks / done, 2)}
    print(f"catalogue complete: {off:.2f} s without analysis, {on:.2f} s with (ratio {on / off:.3f}; target <= 1.10); "
          f"analysis of all {options.tracks} tracks done {done:.2f} s after the scan started")
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
