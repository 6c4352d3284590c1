"""A per-file time limit: one pathological file must cost its own seconds, not the batch's.

``FileTimeLimit(seconds)`` arms ``ITIMER_REAL`` and raises ``FileTimeLimitExceeded`` in the main thread when it
expires. That is where Celery's prefork children run tasks; Celery's soft time limit is SIGUSR1 sent by the parent
and its hard limit a SIGKILL, so SIGALRM is free there. In any other thread (Celery's thread pool, a test runner's
worker thread) signals cannot be used and the limit does nothing: the task time limits still apply.

``FileTimeLimitExceeded`` is a ``BaseException`` so that the ``except Exception`` clauses of mutagen and of the
extractor let it through. The previous SIGALRM handler and timer are restored on exit; a timer that was already
running keeps running (minus the time spent), and if it came due meanwhile it fires right after the exit.
"""
from __future__ import annotations

import _signal
import signal
import threading
import time
from types import FrameType, TracebackType

# _signal holds the C functions: signal.signal() and getsignal() convert handlers to enums, which costs ~10 us a
# call, and this runs for every file (~500 us of mutagen work). Same semantics otherwise.


class FileTimeLimitExceeded(BaseException):
    """The per-file time limit expired; raised once, in the main thread."""


class FileTimeLimit:
    """Context manager; ``seconds`` None or <= 0 means no limit. Not reentrant (nest new instances instead)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None
        self._active = False  # our handler is installed (restoring it is pending)
        self._stopping = False
        self._fired = False
        self._previous_handler: signal._HANDLER = None
        self._previous_timer = (0.0, 0.0)
        self._started = 0.0

    def __enter__(self) -> FileTimeLimit:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self.seconds is None or threading.current_thread() is not threading.main_thread():
            return
        self._fired = self._stopping = False
        self._previous_handler = _signal.signal(signal.SIGALRM, self._on_alarm)
        self._active = True
        self._started = time.monotonic()
        self._previous_timer = _signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def stop(self) -> None:
        """Disarm and restore; idempotent, so it can be called again if the alarm interrupted a first call."""
        if not self._active:
            return
        self._stopping = True  # from here on a late alarm is ignored, whatever else interrupts this method
        _signal.setitimer(signal.ITIMER_REAL, 0)
        # signal.signal() first runs the Python handlers of signals already received: a last-moment alarm lands in
        # _on_alarm, which ignores it now. (An alarm can only interrupt this method before _stopping is set, that
        # is before it did anything: the caller catches FileTimeLimitExceeded and calls stop() again.)
        previous = self._previous_handler
        # None: a handler installed outside Python, which Python cannot reinstall; the default is the nearest.
        _signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        self._active = False
        delay, interval = self._previous_timer
        if delay > 0:
            remaining = delay - (time.monotonic() - self._started)
            _signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), interval)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._fired or self._stopping or not self._active:
            return
        self._fired = True
        raise FileTimeLimitExceeded()
