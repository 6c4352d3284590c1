"""Back-pressure: a stage waits while the queues after it are full, so the broker holds a bounded backlog.

The scan lists folders far faster than tags are read, and tags are read faster than a slow database takes them:
without a bound, a stopped insert stage fills the broker Redis (noeviction) until it refuses every write, the
scan's included. So a task that feeds a queue first looks at that queue's depth: a scan chunk at the extract
queue's, an extract batch at the batch and insert queues' (each of their units has its records staged in
PostgreSQL: pipeline/staging.py). Above the bound (``SONIQUEBAY_EXTRACT_BACKLOG`` /
``SONIQUEBAY_INSERT_BACKLOG``, sized by the Ansible role from the fleet's worker processes) it waits a little, then
hands its message back as a retry (a new message, not a death; nothing is recorded), and its unit waits in its own
queue, whose messages are small.

A backlog can overshoot its bound by what the tasks that passed the check at the same moment send: one message per
extract process for the batch and insert queues, one chunk's extract units (a chunk lists up to
``SONIQUEBAY_CHUNK_ENTRIES`` entries) per scan process for the extract queue; and by the messages the queue's own
workers reserved (prefetch), which leave its list before they are done.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import redis

from worker_app.celery_app import app
from worker_app.settings import get_settings

log = logging.getLogger(__name__)

# kombu's Redis transport emulates priorities with one list per step (worker_app/celery_app.py: priority_steps
# 0..9): step 0 is the queue's own name, step N is "QUEUE<sep>N".
PRIORITY_STEPS = range(10)
# How often a waiting task looks again.
POLL_SECONDS = 1.0
# How long a task waits for room before handing its message back (a fraction of its soft time limit at most).
WAIT_SECONDS = 20.0
RETRY_COUNTDOWN = 5.0

_client: redis.Redis | None = None


def queue_keys(queue: str, sep: str = ":") -> list[str]:
    """The broker lists that hold a queue's messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in PRIORITY_STEPS]


def queue_depths(client: redis.Redis, queues: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Messages waiting in each queue, its priority sub-queues summed (one round trip)."""
    sep = app.conf.broker_transport_options.get("sep", ":")
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue, sep):
            pipe.llen(key)
    lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {queue: sum(lengths[index * steps:(index + 1) * steps]) for index, queue in enumerate(queues)}


def _broker() -> redis.Redis:
    global _client
    if _client is None:
        settings = get_settings()
        _client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5,
                                       health_check_interval=25, **settings.redis_tls_options(settings.broker_url))
    return _client


def backlog(queues: tuple[str, ...]) -> int:
    """Messages waiting in ``queues`` together. Read afresh for each task (one round trip, a fraction of a
    millisecond): a cached depth would let a process send many messages on one stale reading."""
    return sum(queue_depths(_broker(), queues).values())


# The queue groups a stage may feed: scan chunks feed extract; extract batches feed batch, whose messages become
# insert messages (each of their units has its records staged).
EXTRACT_FEED = ("extract",)
RECORDS_FEED = ("batch", "insert")
FEEDS = (EXTRACT_FEED, RECORDS_FEED)


def bound_of(queues: tuple[str, ...]) -> int:
    settings = get_settings()
    return {EXTRACT_FEED: settings.extract_backlog, RECORDS_FEED: settings.insert_backlog}[queues]


def wait_for_room(task: Any, queues: tuple[str, ...]) -> None:
    """Return once ``queues`` hold fewer messages than their bound; after WAIT_SECONDS (scaled like the time
    limits) of waiting, hand the task's message back as a retry instead (raises celery's Retry)."""
    bound = bound_of(queues)
    if backlog(queues) < bound:
        return
    settings = get_settings()
    deadline = time.monotonic() + min(WAIT_SECONDS * max(settings.time_limit_scale, 0.05),
                                      settings.shortest_soft_time_limit / 3)
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        if backlog(queues) < bound:
            return
    log.info("%s waits: %s hold %d messages or more (bound %d)", task.name, "+".join(queues), bound, bound)
    raise task.retry(countdown=RETRY_COUNTDOWN * max(settings.time_limit_scale, 0.2), max_retries=None)
