"""Workers that stopped answering are killed, so that supervisor starts them again.

Supervisor keeps a process alive; it cannot tell a worker that works from one whose Celery main process no longer
serves its event loop (blocked on a broker socket that will never answer, celery#2906; a consumer that stopped
reading after a reconnection, celery#8030; a process frozen): that worker stays RUNNING, keeps the messages it
reserved until the visibility timeout gives them to another, and a deferred worker takes its clocks (the relay, the
stalled-scan check) down with it, so a scan waits for ever.

``soniquebay watchdog``, a supervisor event listener on every worker host, pings the host's workers through the
broker (Celery's ``ping``: answered by the main process's event loop, whatever the pool is doing) and kills the
process group of a worker that answered nothing for ``timeout`` seconds. Supervisor starts it again (autorestart),
and what it held comes back as after any lost worker: the visibility timeout, the relay, the stall check.
Each kill is logged and sent as a Celery event (``soniquebay-worker-killed``), which the fleet's exporter counts
(``soniquebay_watchdog_kills_total{node}``) and an alert reports: a worker that hangs again and again is a bug or a
sick host, not something to leave to the watchdog.

What it never takes for a hung worker:
- a broker it cannot reach itself: no worker could answer, so none is judged, and every worker's clock starts again
  once the broker answers (they reconnect with a backoff);
- a worker supervisor is stopping (the event PROCESS_STATE_STOPPING): a warm shutdown stops answering while its
  tasks run to their end, which supervisor's stopwaitsecs bounds;
- a worker starting: until its first answer it has STARTUP_SECONDS at least (Celery's start on a loaded host,
  imports and first connection, took tens of seconds here), counted from when the watchdog found its process.

It runs as the workers' user with their env file: it can signal their processes and reach the broker as they do,
and needs no supervisor socket. It finds the workers among its own parent's (supervisord's) children by the node
name on their command line (``-n QUEUE@%h``, the role renders both from one format), and checks that again just
before it kills, so a PID taken by another process since is never signalled.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

STARTUP_SECONDS = 180


def probe_interval(timeout: float) -> float:
    """Seconds between pings: a few per timeout, so that one slow answer on a loaded host is not a verdict."""
    return max(5.0, timeout / 10)


def probe_timeout(timeout: float) -> float:
    """Seconds a ping waits for its answers."""
    return max(2.0, min(10.0, timeout / 20))


# A ping of some nodes: those that answered, or None when the broker did not take the ping (then nobody is judged).
Ping = Callable[[list[str], float], set[str] | None]
# What is done after a kill besides the log: (node, pid, seconds without an answer).
Report = Callable[[str, int, float], None]
KILLED_EVENT = "soniquebay-worker-killed"


@dataclass
class Watched:
    pattern: str  # the node name as written on the worker's command line, e.g. "extract@%h"
    node: str  # the name it answers by, e.g. "extract@host1"
    pid: int = 0  # its Celery main process, 0 while none is found
    since: float = 0.0  # monotonic: its last answer, or when this process was found
    answered: bool = False  # this process answered once: it has started
    stopping: bool = False


def node_option(pid: int) -> str | None:
    """The node name (``-n``/``--hostname``) on a process's command line, None without one or without the process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in (b"-n", b"--hostname"):
            return value.decode(errors="replace")
    return None


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_named(parent: int, patterns: Iterable[str]) -> dict[str, int]:
    """{node pattern: PID} of ``parent``'s children whose command line names one of ``patterns``."""
    wanted = set(patterns)
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if parent_of(pid) != parent:
            continue
        name = node_option(pid)
        if name in wanted:
            found[name] = pid
    return found


