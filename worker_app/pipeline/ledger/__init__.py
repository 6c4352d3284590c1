"""The scan ledger: which pieces of a scan's work exist, which are done, and when the scan is finished.

A scan's work is a set of units (a folder chunk to list, a batch of files to read and write, a follow-up), one row
each in ``scan_units``. At every commit the pending units are exactly the work still to do: a scan whose last unit
is done is finished exactly once, and a task delivered twice finds its unit done and its children registered.

One module per job, in the order a unit meets them:

- ``outbox``: units registered with their messages, sent after the commit, sent again when never sent;
- ``delivery``: each delivery counted at its stage, deaths told from duplicates, the paths that killed a worker;
- ``failures``: failure records, and which of them (verdicts) a later scan remembers;
- ``fan_in``: a unit closed with its figures; the scan's last unit finishes it;
- ``cancel``: a scan cancelled, nothing undone;
- ``stalls``: scans that stopped moving get their messages again;
- ``figures`` and ``progress``: a scan's sums, and what the command line shows;
- ``states``: the names they share.

The pipeline imports the ledger's API from here.
"""
from __future__ import annotations

from worker_app.pipeline.ledger.cancel import Cancelled, cancel_scan
from worker_app.pipeline.ledger.delivery import (
    Delivery,
    begin_delivery,
    hand_off,
    mark_current_path,
    note_passing_error,
)
from worker_app.pipeline.ledger.failures import PASSING, VERDICT, Failure, record_failures
from worker_app.pipeline.ledger.fan_in import complete_unit, unit_is_done
from worker_app.pipeline.ledger.figures import unit_totals
from worker_app.pipeline.ledger.outbox import (
    MAX_ARGS_BYTES,
    MessageTooLarge,
    Unit,
    check_args_size,
    mark_sent,
    publish,
    register_units,
    resend_unsent,
    reset_units,
    send_after_commit,
    send_stored,
    send_units,
    send_unsent,
)
from worker_app.pipeline.ledger.progress import progress
from worker_app.pipeline.ledger.stalls import resend_stalled
from worker_app.pipeline.ledger.states import ACTIVE, BACKGROUND_KINDS, CANCELLED, COUNTS, FOLLOW_UPS

__all__ = [
    "ACTIVE", "BACKGROUND_KINDS", "CANCELLED", "COUNTS", "FOLLOW_UPS", "MAX_ARGS_BYTES", "PASSING", "VERDICT",
    "Cancelled", "Delivery", "Failure", "MessageTooLarge", "Unit",
    "begin_delivery", "cancel_scan", "check_args_size", "complete_unit", "hand_off", "mark_current_path", "mark_sent",
    "note_passing_error", "progress", "publish", "record_failures", "register_units", "resend_stalled",
    "resend_unsent", "reset_units", "send_after_commit", "send_stored", "send_units", "send_unsent",
    "unit_is_done", "unit_totals",
]
