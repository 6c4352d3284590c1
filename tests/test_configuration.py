"""The Celery configuration: five queues and their routes, late acknowledgement, a visibility timeout above every
time limit, JSON-only messages."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.services import REPO

SEED_ROUTES = {
    "scan": ["scan_directory_parallel", "scan_directory_chunk", "scan_single_file"],
    "extract": ["extract_metadata_batch", "extract_single_file", "extract_audio_features_batch"],
    "batch": ["batch_entities", "group_by_artist", "prepare_insertion_batch"],
    "insert": ["insert_batch_direct", "insert_artists_batch", "insert_albums_batch", "insert_tracks_batch",
               "insert_covers_batch"],
    "deferred": ["cleanup_removed_files", "cleanup_finish_scan", "cleanup_orphans", "enrich_album_covers",
                 "vectorize_tracks"],
}


def _celery_report(code: str, **env: str) -> str:
    """Run code in a fresh interpreter: settings are read once per process."""
    environment = {"SONIQUEBAY_ENV_FILE": "/nonexistent", "PYTHONPATH": str(REPO), **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    return result.stdout + result.stderr


def test_every_seed_task_is_registered_and_routed_to_its_queue():
    from worker_app.celery_app import app

    app.loader.import_default_modules()
    for queue, names in SEED_ROUTES.items():
        for name in names:
            assert name in app.tasks, f"{name} is not a registered task"
            route = app.amqp.router.route({}, name)
            assert route["queue"].name == queue, f"{name} goes to {route['queue'].name}, not {queue}"


def test_reliability_and_serialization_settings():
    from worker_app.celery_app import app
    from worker_app.settings import get_settings

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_compression == "gzip"
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.timezone == "Europe/Paris" and conf.enable_utc
    transport = conf.broker_transport_options
    assert transport["queue_order_strategy"] == "priority"
    assert transport["visibility_timeout"] > get_settings().longest_time_limit
    assert conf.worker_max_memory_per_child == 512_000  # KiB, not bytes


def test_time_limits_are_set_per_task_and_shorter_than_the_visibility_timeout():
    from worker_app.celery_app import app

    app.loader.import_default_modules()
    for names in SEED_ROUTES.values():
        for name in names:
            task = app.tasks[name]
            assert task.time_limit and task.soft_time_limit and task.soft_time_limit < task.time_limit, name
            assert task.time_limit < app.conf.broker_transport_options["visibility_timeout"]


def test_a_visibility_timeout_below_the_longest_time_limit_is_refused():
    output = _celery_report("import worker_app.settings as s; s.get_settings()", SONIQUEBAY_VISIBILITY_TIMEOUT="60")
    assert "ConfigurationError" in output and "must be above the longest task time limit" in output


def test_a_stall_timeout_below_the_visibility_timeout_is_refused():
    output = _celery_report("import worker_app.settings as s; s.get_settings()",
                            SONIQUEBAY_VISIBILITY_TIMEOUT="2000", SONIQUEBAY_STALL_TIMEOUT="1000")
    assert "ConfigurationError" in output and "must be above the visibility timeout (2000 s)" in output


def test_the_stall_timeout_follows_the_visibility_timeout():
    output = _celery_report("from worker_app.settings import get_settings as g; s = g(); "
                            "print(s.stall_timeout, s.stall_check_interval)", SONIQUEBAY_VISIBILITY_TIMEOUT="2000")
    assert output.split() == ["2200", "300"]


def test_an_idle_transaction_timeout_above_the_shortest_time_limit_is_refused():
    output = _celery_report("import worker_app.settings as s; s.get_settings()",
                            SONIQUEBAY_TIME_LIMIT_SCALE="0.1", SONIQUEBAY_DB_IDLE_TRANSACTION_TIMEOUT="60")
    assert "ConfigurationError" in output and "must be below the shortest task time limit (27 s)" in output


def test_settings_come_from_the_env_file(tmp_path):
    env_file = tmp_path / "worker.env"
    env_file.write_text("SONIQUEBAY_BROKER_URL=redis://:secret@10.0.0.5:6379/0\nSONIQUEBAY_BATCH_SIZE=123\n")
    output = _celery_report(
        "from worker_app.settings import get_settings as g; s = g(); print(s.broker_url, s.batch_size)",
        SONIQUEBAY_ENV_FILE=str(env_file),
    )
    assert output.strip() == "redis://:secret@10.0.0.5:6379/0 123"


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_nonsense_numbers_in_the_configuration_are_refused(bad):
    output = _celery_report("import worker_app.settings as s; s.get_settings()", SONIQUEBAY_BATCH_SIZE=bad)
    assert "SONIQUEBAY_BATCH_SIZE must be" in output


def test_each_queue_stop_wait_covers_the_longest_task_routed_to_it():
    """The supervisor role gives each queue's program a time_limit (its stopwaitsecs is that plus a margin), so that
    a warm shutdown lets the running tasks finish. The application's limits (worker_app/limits.py) are the source:
    every registered task, routed as the Celery app routes it, must fit in its queue's stop wait."""
    from tests.supervisor_role import host_variables, render_program, size_programs
    from worker_app.celery_app import QUEUES, app
    from worker_app.settings import get_settings

    app.loader.import_default_modules()
    scale = get_settings().time_limit_scale  # the tests' settings shrink the limits; the role's are the real ones
    longest = dict.fromkeys(QUEUES, 0.0)
    for name, task in app.tasks.items():
        if name.startswith("celery."):
            continue
        queue = app.amqp.router.route({}, name)["queue"].name
        longest[queue] = max(longest[queue], task.time_limit / scale)
    assert all(longest.values()), longest

    # A production host of the role: its defaults, every queue group.
    variables = host_variables({"ansible_facts": {"processor_vcpus": 8, "memtotal_mb": 32768},
                                "group_names": list(QUEUES), "inventory_hostname": "worker-1",
                                "ansible_managed": "", "supervisor_release": ""})
    programs = {item["queue"]: item for item in size_programs(variables)}
    assert set(programs) == set(QUEUES)
    for queue, item in programs.items():
        assert int(item["time_limit"]) >= longest[queue], (queue, item["time_limit"], longest[queue])
        stopwaitsecs = int(re.search(r"^stopwaitsecs=(\d+)$", render_program(item, variables), re.M).group(1))
        assert stopwaitsecs > longest[queue], (queue, stopwaitsecs, longest[queue])


def test_extract_is_sized_by_memory_too_when_it_analyses_audio():
    """Each extract process decodes audio when analysis is on (the role's measured 384 MiB a process): a host with
    many cores and little memory runs fewer extract processes then, and as many as its cores otherwise."""
    from tests.supervisor_role import host_variables, size_programs

    def extract(vcpus: int, memory_mb: int, analysis: bool | None) -> int:
        host = {"ansible_facts": {"processor_vcpus": vcpus, "memtotal_mb": memory_mb}, "group_names": ["extract"],
                "inventory_hostname": "worker-1", "ansible_managed": "", "supervisor_release": ""}
        if analysis is not None:
            host["worker_app_audio_analysis"] = analysis
        return int(next(item for item in size_programs(host_variables(host)))["concurrency"])

    assert extract(16, 2048, None) == 16  # analysis is off by default (worker_app role): cores only
    assert extract(16, 2048, False) == 16
    assert extract(16, 2048, True) == 2048 // 384
    assert extract(4, 32768, True) == 4
    assert extract(8, 200, True) == 1  # never below one
