"""Every public task is on a real path: something in the pipeline or a `soniquebay` command sends it (or calls it),
and a test drives that path with real services."""
from __future__ import annotations

import ast
import importlib

from tests.services import REPO

PIPE = "tests/test_pipeline_scan.py::"
ANALYSIS = "tests/test_analysis_pipeline.py::"
FIRST_SCAN = PIPE + "test_first_scan_catalogues_every_track_field_by_field"

# Task name -> the test that drives it through its real path (every scan runs the first group).
EXERCISED_BY = {
    "scan_directory_parallel": FIRST_SCAN,
    "scan_directory_chunk": FIRST_SCAN,
    "scan_single_file": PIPE + "test_a_scan_of_one_file_catalogues_it",
    "extract_metadata_batch": FIRST_SCAN,
    "extract_single_file": PIPE + "test_tags_shows_what_the_extract_workers_read",  # soniquebay tags
    "batch_entities": FIRST_SCAN,
    "group_by_artist": FIRST_SCAN,  # called by batch_entities, in the batch worker
    "prepare_insertion_batch": FIRST_SCAN,  # likewise
    "insert_batch_direct": FIRST_SCAN,
    "enrich_album_covers": FIRST_SCAN,  # the album covers the test checks
    # soniquebay db reindex
    "vectorize_tracks": "tests/test_catalogue_queries.py::test_db_reindex_gives_tracks_without_a_vector_theirs_again",
    "cleanup_finish_scan": FIRST_SCAN,
    "cleanup_removed_files": PIPE + "test_rescan_follows_changed_added_and_removed_files",
    "extract_audio_features_batch": ANALYSIS + "test_a_scan_analyses_every_track_and_similar_finds_its_kind",
    "vectorize_audio": ANALYSIS + "test_a_scan_analyses_every_track_and_similar_finds_its_kind",  # soniquebay similar
    "enrich_album_audio": ANALYSIS + "test_album_figures_come_from_the_tracks",
    # Sent periodically by every deferred worker (a worker bootstep).
    "cleanup_stalled_scans": "tests/test_worker_loss.py::test_a_scan_survives_messages_the_broker_lost",
    "relay_units": "tests/faults/test_service_outages.py::test_the_broker_killed_and_restarted_mid_scan",
    "cleanup_old_scans": "tests/test_retention.py::test_the_deferred_workers_prune_on_a_clock",
    "enrich_analysis_backlog":
        "tests/faults/test_analysis_drain.py::test_the_backlog_drains_by_itself_once_analysis_is_on",
    "cleanup_orphans": "tests/test_orphans.py::test_a_scan_removes_what_its_changes_left_unused_and_only_that",
    # `soniquebay db load`: records put into the catalogue without a scan, one kind of row after the other.
    **dict.fromkeys(("insert_covers_batch", "insert_artists_batch", "insert_albums_batch", "insert_tracks_batch"),
                    "tests/test_db_load.py::test_load_writes_what_tags_read_and_a_scan_then_finds_it_unchanged"),
}

def _public_tasks() -> dict[str, object]:
    from worker_app.celery_app import app

    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def _references() -> set[str]:
    """Names the application's code uses: functions (a call, ``.name``, ``.delay``...) and task names given as
    strings to a call (``publish("cleanup_finish_scan", ...)``), but not a task's own ``name=`` declaration."""
    used: set[str] = set()
    for path in (REPO / "worker_app").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
            elif isinstance(node, ast.Call):
                used.update(arg.value for arg in node.args
                            if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return used


def test_every_task_and_every_seed_name_is_listed():
    from worker_app.celery_app import TASK_ROUTES

    listed = set(EXERCISED_BY)
    assert set(_public_tasks()) == listed
    seed_names = {name for name in TASK_ROUTES if "*" not in name}
    assert seed_names <= listed


def test_each_task_is_sent_or_called_by_the_application():
    used = _references()
    for name, task in _public_tasks().items():
        reached = name in used or task.run.__name__ in used
        assert reached, f"{name} is registered but nothing in worker_app sends or calls it"


def test_each_listed_test_exists():
    for name, test in EXERCISED_BY.items():
        module, function = test.split("::")
        loaded = importlib.import_module(module.removesuffix(".py").replace("/", "."))
        assert callable(getattr(loaded, function, None)), f"{name}: {test} does not exist"
