"""Audio analysis switched on after the library was catalogued: the deferred workers' periodic drain queues the
backlog by itself (pipeline/analysis_backlog.py), a bounded number of batches at a time, each track once, and
stops at the end of the catalogue until its next round. No `soniquebay analysis --queue-backlog` here."""
from __future__ import annotations

import json
import time

import redis

from tests.audio_factory import make_library
from tests.faults.stack import fault_stack, scan
from tests.services import wait_for
from worker_app.pipeline.backpressure import queue_depths

N_FILES = 8
BATCH_SIZE = 3
TICK_SECONDS = 2


def _analysis(stack) -> dict:
    return json.loads(stack.soniquebay("analysis", "--json").stdout)


def test_the_backlog_drains_by_itself_once_analysis_is_on(workspace):
    root = workspace / "drain-library"
    root.mkdir(exist_ok=True)
    # An extract bound of 2: the drain may fill one batch of it per tick, so the backlog takes several ticks.
    with fault_stack(workspace / "drain-services", [root], SONIQUEBAY_BATCH_SIZE=str(BATCH_SIZE),
                     SONIQUEBAY_EXTRACT_BACKLOG="2") as stack:
        library = make_library(root / "album", n_files=N_FILES, seed=151, odd_file_names=False, corrupt=False)
        scan(stack, library.root)
        before = _analysis(stack)
        assert (before["tracks"], before["backlog"], before["analysed"], before["drain"]) == (N_FILES, N_FILES, 0,
                                                                                                 None), before

        stack.extra_env.update(SONIQUEBAY_AUDIO_ANALYSIS="on", SONIQUEBAY_ANALYSIS_BACKLOG_INTERVAL=str(TICK_SECONDS))
        stack.write_env_file()
        extract_log = stack.supervisor.log("extract")
        log_start = extract_log.stat().st_size
        broker = redis.Redis.from_url(stack.broker.url())

        def waiting() -> int:
            return queue_depths(broker, ["extract"])["extract"]

        # The extract workers stopped, so what the drain queues stays in the queue: it queues one batch (the room
        # it leaves a scan is half the bound of 2), then nothing more, tick after tick, though 3 are due.
        stack.supervisor.ctl("stop", stack.supervisor.group("extract"))
        stack.supervisor.ctl("restart", stack.supervisor.group("deferred"))
        switched_on = time.monotonic()
        wait_for(lambda: waiting() > 0, 180, "the drain's first batch in the extract queue", interval=0.2)
        time.sleep(3 * TICK_SECONDS)
        assert waiting() == 1, waiting()
        stack.supervisor.ctl("start", stack.supervisor.group("extract"))

        def drained():
            figures = _analysis(stack)
            return figures if figures["backlog"] == 0 and figures["vectors"] == N_FILES else None

        after = wait_for(drained, 300, "the backlog analysed without a command", interval=0.5)
        seconds = time.monotonic() - switched_on
        assert after["analysed"] == N_FILES and after["failed"] == 0, after
        # The round reached the end of the catalogue: the cursor is back at the start, the round's end recorded.
        assert after["drain"]["after_id"] == 0 and after["drain"]["round_ended_at"], after

        def batches_received() -> int:
            text = extract_log.read_text(errors="replace")[log_start:]
            return sum(1 for line in text.splitlines()
                       if "Task extract_audio_features_batch[" in line and "] received" in line)
        # A few more ticks: nothing is queued again (each track was queued once; the next round is an hour away).
        queued = batches_received()
        time.sleep(3 * TICK_SECONDS)
        assert batches_received() == queued == -(-N_FILES // BATCH_SIZE), (queued, batches_received())
        print(f"\nanalysis backlog of {N_FILES} tracks drained {seconds:.1f} s after analysis was switched on, "
              f"in {queued} batches")
