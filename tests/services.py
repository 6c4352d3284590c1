"""Real services for the tests and benchmarks: a private PostgreSQL cluster, the two Redis instances (broker with
AOF + noeviction, cache with allkeys-lru), and supervisord running one Celery worker program per queue, rendered
from the Ansible supervisor role's template and sizing (tests/supervisor_role.py). Everything lives in one folder
and on free loopback ports, so nothing touches services that a deployment on this machine may run."""
from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker_app.limits import QUEUES

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class PostgresServer:
    base: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    user: str = "soniquebay"
    database: str = "soniquebay"
    duty_passwords: dict[str, str] = field(default_factory=dict)
    # Off: a commit is acknowledged before its WAL is written, which is faster and loses the last commits when the
    # server crashes. The fault tests crash it, and production keeps it on: they run with it on.
    synchronous_commit: bool = False
    # The tests' catalogues are small; a benchmark sizes it as the postgresql role would for its host.
    shared_buffers_mb: int = 256

    @property
    def data_dir(self) -> Path:
        return self.base / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def duty_role(self, duty: str) -> str:
        from worker_app.db.privileges import role_name

        return role_name(self.user, duty)

    def duty_password(self, duty: str) -> str:
        """Each duty's own random password, chosen once (as the vault holds one per duty)."""
        return self.duty_passwords.setdefault(duty, secrets.token_hex(12))

    def duty_url(self, duty: str) -> str:
        """The URL of a duty's login role (worker_app/db/privileges.py), as the Ansible roles write it."""
        return (f"postgresql+psycopg2://{self.duty_role(duty)}:{self.duty_password(duty)}@127.0.0.1:{self.port}/"
                f"{self.database}")

    def create_duty_roles(self) -> None:
        """The login role of each duty, as the postgresql role creates them: LOGIN and nothing else; their
        privileges come from `soniquebay db upgrade` (or `db grant`)."""
        from worker_app.db.privileges import DUTIES

        sql = "".join(f"CREATE ROLE {self.duty_role(duty)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                      f"PASSWORD '{self.duty_password(duty)}';" for duty in DUTIES)
        # On standard input: a password in psql's command line would show in ps.
        self._as_postgres(str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(self.port), "-U", self.user,
                          "-d", self.database, "-v", "ON_ERROR_STOP=1", "-Atq", "-f", "-", input=sql)

    def _as_postgres(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        # PostgreSQL refuses to run as root; the tests run as root on CI.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pgpass"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8",
        )
        pwfile.unlink()
        self.start_again()
        self._as_postgres(
            str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(self.port), "-U", self.user, "-d", "postgres",
            "-c", f"CREATE DATABASE {self.database}",
        )
        return self

    def start_again(self) -> None:
        """Start the cluster (made by start()) after a stop."""
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.base} "
            f"-c fsync=off -c synchronous_commit={'on' if self.synchronous_commit else 'off'} "
            "-c full_page_writes=off -c max_connections=200 "
            f"-c shared_buffers={self.shared_buffers_mb}MB"
        )
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.base / "postgres.log"),
            "-o", options, "-w", "start",
        )

    def psql(self, sql: str) -> str:
        """Run SQL as the cluster's superuser (the tests' own role); returns what psql printed."""
        return self._as_postgres(
            str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(self.port), "-U", self.user, "-d", self.database,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        ).stdout

    def stop(self) -> None:
        """Stop at once, as a crash or a pulled plug would (no checkpoint, connections cut)."""
        if self.data_dir.exists():
            subprocess.run(
                [*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                 str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"],
                capture_output=True,
            )


@dataclass
class RedisServer:
    base: Path
    name: str
    policy: str  # maxmemory-policy
    appendonly: bool
    maxmemory: str = "512mb"
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def watcher_url(self) -> str:
        """A user that may only MONITOR: what every client sends, as the server receives it."""
        return f"redis://watcher:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def folder(self) -> Path:
        return self.base / f"redis-{self.name}"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "redis.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize yes\n"
            f"pidfile {self.folder}/redis.pid\nlogfile {self.folder}/redis.log\ndir {self.folder}\n"
            f"appendonly {'yes' if self.appendonly else 'no'}\nappendfsync everysec\n"
            f"maxmemory {self.maxmemory}\nmaxmemory-policy {self.policy}\nsave \"\"\n"
            # Like the Ansible role: a password, and the dangerous commands (FLUSHALL, CONFIG SET, DEBUG,
            # KEYS...) refused; INFO and CONFIG GET stay for monitoring and the tests.
            f"user default on >{self.password} ~* &* +@all -@dangerous +info +config|get\n"
            # The tests' own eyes on the traffic (MONITOR), which no worker has.
            f"user watcher on >{self.password} -@all +monitor\n"
        )
        subprocess.run(["redis-server", str(config)], check=True, capture_output=True)
        wait_for(lambda: _port_open(self.port), 10, f"redis {self.name} on port {self.port}")
        return self

    def cli(self, *args: str) -> str:
        # The password in the environment, not in argv, where `ps` would show it.
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], env={**os.environ, "REDISCLI_AUTH": self.password},
            check=True, capture_output=True, text=True,
        )
        return result.stdout.strip()

    def pid(self) -> int | None:
        try:
            return int((self.folder / "redis.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def signal(self, signum: int) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def crash(self) -> None:
        """kill -9: what the AOF had not written to disk yet is lost, as in a real crash."""
        pid = self.pid()
        self.signal(signal.SIGKILL)
        if pid is not None:
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, f"redis {self.name} to die")
        (self.folder / "redis.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)


# Workers never rely on root's power to read any file: in production they run as an unprivileged user; here,
# where the tests may run as root, they run without the capabilities that bypass file permissions, so a folder
# with mode 000 is as unreadable to them as it would be in production.
WITHOUT_FILE_OVERRIDE = (
    "setpriv --inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search "
    if os.geteuid() == 0 else ""
)

# The test host, in the supervisor role's own variables: its facts (2 vCPUs, 2 GiB: one batch process) and the
# role's concurrency caps lowered so that every queue but extract runs one process (CI has 2 cores, and several
# tests count on a single process per queue). startsecs is short because every test start waits for RUNNING;
# tests that check the role's start behaviour set it back (``role_vars``).
TEST_HOST_VARS: dict = {
    "ansible_facts": {"processor_vcpus": 2, "memtotal_mb": 2048, "service_mgr": "none"},
    "supervisor_scan_concurrency_max": 1,
    "supervisor_insert_concurrency_max": 1,
    "supervisor_worker_startsecs": 3,
}


@dataclass
class Supervisor:
    """supervisord with one program per queue, each rendered from the supervisor role's template with the role's
    sizing for the test host: `celery -A worker_app worker -Q QUEUE -n QUEUE@%h ...`."""

    base: Path
    env_file: Path
    # Program (queue) -> overrides of its sizing, as the role's supervisor_worker_overrides, e.g.
    # {"insert": {"concurrency": 4}}; a program with no override runs as the role sizes it.
    programs: dict[str, dict] = field(default_factory=lambda: {queue: {} for queue in QUEUES})
    # Program name -> the queues it consumes, for a program that does not consume just the queue it is named after
    # (the benchmark's "before": one program for all five queues).
    queues: dict[str, list[str]] = field(default_factory=dict)
    # More role variables over TEST_HOST_VARS.
    role_vars: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.base / "supervisord.conf"

    def log(self, name: str) -> Path:
        """A program's log (the role's stdout_logfile, in this supervisor's folder)."""
        return self.base / f"soniquebay-{name}.log"

    def role_variables(self) -> dict:
        """The role's variables for this host, with the paths, user and release of the test stack."""
        from tests.supervisor_role import host_variables

        variables = {
            **TEST_HOST_VARS,
            "inventory_hostname": socket.gethostname(),
            "group_names": list(self.programs),
            "ansible_managed": "Rendered by tests/services.py from the supervisor role",
            "supervisor_release": "tests",
            "supervisor_worker_user": pwd.getpwuid(os.geteuid()).pw_name,
            "supervisor_worker_home": str(self.base / "home"),
            "supervisor_venv": str(VENV_BIN.parent),
            "supervisor_env_file": str(self.env_file),
            "supervisor_worker_log_dir": str(self.base),
            "supervisor_queues": list(self.programs),
            "supervisor_worker_overrides": self.programs,
            **self.role_vars,
        }
        if self.queues:
            # A program over several queues: the role has no such program; it runs with the sizing of its first
            # queue and the longest of their time limits.
            role_queues = host_variables(variables)["supervisor_worker_queues"]
            variables["supervisor_worker_queues"] = {**role_queues, **{
                name: {**role_queues[consumed[0]],
                       "time_limit": max(int(role_queues[queue]["time_limit"]) for queue in consumed)}
                for name, consumed in self.queues.items()}}
        return host_variables(variables)

    def sized_programs(self) -> dict[str, dict]:
        """Each program as the role sizes it (concurrency, prefetch_multiplier, time_limit...), by name."""
        from tests.supervisor_role import size_programs

        return {item["queue"]: item for item in size_programs(self.role_variables())}

    def write_config(self) -> None:
        from tests.supervisor_role import render_program, render_watchdog, size_programs

        (self.base / "home").mkdir(parents=True, exist_ok=True)
        lines = [
            "[unix_http_server]", f"file={self.base}/supervisor.sock", "chmod=0700", "",
            "[supervisord]", f"logfile={self.base}/supervisord.log", f"pidfile={self.base}/supervisord.pid",
            f"childlogdir={self.base}", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.base}/supervisor.sock", "",
        ]
        variables = self.role_variables()
        sections = []
        for item in size_programs(variables):
            section = render_program(item, variables).replace("command=", f"command={WITHOUT_FILE_OVERRIDE}", 1)
            if item["queue"] in self.queues:
                section = section.replace(f" -Q {item['queue']} ", f" -Q {','.join(self.queues[item['queue']])} ", 1)
            sections.append(section)
        if self.watchdog:
            sections.append(render_watchdog(variables))
        self.config.write_text("\n".join(lines) + "\n".join(sections))

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["supervisorctl", "-c", str(self.config), *args], capture_output=True, text=True
        )
        if check and result.returncode not in (0, 3):  # 3: some program not running; status still printed
            raise RuntimeError(f"supervisorctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> Supervisor:
        self.base.mkdir(parents=True, exist_ok=True)
        self.write_config()
        # The workers read their settings from env_file alone: none inherited from this process.
        env = {key: value for key, value in os.environ.items() if not key.startswith("SONIQUEBAY_")}
        readied = self._ready_lines()
        subprocess.run(["supervisord", "-c", str(self.config)], check=True, env=env)
        self._wait_ready(readied)
        return self

    def restart_all(self) -> None:
        """Restart every program (they read the env file again), and wait until each worker is ready again."""
        readied = self._ready_lines()
        self.ctl("restart", "all")
        self._wait_ready(readied)

    def _wait_ready(self, readied: dict[str, int]) -> None:
        wait_for(self.all_running, 60, "every worker program RUNNING")
        # RUNNING is supervisor's view (the process lived startsecs); a worker consumes only once Celery says it is
        # ready, which takes tens of seconds on a loaded machine, and a scan started before would see no worker.
        wait_for(lambda: all(count > readied.get(name, 0) for name, count in self._ready_lines().items())
                 and len(self._ready_lines()) == len(self.programs), 180, "every worker ready")

    def _ready_lines(self) -> dict[str, int]:
        """How many times each program's log says its worker was ready."""
        return {name: self.log(name).read_text(errors="replace").count(" ready.")
                for name in self.programs if self.log(name).exists()}

    def group(self, name: str) -> str:
        """How supervisorctl names a queue's program for stop/start/restart: the role names its process
        PROGRAM-cN (the concurrency), so the program is a group, ``soniquebay-QUEUE:``."""
        return f"soniquebay-{name}:"

    def process(self, name: str) -> str:
        """A queue program's one process, as `supervisorctl pid` needs it."""
        return f"soniquebay-{name}:soniquebay-{name}-c{self.sized_programs()[name]['concurrency']}"

    def kill_program(self, name: str) -> int:
        """SIGKILL a program's whole process group (the Celery main process and its pool), as losing the host would;
        supervisord then starts it again. Returns the killed main PID."""
        pid = int(self.ctl("pid", self.process(name)).strip())
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        return pid

    def pool_pids(self, name: str) -> list[int]:
        """The pool processes (children) of a program's Celery main process."""
        main = int(self.ctl("pid", self.process(name)).strip())
        try:
            children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in children]

    @functools.cached_property
    def watchdog(self) -> bool:
        """Whether the role runs its watchdog beside these programs (it does unless role_vars turn it off)."""
        from tests.supervisor_role import watchdog_wanted

        return watchdog_wanted(self.role_variables())

    def all_running(self) -> bool:
        status = self.ctl("status", check=False)
        lines = [line for line in status.splitlines() if line.strip()]
        return len(lines) == len(self.programs) + self.watchdog and all(" RUNNING " in line for line in lines)

    def stop(self) -> None:
        pidfile = self.base / "supervisord.pid"
        if pidfile.exists():
            self.ctl("stop", "all", check=False)
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "supervisord to exit")
            except (ProcessLookupError, ValueError):
                pass


