"""Back-pressure: with the insert stage stopped mid-scan, the broker's backlog stays within its bounds (extract
batches and scan chunks wait in their own queues, as small messages), and the scan completes once inserts resume."""
from __future__ import annotations

import time

import pytest
import redis

from tests.audio_factory import make_library
from tests.faults.report import record
from tests.faults.stack import (
    catalogue_under,
    engine_of,
    expected_paths,
    fault_stack,
    finish,
    start_scan,
)

pytestmark = pytest.mark.timeout(1200)

INSERT_BACKLOG = 3
EXTRACT_BACKLOG = 4
BATCH_SIZE = 4
CHUNK_ENTRIES = 8


def test_a_stopped_insert_stage_holds_the_scan_back_and_it_completes_when_inserts_resume(workspace):
    from worker_app.pipeline.backpressure import queue_depths

    # Its own stack: the bounds are set small, and the shared fault stack's workers would compete for the queues.
    base = workspace / "backpressure"
    root = base / "library"
    library = make_library(root, n_files=160, seed=81, corrupt=False)
    env = {"SONIQUEBAY_INSERT_BACKLOG": str(INSERT_BACKLOG), "SONIQUEBAY_EXTRACT_BACKLOG": str(EXTRACT_BACKLOG),
           "SONIQUEBAY_BATCH_SIZE": str(BATCH_SIZE), "SONIQUEBAY_CHUNK_ENTRIES": str(CHUNK_ENTRIES)}
    with fault_stack(base / "stack", [root], **env) as stack:
        broker = redis.Redis.from_url(stack.broker.url())
        stack.supervisor.ctl("stop", stack.supervisor.group("insert"))
        process = start_scan(stack, root, 900)

        # What passed the check at the same moment may overshoot: one message per extract process, one chunk's
        # extract units (at most CHUNK_ENTRIES files, in batches of BATCH_SIZE) per scan process; and a message a
        # worker of the queue reserved is out of its list until that worker sends on what it became.
        sized = {queue: (int(item["concurrency"]), int(item["prefetch_multiplier"]))
                 for queue, item in stack.supervisor.sized_programs().items()}
        (scan_processes, _), (extract_processes, extract_prefetch), (batch_processes, batch_prefetch) = (
            sized["scan"], sized["extract"], sized["batch"])
        insert_bound = INSERT_BACKLOG + extract_processes + batch_processes * batch_prefetch
        extract_bound = (EXTRACT_BACKLOG + scan_processes * -(-CHUNK_ENTRIES // BATCH_SIZE)
                         + extract_processes * extract_prefetch)
        peaks = {"batch+insert": 0, "extract": 0, "used_memory": 0}

        def sample() -> None:
            depths = queue_depths(broker, ["extract", "batch", "insert"])
            peaks["batch+insert"] = max(peaks["batch+insert"], depths["batch"] + depths["insert"])
            peaks["extract"] = max(peaks["extract"], depths["extract"])
            peaks["used_memory"] = max(peaks["used_memory"], int(broker.info("memory")["used_memory"]))

        # Until the records' queues are full (however slow this machine is today), then a while longer: the bound
        # must hold while everything upstream keeps pushing.
        deadline = time.monotonic() + 300
        while peaks["batch+insert"] < INSERT_BACKLOG and time.monotonic() < deadline:
            sample()
            time.sleep(0.1)
        assert peaks["batch+insert"] >= INSERT_BACKLOG, f"the queues never filled: {peaks}\n{stack.diagnostics()}"
        held_until = time.monotonic() + 20
        while time.monotonic() < held_until:
            sample()
            time.sleep(0.1)
        assert process.poll() is None, "the scan ended with its insert stage stopped"
        # Held back: the downstream queues stay within their bound, the rest waits upstream.
        assert peaks["batch+insert"] <= insert_bound, peaks
        assert peaks["extract"] <= extract_bound, peaks
        engine = engine_of(stack)
        assert len(catalogue_under(engine, root)) == 0

        stack.supervisor.ctl("start", stack.supervisor.group("insert"))
        summary = finish(stack, process, 900)
        assert summary["status"] == "complete"
        assert summary["failed"] == 0
        assert sorted(catalogue_under(engine, root)) == expected_paths(library)
        engine.dispose()
        record("backpressure", files=len(library.tracks), insert_backlog=INSERT_BACKLOG,
               extract_backlog=EXTRACT_BACKLOG, peak_batch_insert=peaks["batch+insert"],
               peak_extract=peaks["extract"], broker_peak_used_memory=peaks["used_memory"])
