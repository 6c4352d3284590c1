"""Failure records: what could not be catalogued and why, and which of them a later scan remembers."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from worker_app.db.models import FailedFile, ScanFailure
from worker_app.paths import display_path

# A failure's kind: a verdict on the content is remembered for the file's (size, mtime); a passing error is not.
VERDICT, PASSING = "verdict", "passing"


@dataclass(frozen=True)
class Failure:
    path: str
    stage: str
    reason: str
    # The file's size and mtime when it failed, where known: an unchanged file whose failure is a verdict is not
    # tried again.
    size_bytes: int | None = None
    mtime: float | None = None
    kind: str = VERDICT

    @property
    def remembered(self) -> bool:
        return self.kind == VERDICT and self.size_bytes is not None and self.mtime is not None

    def as_message(self) -> list[Any]:
        return [self.path, self.stage, self.reason, self.size_bytes, self.mtime, self.kind]

    def as_row(self, scan_id: int) -> dict[str, Any]:
        return {"scan_id": scan_id, "path": display_path(self.path), "stage": self.stage,
                "reason": self.reason.replace("\x00", "")[:2000], "kind": self.kind}


def record_failures(session: Session, scan_id: int, failures: list[Failure]) -> None:
    if not failures:
        return
    rows = list({(f.path, f.stage): f.as_row(scan_id) for f in failures}.values())
    statement = insert(ScanFailure).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_scan_failures_scan_path_stage",
            set_={"reason": statement.excluded.reason, "kind": statement.excluded.kind},
        )
    )
    # Only a verdict on the content is remembered: a passing error must not stop the next scan from reading the
    # file again.
    known = {
        f.path: {"path": display_path(f.path), "folder": display_path(os.path.dirname(f.path)),
                 "size_bytes": f.size_bytes, "mtime": f.mtime, "stage": f.stage,
                 "reason": f.as_row(scan_id)["reason"], "scan_id": scan_id}
        for f in failures if f.remembered
    }
    if known:
        statement = insert(FailedFile).values(sorted(known.values(), key=lambda row: row["path"]))
        session.execute(statement.on_conflict_do_update(
            index_elements=["path"],
            set_={name: statement.excluded[name] for name in ("size_bytes", "mtime", "stage", "reason", "scan_id")},
        ))
