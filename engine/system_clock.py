"""The engine's clock: the operating system's monotonic time."""

from __future__ import annotations

import time


class SystemClock:
    """`Clock` over `time.monotonic`; the policy core never imports `time` itself."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()
