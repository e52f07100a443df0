"""The weighted health score (POLICY.md, "Health score")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from engine.policy.breaker import BreakerSnapshot
from engine.policy.config import BreakerConfig
from engine.policy.events import BreakerState

_UNAVAILABLE = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})


def dependency_health(snapshot: BreakerSnapshot, config: BreakerConfig) -> float:
    """1 for a healthy dependency, 0 for an open breaker, 0.5 while it is being tried."""
    if snapshot.state in _UNAVAILABLE:
        return 0.0
    if snapshot.state is BreakerState.HALF_OPEN:
        return 0.5
    if snapshot.calls < config.minimum_calls:
        return 1.0
    pressure = max(
        snapshot.failure_rate / config.failure_rate_threshold,
        snapshot.slow_rate / config.slow_call_rate_threshold,
    )
    return 1.0 - 0.5 * min(1.0, pressure)


def health_score(
    snapshots: Iterable[BreakerSnapshot], configs: Mapping[str, BreakerConfig]
) -> float:
    """100 · Σ wᵢ·sᵢ / Σ wᵢ, rounded to 2 decimals so that 50.0 is exactly 50.0."""
    weighted = 0.0
    total_weight = 0.0
    for snapshot in snapshots:
        config = configs[snapshot.dependency]
        weighted += config.weight * dependency_health(snapshot, config)
        total_weight += config.weight
    return round(100.0 * weighted / total_weight, 2)
