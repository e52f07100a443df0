"""A loop in a daemon thread, with the life cycle every campaign part shares.

The fault scheduler, the steady-state monitor and the observer each run a `run()` loop that
watches `_stop`; this gives them one `start`, `stop`, `join` and `running()`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import ClassVar, Self


class BackgroundLoop:
    thread_name: ClassVar[str] = "background loop"
    # How long `running()` waits for the loop to end after asking it to stop.
    join_timeout_s: ClassVar[float] = 5.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def _thread_main(self) -> None:
        self.run()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"the {self.thread_name} was already started")
        self._thread = threading.Thread(
            target=self._thread_main, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; `join` waits for it."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop's thread; True when it has ended (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _after_stop(self) -> None:
        """What `running()` does once the loop has ended."""

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Start on entry; on exit stop, wait for the loop (bounded), then `_after_stop`."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
            self.join(self.join_timeout_s)
            self._after_stop()
