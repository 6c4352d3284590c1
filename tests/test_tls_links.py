"""Encrypted links and Redis users by duty (least privilege), on real servers: a broker and a cache Redis that speak TLS
only, and a PostgreSQL that takes TCP clients over TLS only (the postgresql role's pg_hba.conf template), with the
certificates the tls role makes (run by ansible-playbook, as the deployment runs it) and the ACL rules of the redis
role's defaults. A Celery worker, the command line and the exporter do their work through them as the workers and
monitor users; clients without TLS, without the CA, or reaching the server by a name its certificate does not
give, are refused; so is each user's command outside its duty. The session's own stack stays plaintext on
loopback (tests/services.py): this module starts its own servers."""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import psycopg2
import pytest
import redis
import yaml

from tests.audio_factory import make_library
from tests.services import PG_BIN, REPO, VENV_BIN, PostgresServer, free_port, wait_for
from tests.supervisor_role import _environment, _render
from worker_app.db.privileges import DUTIES, role_name

pytestmark = pytest.mark.timeout(600)

ANSIBLE_BIN = REPO / ".venv-ansible" / "bin"
REDIS_DEFAULTS = yaml.safe_load((REPO / "roles/redis/defaults/main.yml").read_text())
POSTGRESQL_DEFAULTS = yaml.safe_load((REPO / "roles/postgresql/defaults/main.yml").read_text())
MONITORING = REPO / "roles/monitoring"
# A second loopback address: the servers listen on it too, but their certificates do not name it.
UNNAMED_ADDRESS = "127.0.0.2"


def _make_certificates(folder: Path) -> Path:
    """The tls role's server tasks, run by ansible-playbook on this host: the fleet CA and a server certificate
    made in ``folder/pki`` (the control node's side), installed in ``folder/tls`` as a server's would be."""
    playbook = folder / "certificates.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        # The control node's own Python (ansible-core's cryptography), as the role's control-node tasks use.
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [{"ansible.builtin.include_role": {"name": "tls", "tasks_from": "server.yml"},
                   "vars": {"tls_pki_dir": str(folder / "pki"), "tls_dest_dir": str(folder / "tls"),
                            "tls_privatekey_group": "postgres", "soniquebay_fleet_address": "127.0.0.1"}}],
    }]))
    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles")},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return folder / "tls"


@dataclass
class TLSRedis:
    """A Redis instance as the redis role configures it: TLS on its port, no plaintext port, no default user,
    one ACL user per duty with the role's rules."""
    folder: Path
    tls: Path
    users: dict[str, str]  # name -> ACL rules
    port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)

    def start(self) -> TLSRedis:
        self.folder.mkdir(parents=True)
        self.passwords = {name: secrets.token_hex(16) for name in self.users}
        acl = "".join(f"user {name} on #{hashlib.sha256(self.passwords[name].encode()).hexdigest()} {rules}\n"
                      for name, rules in self.users.items())
        (self.folder / "redis.conf").write_text(
            f"bind 127.0.0.1 {UNNAMED_ADDRESS}\nprotected-mode yes\nport 0\ntls-port {self.port}\n"
            f"tls-cert-file {self.tls}/server.crt\ntls-key-file {self.tls}/server.key\n"
            f"tls-ca-cert-file {self.tls}/ca.crt\ntls-auth-clients no\ntls-protocols \"TLSv1.2 TLSv1.3\"\n"
            f"daemonize yes\npidfile {self.folder}/redis.pid\nlogfile {self.folder}/redis.log\ndir {self.folder}\n"
            "save \"\"\nappendonly no\nmaxmemory 64mb\nmaxmemory-policy noeviction\n"
            "user default off resetkeys resetchannels -@all\n" + acl
        )
        subprocess.run(["redis-server", str(self.folder / "redis.conf")], check=True, capture_output=True)
        wait_for(lambda: (self.folder / "redis.pid").exists(), 10, "redis with TLS")
        return self

    def url(self, user: str) -> str:
        return f"rediss://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str, host: str = "127.0.0.1", **options) -> redis.Redis:
        tls = {"ssl": True, "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(self.tls / "ca.crt"),
               "ssl_check_hostname": True}
        return redis.Redis(host=host, port=self.port, username=user, password=self.passwords[user],
                           socket_timeout=5, **{**tls, **options})

    def acl_log(self) -> list:
        return self.client("operator").acl_log()

    def stop(self) -> None:
        try:
            os.kill(int((self.folder / "redis.pid").read_text()), signal.SIGTERM)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass


def _pg_hba(user: str, database: str) -> str:
    """The postgresql role's pg_hba.conf template, for this host: loopback, and a client host on the unnamed
    address (so that a client reaching the server there gets as far as checking its certificate)."""
    environment = _environment(jinja2.Environment)
    environment.tests["match"] = lambda value, pattern: re.match(pattern, value) is not None
    template = environment.from_string((REPO / "roles/postgresql/templates/pg_hba.conf.j2").read_text())
    # As the role's vars/main.yml derives them: the owner and each duty's login role.
    duty_roles = [role_name(user, duty) for duty in DUTIES]
    return template.render(
        ansible_managed="rendered by tests/test_tls_links.py", postgresql_tls=True, postgresql_database=database,
        postgresql_app_user=user, postgresql_duty_roles=duty_roles, postgresql_hba_users=",".join([user, *duty_roles]),
        postgresql_monitor_user=POSTGRESQL_DEFAULTS["postgresql_monitor_user"],
        postgresql_client_hosts=["peer"], postgresql_hba_networks=[],
        hostvars={"peer": {"soniquebay_fleet_address": UNNAMED_ADDRESS}},
    )


@dataclass
class Links:
    tls: Path
    broker: TLSRedis
    cache: TLSRedis
    postgres: PostgresServer
    folder: Path

    @property
    def tls_query(self) -> str:
        """libpq's TLS parameters, as the worker_app role adds them to every database URL (worker_app_db_tls_query)."""
        return f"?sslmode=verify-full&sslrootcert={self.tls}/ca.crt"

    def database_url(self, query: str | None = None) -> str:
        """The owner's URL (the migrations')."""
        return self.postgres.url + ("?" + query if query is not None else self.tls_query)

    def env(self, broker_user: str = "workers") -> dict[str, str]:
        """A worker host's environment as the worker_app role writes it (worker.env of a host in every group, or
        monitor.env for the monitor user, whose only database duty is the reader's): each duty's URL over TLS,
        never the owner's; nothing of the session's own stack."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SONIQUEBAY_")}
        duties = ["reader"] if broker_user == "monitor" else list(DUTIES)
        return {**base, "SONIQUEBAY_ENV_FILE": "", "SONIQUEBAY_BROKER_URL": self.broker.url(broker_user),
                "SONIQUEBAY_RESULT_BACKEND": self.cache.url("workers"),
                **{f"SONIQUEBAY_DATABASE_URL_{duty.upper()}": self.postgres.duty_url(duty) + self.tls_query
                   for duty in duties},
                "SONIQUEBAY_REDIS_CA_FILE": str(self.tls / "ca.crt"),
                "SONIQUEBAY_LIBRARY_ROOTS": str(self.folder / "library"), "SONIQUEBAY_AUDIO_ANALYSIS": "off"}


@pytest.fixture(scope="module")
def links(workspace):
    folder = workspace / "tls-links"
    folder.mkdir()
    folder.chmod(0o755)
    tls = _make_certificates(folder)
    rules = {
        "broker": {"workers": REDIS_DEFAULTS["redis_broker_workers_acl_rules"],
                   "monitor": REDIS_DEFAULTS["redis_broker_monitor_acl_rules"],
                   "operator": REDIS_DEFAULTS["redis_operator_acl_rules"]},
        "cache": {"workers": REDIS_DEFAULTS["redis_cache_workers_acl_rules"],
                  "monitor": REDIS_DEFAULTS["redis_cache_monitor_acl_rules"],
                  "operator": REDIS_DEFAULTS["redis_operator_acl_rules"]},
    }
    broker = TLSRedis(folder / "broker", tls, rules["broker"])
    cache = TLSRedis(folder / "cache", tls, rules["cache"])
    postgres = PostgresServer(folder / "postgres")
    try:
        broker.start()
        cache.start()
        postgres.start()
        postgres.create_duty_roles()
        # The role's pg_hba.conf (hostssl only) and TLS settings, then a restart to listen on both addresses.
        (postgres.data_dir / "pg_hba.conf").write_text(_pg_hba(postgres.user, postgres.database))
        with (postgres.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{tls}/server.crt'\nssl_key_file = '{tls}/server.key'\n"
                       f"ssl_ca_file = '{tls}/ca.crt'\nssl_min_protocol_version = 'TLSv1.2'\n")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(postgres.data_dir),
                        "-l", str(postgres.base / "postgres.log"), "-m", "fast",
                        "-o", f"-c port={postgres.port} -c listen_addresses=127.0.0.1,{UNNAMED_ADDRESS} "
                              f"-c unix_socket_directories={postgres.base}", "-w", "restart"],
                       check=True, capture_output=True)
        yield Links(tls, broker, cache, postgres, folder)
    finally:
        broker.stop()
        cache.stop()
        postgres.stop()


def _refused(connect) -> str:
    """What the refusal said: ``connect`` must raise."""
    with pytest.raises(Exception) as refusal:  # noqa: PT011 - each client has its own exception type
        connect()
    return str(refusal.value)


# --- Encrypted links --------------------------------------------------------------------------------------------

def test_the_private_key_is_the_services_only_and_never_in_the_repository(links):
    key = links.tls / "server.key"
    assert (oct(key.stat().st_mode & 0o777), key.owner(), key.group()) == ("0o640", "root", "postgres")
    assert (links.folder / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    tracked = subprocess.run(["git", "ls-files", "*.key", "*.pem", "*.crt", "*.p12"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked == []


def test_redis_takes_only_verified_tls_clients(links):
    assert links.broker.client("workers").ping()
    assert links.cache.client("workers").ping()
    # Plain TCP on the TLS port: Redis drops the connection.
    assert _refused(lambda: redis.Redis(port=links.broker.port, username="workers",
                                        password=links.broker.passwords["workers"], socket_timeout=5).ping())
    # TLS without the fleet CA (the system's CAs only): the server's certificate does not verify.
    assert "certificate verify failed" in _refused(
        lambda: links.broker.client("workers", ssl_ca_certs=None).ping())
    # The right CA, but the server reached by a name its certificate does not give.
    assert "certificate verify failed" in _refused(
        lambda: links.broker.client("workers", host=UNNAMED_ADDRESS).ping())


def test_the_application_refuses_rediss_without_a_ca(links):
    env = {**links.env(), "SONIQUEBAY_REDIS_CA_FILE": ""}
    result = subprocess.run([str(VENV_BIN / "soniquebay"), "status"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "SONIQUEBAY_REDIS_CA_FILE" in result.stderr + result.stdout


def test_postgresql_takes_only_verified_tls_clients(links):
    with psycopg2.connect(links.database_url().replace("postgresql+psycopg2", "postgresql")) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            encrypted, version = cursor.fetchone()
    assert encrypted and version in ("TLSv1.2", "TLSv1.3")
    plain = links.postgres.url.replace("postgresql+psycopg2", "postgresql")
    # Without TLS: no pg_hba.conf line matches (hostssl only).
    assert "no encryption" in _refused(lambda: psycopg2.connect(plain + "?sslmode=disable", connect_timeout=5))
    # TLS, but no CA to check the server with: libpq refuses to go on.
    home = links.folder / "empty-home"
    home.mkdir(exist_ok=True)
    assert "root certificate file" in _refused(lambda: psycopg2.connect(
        plain + f"?sslmode=verify-full&sslrootcert={home}/none.crt", connect_timeout=5))
    # The right CA, the server reached by a name its certificate does not give.
    unnamed = plain.replace("@127.0.0.1:", f"@{UNNAMED_ADDRESS}:")
    assert "does not match host name" in _refused(lambda: psycopg2.connect(
        unnamed + f"?sslmode=verify-full&sslrootcert={links.tls}/ca.crt", connect_timeout=5))


# --- The pipeline through TLS, as the users by duty -------------------------------------------------------------

def test_a_scan_runs_through_tls_as_the_workers_user_and_the_exporter_reads_as_the_monitor(links):
    """Migrations, a Celery worker on every queue, `soniquebay scan` and the exporter, as the fleet runs them but
    over TLS, with the role's ACL users and each process's database duty (the worker the catalogue's, the scan the
    operator's, the exporter the reader's): the scan completes, the exporter sees the worker, the queues and the
    task events, and neither Redis logged a single command refused (ACL LOG)."""
    library = make_library(links.folder / "library", n_files=4, seed=13, corrupt=False, untagged=False,
                           odd_file_names=False)
    # The migrations alone connect as the owner, with its URL in their environment (roles/worker_app/tasks/migrate.yml).
    subprocess.run([str(VENV_BIN / "soniquebay"), "db", "upgrade"],
                   env={**links.env(), "SONIQUEBAY_DATABASE_URL": links.database_url()}, check=True,
                   capture_output=True, timeout=300)
    log = (links.folder / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(VENV_BIN / "celery"), "-A", "worker_app", "worker", "-Q", "scan,extract,batch,insert,deferred",
         "-n", "tls@%h", "--concurrency", "2", "--loglevel", "INFO"],
        env=links.env(), stdout=log, stderr=subprocess.STDOUT, cwd=links.folder)
    exporter_port = free_port()
    exporter = subprocess.Popen(
        [str(VENV_BIN / "soniquebay"), "exporter", "--bind", "127.0.0.1", "--port", str(exporter_port)],
        env=links.env("monitor"), stdout=(links.folder / "exporter.log").open("w"), stderr=subprocess.STDOUT)
    try:
        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=10) as response:
                    return response.read().decode()
            except OSError:
                return ""

        wait_for(lambda: "soniquebay_exporter_events_connected 1.0" in metrics(), 60, "the exporter's events")
        result = subprocess.run(
            [str(VENV_BIN / "soniquebay"), "scan", str(library.root), "--wait", "--json", "--timeout", "240"],
            env=links.env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{result.stdout}{result.stderr}\nrefused: {_refusals(links)}"
        summary = json.loads(result.stdout)
        assert summary["status"] == "complete" and summary["inserted"] == 4, summary
        # The worker (every queue: the catalogue's duty) and the exporter (the reader's) reached PostgreSQL as their
        # duties' roles, over TLS, through the hostssl lines that name the duties' roles. (Their environment has no
        # owner's URL: the owner's sessions here are this module's own.)
        with psycopg2.connect(links.database_url().replace("postgresql+psycopg2", "postgresql")) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                               "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()")
                sessions = cursor.fetchall()
        assert {role_name(links.postgres.user, duty) for duty in ("catalogue", "reader")} <= {
            user for user, _ in sessions}, sessions
        assert all(encrypted for _, encrypted in sessions), sessions

        def seen() -> str:
            text = metrics()
            return text if "celery_workers 1.0" in text and "celery_task_succeeded_total" in text else ""

        text = wait_for(seen, 60, f"the worker and its tasks in the exporter's metrics (refused: {_refusals(links)})",
                        interval=1)
        assert 'celery_queue_length{queue_name="extract"} 0.0' in text
        assert 'soniquebay_exporter_source_up{source="broker"} 1.0' in text
    finally:
        exporter.terminate()
        worker.terminate()
        for process in (exporter, worker):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    assert _refusals(links) == {"broker": [], "cache": []}


def _refusals(links: Links) -> dict[str, list[tuple]]:
    """What each Redis refused since the last reset (ACL LOG): user, command or key, and why."""
    return {name: [(entry["username"], entry["object"], entry["reason"], entry["context"])
                   for entry in server.acl_log()]
            for name, server in (("broker", links.broker), ("cache", links.cache))}


# --- Redis users by duty ----------------------------------------------------------------------------------------

def test_each_redis_user_is_refused_what_is_not_its_duty(links):
    links.broker.client("operator").acl_log_reset()
    workers = links.broker.client("workers")
    workers.lpush("extract", "a message")
    monitor = links.broker.client("monitor")
    assert monitor.llen("extract") == 1  # queue depths: the exporter's and Flower's reads
    assert monitor.info("server")["redis_version"]
    for refused in (lambda: monitor.lpush("extract", "a forged task"), lambda: monitor.delete("extract"),
                    lambda: monitor.rpop("extract"), lambda: monitor.flushall(), lambda: monitor.config_get("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    assert workers.llen("extract") == 1
    for refused in (lambda: workers.config_get("*"), lambda: workers.config_set("appendonly", "no"),
                    lambda: workers.flushall(), lambda: workers.flushdb(), lambda: workers.acl_list(),
                    lambda: workers.execute_command("ACL", "SETUSER", "workers", "+@all"),
                    lambda: workers.execute_command("SHUTDOWN", "NOSAVE"), lambda: workers.keys("*"),
                    lambda: workers.set("not-a-queue", "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    assert links.broker.client("operator").llen("extract") == 1
    # The broker's and the cache's passwords differ: a broker password opens nothing on the cache.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=links.cache.port, username="workers", password=links.broker.passwords["workers"],
                    ssl=True, ssl_ca_certs=str(links.tls / "ca.crt"), socket_timeout=5).ping()
    # No default user: a client that names none is refused whatever it sends.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=links.broker.port, password=links.broker.passwords["workers"], ssl=True,
                    ssl_ca_certs=str(links.tls / "ca.crt"), socket_timeout=5).ping()
    workers.delete("extract")


# --- The monitoring role's Redis exporter -----------------------------------------------------------------------

def _redis_exporter(links: Links, folder: Path, **overrides) -> tuple[list[str], list[str]]:
    """(command line, /scrape targets) of Debian's Redis exporter as the monitoring role configures it, rendered
    from the role (its arguments from vars/main.yml, its password file, the redis job of prometheus.yml) for this
    module's two servers; the password file is written in ``folder``."""
    defaults = yaml.safe_load((MONITORING / "defaults/main.yml").read_text())
    programs = yaml.safe_load((MONITORING / "vars/main.yml").read_text())["monitoring_programs"]
    program = next(p for p in programs if p["name"] == "prometheus-redis-exporter")
    variables = {
        **{key: value for key, value in defaults.items() if not (isinstance(value, str) and "{{" in value)},
        "ansible_managed": "rendered by tests/test_tls_links.py", "inventory_hostname": "monitor",
        "monitoring_is_redis": True, "monitoring_listen_address": "127.0.0.1",
        "monitoring_redis_exporter_port": free_port(), "monitoring_redis_scheme": "rediss",
        "monitoring_redis_exporter_credentials_file": str(folder / "passwords.json"),
        "monitoring_redis_tls_ca_file": str(links.tls / "ca.crt"),
        "monitoring_redis_instances": [{"name": "broker", "port": links.broker.port},
                                       {"name": "cache", "port": links.cache.port}],
        "monitoring_redis_exporter_passwords": {"broker": links.broker.passwords["monitor"],
                                                "cache": links.cache.passwords["monitor"]},
        "monitoring_redis_hosts": ["redis"], "monitoring_node_exporter_hosts": [], "monitoring_database_hosts": [],
        "hostvars": {"redis": {"soniquebay_fleet_address": "127.0.0.1"}},
        **overrides,
    }
    environment = _environment(jinja2.Environment)
    environment.filters["to_json"] = json.dumps
    for template, path in (("redis-exporter-passwords.json.j2", str(folder / "passwords.json")),
                           ("prometheus.yml.j2", str(folder / "prometheus.yml"))):
        Path(path).write_text(environment.from_string((MONITORING / "templates" / template).read_text())
                              .render(variables))
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "redis")
    targets = [target for static in job["static_configs"] for target in static["targets"]]
    return [program["binary"], *_render(program["args"], variables)], targets