@dataclass
class Stack:
    """The whole single-host system the tests run against."""

    base: Path
    library_roots: list[Path]
    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: PostgresServer = field(init=False)
    broker: RedisServer = field(init=False)
    cache: RedisServer = field(init=False)
    supervisor: Supervisor | None = field(init=False, default=None)

    def __post_init__(self):
        self.postgres = PostgresServer(self.base / "pg")
        self.broker = RedisServer(self.base, "broker", "noeviction", appendonly=True)
        self.cache = RedisServer(self.base, "cache", "allkeys-lru", appendonly=False)

    @property
    def env_file(self) -> Path:
        return self.base / "worker.env"

    @property
    def env(self) -> dict[str, str]:
        from worker_app.db.privileges import DUTIES

        return {
            "SONIQUEBAY_BROKER_URL": self.broker.url(),
            "SONIQUEBAY_RESULT_BACKEND": self.cache.url(),
            # The owner's: the tests' own process and `soniquebay db upgrade`. Every worker connects with its
            # duty's role instead, and the command line's read commands with the reader's.
            "SONIQUEBAY_DATABASE_URL": self.postgres.url,
            **{f"SONIQUEBAY_DATABASE_URL_{duty.upper()}": self.postgres.duty_url(duty) for duty in DUTIES},
            "SONIQUEBAY_LIBRARY_ROOTS": os.pathsep.join(str(root) for root in self.library_roots),
            # The periodic drain of the analysis backlog would analyse tracks that tests leave in the backlog on
            # purpose: off, but in the test about it (tests/test_analysis_drain.py).
            "SONIQUEBAY_ANALYSIS_BACKLOG_INTERVAL": "0",
            **self.extra_env,
        }

    def start_services(self) -> Stack:
        self.base.mkdir(parents=True, exist_ok=True)
        try:
            self.postgres.start()
            self.postgres.create_duty_roles()
            self.broker.start()
            self.cache.start()
        except BaseException:
            self.stop()
            raise
        self.write_env_file()
        return self

    def write_env_file(self) -> None:
        """The workers' environment (``env``) as their programs read it when they start."""
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in self.env.items()))
        self.env_file.chmod(0o600)

    def start_workers(self, programs: dict[str, dict] | None = None,
                      queues: dict[str, list[str]] | None = None, role_vars: dict | None = None) -> Supervisor:
        self.supervisor = Supervisor(self.base / "supervisor", self.env_file,
                                     programs or {queue: {} for queue in QUEUES}, dict(queues or {}),
                                     dict(role_vars or {}))
        return self.supervisor.start()

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQUEBAY_")}
        env.update(SONIQUEBAY_ENV_FILE=str(self.env_file), PYTHONPATH=str(REPO))
        return env

    def soniquebay(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "soniquebay"), *args], env=self.cli_env(), capture_output=True, text=True,
            timeout=timeout, check=check,
        )

    def wait_for_unit(self, scan_id: int, key: str, timeout: float = 120) -> tuple[str, int, int]:
        """(state, inserted, failed) of a scan unit once the pipeline has closed it."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from worker_app.db.models import ScanUnit
        from worker_app.db.session import get_engine

        def closed():
            with Session(get_engine()) as session:
                unit = session.execute(select(ScanUnit).where(ScanUnit.scan_id == scan_id, ScanUnit.key == key)
                                       ).scalar_one()
                return (unit.state, unit.inserted, unit.failed) if unit.state == "done" else None

        return wait_for(closed, timeout, f"unit {key} of scan {scan_id}", interval=0.3)

    def wait_for_scan(self, scan_id: int, timeout: float = 120) -> None:
        """Until the pipeline has marked the scan complete."""
        from sqlalchemy.orm import Session

        from worker_app.db.models import Scan
        from worker_app.db.session import get_engine

        def complete():
            with Session(get_engine()) as session:
                return session.get(Scan, scan_id).status == "complete"

        wait_for(complete, timeout, f"scan {scan_id} to complete", interval=0.3)

    def diagnostics(self, lines: int = 30) -> str:
        """What a person would look at when a scan does not finish: its status and the workers' last words."""
        report = ["", "== soniquebay status", self.soniquebay("status", "--json", check=False).stdout]
        if self.supervisor:
            report += ["== supervisorctl status", self.supervisor.ctl("status", check=False)]
            for log in sorted(self.supervisor.base.glob("soniquebay-*.log")):
                report += [f"== {log.name}", *log.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(report)

    def stop(self) -> None:
        if self.supervisor:
            self.supervisor.stop()
        self.broker.stop()
        self.cache.stop()
        self.postgres.stop()
