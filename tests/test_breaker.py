"""Every transition of the circuit breaker, by example, on a manual clock."""

from __future__ import annotations

import pytest

from engine.policy import BreakerState, CircuitBreaker, Outcome, Permit, Rejected
from tests.policy_helpers import breaker_config

FAST = 0.01


def fail_calls(breaker: CircuitBreaker, count: int, now: float) -> list[object]:
    events: list[object] = []
    for _ in range(count):
        permit = breaker.acquire(now)
        assert isinstance(permit, Permit)
        events.extend(breaker.record(permit, Outcome.FAILURE, FAST, now))
    return events


def succeed_calls(breaker: CircuitBreaker, count: int, now: float, duration: float = FAST) -> None:
    for _ in range(count):
        permit = breaker.acquire(now)
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.SUCCESS, duration, now)


def open_breaker(breaker: CircuitBreaker, now: float) -> None:
    fail_calls(breaker, breaker.config.minimum_calls, now)
    assert breaker.state is BreakerState.OPEN


def test_closed_admits_and_counts() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    succeed_calls(breaker, 5, now=1.0)
    snapshot = breaker.snapshot(1.0)
    assert snapshot.state is BreakerState.CLOSED
    assert snapshot.calls == 5
    assert snapshot.failure_rate == 0.0


def test_failure_rate_trips_only_with_minimum_calls() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(minimum_calls=10))
    fail_calls(breaker, 9, now=0.5)
    assert breaker.state is BreakerState.CLOSED  # 100 % failures, but only 9 calls
    events = fail_calls(breaker, 1, now=0.5)
    assert breaker.state is BreakerState.OPEN
    assert len(events) == 1
    transition = events[0]
    assert transition.from_state is BreakerState.CLOSED  # type: ignore[attr-defined]
    assert transition.to_state is BreakerState.OPEN  # type: ignore[attr-defined]


def test_trips_exactly_at_the_threshold_rate() -> None:
    # 30 % threshold: 7 successes then 3 failures is 3/10 = exactly the threshold.
    breaker = CircuitBreaker("postgres", breaker_config())
    succeed_calls(breaker, 7, now=0.0)
    fail_calls(breaker, 2, now=0.0)
    assert breaker.state is BreakerState.CLOSED
    fail_calls(breaker, 1, now=0.0)
    assert breaker.state is BreakerState.OPEN


def test_a_steady_fifty_percent_error_rate_trips() -> None:
    # Counting consecutive failures never trips at alternating outcomes; a rate does.
    breaker = CircuitBreaker("openai", breaker_config(failure_rate_threshold=0.5))
    for index in range(10):
        assert breaker.state is BreakerState.CLOSED
        permit = breaker.acquire(0.1 * index)
        assert isinstance(permit, Permit)
        outcome = Outcome.FAILURE if index % 2 else Outcome.SUCCESS
        breaker.record(permit, outcome, FAST, 0.1 * index)
    assert breaker.state is BreakerState.OPEN  # at the 10th call: 5 of 10 failed


def test_slow_call_rate_trips() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(slow_call_s=0.5))
    succeed_calls(breaker, 8, now=0.0, duration=0.6)
    assert breaker.state is BreakerState.CLOSED
    succeed_calls(breaker, 2, now=0.0, duration=0.01)
    # 8 slow of 10 = 80 %: the slow-call threshold.
    assert breaker.state is BreakerState.OPEN


def test_ignored_outcomes_are_not_counted() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    for _ in range(30):
        permit = breaker.acquire(0.0)
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.IGNORED, FAST, 0.0)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot(0.0).calls == 0


def test_window_forgets_calls_older_than_its_length() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(window_s=10))
    fail_calls(breaker, 9, now=0.0)
    assert breaker.snapshot(9.9).calls == 9
    assert breaker.snapshot(10.0).calls == 0  # the 1 s bucket of t=0 left the 10 s window
    fail_calls(breaker, 1, now=10.0)
    assert breaker.state is BreakerState.CLOSED


def test_open_rejects_until_the_open_time_then_half_open() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(open_s=30))
    open_breaker(breaker, now=0.0)
    rejected = breaker.acquire(29.9)
    assert isinstance(rejected, Rejected)
    assert rejected.state is BreakerState.OPEN
    assert rejected.retry_after_s == pytest.approx(0.1)
    permit = breaker.acquire(30.0)
    assert isinstance(permit, Permit)
    assert breaker.state is BreakerState.HALF_OPEN
    (event,) = breaker.take_events()
    assert (event.from_state, event.to_state) == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_tick_moves_open_to_half_open() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(open_s=30))
    open_breaker(breaker, now=0.0)
    assert breaker.tick(29.0) == ()
    (event,) = breaker.tick(30.0)
    assert event.to_state is BreakerState.HALF_OPEN


def test_half_open_admits_exactly_its_permits() -> None:
    breaker = CircuitBreaker("redis", breaker_config(half_open_permits=2))
    open_breaker(breaker, now=0.0)
    first = breaker.acquire(30.0)
    second = breaker.acquire(30.0)
    third = breaker.acquire(30.0)
    assert isinstance(first, Permit) and isinstance(second, Permit)
    assert isinstance(third, Rejected)
    assert third.state is BreakerState.HALF_OPEN