def _scrape(command: list[str], targets: list[str]) -> tuple[list[str], str]:
    """Run the exporter, read each target through its /scrape endpoint; (each target's text, the command line the
    process showed)."""
    port = int(next(arg for arg in command if arg.startswith("-web.listen-address=")).rsplit(":", 1)[1])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
                    return True
            except OSError:
                return False

        wait_for(answers, 30, "the Redis exporter")
        shown = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().replace("\0", " ")
        texts = []
        for target in targets:
            query = urllib.parse.urlencode({"target": target})
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/scrape?{query}", timeout=30) as response:
                texts.append(response.read().decode())
        return texts, shown
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.skipif(not Path("/usr/bin/prometheus-redis-exporter").exists(),
                    reason="Debian's prometheus-redis-exporter is not installed (ci/host-commands.tsv installs it)")
def test_the_redis_exporter_reads_both_instances_over_tls_as_their_monitor_users(links, tmp_path):
    """Debian 12's Redis exporter, with the monitoring role's arguments, password file and targets: it logs in to
    the broker and the cache over TLS, checked against the fleet CA, as each instance's monitor user with that
    instance's password; no password shows on its command line; neither Redis refuses it anything (ACL LOG), so
    the monitor users' rules hold what it runs. With another CA it reads nothing."""
    for server in (links.broker, links.cache):
        server.client("operator").acl_log_reset()
    command, targets = _redis_exporter(links, tmp_path)
    assert targets == [f"rediss://monitor@127.0.0.1:{links.broker.port}",
                       f"rediss://monitor@127.0.0.1:{links.cache.port}"]
    texts, shown = _scrape(command, targets)
    assert len(texts) == 2
    for text in texts:
        assert "\nredis_up 1\n" in text, text[-2000:]
        assert 'redis_exporter_last_scrape_error{err=""} 0' in text
        assert "\nredis_memory_max_bytes " in text
    assert "passwords.json" in shown
    assert not any(server.passwords["monitor"] in shown for server in (links.broker, links.cache))
    assert _refusals(links) == {"broker": [], "cache": []}
    # The same exporter trusting another CA (the system's) reads neither server.
    other_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if other_ca.exists():
        command, targets = _redis_exporter(links, tmp_path, monitoring_redis_tls_ca_file=str(other_ca))
        texts, _ = _scrape(command, targets)
        assert all("\nredis_up 0\n" in text for text in texts)

