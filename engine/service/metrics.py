"""Prometheus metrics on the engine's own registry (never the process-global one).

Names follow resilience4j's (`state`, `calls{kind}`, `not_permitted_calls`, `failure_rate`,
`slow_call_rate`) under a `reslab_` prefix. Gauges of state are one series per possible
state, 1 for the current one, so that a dashboard can stack or sum them.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from engine.policy import BreakerState, Level, Outcome, ServeMode
from engine.policy.events import PolicyEvent
from engine.policy.resilience import PolicyStatus

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

_CALL_KIND = {
    Outcome.SUCCESS: "successful",
    Outcome.FAILURE: "failed",
    Outcome.IGNORED: "ignored",
}

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.breaker_state = Gauge(
            "reslab_circuitbreaker_state",
            "1 for the breaker's current state, 0 for the others",
            ["dependency", "state"],
            registry=registry,
        )
        self.calls = Counter(
            "reslab_circuitbreaker_calls",
            "Calls that a breaker admitted, by how they ended",
            ["dependency", "kind"],
            registry=registry,
        )
        self.not_permitted = Counter(
            "reslab_circuitbreaker_not_permitted_calls",
            "Calls that a breaker rejected",
            ["dependency"],
            registry=registry,
        )
        self.failure_rate = Gauge(
            "reslab_circuitbreaker_failure_rate",
            "Failure rate in the breaker's sliding window (0-1)",
            ["dependency"],
            registry=registry,
        )
        self.slow_call_rate = Gauge(
            "reslab_circuitbreaker_slow_call_rate",
            "Slow-call rate in the breaker's sliding window (0-1)",
            ["dependency"],
            registry=registry,
        )
        self.health_score = Gauge(
            "reslab_health_score", "Weighted health score (0-100)", registry=registry
        )
        self.level = Gauge(
            "reslab_degradation_level",
            "Degradation level: 0 OPTIMAL, 1 DEGRADED, 2 LIMITED, 3 MINIMAL, 4 EMERGENCY",
            registry=registry,
        )
        self.level_state = Gauge(
            "reslab_degradation_level_state",
            "1 for the current degradation level, 0 for the others",
            ["level"],
            registry=registry,
        )
        self.feature_available = Gauge(
            "reslab_feature_available",
            "1 when the feature is served by its primary path",
            ["feature"],
            registry=registry,
        )
        self.feature_mode = Gauge(
            "reslab_feature_mode",
            "1 for the feature's current serving mode, 0 for the others",
            ["feature", "mode"],
            registry=registry,
        )
        self.recovery_eta = Gauge(
            "reslab_recovery_eta_seconds",
            "Estimated seconds until every breaker is closed and the level is OPTIMAL",
            registry=registry,
        )
        self.dependency_latency = Histogram(
            "reslab_dependency_call_duration_seconds",
            "Duration of guarded dependency calls",
            ["dependency", "kind"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.request_latency = Histogram(
            "reslab_http_request_duration_seconds",
            "Duration of HTTP requests, by route template and status",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.responses = Counter(
            "reslab_http_responses",
            "HTTP responses by route template and how they were served",
            ["route", "served_by"],
            registry=registry,
        )
        self.policy_events = Counter(
            "reslab_policy_events",
            "Events the policy emitted, by kind",
            ["kind"],
            registry=registry,
        )

    # --- the guard's observer --------------------------------------------------------------

    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None:
        kind = _CALL_KIND[outcome]
        self.calls.labels(dependency, kind).inc()
        self.dependency_latency.labels(dependency, kind).observe(seconds)

    def on_rejected(self, dependency: str) -> None:
        self.not_permitted.labels(dependency).inc()

    # --- the policy's listener and the tick ------------------------------------------------

    def on_event(self, event: PolicyEvent) -> None:
        self.policy_events.labels(event.kind).inc()

    def update(self, status: PolicyStatus) -> None:
        for dependency, snapshot in status.breakers.items():
            for state in BreakerState:
                self.breaker_state.labels(dependency, state.value).set(
                    1.0 if snapshot.state is state else 0.0
                )
            self.failure_rate.labels(dependency).set(snapshot.failure_rate)
            self.slow_call_rate.labels(dependency).set(snapshot.slow_rate)
        self.health_score.set(status.score)
        self.level.set(int(status.level))
        for level in Level:
            self.level_state.labels(level.name).set(1.0 if status.level is level else 0.0)
        for feature, decision in status.features.items():
            self.feature_available.labels(feature).set(
                1.0 if decision.mode is ServeMode.PRIMARY else 0.0
            )
            for mode in ServeMode:
                self.feature_mode.labels(feature, mode.value).set(
                    1.0 if decision.mode is mode else 0.0
                )
        self.recovery_eta.set(status.eta.seconds)

    # --- requests --------------------------------------------------------------------------

    def on_request(
        self, method: str, route: str, status: int, served_by: str, seconds: float
    ) -> None:
        self.request_latency.labels(method, route, str(status)).observe(seconds)
        self.responses.labels(route, served_by).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