def test_all_trials_succeed_closes_with_an_empty_window() -> None:
    breaker = CircuitBreaker("redis", breaker_config(half_open_permits=2))
    open_breaker(breaker, now=0.0)
    permits = [breaker.acquire(30.0), breaker.acquire(30.0)]
    breaker.take_events()
    assert isinstance(permits[0], Permit) and isinstance(permits[1], Permit)
    assert breaker.record(permits[0], Outcome.SUCCESS, FAST, 30.1) == ()
    (event,) = breaker.record(permits[1], Outcome.SUCCESS, FAST, 30.1)
    assert (event.from_state, event.to_state) == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
    assert breaker.snapshot(30.1).calls == 0


def test_a_failed_trial_reopens_with_doubled_open_time_up_to_four_times() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(open_s=30, max_open_multiplier=4))
    open_breaker(breaker, now=0.0)
    assert breaker.open_until == 30.0
    now = 30.0
    expected_open_times = [60.0, 120.0, 120.0]
    for expected in expected_open_times:
        permit = breaker.acquire(now)
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.FAILURE, FAST, now)
        assert breaker.state is BreakerState.OPEN
        assert breaker.open_until - now == expected
        now = breaker.open_until
    permit = breaker.acquire(now)
    assert isinstance(permit, Permit)
    breaker.record(permit, Outcome.SUCCESS, FAST, now)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.open_multiplier == 1.0  # closing resets the backoff


def test_a_slow_trial_reopens() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(slow_call_s=0.5))
    open_breaker(breaker, now=0.0)
    permit = breaker.acquire(30.0)
    assert isinstance(permit, Permit)
    breaker.record(permit, Outcome.SUCCESS, 0.9, 31.0)
    assert breaker.state is BreakerState.OPEN


def test_a_lease_not_finished_after_the_call_timeout_is_given_back() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(half_open_permits=1, call_timeout_s=2.0))
    open_breaker(breaker, now=0.0)
    stuck = breaker.acquire(30.0)
    assert isinstance(stuck, Permit)
    breaker.take_events()
    assert isinstance(breaker.acquire(31.0), Rejected)
    fresh = breaker.acquire(32.0)  # the stuck lease expired at 32.0
    assert isinstance(fresh, Permit)
    # The stuck call's late result changes nothing: its lease was given back.
    assert breaker.record(stuck, Outcome.FAILURE, 5.0, 35.0) == ()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(fresh, Outcome.SUCCESS, FAST, 32.1)
    assert breaker.state is BreakerState.CLOSED


def test_a_late_result_of_an_older_epoch_changes_nothing() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    old = breaker.acquire(0.0)
    assert isinstance(old, Permit)
    open_breaker(breaker, now=0.0)
    trial = breaker.acquire(30.0)
    assert isinstance(trial, Permit)
    breaker.take_events()
    # A call admitted while CLOSED fails long after: HALF_OPEN must not reopen on it.
    assert breaker.record(old, Outcome.FAILURE, 1.9, 30.5) == ()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(trial, Outcome.SUCCESS, FAST, 30.6)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.record(old, Outcome.FAILURE, 1.9, 30.7) == ()
    assert breaker.snapshot(30.7).calls == 0


def test_release_gives_a_cancelled_trial_its_permit_back() -> None:
    breaker = CircuitBreaker("postgres", breaker_config(half_open_permits=1))
    open_breaker(breaker, now=0.0)
    cancelled = breaker.acquire(30.0)
    assert isinstance(cancelled, Permit)
    assert isinstance(breaker.acquire(30.0), Rejected)
    breaker.release(cancelled, 30.1)
    assert isinstance(breaker.acquire(30.1), Permit)


def test_forced_open_rejects_everything_and_clearing_closes() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    (event,) = breaker.force(BreakerState.FORCED_OPEN, 1.0)
    assert event.to_state is BreakerState.FORCED_OPEN
    rejected = breaker.acquire(1000.0)
    assert isinstance(rejected, Rejected)
    assert rejected.state is BreakerState.FORCED_OPEN
    assert breaker.tick(1000.0) == ()
    (event,) = breaker.force(None, 1000.0)
    assert event.to_state is BreakerState.CLOSED


def test_disabled_admits_everything_and_records_nothing() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    breaker.force(BreakerState.DISABLED, 0.0)
    fail_calls(breaker, 50, now=0.0)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.snapshot(0.0).calls == 0


def test_metrics_only_records_but_never_trips() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    breaker.force(BreakerState.METRICS_ONLY, 0.0)
    fail_calls(breaker, 50, now=0.0)
    snapshot = breaker.snapshot(0.0)
    assert snapshot.state is BreakerState.METRICS_ONLY
    assert snapshot.calls == 50
    assert snapshot.failure_rate == 1.0


def test_forcing_a_normal_state_is_refused() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    with pytest.raises(ValueError, match="an operator can force"):
        breaker.force(BreakerState.HALF_OPEN, 0.0)


def test_every_transition_bumps_the_epoch() -> None:
    breaker = CircuitBreaker("postgres", breaker_config())
    open_breaker(breaker, now=0.0)
    permit = breaker.acquire(30.0)
    assert isinstance(permit, Permit)
    breaker.record(permit, Outcome.SUCCESS, FAST, 30.0)
    assert breaker.epoch == 3  # CLOSED → OPEN → HALF_OPEN → CLOSED
