"""The recovery ETA: open time left, expected outage, trials, dwell; and its own error."""

from __future__ import annotations

import pytest

from engine.policy import (
    BreakerState,
    Level,
    ManualClock,
    Outcome,
    Permit,
    RecoveryObserved,
    ResiliencePolicy,
)
from tests.policy_helpers import DEFAULT


def outage(
    policy: ResiliencePolicy,
    clock: ManualClock,
    dependency: str,
    failed_trials: int,
    events: list[object],
) -> None:
    """Open the breaker, fail some trials, then recover and wait until OPTIMAL."""
    for _ in range(DEFAULT.breakers[dependency].minimum_calls):
        permit = policy.acquire(dependency)
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    for attempt in range(failed_trials + 1):
        while policy.breakers[dependency].state is BreakerState.OPEN:
            clock.advance(1.0)
            events.extend(policy.tick())
        permit = policy.acquire(dependency)
        assert isinstance(permit, Permit)
        outcome = Outcome.FAILURE if attempt < failed_trials else Outcome.SUCCESS
        events.extend(policy.record(permit, outcome, 0.004))
        # A permit for each further trial of a multi-permit breaker.
        while policy.breakers[dependency].state is BreakerState.HALF_OPEN:
            permit = policy.acquire(dependency)
            assert isinstance(permit, Permit)
            events.extend(policy.record(permit, Outcome.SUCCESS, 0.004))
    while policy.level is not Level.OPTIMAL:
        clock.advance(1.0)
        events.extend(policy.tick())
    clock.advance(5.0)
    events.extend(policy.tick())


def test_without_history_the_eta_is_open_time_plus_dwell_with_no_confidence() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    for _ in range(10):
        permit = policy.acquire("postgres")
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    eta = policy.eta
    assert eta.confidence == "none"
    assert eta.seconds == 30.0 + 10.0  # open time + one dwell (DEGRADED → OPTIMAL)
    clock.advance(12.0)
    policy.tick()
    assert policy.eta.seconds == 18.0 + 10.0


def test_history_raises_confidence_and_the_error_is_reported() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    events: list[object] = []
    for _ in range(3):
        outage(policy, clock, "postgres", failed_trials=1, events=events)
    observed = [event for event in events if isinstance(event, RecoveryObserved)]
    assert len(observed) == 3
    assert [event.confidence for event in observed] == ["none", "low", "low"]
    # Each outage lasted 30 s open + 60 s reopened = 90 s; the first ETA knew nothing of that.
    assert observed[0].predicted_s == 40.0
    assert observed[0].actual_s == 100.0
    assert observed[0].error_s == -60.0
    # With a history of 90 s outages, the later ETAs are exact but for the trial call's time.
    assert observed[1].actual_s == 100.0
    assert observed[1].predicted_s == pytest.approx(100.0, abs=0.01)
    assert policy.estimator.history("postgres") == (90.0, 90.0, 90.0)
    for _ in range(10):
        permit = policy.acquire("postgres")
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    assert policy.eta.confidence == "high"
