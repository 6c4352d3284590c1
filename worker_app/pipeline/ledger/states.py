"""The names the ledger's modules share: a unit's figures, the kinds of units and a scan's statuses."""
from __future__ import annotations

from worker_app.db.statuses import ACTIVE, COUNTS, ENDED, STARTED, ScanStatus

__all__ = ["ACTIVE", "BACKGROUND_KINDS", "CANCELLED", "COUNTS", "ENDED", "FOLLOW_UPS", "STARTED", "ScanStatus"]



# Units a scan starts but does not wait for: audio analysis and what follows from it run after the catalogue is
# complete (tag reading goes first), so a scan is complete when its other units are done.
BACKGROUND_KINDS = ("analysis", "audio-vector", "audio-album")


CANCELLED = ScanStatus.CANCELLED


# Units that finish tracks already catalogued (album covers, audio analysis; search vectors, which only a previous
# release's scans sent as units): they still run when their scan is cancelled, since the next scan finds those
# files unchanged and would never do them.
FOLLOW_UPS = ("enrich", "vectorize", *BACKGROUND_KINDS)
