"""The benchmark's verdicts (its targets, as ratios within one run), its table and its plot."""
from __future__ import annotations

from pathlib import Path

from worker_app.limits import QUEUES

RATE_ROWS = [
    ("limit_1proc", "mutagen.File loop, 1 process"),
    ("limit_all_cores", "mutagen.File loop, 1 process per core"),
    ("pipeline", "pipeline, first scan"),
    ("before", "seed's 'before' config, first scan"),
    ("beets", "beets import -A -q"),
    ("rescan_nochange", "rescan, nothing changed"),
    ("rescan_1pct_changed", "rescan, 1% changed"),
    ("rescan_1pct_removed", "rescan, 1% removed"),
]
WORKER_KINDS = list(QUEUES)  # one supervisor program per queue

# The marginal cost of a 1% change (rescan with 1% changed minus rescan with nothing changed, over the first
# scan's time) passes as "about 1%" up to this.
ONE_PERCENT_TOLERANCE = 0.02


def cpu_ms_per_file(entry: dict, key: str) -> float | None:
    """CPU milliseconds per file: the mutagen loop's own, or a pipeline scan's over every process it ran on (the
    worker programs, PostgreSQL, both Redis; not the command line watching it)."""
    detail = entry.get("details", {}).get(key)
    if isinstance(detail, list):  # the limit, measured before and after
        values = [run.get("cpu_ms_per_file") for run in detail if run.get("cpu_ms_per_file")]
        return sum(values) / len(values) if values else None
    if isinstance(detail, dict) and detail.get("cpu_ms_per_file"):
        return sum(value for name, value in detail["cpu_ms_per_file"].items() if name != "bench + command line")
    return None


def _seconds(entry: dict, key: str) -> float | None:
    detail = entry.get("details", {}).get(key)
    return detail.get("seconds") if isinstance(detail, dict) else None


def targets(results: dict) -> list[dict]:
    cores = results["cores"]
    verdicts: list[dict] = []

    def add(size, name, value, threshold, passed, note=""):
        verdicts.append({"size": size, "target": name, "value": round(value, 3), "threshold": threshold,
                         "pass": bool(passed), "note": note})

    for size, entry in results["sizes"].items():
        pipeline = entry.get("pipeline")
        if not pipeline:
            continue
        if entry.get("limit_1proc"):
            ratio = pipeline / (entry["limit_1proc"] * cores)
            add(size, f"pipeline >= 0.7 x (1-process mutagen loop x {cores} cores)", ratio, 0.7, ratio >= 0.7,
                f"pipeline {pipeline:.0f} files/s, limit {entry['limit_1proc']:.0f} x {cores}")
        mutagen_cpu, pipeline_cpu = cpu_ms_per_file(entry, "limit_1proc"), cpu_ms_per_file(entry, "pipeline")
        if mutagen_cpu and pipeline_cpu:
            ratio = mutagen_cpu / pipeline_cpu
            add(size, "same, CPU-based: mutagen's CPU per file / the pipeline's (robust to other load)", ratio, 0.7,
                ratio >= 0.7, f"{pipeline_cpu:.2f} ms per file over all the pipeline's processes, mutagen "
                              f"{mutagen_cpu:.2f} ms")
        if entry.get("before"):
            ratio = pipeline / entry["before"]
            add(size, "pipeline >= 10 x the seed's 'before'", ratio, 10, ratio >= 10)
        if entry.get("beets"):
            ratio = pipeline / entry["beets"]
            add(size, "pipeline >= 20 x beets", ratio, 20, ratio >= 20)
        if entry.get("rescan_nochange"):
            ratio = entry["rescan_nochange"] / pipeline
            add(size, "rescan with nothing changed >= 10 x faster than the first scan", ratio, 10, ratio >= 10)
        first, nochange = _seconds(entry, "pipeline"), _seconds(entry, "rescan_nochange")
        for key, label in (("rescan_1pct_changed", "changed"), ("rescan_1pct_removed", "removed")):
            seconds = _seconds(entry, key)
            if first and nochange is not None and seconds is not None:
                marginal = (seconds - nochange) / first
                add(size, f"1% {label} costs about 1% of a first scan (beyond a no-change rescan)", marginal,
                    ONE_PERCENT_TOLERANCE, marginal <= ONE_PERCENT_TOLERANCE,
                    f"whole rescan {seconds:.2f} s = {seconds / first:.1%} of the first scan's {first:.2f} s")
    sizes = sorted(int(size) for size, entry in results["sizes"].items() if entry.get("rss_mb"))
    pair = (10000, 50000) if {10000, 50000} <= set(sizes) else (sizes[-2], sizes[-1]) if len(sizes) >= 2 else None
    if pair:
        small, large = (results["sizes"][str(size)]["rss_mb"] for size in pair)
        for kind in small:
            if kind in large and small[kind]:
                ratio = large[kind] / small[kind]
                add(f"{pair[0]}->{pair[1]}", f"{kind} worker RSS within 20% from {pair[0]} to {pair[1]} files",
                    ratio, "0.8..1.2", 0.8 <= ratio <= 1.2, f"{small[kind]} MB -> {large[kind]} MB")
    return verdicts


