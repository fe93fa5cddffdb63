"""Signal routing for the supervisor: SIGINT/SIGTERM/SIGHUP unwind the setup before the child
starts, reach the child while it runs, and wait while the run's end is being recorded."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from mlkit.runner.plan import signal_name

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalRouter:
    """Owns SIGINT/SIGTERM/SIGHUP for the supervisor's lifetime (main thread only).

    Before the child starts, a signal raises `Interrupted` (so setup unwinds and the run is marked
    KILLED); while a child runs it goes to `on_signal`; while the run is being recorded it is only
    remembered, so the bookkeeping is never cut in half.
    """

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}
        self.mode = "raise"
        self.on_signal: Callable[[int], None] | None = None
        self.received: int | None = None

    def __enter__(self) -> SignalRouter:
        if self.active:
            for sig in FORWARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
        if self.mode == "forward" and self.on_signal is not None:
            self.on_signal(signum)
        elif self.mode == "raise":
            raise Interrupted(signum)


class Interrupted(BaseException):
    """The supervisor got SIGINT/SIGTERM/SIGHUP before the child started."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum
