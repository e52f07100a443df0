"""`ResiliencePolicy`: the facade that wires breakers, score, levels, features and the ETA.

One instance per process (or per simulated replication). It reads time from the injected
`Clock`, returns every transition as an immutable event, and hands each event to its
listeners; a failing listener is counted and isolated, never allowed to stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.policy.breaker import (
    BreakerSnapshot,
    CircuitBreaker,
    Outcome,
    Permit,
    Rejected,
)
from engine.policy.clock import Clock
from engine.policy.config import Level, PolicyConfig
from engine.policy.degradation import DegradationController
from engine.policy.events import (
    BreakerState,
    BreakerTransition,
    FeatureChange,
    FlagChange,
    PolicyEvent,
)
from engine.policy.features import FeatureDecision, FeatureFlags, FeatureMatrix
from engine.policy.health import health_score
from engine.policy.recovery import RecoveryEstimator, RecoveryEta

_UNAVAILABLE = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})
_CLOSED_LIKE = frozenset({BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.METRICS_ONLY})

Listener = Callable[[PolicyEvent], Any]


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    at: float
    breakers: dict[str, BreakerSnapshot]
    score: float
    level: Level
    features: dict[str, FeatureDecision]
    eta: RecoveryEta
    flags: dict[str, bool]

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "score": self.score,
            "level": self.level.name,
            "breakers": {name: snap.to_dict() for name, snap in self.breakers.items()},
            "features": {name: decision.to_dict() for name, decision in self.features.items()},
            "recovery_eta": self.eta.to_dict(),
            "flags": self.flags,
        }


class ResiliencePolicy:
    def __init__(self, config: PolicyConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        now = clock.monotonic()
        self.breakers: dict[str, CircuitBreaker] = {
            name: CircuitBreaker(name, breaker_config, now)
            for name, breaker_config in config.breakers.items()
        }
        self.controller = DegradationController(config.levels)
        self.matrix = FeatureMatrix(config.features)
        self.flags = FeatureFlags(config.features)
        self.estimator = RecoveryEstimator(config)
        self.listener_errors = 0
        self._listeners: list[Listener] = []
        self._score = 100.0
        self._eta = RecoveryEta(0.0, "high")
        self._decisions = self.matrix.decide_all(Level.OPTIMAL, frozenset(), self.flags)

    # --- the hot path ----------------------------------------------------------------------

    def acquire(self, dependency: str) -> Permit | Rejected:
        breaker = self.breakers[dependency]
        now = self.clock.monotonic()
        result = breaker.acquire(now)
        if breaker.has_pending_events:
            self._settle(breaker.take_events(), now)
        return result

    def record(self, permit: Permit, outcome: Outcome, duration: float) -> tuple[PolicyEvent, ...]:
        now = self.clock.monotonic()
        transitions = self.breakers[permit.dependency].record(permit, outcome, duration, now)
        if not transitions:
            return ()
        return self._settle(transitions, now)

    def record_success(self, permit: Permit, duration: float) -> tuple[PolicyEvent, ...]:
        """`record(permit, Outcome.SUCCESS, duration)` on the breaker's cheaper path."""
        now = self.clock.monotonic()
        transitions = self.breakers[permit.dependency].record_success(permit, duration, now)
        if not transitions:
            return ()
        return self._settle(transitions, now)

    def release(self, permit: Permit) -> tuple[PolicyEvent, ...]:
        now = self.clock.monotonic()
        transitions = self.breakers[permit.dependency].release(permit, now)
        return self._settle(transitions, now) if transitions else ()

    def decide(self, feature: str) -> FeatureDecision:
        return self._decisions[feature]

    # --- periodic and operator actions ----------------------------------------------------

    def tick(self) -> tuple[PolicyEvent, ...]:
        """The 1 s evaluation: open times, overdue leases, the score's drift, the dwell."""
        now = self.clock.monotonic()
        transitions: list[BreakerTransition] = []
        for breaker in self.breakers.values():
            transitions.extend(breaker.tick(now))
        return self._settle(tuple(transitions), now)

    def force_breaker(self, dependency: str, state: BreakerState | None) -> tuple[PolicyEvent, ...]:
        now = self.clock.monotonic()
        return self._settle(self.breakers[dependency].force(state, now), now)

    def set_flag(self, feature: str, forced: bool | None) -> tuple[PolicyEvent, ...]:
        now = self.clock.monotonic()
        if not self.flags.set(feature, forced):
            return ()
        return self._settle((), now, (FlagChange(at=now, feature=feature, forced=forced),))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # --- readings --------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        return self.controller.level

    @property
    def score(self) -> float:
        return self._score

    @property
    def eta(self) -> RecoveryEta:
        return self._eta

    def snapshots(self, now: float | None = None) -> dict[str, BreakerSnapshot]:
        at = self.clock.monotonic() if now is None else now
        return {name: breaker.snapshot(at) for name, breaker in self.breakers.items()}

    def status(self) -> PolicyStatus:
        now = self.clock.monotonic()
        return PolicyStatus(
            at=now,
            breakers=self.snapshots(now),
            score=self._score,
            level=self.controller.level,
            features=dict(self._decisions),
            eta=self._eta,
            flags=self.flags.as_dict(),
        )

    # --- wiring ----------------------------------------------------------------------------

    def _settle(
        self,
        transitions: tuple[BreakerTransition, ...],
        now: float,
        extra: tuple[PolicyEvent, ...] = (),
    ) -> tuple[PolicyEvent, ...]:
        """After any change: score, level, features and ETA, then tell the listeners."""
        events: list[PolicyEvent] = list(transitions)
        events.extend(extra)
        for transition in transitions:
            self.estimator.on_transition(transition)
        snapshots = self.snapshots(now)
        self._score = health_score(snapshots.values(), self.config.breakers)
        level_change = self.controller.update(self._score, now)
        if level_change is not None:
            events.append(level_change)
        level = self.controller.level
        self._eta = self.estimator.estimate(self.breakers, level, now)
        unavailable = frozenset(
            name for name, snapshot in snapshots.items() if snapshot.state in _UNAVAILABLE
        )
        retry_after = max(1.0, self._eta.seconds)
        decisions = self.matrix.decide_all(level, unavailable, self.flags, retry_after)
        for name, decision in decisions.items():
            previous = self._decisions[name]
            if decision.mode is not previous.mode:
                events.append(
                    FeatureChange(
                        at=now,
                        feature=name,
                        from_mode=previous.mode,
                        to_mode=decision.mode,
                        reason=decision.reason,
                    )
                )
        self._decisions = decisions
        all_closed = all(snapshot.state in _CLOSED_LIKE for snapshot in snapshots.values())
        observed = self.estimator.on_health(all_closed, level, self._eta, now)
        if observed is not None:
            events.append(observed)
        published = tuple(events)
        for event in published:
            self._publish(event)
        return published

    def _publish(self, event: PolicyEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