def targets_text(verdicts: list[dict]) -> str:
    lines = ["targets (ratios within this run):"]
    for verdict in verdicts:
        value = verdict["value"]
        shown = f"{value:.1%}" if "1%" in verdict["target"] else f"{value:.2f}"
        lines.append(f"  {'PASS' if verdict['pass'] else 'MISS'}  [{verdict['size']:>11}] {verdict['target']}: "
                     f"{shown}" + (f"  ({verdict['note']})" if verdict["note"] else ""))
    return "\n".join(lines)


def table(results: dict) -> str:
    sizes = list(results["sizes"])
    width = max(len(label) for _, label in RATE_ROWS) + 2
    header = f"{'files/s':<{width}}" + "".join(f"{int(size):>12,}" for size in sizes)
    lines = [f"{results['date']}, {results['cores']} cores, page cache warm", header, "-" * len(header)]
    for key, label in RATE_ROWS:
        cells = []
        for size in sizes:
            value = results["sizes"][size].get(key)
            cells.append(f"{value:>12,.0f}" if value else f"{'-':>12}")
        lines.append(f"{label:<{width}}" + "".join(cells))
    for key, label in (("limit_1proc", "CPU ms/file: mutagen loop"), ("pipeline", "CPU ms/file: pipeline"),
                       ("before", "CPU ms/file: 'before'")):
        cells = [cpu_ms_per_file(results["sizes"][size], key) for size in sizes]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>12.2f}" if c else f"{'-':>12}" for c in cells))
    lines.append(f"{'other load on the host, cores':<{width}}" + "".join(
        f"{results['sizes'][size].get('details', {}).get('pipeline', {}).get('cores_used_by_others', 0):>12.2f}"
        for size in sizes))
    lines.append(f"{'first scan, seconds':<{width}}" + "".join(
        f"{_seconds(results['sizes'][size], 'pipeline') or 0:>12.2f}" for size in sizes))
    lines.append("")
    lines.append(f"{'peak RSS, MB (program tree)':<{width}}" + "".join(f"{int(size):>12,}" for size in sizes))
    kinds = []
    for size in sizes:
        for kind in results["sizes"][size].get("rss_mb", {}):
            if kind not in kinds:
                kinds.append(kind)
    for kind in kinds:
        lines.append(f"{'  ' + kind:<{width}}" + "".join(
            f"{results['sizes'][size].get('rss_mb', {}).get(kind, 0):>12.1f}" for size in sizes))
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(size) for size in results["sizes"])
    figure, axes = plt.subplots(figsize=(9, 6), dpi=110)
    styles = {"limit_1proc": ("k", "--"), "limit_all_cores": ("k", "-"), "pipeline": ("tab:blue", "-"),
              "before": ("tab:red", "-"), "beets": ("tab:orange", "-"), "rescan_nochange": ("tab:green", "-"),
              "rescan_1pct_changed": ("tab:olive", "-"), "rescan_1pct_removed": ("tab:cyan", ":")}
    for key, label in RATE_ROWS:
        points = [(size, results["sizes"][str(size)].get(key)) for size in sizes]
        points = [(x, y) for x, y in points if y]
        if not points:
            continue
        colour, line = styles[key]
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", color=colour, linestyle=line,
                  label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("library size (audio files)")
    axes.set_ylabel("files per second (log)")
    axes.set_xticks(sizes)
    axes.set_xticklabels([f"{size:,}" for size in sizes])
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(f"SoniqueBay scan throughput — {results['cores']} cores, warm page cache, {results['date'][:10]}")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
