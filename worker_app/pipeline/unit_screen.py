"""What the insert stage believes of a unit's staged records and verdicts, checked against the library itself.

The extract and batch hosts write a unit's records and verdicts to ``staged_units`` (their ledger duty must: it is
the claim check), and they are the hosts that parse hostile files. The insert stage writes and deletes catalogue
rows on their word, so it takes that word only where a real scan could have given it:

- a name under the library roots (``unit_task.split_by_roots``), like every name a task is given;
- for a file the catalogue holds, only if the file on disk is no longer the one catalogued. A scan sends a
  catalogued file to extract only when its size or mtime changed, so no honest unit is refused, while a forged
  record or verdict about an unchanged file is: a log line and a passing failure record, and the track stays.
  The forger cannot make a file change either: every worker host mounts the library read-only, at the same path.

Two scans of overlapping roots can both send a changed file to extract: the second insert finds the file catalogued
as it is on disk, and refuses it like a forgery; the failure record says either may be the case. A file the insert
host cannot look at is refused as a passing error too: its track stays until a scan that can see the file decides.

What stays possible: a compromised extract host can still lie about a file that really changed or is new (its tags,
or a verdict on it); that is the price of letting it read the files.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker_app.db.models import Track
from worker_app.paths import db_path, printable_name
from worker_app.pipeline.ledger import PASSING, VERDICT, Failure
from worker_app.pipeline.unit_task import split_by_roots

log = logging.getLogger(__name__)

UNCHANGED = ("the file has not changed since it was catalogued (another scan of it wrote it first, or the unit "
             "was forged)")


def screen_unit(session: Session, unit: str, tracks: list[dict[str, Any]],
                failures: list[Failure]) -> tuple[list[dict[str, Any]], list[Failure]]:
    """(the records to write, the failures to record): the staged ones this host believes, and a passing
    failure for each refused one."""
    verdicts = [failure for failure in failures if failure.kind == VERDICT]
    # Every name of the unit in one call, so that each folder is resolved once (split_by_roots).
    within, refusals = split_by_roots([track["path"] for track in tracks] + [failure.path for failure in verdicts],
                                      "insert", f"insert {unit}")
    within_roots = set(within)  # names that passed are str or bytes

    def is_within_roots(path: Any) -> bool:
        return isinstance(path, (str, bytes)) and path in within_roots  # a forged name need not be hashable

    def refuse(path: str, reason: str) -> None:
        log.warning("insert %s refused what its staged unit says of %s: %s", unit, printable_name(path), reason)
        refusals.append(Failure(printable_name(path), "insert", f"refused: {reason}", kind=PASSING))

    tracks = [track for track in tracks if is_within_roots(track["path"])]
    verdicts = [failure for failure in verdicts if is_within_roots(failure.path)]
    named = {db_path(track["path"])[0] for track in tracks} | {db_path(failure.path)[0] for failure in verdicts}
    catalogued = {path: (size, mtime) for path, size, mtime in session.execute(
        select(Track.path, Track.size_bytes, Track.mtime).where(Track.path.in_(sorted(named))))}

    def why_not(path: str) -> str | None:
        """Why the staged word about ``path`` cannot be true, or None."""
        known = catalogued.get(db_path(path)[0])
        if known is None:
            return None
        try:
            info = os.stat(path)
        except OSError as error:
            return f"the file could not be looked at from this host ({error.strerror}); its track is kept"
        return UNCHANGED if (info.st_size, info.st_mtime) == known else None

    believed = []
    for track in tracks:
        reason = why_not(track["path"])
        if reason is None:
            believed.append(track)
        else:
            refuse(track["path"], reason)
    kept = [failure for failure in failures if failure.kind != VERDICT]
    for failure in verdicts:
        reason = why_not(failure.path)
        if reason is None:
            kept.append(failure)
        else:
            refuse(failure.path, f"the verdict \"{failure.reason}\" is not believed: {reason}")
    return believed, kept + refusals
