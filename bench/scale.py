"""A library of a million files on one host: is the cost linear, and what stays bounded?

    bench/run scale [--files 1000000] [--baseline 20000] [--flat 1000000] [--per-folder 20] [--templates 2000]
                    [--libraries baseline,big,flat] [--output bench/results/scale.json]

Builds, once (cached), libraries of hard links to the ``--templates`` files the test suite's generator makes
(tests/audio_factory.py): ``--baseline`` and ``--files`` files, ``--per-folder`` files a folder, 50 folders an
artist folder, every path distinct (so every track is its own row), and, apart, one folder holding ``--flat``
entries. Each is scanned with the pipeline's supervisor programs (the same as bench/run's), then the big and the
baseline libraries are rescanned unchanged and with 1% of their files changed (copied off their hard link and
given a new mtime, put back afterwards). For each step: wall seconds, files/s, CPU ms per file by process kind,
the peak RSS of each worker program, the broker Redis's peak memory (sampled) and the database's size.

The targets are ratios within this run: the big library's first-scan files/s within 10% of the
baseline's, worker RSS within 20% of the baseline's, a no-change rescan under 60 s, the broker under 256 MB, and
the flat folder catalogued in full. Results: bench/results/scale.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import library as libraries  # noqa: E402
from bench.main import DEFAULT_CACHE, RESULTS, _scan_measured  # noqa: E402
from bench.pipeline import PIPELINE, BenchStack, Sampler  # noqa: E402

FOLDERS_PER_ARTIST = 50
BROKER_CEILING_MB = 256


def log(message: str) -> None:
    print(message, flush=True)


class ScaledLibrary:
    """``files`` hard links to ``templates``, laid out deterministically: file i is a link to template i mod n."""

    def __init__(self, cache: Path, templates: libraries.Library, files: int, per_folder: int, flat: bool):
        self.templates = templates.files
        self.files_count = files
        self.per_folder = per_folder
        self.flat = flat
        kind = "flat" if flat else f"p{per_folder}"
        self.folder = cache / "libraries" / f"scale-{files}-{kind}-t{len(self.templates)}-s{templates.seed}"
        self.root = self.folder / "music"
        self.changed_journal = self.folder / "changed.json"

    def template(self, index: int) -> str:
        return self.templates[index % len(self.templates)]

    def path(self, index: int) -> Path:
        name = f"{index % self.per_folder + 1:02d} {os.path.basename(self.template(index))}"
        if self.flat:
            return self.root / f"{index:07d} {os.path.basename(self.template(index))}"
        folder = index // self.per_folder
        return self.root / f"artist-{folder // FOLDERS_PER_ARTIST:05d}" / f"album-{folder:06d}" / name

    def ensure(self) -> libraries.Library:
        self.restore()
        marker = self.folder / libraries.COMPLETE_MARKER
        if not marker.exists():
            if self.folder.exists():
                shutil.rmtree(self.folder)
            log(f"  linking {self.files_count} files into {self.root} ...")
            started = time.monotonic()
            made: set[Path] = set()
            for index in range(self.files_count):
                path = self.path(index)
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                os.link(self.template(index), path)
            marker.write_text(json.dumps({"audio_files": self.files_count, "folders": len(made)}))
            log(f"  linked {self.files_count} files in {len(made)} folders in {time.monotonic() - started:.0f} s")
        files = [str(self.path(index)) for index in range(self.files_count)]
        return libraries.Library(self.files_count, 0, self.root, files)

    def change(self, fraction: float, seed: int) -> list[int]:
        """Give ``fraction`` of the files a content of their own and a new mtime (a hard link shares its mtime with
        every other link to its template, so the file is copied off it first)."""
        count = max(1, round(self.files_count * fraction))
        chosen = sorted(random.Random(seed).sample(range(self.files_count), count))
        self.changed_journal.write_text(json.dumps(chosen))
        later = time.time() + 10
        for index in chosen:
            path = self.path(index)
            temporary = path.with_name(path.name + ".bench-tmp")
            shutil.copyfile(path, temporary)
            os.utime(temporary, (later, later))
            os.replace(temporary, path)
        return chosen

    def restore(self) -> None:
        """Link every file changed by ``change`` (even in an interrupted run) to its template again."""
        if not self.changed_journal.exists():
            return
        for index in json.loads(self.changed_journal.read_text()):
            path = self.path(index)
            temporary = path.with_name(path.name + ".bench-tmp")
            temporary.unlink(missing_ok=True)
            os.link(self.template(index), temporary)
            os.replace(temporary, path)
        self.changed_journal.unlink()


class BrokerMemory(Sampler):
    """The broker Redis's memory (INFO used_memory), sampled while a step runs; its peak in MB."""

    def __init__(self, url: str, interval: float = 0.5):
        import redis

        super().__init__(interval)
        self.client = redis.Redis.from_url(url)
        self.peak = 0

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))
        except Exception:  # noqa: BLE001 - a sample missed is not a measurement wrong
            pass

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def _database(bench: BenchStack) -> dict:
    size = bench.sql("SELECT pg_database_size(current_database())")[0][0]
    rows = {table: bench.sql(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("tracks", "albums", "artists", "scan_units", "scan_failures", "failed_files")}
    return {"size_mb": round(size / 2**20, 1), "rows": rows}


def _step(bench: BenchStack, lib: libraries.Library, what: str, rss: bool = False) -> dict:
    with BrokerMemory(bench.stack.broker.url()) as broker:
        result = _scan_measured(bench, lib, what, rss=rss)
    result["broker_peak_mb"] = broker.peak_mb
    result["database"] = _database(bench)
    log(f"      broker peak {broker.peak_mb} MB; database {result['database']['size_mb']} MB, "
        f"rows {result['database']['rows']}")
    return result


def measure(bench: BenchStack, scaled: ScaledLibrary, lib: libraries.Library, templates: libraries.Library,
            seed: int, rescans: bool, keep: Callable[[dict], None]) -> dict:
    """The library's steps, each handed to ``keep`` as soon as it is measured (a long run stopped half-way still
    leaves what it measured)."""
    log(f"\n== {scaled.root}: {len(lib.files)} files")
    warm = libraries.warm_page_cache(templates)  # hard links share their pages
    log(f"  page cache: the templates read once ({warm['bytes_read'] / 1e6:.0f} MB)")
    bench.empty_catalogue()
    bench.sql("TRUNCATE failed_files")  # the verdicts on the templates' corrupt files, remembered by the last library
    entry: dict = {"files": len(lib.files), "first": _step(bench, lib, "first scan", rss=True)}
    summary = entry["first"]["summary"]
    entry["catalogued_in_full"] = (summary["discovered"] == len(lib.files)
                                   and summary["inserted"] + summary["failed"] == len(lib.files))
    keep(entry)
    if rescans:
        bench.analyze()
        entry["nochange"] = _step(bench, lib, "rescan, no change")
        keep(entry)
        changed = scaled.change(0.01, seed)
        try:
            entry["changed"] = _step(bench, lib, f"rescan, {len(changed)} changed")
            entry["changed"]["files_changed"] = len(changed)
        finally:
            scaled.restore()
        keep(entry)
    return entry


def targets(results: dict) -> dict:
    big, base = results["libraries"].get("big"), results["libraries"].get("baseline")
    found: dict = {}
    if big and base:
        found["first_scan_files_per_s_ratio"] = {
            "value": round(big["first"]["files_per_s"] / base["first"]["files_per_s"], 3), "target": ">= 0.9"}
        ratios = {kind: round(big["first"]["rss_mb"][kind] / base["first"]["rss_mb"][kind], 2)
                  for kind in big["first"]["rss_mb"] if base["first"]["rss_mb"].get(kind)}
        found["worker_rss_ratio"] = {"value": ratios, "target": "each <= 1.2"}
    if big and "nochange" in big:
        found["nochange_rescan_seconds"] = {"value": round(big["nochange"]["seconds"], 1), "target": "< 60"}
    peaks = [step["broker_peak_mb"] for entry in results["libraries"].values()
             for step in entry.values() if isinstance(step, dict) and "broker_peak_mb" in step]
    if peaks:
        found["broker_peak_mb"] = {"value": max(peaks), "target": f"< {BROKER_CEILING_MB}"}
    if "flat" in results["libraries"]:
        found["flat_folder_catalogued_in_full"] = {"value": results["libraries"]["flat"]["catalogued_in_full"],
                                                   "target": "true"}
    return found


def single_host_shared_buffers_mb() -> int:
    """inventory/local's postgresql_memory_mb (a quarter of the host's memory) through the postgresql role's
    formula (roles/postgresql/defaults/main.yml: a quarter of that, at most 16 GiB)."""
    memtotal_mb = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20)
    return min(int(int(memtotal_mb * 0.25) * 0.25), 16384)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000, help="the big library's files (default 1000000)")
    parser.add_argument("--baseline", type=int, default=20_000, help="the baseline library's files (default 20000)")
    parser.add_argument("--flat", type=int, default=1_000_000,
                        help="entries of the one-folder library (default 1000000; 0: skip)")
    parser.add_argument("--per-folder", type=int, default=20, help="files a folder (default 20)")
    parser.add_argument("--templates", type=int, default=2000, help="generated files linked to (default 2000)")
    parser.add_argument("--libraries", default="baseline,big,flat",
                        help="which of baseline, big, flat to build and scan (default all three)")
    parser.add_argument("--shared-buffers-mb", type=int, default=0,
                        help="PostgreSQL's shared_buffers (default: what the single-host playbook gives this machine)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    options = parser.parse_args(argv)

    options.cache.mkdir(parents=True, exist_ok=True)
    templates = libraries.ensure_library(options.cache, options.templates, options.seed, log=log,
                                         template_cache=options.cache / "templates")
    plan = {"baseline": ScaledLibrary(options.cache, templates, options.baseline, options.per_folder, False),
            "big": ScaledLibrary(options.cache, templates, options.files, options.per_folder, False)}
    if options.flat:
        plan["flat"] = ScaledLibrary(options.cache, templates, options.flat, options.per_folder, True)
    chosen = {name.strip() for name in options.libraries.split(",") if name.strip()}
    if chosen - {"baseline", "big", "flat"}:
        parser.error(f"--libraries: unknown {sorted(chosen - {'baseline', 'big', 'flat'})}")
    plan = {name: scaled for name, scaled in plan.items() if name in chosen}
    built = {name: scaled.ensure() for name, scaled in plan.items()}
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=options.cache))
    os.chmod(work, 0o755)  # the postgres user must reach its data folder inside
    bench = BenchStack(work / "services", [options.cache / "libraries"])
    # As the single-host playbook sizes it on this machine (inventory/local: PostgreSQL gets a quarter of the
    # memory; the postgresql role: shared_buffers a quarter of that): a million-track catalogue is 2 GB, and the
    # test stack's 256 MB would measure a database starved of the memory it is given in production.
    bench.stack.postgres.shared_buffers_mb = options.shared_buffers_mb or single_host_shared_buffers_mb()
    results: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                     "host": socket.gethostname(), "cores": os.cpu_count(), "templates": len(templates.files),
                     "per_folder": options.per_folder, "shared_buffers_mb": bench.stack.postgres.shared_buffers_mb,
                     "libraries": {}}
    started = time.monotonic()
    try:
        bench.start()
        bench.use(PIPELINE)
        options.output.parent.mkdir(parents=True, exist_ok=True)
        for name, scaled in plan.items():
            def keep(entry: dict, name: str = name) -> None:
                results["libraries"][name] = entry
                results["targets"] = targets(results)
                options.output.write_text(json.dumps(results, indent=2) + "\n")

            measure(bench, scaled, built[name], templates, options.seed, rescans=name != "flat", keep=keep)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["run_seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    options.output.write_text(json.dumps(results, indent=2) + "\n")
    log("\n" + table(results))
    log(f"\nwrote {options.output} ({results['run_seconds'] / 60:.1f} min)")
    return 0


def table(results: dict) -> str:
    lines = ["| library | step | files | s | files/s | CPU ms/file by kind | peak RSS MB by worker | broker peak MB "
             "| database MB |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["libraries"].items():
        for step in ("first", "nochange", "changed"):
            if step not in entry:
                continue
            figures = entry[step]
            cpu = ", ".join(f"{kind.removeprefix('worker:')} {value:.2f}"
                            for kind, value in figures["cpu_ms_per_file"].items())
            rss = ", ".join(f"{kind} {value:.0f}" for kind, value in figures.get("rss_mb", {}).items()) or "-"
            lines.append(f"| {name} | {step} | {entry['files']} | {figures['seconds']:.1f} | "
                         f"{figures['files_per_s']:.0f} | {cpu} | {rss} | {figures['broker_peak_mb']} | "
                         f"{figures['database']['size_mb']} |")
    lines.append("")
    for target, value in results.get("targets", {}).items():
        lines.append(f"- {target}: {value['value']} (target {value['target']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
