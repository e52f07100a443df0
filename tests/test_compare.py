"""Predicted against measured: the tolerance, the interval rule and the SLO verdict."""

from __future__ import annotations

from typing import Any

from reports.compare import compare_summaries, format_comparison
from reports.summary import PHASES, interval
from scenarios import load_scenario_text

SCENARIO = load_scenario_text(
    """
name: compare-check
load: {model: open, rate: 100, duration: 120s}
faults:
  - {at: 30s, duration: 40s, target: postgres, toxic: down}
slo: {p95_ms: 250, error_rate: 0.01, recovery_s: 60}
tolerance: {p95: 0.10, recovery_s: 5}
"""
)


def stats(p95_values: list[float], error_rates: list[float]) -> dict[str, Any]:
    return {
        "requests": interval([1000.0] * len(p95_values)),
        "p50_ms": interval([value / 3 for value in p95_values]),
        "p95_ms": interval(p95_values),
        "p99_ms": interval([value * 2 for value in p95_values]),
        "error_rate": interval(error_rates),
        "fallback_rate": interval([0.0] * len(p95_values)),
        "stale_rate": interval([0.0] * len(p95_values)),
    }


def summary(
    p95_values: list[float], error_rates: list[float], recoveries: list[float]
) -> dict[str, Any]:
    phase_stats = stats(p95_values, error_rates)
    return {
        "metrics": {
            "overall": phase_stats,
            "phases": {phase: phase_stats for phase in PHASES},
            "faults": [
                {
                    "index": 0,
                    "target": "postgres",
                    "toxic": "down",
                    "detection_s": interval([0.5] * len(recoveries)),
                    "recovery_s": interval(recoveries),
                }
            ],
        }
    }


def test_within_tolerance_holds() -> None:
    predicted = summary([100.0, 104.0, 96.0], [0.0, 0.0, 0.0], [40.0, 41.0, 42.0])
    measured = summary([108.0], [0.0], [43.0])
    comparison = compare_summaries(predicted, measured, SCENARIO)
    p95 = next(v for v in comparison.values if v.scope == "overall" and v.metric == "p95 ms")
    assert p95.predicted == 100.0
    assert p95.measured == 108.0
    assert abs(p95.error - (100 - 108) / 108) < 1e-12  # type: ignore[operator]
    assert p95.holds is True
    assert comparison.holds
    assert "verdict: holds" in format_comparison(comparison)


def test_outside_tolerance_and_interval_is_breached() -> None:
    predicted = summary([100.0, 101.0, 99.0], [0.0, 0.0, 0.0], [40.0, 40.5, 39.5])
    measured = summary([150.0], [0.0], [52.0])
    comparison = compare_summaries(predicted, measured, SCENARIO)
    breached = {f"{v.scope}: {v.metric}" for v in comparison.tolerance_breached}
    assert "overall: p95 ms" in breached
    assert "fault 0 (postgres down): recovery s" in breached
    assert not comparison.holds
    assert comparison.to_dict()["holds"] is False


def test_inside_the_predicted_interval_holds_even_beyond_tolerance() -> None:
    predicted = summary([80.0, 120.0, 100.0, 140.0, 60.0], [0.0] * 5, [40.0] * 5)
    measured = summary([125.0], [0.0], [40.0])
    comparison = compare_summaries(predicted, measured, SCENARIO)
    p95 = next(v for v in comparison.values if v.scope == "overall" and v.metric == "p95 ms")
    assert abs(p95.error) > 0.10  # type: ignore[arg-type]
    assert p95.low is not None and p95.high is not None and p95.low <= 125.0 <= p95.high
    assert p95.holds is True


def test_the_slo_is_judged_on_the_measured_run() -> None:
    predicted = summary([100.0, 100.0], [0.0, 0.0], [70.0, 70.0])
    measured = summary([300.0], [0.02], [70.0])
    comparison = compare_summaries(predicted, measured, SCENARIO)
    breached = {f"{c.scope}: {c.metric}" for c in comparison.slo_breached}
    assert breached == {
        "baseline: p95 ms",
        "baseline: error rate",
        "after: p95 ms",
        "after: error rate",
        "fault 0 (postgres down): recovery s",
    }
