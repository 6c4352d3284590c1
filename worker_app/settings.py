"""All configuration of a worker or of the command line, read once from the environment.

Values come from the process environment first, then from the env file (``SONIQUEBAY_ENV_FILE``, by default
``/etc/soniquebay/worker.env``, which Ansible writes root:soniquebay 0640). Nothing else in the package reads
``os.environ``.
"""
from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dotenv import dotenv_values

from worker_app.limits import LONGEST_TIME_LIMIT, SHORTEST_SOFT_TIME_LIMIT

DEFAULT_ENV_FILE = "/etc/soniquebay/worker.env"


class ConfigurationError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend: str
    database_url: str
    library_roots: tuple[str, ...]
    # Files per extract task: Celery costs ~1.2 ms per task, mutagen ~0.6 ms per file (bench/README.md),
    # so a few hundred files per task keeps Celery's share small while a task still ends in seconds.
    batch_size: int
    # Entries one scan chunk task lists before it hands the rest of its subtree to new chunk tasks.
    chunk_entries: int
    # How often a task that killed its worker is delivered again before its work is parked as failed.
    max_deliveries: int
    # Above the longest task time limit, or Redis hands a running task to a second worker (celery#7918).
    visibility_timeout: int
    # A scan none of whose units moved for this long has lost messages (see pipeline/stalls.py): its pending
    # units are sent again. Above the visibility timeout, after which a dead worker's messages come back anyway.
    stall_timeout: int
    # Multiplies every task's time limit; tests shrink it to see time limits act.
    time_limit_scale: float
    # A transaction left open by a client that stopped answering (a host lost, not shut down: no FIN ever
    # reaches PostgreSQL) is ended after this long, and its row locks with it. Below the shortest task time
    # limit, or the tasks waiting on those locks fail before the locks go.
    db_idle_transaction_timeout: int
    # Largest picture kept in the catalogue; bigger ones are recorded as a warning and skipped.
    max_cover_bytes: int
    # One file's reading may not take longer (a parser that loops): the file fails, the batch goes on.
    file_time_limit: float
    timezone: str
    # Analyse the audio of new and changed tracks after their tags are catalogued (pipeline/analysis.py).
    audio_analysis: bool = True
    # How often the relay looks for units that were registered but not sent, and for a restarted broker.
    relay_interval: int = 5
    # How often the deferred workers top the extract queue up with the analysis backlog (pipeline/analysis_backlog.py);
    # 0: never (only `soniquebay analysis --queue-backlog`).
    analysis_backlog_interval: int = 120
    # The units and failure records of a scan are deleted this many days after it ended (pipeline/retention.py).
    scan_retention_days: int = 30
    # Back-pressure (pipeline/backpressure.py): scan chunks wait while the extract queue holds this many messages,
    # extract batches while the batch and insert queues together do. The Ansible role sizes them from the fleet.
    extract_backlog: int = 64
    insert_backlog: int = 16
    # Remote control commands the workers obey beyond those that only read (worker_app/remote_control.py).
    control_commands: tuple[str, ...] = ()
    # Test-only: a file whose name holds this marker kills the extract worker, and a crash plan file kills the
    # worker of a chosen stage (see pipeline/crash_hook.py).
    test_crash_marker: str | None = None
    test_crash_plan: str | None = None

    @property
    def longest_time_limit(self) -> int:
        return int(LONGEST_TIME_LIMIT * self.time_limit_scale)

    @property
    def stall_check_interval(self) -> int:
        """How often the deferred workers look for stalled scans: a few times per stall timeout."""
        return max(5, min(300, self.stall_timeout // 6))

    @property
    def shortest_soft_time_limit(self) -> float:
        return SHORTEST_SOFT_TIME_LIMIT * self.time_limit_scale

    # (Fields with defaults, declared after the properties.)
    # A migration waits at most this long (seconds) for each lock it needs (PostgreSQL's lock_timeout): an ALTER
    # queued behind a long transaction would otherwise hold up every query that queues behind it, for as long.
    migration_lock_timeout: int = 5
    # Attempts of `soniquebay db upgrade` when a migration hits the lock timeout (then backs off and retries
    # the migrations not yet applied); after the last one it fails.
    migration_attempts: int = 10
    # Scheduled rescans: (root, cron expression) pairs, each root resolved and inside the library roots; the
    # expressions are read in ``timezone`` (worker_app/scheduling/, `soniquebay scheduler`).
    scan_schedules: tuple[tuple[str, str], ...] = ()
    # The CA that signed the Redis servers' certificates (the fleet CA, roles/tls). Required when a Redis URL is
    # rediss://: the client then checks the server's certificate and host name, and refuses any other server.
    redis_ca_file: str | None = None
    # The database URL of each duty this host has credentials for (SONIQUEBAY_DATABASE_URL_<DUTY>, e.g. _LEDGER):
    # a worker connects with its queues' duty (worker_app/db/privileges.py), never with ``database_url``, which
    # is the owner's (migrations) and is absent from the workers' hosts.
    duty_database_urls: tuple[tuple[str, str], ...] = ()

    def redis_tls_options(self, url: str) -> dict[str, object]:
        """The TLS keyword arguments of a redis-py connection to ``url`` (kombu's ``broker_use_ssl``, Celery's
        ``redis_backend_use_ssl``, ``redis.Redis.from_url``): none for redis://; for rediss://, the server's
        certificate must be signed by ``redis_ca_file`` and name the host the URL gives."""
        if not url.startswith("rediss://"):
            return {}
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.redis_ca_file, "ssl_check_hostname": True}

    def database_url_for(self, duty: str | None, owner_fallback: bool = True) -> str:
        """The URL a process of ``duty`` connects with (None: the owner's). A duty with no URL of its own uses
        that of a duty that may do everything it may (a command line's read command on an insert host uses the
        catalogue's), else, when ``owner_fallback``, the owner's (a development checkout with one URL); a worker
        never falls back to the owner."""
        if duty is None:
            return self.database_url
        urls = dict(self.duty_database_urls)
        if duty in urls:
            return urls[duty]
        from worker_app.db.privileges import DUTIES, covers, table_columns

        columns = table_columns()
        for other in DUTIES:
            if other in urls and covers(other, duty, columns):
                return urls[other]
        if owner_fallback:
            return self.database_url
        raise ConfigurationError(
            f"SONIQUEBAY_DATABASE_URL_{duty.upper()} is not set: this process connects to the catalogue as its "
            f"{duty!r} role, and this host was given no credentials for it (nor for a duty covering it)"
        )


def _read_environment() -> dict[str, str]:
    env_file = os.environ.get("SONIQUEBAY_ENV_FILE", DEFAULT_ENV_FILE)
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update({k: v for k, v in os.environ.items() if k.startswith("SONIQUEBAY_")})
    return values


def _positive_int(values: dict[str, str], name: str, default: int) -> int:
    return _whole_number(values, name, default, minimum=1)


def _whole_number(values: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if number < minimum:
        raise ConfigurationError(f"{name} must be {minimum} or more, not {number}")
    return number


def _switch(values: dict[str, str], name: str, default: bool) -> bool:
    raw = (values.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise ConfigurationError(f"{name} must be on or off, not {raw!r}")


def _scan_schedules(values: dict[str, str], roots: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """SONIQUEBAY_SCAN_SCHEDULES: a JSON object, library root (or a folder inside one) -> cron expression (five
    fields, or six with seconds last), e.g. {"/srv/music": "0 3 * * *"}."""
    from croniter import croniter

    name = "SONIQUEBAY_SCAN_SCHEDULES"
    raw = (values.get(name) or "").strip()
    if not raw:
        return ()
    try:
        mapping = json.loads(raw)
    except ValueError as error:
        raise ConfigurationError(f"{name} must be a JSON object of root -> cron expression: {error}") from None
    if not isinstance(mapping, dict):
        raise ConfigurationError(f"{name} must be a JSON object of root -> cron expression, not {raw!r}")
    schedules: dict[str, str] = {}
    for root, expression in mapping.items():
        real = os.path.realpath(root)
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigurationError(f"{name}: {expression!r} (for {root}) is not a cron expression")
        if not any(real == library or real.startswith(library.rstrip(os.sep) + os.sep) for library in roots):
            raise ConfigurationError(f"{name}: {root} is not inside SONIQUEBAY_LIBRARY_ROOTS")
        if real in schedules:
            raise ConfigurationError(f"{name}: {root} has two schedules")
        schedules[real] = " ".join(expression.split())
    return tuple(sorted(schedules.items()))


def _duty_database_urls(values: dict[str, str]) -> tuple[tuple[str, str], ...]:
    from worker_app.db.privileges import DUTIES

    return tuple((duty, url) for duty in DUTIES if (url := values.get(f"SONIQUEBAY_DATABASE_URL_{duty.upper()}")))


def load_settings() -> Settings:
    values = _read_environment()
    roots = tuple(
        os.path.realpath(root) for root in values.get("SONIQUEBAY_LIBRARY_ROOTS", "").split(os.pathsep) if root.strip()
    )
    broker_url = values.get("SONIQUEBAY_BROKER_URL", "redis://127.0.0.1:6379/0")
    scale = float(values.get("SONIQUEBAY_TIME_LIMIT_SCALE", "1") or 1)
    # Twice the longest time limit (3,600 s): what a lost host's messages wait before another worker gets them.
    visibility_timeout = _positive_int(values, "SONIQUEBAY_VISIBILITY_TIMEOUT", 2 * int(LONGEST_TIME_LIMIT * scale))
    settings = Settings(
        broker_url=broker_url,
        result_backend=values.get("SONIQUEBAY_RESULT_BACKEND", "redis://127.0.0.1:6380/0"),
        database_url=values.get(
            "SONIQUEBAY_DATABASE_URL", "postgresql+psycopg2://soniquebay@127.0.0.1:5432/soniquebay"
        ),
        library_roots=roots,
        batch_size=_positive_int(values, "SONIQUEBAY_BATCH_SIZE", 200),
        chunk_entries=_positive_int(values, "SONIQUEBAY_CHUNK_ENTRIES", 5000),
        max_deliveries=_positive_int(values, "SONIQUEBAY_MAX_DELIVERIES", 5),
        visibility_timeout=visibility_timeout,
        stall_timeout=_positive_int(values, "SONIQUEBAY_STALL_TIMEOUT",
                                    visibility_timeout + max(60, visibility_timeout // 10)),
        time_limit_scale=scale,
        db_idle_transaction_timeout=_positive_int(values, "SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT", 60),
        migration_lock_timeout=_positive_int(values, "SONIQUEBAY_MIGRATION_LOCK_TIMEOUT", 5),
        migration_attempts=_positive_int(values, "SONIQUEBAY_MIGRATION_ATTEMPTS", 10),
        max_cover_bytes=_positive_int(values, "SONIQUEBAY_MAX_COVER_BYTES", 16 * 1024 * 1024),
        file_time_limit=_positive_int(values, "SONIQUEBAY_FILE_TIME_LIMIT", 30) * max(scale, 0.1),
        timezone=values.get("SONIQUEBAY_TIMEZONE", "Europe/Paris"),
        relay_interval=_positive_int(values, "SONIQUEBAY_RELAY_INTERVAL", 5),
        scan_retention_days=_positive_int(values, "SONIQUEBAY_SCAN_RETENTION_DAYS", 30),
        extract_backlog=_positive_int(values, "SONIQUEBAY_EXTRACT_BACKLOG", 64),
        insert_backlog=_positive_int(values, "SONIQUEBAY_INSERT_BACKLOG", 16),
        audio_analysis=_switch(values, "SONIQUEBAY_AUDIO_ANALYSIS", True),
        analysis_backlog_interval=_whole_number(values, "SONIQUEBAY_ANALYSIS_BACKLOG_INTERVAL", 120, minimum=0),
        control_commands=tuple(name.strip() for name in values.get("SONIQUEBAY_CONTROL_COMMANDS", "").split(",")
                               if name.strip()),
        scan_schedules=_scan_schedules(values, roots),
        redis_ca_file=values.get("SONIQUEBAY_REDIS_CA_FILE") or None,
        duty_database_urls=_duty_database_urls(values),
        test_crash_marker=values.get("SONIQUEBAY_TEST_CRASH_MARKER") or None,
        test_crash_plan=values.get("SONIQUEBAY_TEST_CRASH_PLAN") or None,
    )
    for name, url in (("SONIQUEBAY_BROKER_URL", settings.broker_url),
                      ("SONIQUEBAY_RESULT_BACKEND", settings.result_backend)):
        if url.startswith("rediss://") and not (settings.redis_ca_file and Path(settings.redis_ca_file).is_file()):
            # Never TLS without checking the server: a client that trusts any certificate gives its password to
            # whoever answers on the address.
            raise ConfigurationError(
                f"{name} is rediss:// but SONIQUEBAY_REDIS_CA_FILE ({settings.redis_ca_file or 'unset'}) is not a "
                f"readable file: the CA that signed the Redis servers' certificates is needed to check them"
            )
    if settings.visibility_timeout <= settings.longest_time_limit:
        raise ConfigurationError(
            f"SONIQUEBAY_VISIBILITY_TIMEOUT ({settings.visibility_timeout} s) must be above the longest task time "
            f"limit ({settings.longest_time_limit} s), or Redis redelivers tasks that are still running"
        )
    if settings.stall_timeout <= settings.visibility_timeout:
        raise ConfigurationError(
            f"SONIQUEBAY_STALL_TIMEOUT ({settings.stall_timeout} s) must be above the visibility timeout "
            f"({settings.visibility_timeout} s), or a dead worker's messages are sent twice: by Redis and by the "
            f"stalled-scan check"
        )
    if settings.db_idle_transaction_timeout >= settings.shortest_soft_time_limit:
        raise ConfigurationError(
            f"SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT ({settings.db_idle_transaction_timeout} s) must be below the "
            f"shortest task time limit ({settings.shortest_soft_time_limit:g} s), or the tasks waiting on a lost "
            f"client's locks fail before the locks are released"
        )
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
