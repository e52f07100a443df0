"""Transitions as small immutable records.

The engine's `/resilience/events`, its Prometheus exporter and the simulator's timeline
recorder all listen to these same records; none of them re-derives a transition.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, ClassVar


class BreakerState(Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"
    FORCED_OPEN = "FORCED_OPEN"
    DISABLED = "DISABLED"
    METRICS_ONLY = "METRICS_ONLY"


class ServeMode(Enum):
    PRIMARY = "primary"
    FALLBACK = "fallback"
    OFF = "off"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name if isinstance(value.value, int) else value.value
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


class _Record:
    """Shared serialisation of the event records: a flat dict with a `kind`."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"kind": self.kind}
        for each in fields(self):  # type: ignore[arg-type]
            row[each.name] = _plain(getattr(self, each.name))
        return row


@dataclass(frozen=True, slots=True)
class BreakerTransition(_Record):
    kind: ClassVar[str] = "breaker_transition"
    at: float
    dependency: str
    from_state: BreakerState
    to_state: BreakerState
    epoch: int
    reason: str
    failure_rate: float
    slow_rate: float
    calls: int


@dataclass(frozen=True, slots=True)
class LevelChange(_Record):
    kind: ClassVar[str] = "level_change"
    at: float
    from_level: Any  # Level; typed loosely here to keep this module free of config imports
    to_level: Any
    score: float


@dataclass(frozen=True, slots=True)
class FeatureChange(_Record):
    kind: ClassVar[str] = "feature_change"
    at: float
    feature: str
    from_mode: ServeMode
    to_mode: ServeMode
    reason: str


@dataclass(frozen=True, slots=True)
class FlagChange(_Record):
    kind: ClassVar[str] = "flag_change"
    at: float
    feature: str
    forced: bool | None  # True forced on, False forced off, None cleared


@dataclass(frozen=True, slots=True)
class RecoveryObserved(_Record):
    """One episode away from full health: what the ETA said at its start, and what happened."""

    kind: ClassVar[str] = "recovery_observed"
    at: float
    started_at: float
    predicted_s: float
    actual_s: float
    error_s: float
    confidence: str


PolicyEvent = BreakerTransition | LevelChange | FeatureChange | FlagChange | RecoveryObserved
