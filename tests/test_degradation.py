"""The levels: immediate worsening, hysteresis, dwell, one level at a time upward."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.policy import DegradationController, Level, LevelsConfig

LEVELS = LevelsConfig()


def test_thresholds_map_scores_to_levels() -> None:
    assert [LEVELS.level_for(score) for score in (100, 90, 89.99, 70, 50, 30, 29.99, 0)] == [
        Level.OPTIMAL,
        Level.OPTIMAL,
        Level.DEGRADED,
        Level.DEGRADED,
        Level.LIMITED,
        Level.MINIMAL,
        Level.EMERGENCY,
        Level.EMERGENCY,
    ]


def test_worsening_is_immediate_and_may_skip_levels() -> None:
    controller = DegradationController(LEVELS)
    change = controller.update(20.0, now=5.0)
    assert change is not None
    assert (change.from_level, change.to_level, change.at) == (Level.OPTIMAL, Level.EMERGENCY, 5.0)


def test_improving_waits_the_dwell_above_threshold_plus_hysteresis() -> None:
    controller = DegradationController(LEVELS, level=Level.DEGRADED)
    assert controller.update(91.0, now=0.0) is None  # above 90 but below 90 + 2
    assert controller.update(92.0, now=1.0) is None  # the dwell starts
    assert controller.update(100.0, now=10.9) is None
    change = controller.update(100.0, now=11.0)
    assert change is not None and change.to_level is Level.OPTIMAL


def test_a_dip_restarts_the_dwell() -> None:
    controller = DegradationController(LEVELS, level=Level.DEGRADED)
    controller.update(95.0, now=0.0)
    controller.update(91.0, now=5.0)  # inside OPTIMAL's band but under the hysteresis
    assert controller.update(95.0, now=10.0) is None
    assert controller.update(95.0, now=19.9) is None
    assert controller.update(95.0, now=20.0) is not None


def test_improving_goes_one_level_at_a_time_each_with_its_dwell() -> None:
    controller = DegradationController(LEVELS, level=Level.EMERGENCY)
    moves = []
    for second in range(60):
        change = controller.update(100.0, now=float(second))
        if change is not None:
            moves.append((second, change.to_level))
    assert moves == [
        (10, Level.MINIMAL),
        (20, Level.LIMITED),
        (30, Level.DEGRADED),
        (40, Level.OPTIMAL),
    ]


def test_holding_within_the_same_level_changes_nothing() -> None:
    controller = DegradationController(LEVELS, level=Level.DEGRADED)
    assert all(controller.update(75.0, now=float(t)) is None for t in range(30))
    assert controller.level is Level.DEGRADED


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=200))
def test_the_level_never_rises_faster_than_the_dwell_allows(scores: list[float]) -> None:
    controller = DegradationController(LEVELS, level=Level.EMERGENCY)
    last_rise: float | None = None
    for second, score in enumerate(scores):
        change = controller.update(score, now=float(second))
        if change is None:
            continue
        if change.to_level < change.from_level:
            assert change.from_level - change.to_level == 1
            if last_rise is not None:
                assert second - last_rise >= LEVELS.dwell_s
            last_rise = float(second)
        else:
            assert change.to_level == LEVELS.level_for(score)


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=200))
def test_the_level_is_never_better_than_the_score(scores: list[float]) -> None:
    controller = DegradationController(LEVELS)
    for second, score in enumerate(scores):
        controller.update(score, now=float(second))
        assert controller.level >= LEVELS.level_for(score)
