"""The Celery application: five queues, their routes, and the settings that make delivery reliable (late
acknowledgement, a visibility timeout above every time limit, lost workers' tasks rejected back to the queue)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from celery import Celery
from celery.signals import celeryd_init
from kombu.entity import Queue

from worker_app.limits import QUEUES, TASK_LIMITS
from worker_app.settings import ConfigurationError, get_settings

# One module per stage of the pipeline.
PIPELINE_MODULES = [
    "worker_app.pipeline.scan",
    "worker_app.pipeline.extract",
    "worker_app.pipeline.batch",
    "worker_app.pipeline.insert",
    "worker_app.pipeline.deferred",
    "worker_app.pipeline.stalls",
    "worker_app.pipeline.relay",
    "worker_app.pipeline.retention",
    "worker_app.pipeline.analysis",
    "worker_app.pipeline.analysis_backlog",
]

# The public task names, where each runs and at which priority. Globs cover the deferred
# families; an exact name wins over a glob.
TASK_ROUTES = {
    name: {"queue": limits.queue, "priority": limits.priority} for name, limits in TASK_LIMITS.items()
}


class CeleryApp(Protocol):
    """What the type checker knows of the Celery application. celery ships no types: ``task`` is declared here so
    that ``@app.task(...)`` is a typed decorator (the task it makes stays Any), and every other attribute is Any."""

    def task(self, *args: Any, **options: Any) -> Callable[[Callable[..., Any]], Any]: ...

    def __getattr__(self, name: str) -> Any: ...


def create_app() -> CeleryApp:
    settings = get_settings()
    app: CeleryApp = Celery(
        "worker_app", broker=settings.broker_url, backend=settings.result_backend, include=PIPELINE_MODULES
    )
    redis_transport = {
        # Redis has no queue priorities: kombu emulates them with one list per step; 0 is served first.
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "sep": ":",
        "visibility_timeout": settings.visibility_timeout,
        # A lost host's unacknowledged messages go back to the queues once they are older than the visibility
        # timeout; every worker looks for such messages every 10 s (kombu's default is every 100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 30,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }
    app.conf.update(
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue="deferred",
        task_routes=TASK_ROUTES,
        task_create_missing_queues=False,
        # Nothing is lost: a message is acknowledged after its task ran, and put back when its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # Nothing in the pipeline waits on a task's result: none is stored, so the result Redis being lost or
        # unreachable costs the pipeline nothing (the few tasks meant to be called for their answer say so).
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1000,
        worker_max_memory_per_child=512_000,  # KiB: ~500 MB
        # A broker restart must not cost the tasks running at the time: they finish, and their acknowledgements
        # may be lost with the connection. What the restart orphaned (those messages, and the ones reserved but
        # not started) is put back by the relay as soon as it sees the new broker (pipeline/relay.py), rather
        # than after the visibility timeout; every unit skips work already done.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_compression="gzip",
        result_compression="gzip",
        result_expires=24 * 3600,
        result_extended=False,
        broker_transport_options=redis_transport,
        # rediss:// (TLS): the server's certificate is checked against the fleet CA, host name included.
        broker_use_ssl=settings.redis_tls_options(settings.broker_url) or None,
        redis_backend_use_ssl=settings.redis_tls_options(settings.result_backend) or None,
        result_backend_transport_options={k: v for k, v in redis_transport.items()
                                          if k not in ("queue_order_strategy", "unacked_restore_interval",
                                                       "unacked_restore_throttle")},
        broker_connection_retry_on_startup=True,
        broker_pool_limit=10,
        redis_max_connections=20,
        # `celery events`, Flower and `soniquebay status` need the events.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=False,  # a STARTED state would be a write to the result Redis per task
        timezone=settings.timezone,
        enable_utc=True,
    )
    return app


app = create_app()


def _connect_as_its_duty_and_check_the_schema(options: dict[str, Any] | None = None, **_: Any) -> None:
    """A worker connects to the catalogue with the role of its queues' duty (worker_app/db/privileges.py), set here
    in the main process so its prefork children inherit it; a host without that duty's credentials exits at once
    (a worker never falls back to the owner's). Then a worker whose code is newer than the catalogue's schema
    exits before it consumes anything (it would fail every unit); see worker_app/db/schema_check.py. celeryd_init
    is the worker's first signal, before the pipeline modules are imported: a refusing worker must exit within
    supervisor's startsecs to end FATAL. Celery logs and ignores a receiver's exception, so this one exits itself."""
    import os
    import sys

    from worker_app.db.duty import use_duty
    from worker_app.db.privileges import duty_for_queues
    from worker_app.db.schema_check import refuse_to_start_on_an_older_schema

    queues = (options or {}).get("queues") or []
    if isinstance(queues, str):
        queues = [name for name in queues.split(",") if name]
    try:
        use_duty(duty_for_queues(queues), owner_fallback=False)
    except (ConfigurationError, KeyError, ValueError) as error:
        print(f"[CRITICAL/worker] worker not started: {error}", file=sys.stderr, flush=True)
        os._exit(78)  # sysexits.h EX_CONFIG: not usable until the host is given its credentials
    refuse_to_start_on_an_older_schema()


def _obey_only_commands_that_read(**_: Any) -> None:
    """Before the worker listens on the broker's control channel (worker_app/remote_control.py)."""
    from worker_app.remote_control import refuse_commands_that_change_anything

    refuse_commands_that_change_anything(get_settings().control_commands)


# celery's signals are untyped: connected by a call, not a decorator
celeryd_init.connect(_connect_as_its_duty_and_check_the_schema)
celeryd_init.connect(_obey_only_commands_that_read)
