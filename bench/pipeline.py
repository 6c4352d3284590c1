"""The pipeline measurements: real PostgreSQL, the two Redis instances and supervisord with Celery worker programs,
exactly as the test suite starts them (tests/services.py), driven through the `soniquebay` command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

from tests.services import QUEUES, REPO, Stack, Supervisor, wait_for

VENV_BIN = Path(sys.executable).parent

@dataclass(frozen=True)
class WorkerConfig:
    """One way of running the workers: supervisor programs and the environment they read."""

    name: str
    # program -> overrides of the supervisor role's sizing for the test host (tests/services.py), e.g.
    # {"concurrency": 4}; {} runs it as the role sizes it.
    programs: dict[str, dict]
    queues: dict[str, list[str]] = field(default_factory=dict)  # program -> queues, when not just its own name
    env: dict[str, str] = field(default_factory=dict)
    role_vars: dict = field(default_factory=dict)  # more supervisor role variables, e.g. supervisor_worker_extra_args

    def describe(self) -> dict:
        """The programs as they run (the supervisor role's sizing with this configuration's overrides)."""
        supervisor = Supervisor(Path("supervisor"), Path("worker.env"), dict(self.programs), dict(self.queues))
        sized = supervisor.sized_programs()
        return {
            "programs": {name: {"queues": self.queues.get(name, [name]), "concurrency": sized[name]["concurrency"],
                                "prefetch_multiplier": sized[name]["prefetch_multiplier"]}
                         for name in self.programs},
            "env": self.env,
        }


# The tuned per-queue settings for a 2-core host: the supervisor programs the tests run (one per queue, extract
# with one process per core), files in batches of SONIQUEBAY_BATCH_SIZE (200 by default).
PIPELINE = WorkerConfig("pipeline", {queue: {} for queue in QUEUES})

# The configuration the project started from: one task per file, prefetch 1, concurrency 2 and no
# queue separation (one program consumes all five queues).
BEFORE = WorkerConfig("before", {"all": {"concurrency": 2, "prefetch_multiplier": 1}}, {"all": list(QUEUES)},
                      {"SONIQUEBAY_BATCH_SIZE": "1"})


class BenchStack:
    """The services, started once per benchmark run; worker programs restarted for each configuration."""

    def __init__(self, base: Path, library_roots: list[Path]):
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)  # the postgres user must reach its data folder inside
        self.stack = Stack(base, library_roots)
        self.config: WorkerConfig | None = None
        self._engine = None

    def start(self) -> BenchStack:
        self.stack.start_services()
        self.stack.soniquebay("db", "upgrade")
        self._engine = create_engine(self.stack.postgres.url, future=True)
        return self

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.stack.stop()

    # ------------------------------------------------------------ workers

    def use(self, config: WorkerConfig) -> None:
        """(Re)start the worker programs of ``config``, each fresh, and wait until every one consumes."""
        self.stop_workers()
        # The tag pipeline is what is measured here; audio analysis has its own benchmark (bench/analysis.py).
        self.stack.extra_env = {"SONIQUEBAY_AUDIO_ANALYSIS": "off", **config.env}
        self.stack.env_file.write_text("".join(f"{key}={value}\n" for key, value in self.stack.env.items()))
        supervisor_dir = self.stack.base / "supervisor"
        for old_log in supervisor_dir.glob("soniquebay-*.log"):
            old_log.unlink()
        supervisor = self.stack.start_workers(config.programs, config.queues, config.role_vars)
        for program in config.programs:
            log = supervisor.log(program)
            wait_for(lambda log=log: log.exists() and " ready." in log.read_text(errors="replace"), 120,
                     f"worker {program} ready")
        self.config = config

    def stop_workers(self) -> None:
        if self.stack.supervisor is not None:
            self.stack.supervisor.stop()
            self.stack.supervisor = None
        self.config = None

    def program_pids(self) -> dict[str, int]:
        pids = {}
        for program in self.config.programs:
            # The role names each program's process PROGRAM-cN, in a group (tests/services.py Supervisor.process).
            out = self.stack.supervisor.ctl("pid", self.stack.supervisor.process(program), check=False).strip()
            if out.isdigit():
                pids[program] = int(out)
        return pids

    def worker_logs(self) -> dict[str, Path]:
        return {program: self.stack.supervisor.log(program) for program in self.config.programs}

    # ------------------------------------------------------------ catalogue

    def sql(self, statement: str) -> list:
        with self._engine.begin() as connection:
            result = connection.execute(text(statement))
            return result.all() if result.returns_rows else []

    def empty_catalogue(self) -> None:
        # Scan ids keep growing: a message left over from a stopped scan can never match a new scan's units.
        self.sql("TRUNCATE track_artists, tracks, albums, artists, covers, scan_failures, scan_folders, scan_units, "
                 "scans CASCADE")

    def analyze(self) -> None:
        """What autovacuum would have done between a first scan and the next one."""
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))

    def counts(self) -> dict[str, int]:
        return {table: self.sql(f"SELECT count(*) FROM {table}")[0][0]
                for table in ("tracks", "albums", "artists", "covers", "scan_failures")}

    # ------------------------------------------------------------ scans

    def scan(self, root: Path, timeout: float = 7200, partial: bool = False) -> dict:
        """`soniquebay scan ROOT --wait --json [--timeout T]`; returns its summary plus the command's wall time.
        With ``partial``, a scan still running after ``timeout`` is a result too (status "timeout", the figures so
        far); the caller then stops the workers and purges the queues."""
        started = time.perf_counter()
        result = self.stack.soniquebay("scan", str(root), "--wait", "--json", "--timeout", str(timeout),
                                       timeout=timeout + 120, check=False)
        wall = time.perf_counter() - started
        try:
            summary = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RuntimeError(f"soniquebay scan failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}") from None
        if summary.get("status") != "complete" and not (partial and summary.get("status") == "timeout"):
            raise RuntimeError(f"scan did not complete: {summary} {result.stderr[-2000:]}")
        summary["command_seconds"] = wall
        return summary

    def purge_queues(self) -> None:
        """Drop every message still queued (after a scan stopped at its time limit and its workers stopped)."""
        subprocess.run([str(VENV_BIN / "celery"), "-A", "worker_app", "purge", "-f", "-Q", ",".join(QUEUES)],
                       env=self.stack.cli_env(), cwd=REPO, capture_output=True, check=True)

    def cpu_roots(self) -> dict[str, list[int]]:
        """Process trees to account CPU to: each worker program, PostgreSQL, the two Redis, this process."""
        roots = {f"worker:{program}": [pid] for program, pid in self.program_pids().items()}
        for name, pidfile in (("postgresql", self.stack.postgres.data_dir / "postmaster.pid"),
                              ("redis", self.stack.broker.folder / "redis.pid"),
                              ("redis", self.stack.cache.folder / "redis.pid")):
            try:
                roots.setdefault(name, []).append(int(pidfile.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        roots["bench + command line"] = [os.getpid()]
        return roots


class Sampler:
    """Calls ``_sample`` every ``interval`` seconds in a thread while the ``with`` block runs, and once at its end."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        raise NotImplementedError


