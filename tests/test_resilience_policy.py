"""The facade: breakers, score, levels, features and events wired together."""

from __future__ import annotations

from engine.policy import (
    BreakerState,
    BreakerTransition,
    FeatureChange,
    FlagChange,
    Level,
    LevelChange,
    ManualClock,
    Outcome,
    Permit,
    PolicyEvent,
    Rejected,
    ResiliencePolicy,
    ServeMode,
)
from tests.policy_helpers import DEFAULT


def fail(policy: ResiliencePolicy, dependency: str, count: int) -> None:
    for _ in range(count):
        permit = policy.acquire(dependency)
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)


def run_ticks(policy: ResiliencePolicy, clock: ManualClock, seconds: int) -> list[PolicyEvent]:
    events: list[PolicyEvent] = []
    for _ in range(seconds):
        clock.advance(1.0)
        events.extend(policy.tick())
    return events


def test_a_postgres_outage_walks_the_documented_levels() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    seen: list[PolicyEvent] = []
    policy.subscribe(seen.append)
    fail(policy, "postgres", 10)
    assert policy.breakers["postgres"].state is BreakerState.OPEN
    assert policy.score == 70.0
    assert policy.level is Level.DEGRADED
    assert policy.decide("order_processing").mode is ServeMode.OFF
    assert policy.decide("order_processing").retry_after_s >= 30
    assert policy.decide("inventory_read").mode is ServeMode.FALLBACK
    assert any(isinstance(event, LevelChange) for event in seen)
    assert any(
        isinstance(event, FeatureChange) and event.feature == "order_processing" for event in seen
    )

    run_ticks(policy, clock, 30)  # open time over: HALF_OPEN at the tick of t=30
    assert policy.breakers["postgres"].state is BreakerState.HALF_OPEN
    assert policy.score == 85.0
    permit = policy.acquire("postgres")
    assert isinstance(permit, Permit)
    policy.record(permit, Outcome.SUCCESS, 0.002)
    assert policy.breakers["postgres"].state is BreakerState.CLOSED
    assert policy.score == 100.0
    assert policy.level is Level.DEGRADED  # the dwell is still to come

    events = run_ticks(policy, clock, 12)
    rises = [event for event in events if isinstance(event, LevelChange)]
    assert [(event.to_level, event.at) for event in rises] == [(Level.OPTIMAL, 40.0)]
    assert policy.decide("order_processing").mode is ServeMode.PRIMARY


def test_rejected_calls_do_not_reach_the_breaker_window() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    fail(policy, "redis", 20)
    rejected = policy.acquire("redis")
    assert isinstance(rejected, Rejected)
    assert rejected.retry_after_s == 20.0


def test_flags_and_forced_breakers_are_events() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    events = policy.set_flag("ai_recommendations", False)
    assert isinstance(events[0], FlagChange)
    assert policy.decide("ai_recommendations").mode is ServeMode.FALLBACK
    assert policy.set_flag("ai_recommendations", False) == ()
    forced = policy.force_breaker("s3", BreakerState.FORCED_OPEN)
    assert isinstance(forced[0], BreakerTransition)
    assert policy.score == 95.0
    assert policy.decide("invoice_upload").mode is ServeMode.OFF
    policy.force_breaker("s3", None)
    assert policy.decide("invoice_upload").mode is ServeMode.PRIMARY


def test_a_failing_listener_is_isolated() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    received: list[PolicyEvent] = []

    def broken(event: PolicyEvent) -> None:
        raise RuntimeError("listener bug")

    policy.subscribe(broken)
    policy.subscribe(received.append)
    fail(policy, "postgres", 10)
    assert received
    assert policy.listener_errors == len(received)


def test_status_reports_every_part() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    fail(policy, "openai", 10)
    status = policy.status().to_dict()
    assert status["level"] == "LIMITED"
    assert status["score"] == 50.0
    breakers = status["breakers"]
    assert isinstance(breakers, dict) and breakers["openai"]["state"] == "OPEN"
    features = status["features"]
    assert isinstance(features, dict) and features["ai_pricing_suggestion"]["mode"] == "fallback"
    eta = status["recovery_eta"]
    assert isinstance(eta, dict) and eta["confidence"] == "none"
