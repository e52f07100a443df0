"""The clock seam: every decision of the core reads time through a `Clock`.

The service passes a clock over the system's monotonic time, the simulator one over
`env.now`, and the unit tests a `ManualClock` they advance by hand, so the same policy
objects run under all three without knowing which.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A monotonic reading in seconds; only differences between readings mean anything."""

    def monotonic(self) -> float: ...


class ManualClock:
    """A clock that moves only when told to: deterministic tests without sleeping."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        if now < self._now:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now = float(now)
