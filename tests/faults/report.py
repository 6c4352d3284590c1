"""Figures of the fault tests, one JSON line per fault run, in .run/faults-report.jsonl: what the closing notes and
README's table are made from."""
from __future__ import annotations

import json
import time
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / ".run" / "faults-report.jsonl"


def record(fault: str, **figures) -> None:
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as handle:
        handle.write(json.dumps({"fault": fault, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}) + "\n")
