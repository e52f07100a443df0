"""Properties of the breaker under any sequence of calls, results, ticks and time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy import BreakerState, BreakerTransition, CircuitBreaker, Outcome, Permit
from tests.policy_helpers import breaker_config

operations = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0)),
        st.tuples(st.just("record"), st.sampled_from(list(Outcome))),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("tick"), st.just(0)),
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=40.0)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 3), st.integers(1, 12))
def test_breaker_invariants(ops: list[tuple[str, object]], permits: int, minimum: int) -> None:
    config = breaker_config(
        half_open_permits=permits, minimum_calls=minimum, open_s=30, call_timeout_s=2.0
    )
    breaker = CircuitBreaker("postgres", config)
    now = 0.0
    outstanding: list[Permit] = []
    transitions: list[BreakerTransition] = []
    for op, arg in ops:
        if op == "acquire":
            result = breaker.acquire(now)
            if isinstance(result, Permit):
                outstanding.append(result)
        elif op == "record" and outstanding:
            assert isinstance(arg, Outcome)
            transitions.extend(breaker.record(outstanding.pop(0), arg, 0.01, now))
        elif op == "release" and outstanding:
            transitions.extend(breaker.release(outstanding.pop(), now))
        elif op == "tick":
            transitions.extend(breaker.tick(now))
        elif op == "advance":
            assert isinstance(arg, float)
            now += arg
        transitions.extend(breaker.take_events())
        # Half-open never has more trial calls in flight than its permits.
        snapshot = breaker.snapshot(now)
        assert snapshot.half_open_in_flight <= permits
        assert 0.0 <= snapshot.failure_rate <= 1.0
        assert breaker.open_multiplier <= config.max_open_multiplier
    for transition in transitions:
        assert (transition.from_state, transition.to_state) != (
            BreakerState.CLOSED,
            BreakerState.HALF_OPEN,
        )
        assert transition.from_state is not transition.to_state
    # The epochs of the transitions count up one by one.
    assert [t.epoch for t in transitions] == list(range(1, len(transitions) + 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.lists(st.floats(0.0, 5.0), min_size=1, max_size=60))
def test_half_open_admits_at_most_its_permits_whatever_the_timing(
    permits: int, gaps: list[float]
) -> None:
    breaker = CircuitBreaker(
        "redis", breaker_config(half_open_permits=permits, minimum_calls=1, call_timeout_s=2.0)
    )
    first = breaker.acquire(0.0)
    assert isinstance(first, Permit)
    breaker.record(first, Outcome.FAILURE, 0.01, 0.0)
    now = breaker.open_until
    in_flight: dict[int, float] = {}
    for gap in gaps:
        now += gap
        if breaker.state is not BreakerState.HALF_OPEN and breaker.state is not BreakerState.OPEN:
            break
        result = breaker.acquire(now)
        # Leases whose call timeout passed were given back.
        in_flight = {lease: at for lease, at in in_flight.items() if now - at < 2.0}
        if isinstance(result, Permit) and result.lease:
            in_flight[result.lease] = now
        assert len(in_flight) <= permits


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(1, 3), st.integers(1, 12), st.floats(0.0, 1.0))
def test_record_success_is_record_with_a_success(
    ops: list[tuple[str, object]], permits: int, minimum: int, slow_share: float
) -> None:
    """The cheap success path changes nothing but the cost: same transitions, same window.
    (Its moving average of durations is fed by a sample of the successes, so it may differ,
    but stays within the durations recorded.)"""
    config = breaker_config(half_open_permits=permits, minimum_calls=minimum, open_s=30)
    general = CircuitBreaker("postgres", config)
    fast = CircuitBreaker("postgres", config)
    now = 0.0
    pending: list[tuple[Permit, Permit]] = []
    for step, (op, arg) in enumerate(ops):
        if op == "acquire":
            first, second = general.acquire(now), fast.acquire(now)
            assert type(first) is type(second)
            if isinstance(first, Permit) and isinstance(second, Permit):
                pending.append((first, second))
        elif op == "record" and pending:
            first, second = pending.pop(0)
            # Some calls slow enough to count as slow calls.
            duration = 0.9 if (step * 0.618) % 1.0 < slow_share else 0.01
            if arg is Outcome.SUCCESS:
                assert general.record(first, Outcome.SUCCESS, duration, now) == fast.record_success(
                    second, duration, now
                )
            else:
                assert isinstance(arg, Outcome)
                assert general.record(first, arg, duration, now) == fast.record(
                    second, arg, duration, now
                )
        elif op == "tick":
            assert general.tick(now) == fast.tick(now)
        elif op == "advance":
            assert isinstance(arg, float)
            now += arg
        assert general.take_events() == fast.take_events()
        assert general.snapshot(now) == fast.snapshot(now)
        assert 0.0 <= fast.mean_success_s <= 0.9
