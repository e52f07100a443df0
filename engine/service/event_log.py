"""The ordered record of the policy's events that `/resilience/events?since=N` serves.

Each event gets a sequence number and, beside the core's monotonic time, a wall-clock
timestamp: the monotonic reading orders and measures, the wall time lines events up with
a fault scheduler's record in another process.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from typing import Any

from engine.policy import BreakerState, BreakerTransition, LevelChange
from engine.policy.events import PolicyEvent

log = logging.getLogger("engine.service.events")


class EventLog:
    def __init__(self, capacity: int = 10_000) -> None:
        self._rows: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def on_event(self, event: PolicyEvent) -> None:
        self._last_seq += 1
        # The event happened at `event.at` on the monotonic clock; map it onto the wall
        # clock through the current offset between the two.
        wall = time.time() - (time.monotonic() - event.at)
        row = event.to_dict()
        row["seq"] = self._last_seq
        row["at_monotonic"] = row.pop("at")
        row["at_wall"] = wall
        row["at_iso"] = dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")
        self._rows.append(row)

    def since(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Events numbered above `seq`, oldest first, at most `limit` of them."""
        if not self._rows or seq >= self._last_seq:
            return []
        first_kept = self._rows[0]["seq"]
        start = max(0, seq + 1 - first_kept)
        return [self._rows[index] for index in range(start, min(len(self._rows), start + limit))]


def log_event(event: PolicyEvent) -> None:
    """Breaker transitions and level changes in the service log, for operators."""
    if isinstance(event, BreakerTransition):
        level = logging.WARNING if event.to_state is BreakerState.OPEN else logging.INFO
        log.log(
            level,
            "breaker %s %s -> %s (%s; failure rate %.2f, slow rate %.2f, %d calls)",
            event.dependency, event.from_state.value, event.to_state.value, event.reason,
            event.failure_rate, event.slow_rate, event.calls,
        )  # fmt: skip
    elif isinstance(event, LevelChange):
        worse = int(event.to_level) > int(event.from_level)
        log.log(
            logging.WARNING if worse else logging.INFO,
            "level %s -> %s (score %.2f)",
            event.from_level.name, event.to_level.name, event.score,
        )  # fmt: skip
