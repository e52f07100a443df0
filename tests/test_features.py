"""The feature matrix and the flags: which feature is served, by fallback, or off."""

from __future__ import annotations

import pytest

from engine.policy import FEATURE_NAMES, FeatureFlags, FeatureMatrix, Level, ServeMode
from tests.policy_helpers import DEFAULT

MATRIX = FeatureMatrix(DEFAULT.features)


def served(level: Level, unavailable: frozenset[str] = frozenset()) -> set[str]:
    decisions = MATRIX.decide_all(level, unavailable)
    return {name for name, decision in decisions.items() if decision.mode is ServeMode.PRIMARY}


def test_the_policy_lists_the_sixteen_features_in_order() -> None:
    assert tuple(DEFAULT.features) == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 16


@pytest.mark.parametrize(
    ("level", "count"),
    [
        (Level.OPTIMAL, 16),
        (Level.DEGRADED, 13),
        (Level.LIMITED, 10),
        (Level.MINIMAL, 7),
        (Level.EMERGENCY, 4),
    ],
)
def test_features_on_per_level(level: Level, count: int) -> None:
    assert len(served(level)) == count


def test_an_open_dependency_turns_off_what_needs_it() -> None:
    decisions = MATRIX.decide_all(Level.OPTIMAL, frozenset({"postgres"}))
    assert decisions["order_processing"].mode is ServeMode.OFF
    assert decisions["order_processing"].reason == "postgres breaker is open"
    assert decisions["inventory_read"].mode is ServeMode.FALLBACK  # stale cache entry
    assert decisions["dashboard_summary"].mode is ServeMode.FALLBACK
    assert decisions["ai_pricing_suggestion"].mode is ServeMode.OFF  # its rule needs the cost
    assert decisions["health_status"].mode is ServeMode.PRIMARY


def test_inventory_read_falls_back_on_either_store_but_not_both() -> None:
    for unavailable in ({"redis"}, {"postgres"}):
        decision = MATRIX.decide("inventory_read", Level.OPTIMAL, frozenset(unavailable))
        assert decision.mode is ServeMode.FALLBACK
    both = MATRIX.decide("inventory_read", Level.OPTIMAL, frozenset({"redis", "postgres"}))
    assert both.mode is ServeMode.OFF


def test_a_level_too_bad_serves_the_fallback() -> None:
    decision = MATRIX.decide("ai_pricing_suggestion", Level.LIMITED, frozenset())
    assert decision.mode is ServeMode.FALLBACK
    assert "LIMITED is worse than DEGRADED" in decision.reason
    assert "cost x 1.3" in decision.reason


def test_s3_down_streams_reports_without_archiving() -> None:
    decisions = MATRIX.decide_all(Level.OPTIMAL, frozenset({"s3"}))
    assert decisions["report_export"].mode is ServeMode.FALLBACK
    assert decisions["invoice_upload"].mode is ServeMode.OFF


def test_forced_off_serves_the_fallback_or_nothing() -> None:
    off = MATRIX.decide("ai_recommendations", Level.OPTIMAL, frozenset(), forced=False)
    assert off.mode is ServeMode.FALLBACK
    assert (
        MATRIX.decide("batch_import", Level.OPTIMAL, frozenset(), forced=False).mode
        is ServeMode.OFF
    )


def test_forced_on_ignores_the_level_but_not_an_open_dependency() -> None:
    on = MATRIX.decide("batch_import", Level.EMERGENCY, frozenset(), forced=True)
    assert on.mode is ServeMode.PRIMARY
    blocked = MATRIX.decide("batch_import", Level.OPTIMAL, frozenset({"s3"}), forced=True)
    assert blocked.mode is ServeMode.OFF


def test_flags_report_whether_anything_changed() -> None:
    flags = FeatureFlags(FEATURE_NAMES)
    assert flags.set("batch_import", False)
    assert not flags.set("batch_import", False)
    assert flags.get("batch_import") is False
    assert flags.set("batch_import", None)
    assert not flags.set("batch_import", None)
    assert flags.as_dict() == {}
    with pytest.raises(KeyError):
        flags.set("teleportation", True)