class RssSampler(Sampler):
    """Peak resident memory of each supervisor program's process tree (the Celery main process and its pool
    children), sampled with psutil while a scan runs."""

    def __init__(self, program_pids: dict[str, int], interval: float = 0.5):
        super().__init__(interval)
        self.program_pids = program_pids
        self.peak_total: dict[str, int] = {name: 0 for name in program_pids}
        self.peak_process: dict[str, int] = {name: 0 for name in program_pids}
        self.processes: dict[str, int] = {name: 0 for name in program_pids}

    def _sample(self) -> None:
        # One pass over the process table per sample (psutil's children() would walk it once per program).
        children: dict[int, list[int]] = {}
        for process in psutil.process_iter(["ppid"]):
            children.setdefault(process.info["ppid"], []).append(process.pid)
        for name, pid in self.program_pids.items():
            tree, pending = [], [pid]
            while pending:
                current = pending.pop()
                tree.append(current)
                pending.extend(children.get(current, []))
            sizes = []
            for member in tree:
                try:
                    sizes.append(psutil.Process(member).memory_info().rss)
                except psutil.Error:
                    pass
            if not sizes:
                continue
            self.peak_total[name] = max(self.peak_total[name], sum(sizes))
            self.peak_process[name] = max(self.peak_process[name], max(sizes))
            self.processes[name] = max(self.processes[name], len(sizes))

    def megabytes(self, peaks: dict[str, int]) -> dict[str, float]:
        return {name: round(value / 2**20, 1) for name, value in peaks.items()}


class CpuAccount:
    """CPU seconds used while a measurement ran: by each named process tree (a root's own time, its live
    descendants' and its reaped children's), and by everything else on this shared host."""

    def __init__(self, roots: dict[str, list[int]]):
        self.roots = roots

    @staticmethod
    def _tree_seconds(pids: list[int], seen: set[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                if process.pid in seen:
                    continue
                seen.add(process.pid)
                try:
                    t = process.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
        return total

    def _snapshot(self) -> dict[str, float]:
        seen: set[int] = set()
        return {name: self._tree_seconds(pids, seen) for name, pids in self.roots.items()}

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def __enter__(self) -> CpuAccount:
        self._wall, self._busy0, self._trees0 = time.perf_counter(), self._busy(), self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        busy = self._busy() - self._busy0
        trees = {name: max(0.0, seconds - self._trees0.get(name, 0.0)) for name, seconds in self._snapshot().items()}
        ours = sum(trees.values())
        self.wall = wall
        self.cpu_seconds = {name: round(seconds, 3) for name, seconds in trees.items()}
        self.result = {"cores_used_by_bench": round(ours / wall, 2),
                       "cores_used_by_others": round(max(busy - ours, 0.0) / wall, 2)}


_TASK_DONE = re.compile(r"Task (\S+)\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def task_seconds(logs: dict[str, Path], offsets: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
    """Per program: the number of tasks and the seconds their bodies ran, by task name (from the workers' INFO
    log lines "Task NAME[id] succeeded in Xs" written after ``offsets``)."""
    figures: dict[str, dict[str, float]] = {}
    for program, log in logs.items():
        per_task: dict[str, list] = {}
        try:
            with open(log, "rb") as handle:
                handle.seek((offsets or {}).get(program, 0))
                content = handle.read().decode(errors="replace")
        except OSError:
            continue
        for name, seconds in _TASK_DONE.findall(content):
            entry = per_task.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += float(seconds)
        figures[program] = {name: {"tasks": n, "seconds": round(s, 3)} for name, (n, s) in per_task.items()}
    return figures
