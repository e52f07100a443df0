"""The weighted health score."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.policy import (
    DEPENDENCIES,
    BreakerSnapshot,
    BreakerState,
    dependency_health,
    health_score,
)
from tests.policy_helpers import DEFAULT

STATES = list(BreakerState)
BAD_ORDER = {  # a larger number is a worse breaker
    BreakerState.CLOSED: 0,
    BreakerState.DISABLED: 0,
    BreakerState.METRICS_ONLY: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
    BreakerState.FORCED_OPEN: 2,
}


def snapshot(
    name: str, state: BreakerState, failure: float = 0.0, slow: float = 0.0, calls: int = 100
) -> BreakerSnapshot:
    return BreakerSnapshot(name, state, failure, slow, calls, 0, 0.0, 1.0, 0)


def test_states_give_one_half_and_zero() -> None:
    config = DEFAULT.breakers["postgres"]
    assert dependency_health(snapshot("postgres", BreakerState.CLOSED), config) == 1.0
    assert dependency_health(snapshot("postgres", BreakerState.HALF_OPEN), config) == 0.5
    assert dependency_health(snapshot("postgres", BreakerState.OPEN), config) == 0.0
    assert dependency_health(snapshot("postgres", BreakerState.FORCED_OPEN), config) == 0.0


def test_a_closed_breaker_loses_half_at_its_threshold() -> None:
    config = DEFAULT.breakers["postgres"]  # trips at 30 % failures
    assert (
        dependency_health(snapshot("postgres", BreakerState.CLOSED, failure=0.15), config) == 0.75
    )
    assert dependency_health(snapshot("postgres", BreakerState.CLOSED, failure=0.6), config) == 0.5
    # Too few calls in the window: no judgement yet.
    few = snapshot("postgres", BreakerState.CLOSED, failure=1.0, calls=3)
    assert dependency_health(few, config) == 1.0


def test_scores_are_rounded_to_two_decimals() -> None:
    snapshots = [snapshot(name, BreakerState.CLOSED) for name in DEPENDENCIES]
    snapshots[0] = snapshot("openai", BreakerState.OPEN)
    assert health_score(snapshots, DEFAULT.breakers) == 50.0


health_inputs = st.tuples(
    st.sampled_from(STATES), st.floats(0, 1), st.floats(0, 1), st.integers(0, 200)
)


@given(st.lists(health_inputs, min_size=4, max_size=4), st.integers(0, 3), st.sampled_from(STATES))
def test_score_within_bounds_and_never_higher_when_a_breaker_is_worse(
    inputs: list[tuple[BreakerState, float, float, int]], which: int, worse_state: BreakerState
) -> None:
    snapshots = [snapshot(name, *values) for name, values in zip(DEPENDENCIES, inputs, strict=True)]
    score = health_score(snapshots, DEFAULT.breakers)
    assert 0.0 <= score <= 100.0
    before = snapshots[which]
    if BAD_ORDER[worse_state] >= BAD_ORDER[before.state]:
        # The same breaker in a worse (or equally bad) state, with rates no better.
        worse = before._replace(state=worse_state)
        if BAD_ORDER[worse_state] == 0 and BAD_ORDER[before.state] == 0:
            worse = worse._replace(failure_rate=min(1.0, before.failure_rate + 0.1))
        degraded = list(snapshots)
        degraded[which] = worse
        assert health_score(degraded, DEFAULT.breakers) <= score
