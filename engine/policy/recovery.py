"""The online recovery-ETA estimator (POLICY.md, "Recovery ETA").

For each dependency whose breaker is not CLOSED:
- OPEN: the time left in the open state, plus the outage still expected beyond it (the median
  of that dependency's past outages minus the time already elapsed and the open time left,
  never below 0; none without history), plus the expected time of the trial calls;
- HALF_OPEN: the expected time of the trial calls.
The ETA is the largest of those plus one dwell per level step back to OPTIMAL. Its confidence
says how much history the estimate had: none, low (fewer outages than the policy's
`high_confidence_outages`), high.

An outage of a dependency lasts from its breaker's first OPEN to its next CLOSED. An episode
lasts from the first breaker leaving CLOSED (at full health) to the return of every breaker to
CLOSED and the level to OPTIMAL; at its end the estimator reports how far the ETA it gave at
the episode's start was from what happened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median

from engine.policy.breaker import CircuitBreaker
from engine.policy.config import Level, PolicyConfig
from engine.policy.events import BreakerState, BreakerTransition, RecoveryObserved

_CLOSED_LIKE = frozenset({BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.METRICS_ONLY})


@dataclass(frozen=True, slots=True)
class RecoveryEta:
    seconds: float
    confidence: str  # "none" | "low" | "high"
    per_dependency: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "confidence": self.confidence,
            "per_dependency": dict(self.per_dependency),
        }


class RecoveryEstimator:
    __slots__ = ("_config", "_episode", "_history", "_outage_started")

    def __init__(self, config: PolicyConfig) -> None:
        self._config = config
        self._history: dict[str, deque[float]] = {
            dependency: deque(maxlen=config.recovery.history) for dependency in config.breakers
        }
        self._outage_started: dict[str, float] = {}
        # (started_at, predicted ETA at the start, its confidence) of the current episode.
        self._episode: tuple[float, float, str] | None = None

    def history(self, dependency: str) -> tuple[float, ...]:
        return tuple(self._history[dependency])

    def on_transition(self, event: BreakerTransition) -> None:
        dependency = event.dependency
        if event.to_state is BreakerState.OPEN and dependency not in self._outage_started:
            self._outage_started[dependency] = event.at
        elif event.to_state in _CLOSED_LIKE and dependency in self._outage_started:
            self._history[dependency].append(event.at - self._outage_started.pop(dependency))

    def estimate(
        self, breakers: Mapping[str, CircuitBreaker], level: Level, now: float
    ) -> RecoveryEta:
        per_dependency: list[tuple[str, float]] = []
        least_history: int | None = None
        for dependency, breaker in breakers.items():
            state = breaker.state
            if state in _CLOSED_LIKE:
                continue
            trial_s = breaker.mean_success_s
            if state is BreakerState.HALF_OPEN:
                wait = trial_s
            elif state is BreakerState.OPEN:
                open_left = max(0.0, breaker.open_until - now)
                past = self._history[dependency]
                expected_beyond_open = 0.0
                if past:
                    elapsed = now - self._outage_started.get(dependency, now)
                    expected_beyond_open = max(0.0, median(past) - elapsed - open_left)
                wait = open_left + expected_beyond_open + trial_s
            else:  # FORCED_OPEN: back only when an operator says so
                continue
            per_dependency.append((dependency, wait))
            count = len(self._history[dependency])
            least_history = count if least_history is None else min(least_history, count)
        worst_wait = max((wait for _, wait in per_dependency), default=0.0)
        # One dwell per level step back to OPTIMAL.
        seconds = worst_wait + int(level) * self._config.levels.dwell_s
        return RecoveryEta(
            round(seconds, 3), self._confidence(least_history), tuple(per_dependency)
        )

    def _confidence(self, least_history: int | None) -> str:
        if least_history is None:
            return "high"  # nothing is waiting on a dependency: only the dwell remains
        if least_history == 0:
            return "none"
        return "high" if least_history >= self._config.recovery.high_confidence_outages else "low"

    def on_health(
        self, all_closed: bool, level: Level, eta: RecoveryEta, now: float
    ) -> RecoveryObserved | None:
        """Opens an episode when health first goes, closes it (with its error) when it is back."""
        healthy = all_closed and level is Level.OPTIMAL
        if self._episode is None:
            if not healthy:
                self._episode = (now, eta.seconds, eta.confidence)
            return None
        if not healthy:
            return None
        started_at, predicted, confidence = self._episode
        self._episode = None
        actual = now - started_at
        return RecoveryObserved(
            at=now,
            started_at=started_at,
            predicted_s=predicted,
            actual_s=round(actual, 3),
            error_s=round(predicted - actual, 3),
            confidence=confidence,
        )
