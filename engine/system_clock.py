"""The engine's clock: the operating system's monotonic time."""

from __future__ import annotations

import time


class SystemClock:
    """`Clock` over `time.monotonic`; the policy core never imports `time` itself."""

    __slots__ = ()

    # The builtin itself, not a method around it: no Python frame on every reading.
    monotonic = staticmethod(time.monotonic)
