"""What one request spent on each dependency and how it was served.

The request middleware puts a fresh `RequestTrace` into a context variable; the guard adds
every dependency call's duration to it and handlers mark it `fallback` or `stale`. The
middleware then turns it into the `Server-Timing` and `X-Served-By` headers.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum


class ServedBy(IntEnum):
    """How a response was produced; a larger value is further from the primary path."""

    PRIMARY = 0
    FALLBACK = 1
    STALE = 2

    @property
    def header(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class RequestTrace:
    spent_s: dict[str, float] = field(default_factory=dict)
    served_by: ServedBy = ServedBy.PRIMARY
    # The feature the handler is serving, for a 503 that names it.
    feature: str | None = None

    def add(self, dependency: str, seconds: float) -> None:
        self.spent_s[dependency] = self.spent_s.get(dependency, 0.0) + seconds

    def mark(self, served_by: ServedBy) -> None:
        # A response assembled from several parts is as degraded as its worst part.
        self.served_by = max(self.served_by, served_by)

    def server_timing(self) -> str:
        return ", ".join(
            f"{dependency};dur={seconds * 1000.0:.1f}"
            for dependency, seconds in self.spent_s.items()
        )


current_trace: ContextVar[RequestTrace | None] = ContextVar("current_trace", default=None)


def mark_served(served_by: ServedBy) -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.mark(served_by)


def add_spent(dependency: str, seconds: float) -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.add(dependency, seconds)