def kill_group(pid: int) -> None:
    """SIGKILL a worker with its pool (and their ffmpeg children): supervisor makes each program its own group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Watchdog:
    def __init__(self, patterns: Iterable[str], timeout: float, ping: Ping, *, supervisord: int,
                 expand: Callable[[str], str], report: Report | None = None):
        self.timeout = timeout
        self.probe_every = probe_interval(timeout)
        self.probe_timeout = probe_timeout(timeout)
        self.ping = ping
        self.supervisord = supervisord
        self.report = report
        self.watched = {pattern: Watched(pattern, expand(pattern)) for pattern in patterns}
        self.last_probe = float("-inf")
        self.broker_lost = False

    def stopping(self, pid: int) -> None:
        """Supervisor is stopping this process: a warm shutdown, not to be judged."""
        for worker in self.watched.values():
            if worker.pid == pid:
                worker.stopping = True

    def tick(self) -> list[str]:
        """Find the workers, ping them when a probe is due, and kill those silent for ``timeout``; returns the nodes
        killed."""
        now = time.monotonic()
        found = children_named(self.supervisord, self.watched)
        for pattern, worker in self.watched.items():
            pid = found.get(pattern, 0)
            if pid != worker.pid:
                worker.pid, worker.since, worker.answered, worker.stopping = pid, now, False, False
        running = [worker for worker in self.watched.values() if worker.pid]
        if not running or now - self.last_probe < self.probe_every:
            return []
        self.last_probe = now
        answered = self.ping([worker.node for worker in running], self.probe_timeout)
        now = time.monotonic()  # the ping took seconds
        if answered is None:
            if not self.broker_lost:
                log.warning("the broker does not take a ping: no worker is judged until it does")
            self.broker_lost = True
            for worker in running:
                worker.since = now
            return []
        if self.broker_lost:
            log.info("the broker takes pings again")
            self.broker_lost = False
        killed = []
        for worker in running:
            if worker.node in answered:
                if not worker.answered:
                    log.info("%s (pid %d) answers", worker.node, worker.pid)
                worker.since, worker.answered = now, True
            elif not worker.stopping and now - worker.since >= self.allowed(worker):
                if self._kill(worker, now):
                    killed.append(worker.node)
        return killed

    def allowed(self, worker: Watched) -> float:
        return self.timeout if worker.answered else max(self.timeout, STARTUP_SECONDS)

    def _kill(self, worker: Watched, now: float) -> bool:
        if node_option(worker.pid) != worker.pattern or parent_of(worker.pid) != self.supervisord:
            worker.pid = 0  # gone, or its PID is another process's now: found again at the next tick
            return False
        log.error("%s (pid %d) answered no ping for %d s%s while the broker answers: killing its process group, "
                  "supervisor starts it again and its messages come back", worker.node, worker.pid,
                  now - worker.since, "" if worker.answered else " since it started")
        kill_group(worker.pid)
        if self.report is not None:
            self.report(worker.node, worker.pid, now - worker.since)
        worker.pid, worker.since = 0, now
        return True


def broker_ping(app: Any) -> Ping:
    """Celery's ping through the broker; None when the broker cannot be reached. kombu retries a publish for as long
    as the connection fails, so the whole ping has a time limit of its own."""
    from kombu.exceptions import OperationalError

    from worker_app.metadata.timelimit import FileTimeLimit, FileTimeLimitExceeded

    def ping(nodes: list[str], timeout: float) -> set[str] | None:
        try:
            with FileTimeLimit(timeout + 20), app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
                replies = app.control.ping(destination=nodes, timeout=timeout, limit=len(nodes),
                                           connection=connection)
        except (OperationalError, OSError, FileTimeLimitExceeded) as error:
            log.debug("ping: %r", error)
            return None
        return {node for reply in replies for node in reply}

    return ping


def broker_report(app: Any) -> Report:
    """Send each kill as a Celery event on the broker (which has just answered), for the exporter to count."""

    def report(node: str, pid: int, silent_seconds: float) -> None:
        from worker_app.metadata.timelimit import FileTimeLimit, FileTimeLimitExceeded

        try:
            with FileTimeLimit(30), app.connection_for_write() as connection, \
                    app.events.Dispatcher(connection, hostname=f"watchdog@{socket.gethostname()}") as dispatcher:
                dispatcher.send(KILLED_EVENT, node=node, worker_pid=pid, silent_seconds=round(silent_seconds, 1))
        except (Exception, FileTimeLimitExceeded) as error:  # noqa: BLE001 - the kill is done and logged anyway
            log.warning("could not send the %s event of %s: %r", KILLED_EVENT, node, error)

    return report


def listen(watchdog: Watchdog, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """Supervisor's event listener protocol: TICK_5 runs a tick, PROCESS_STATE_STOPPING marks a warm shutdown."""
    from supervisor import childutils

    while True:
        headers, payload = childutils.listener.wait(stdin, stdout)
        try:
            event = headers["eventname"]
            if event.startswith("TICK_"):
                watchdog.tick()
            elif event == "PROCESS_STATE_STOPPING":
                watchdog.stopping(int(childutils.get_headers(payload)["pid"]))
        except Exception:  # noqa: BLE001 - a watchdog that dies watches nothing; the next tick tries again
            log.exception("watchdog: %s", headers.get("eventname"))
        finally:
            childutils.listener.ok(stdout)
