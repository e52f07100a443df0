"""Predicted against measured: per phase and per fault, with the scenario's tolerance.

A prediction *holds* (MEASURING.md) when |predicted − measured| / measured is within the
scenario's tolerance, or when the measured value lies inside the predicted 95 % interval.
Latency percentiles are judged relatively; error and fallback rates and the detection and
recovery times absolutely (`scenarios.schema.Tolerance` says which is which). A fallback rate
is judged with the error rate's tolerance: both are shares of requests.

The SLO is judged on the measured run alone: the p95 and the error rate of the phases in
which the service is meant to be healthy (baseline and after), and each fault's recovery
time. During a fault the SLO is not expected to hold; that is what recovery measures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reports.summary import PHASES

COMPARE_FILE = "compare.json"

# (metric name in the summary, name the tolerance knows, label)
_PHASE_METRICS = (
    ("p50_ms", "p50", "p50 ms"),
    ("p95_ms", "p95", "p95 ms"),
    ("p99_ms", "p99", "p99 ms"),
    ("error_rate", "error_rate", "error rate"),
    ("fallback_rate", "error_rate", "fallback rate"),
)
_FAULT_METRICS = (
    ("detection_s", "detection_s", "detection s"),
    ("recovery_s", "recovery_s", "recovery s"),
)
_HEALTHY_PHASES = ("baseline", "after")


@dataclass(frozen=True, slots=True)
class ComparedValue:
    scope: str  # "overall", a phase, or "fault 0 (postgres down)"
    metric: str
    predicted: float | None
    low: float | None
    high: float | None
    measured: float | None
    error: float | None  # relative for latencies, absolute otherwise
    holds: bool | None  # None: not judged (no tolerance for it, or a side has no value)


@dataclass(frozen=True, slots=True)
class SloCheck:
    scope: str
    metric: str
    limit: float
    measured: float | None
    holds: bool | None


@dataclass(frozen=True, slots=True)
class Comparison:
    scenario: str
    predicted_run: str
    measured_run: str
    values: tuple[ComparedValue, ...]
    slo: tuple[SloCheck, ...]

    @property
    def tolerance_breached(self) -> list[ComparedValue]:
        return [value for value in self.values if value.holds is False]

    @property
    def slo_breached(self) -> list[SloCheck]:
        return [check for check in self.slo if check.holds is False]

    @property
    def holds(self) -> bool:
        return not self.tolerance_breached and not self.slo_breached

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "predicted_run": self.predicted_run,
            "measured_run": self.measured_run,
            "holds": self.holds,
            "values": [asdict(value) for value in self.values],
            "slo": [asdict(check) for check in self.slo],
            "tolerance_breached": [f"{v.scope}: {v.metric}" for v in self.tolerance_breached],
            "slo_breached": [f"{c.scope}: {c.metric}" for c in self.slo_breached],
        }


def _interval(entry: Mapping[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    if not entry:
        return None, None, None
    return entry.get("mean"), entry.get("low"), entry.get("high")


def _fallback(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Fallback and stale answers together: both are served by something other than the
    primary path."""
    fallback, stale = stats.get("fallback_rate") or {}, stats.get("stale_rate") or {}
    if fallback.get("mean") is None:
        return {}
    total: dict[str, Any] = {"mean": fallback["mean"] + (stale.get("mean") or 0.0)}
    if fallback.get("low") is not None:
        total["low"] = fallback["low"] + (stale.get("low") or 0.0)
        total["high"] = fallback["high"] + (stale.get("high") or 0.0)
    return total


def _judge(
    tolerance: Any,
    metric: str,
    predicted: float | None,
    low: float | None,
    high: float | None,
    measured: float | None,
) -> tuple[float | None, bool | None]:
    if predicted is None or measured is None:
        return None, None
    relative = metric in ("p50", "p95", "p99")
    if relative:
        error = (predicted - measured) / measured if measured else None
    else:
        error = predicted - measured
    interval = (low, high) if low is not None and high is not None else None
    holds = tolerance.prediction_holds(metric, predicted, measured, interval)
    return error, holds


def _compare_stats(
    scope: str, predicted: Mapping[str, Any], measured: Mapping[str, Any], tolerance: Any
) -> list[ComparedValue]:
    values = []
    for key, tolerance_name, label in _PHASE_METRICS:
        predicted_entry: Mapping[str, Any] | None
        measured_entry: Mapping[str, Any] | None
        if key == "fallback_rate":
            predicted_entry, measured_entry = _fallback(predicted), _fallback(measured)
        else:
            predicted_entry, measured_entry = predicted.get(key), measured.get(key)
        mean, low, high = _interval(predicted_entry)
        measured_mean = _interval(measured_entry)[0]
        error, holds = _judge(tolerance, tolerance_name, mean, low, high, measured_mean)
        values.append(ComparedValue(scope, label, mean, low, high, measured_mean, error, holds))
    return values


def compare_summaries(
    predicted: Mapping[str, Any],
    measured: Mapping[str, Any],
    scenario: Any,
    *,
    predicted_run: str = "",
    measured_run: str = "",
) -> Comparison:
    """Compare two run summaries (the `summary.json` of each side) of the same scenario."""
    tolerance = scenario.tolerance
    predicted_metrics, measured_metrics = predicted["metrics"], measured["metrics"]
    values = _compare_stats(
        "overall", predicted_metrics["overall"], measured_metrics["overall"], tolerance
    )
    for phase in PHASES:
        predicted_phase = predicted_metrics["phases"][phase]
        measured_phase = measured_metrics["phases"][phase]
        if not (measured_phase.get("requests") or {}).get("mean"):
            continue  # the measured run had no such phase
        values.extend(_compare_stats(phase, predicted_phase, measured_phase, tolerance))
    measured_faults = {fault["index"]: fault for fault in measured_metrics["faults"]}
    slo = scenario.slo
    checks: list[SloCheck] = []
    for fault in predicted_metrics["faults"]:
        scope = f"fault {fault['index']} ({fault['target']} {fault['toxic']})"
        other = measured_faults.get(fault["index"], {})
        for key, tolerance_name, label in _FAULT_METRICS:
            mean, low, high = _interval(fault.get(key))
            measured_mean = _interval(other.get(key))[0]
            error, holds = _judge(tolerance, tolerance_name, mean, low, high, measured_mean)
            values.append(ComparedValue(scope, label, mean, low, high, measured_mean, error, holds))
        recovered = _interval(other.get("recovery_s"))[0]
        checks.append(
            SloCheck(
                scope,
                "recovery s",
                float(slo.recovery_s),
                recovered,
                None if not other else (recovered is not None and recovered <= slo.recovery_s),
            )
        )
    for phase in _HEALTHY_PHASES:
        stats = measured_metrics["phases"][phase]
        if not (stats.get("requests") or {}).get("mean"):
            continue
        p95 = _interval(stats.get("p95_ms"))[0]
        error_rate = _interval(stats.get("error_rate"))[0]
        checks.append(
            SloCheck(
                phase, "p95 ms", float(slo.p95_ms), p95, None if p95 is None else p95 <= slo.p95_ms
            )
        )
        checks.append(
            SloCheck(
                phase,
                "error rate",
                float(slo.error_rate),
                error_rate,
                None if error_rate is None else error_rate <= slo.error_rate,
            )
        )
    return Comparison(
        scenario=scenario.name,
        predicted_run=predicted_run,
        measured_run=measured_run,
        values=tuple(values),
        slo=tuple(checks),
    )


def compare_run_dirs(predicted_dir: Path, measured_dir: Path, scenario: Any) -> Comparison:
    predicted = json.loads((predicted_dir / "summary.json").read_text(encoding="utf-8"))
    measured = json.loads((measured_dir / "summary.json").read_text(encoding="utf-8"))
    return compare_summaries(
        predicted,
        measured,
        scenario,
        predicted_run=str(predicted_dir),
        measured_run=str(measured_dir),
    )


def write_comparison(comparison: Comparison, path: Path) -> Path:
    path.write_text(json.dumps(comparison.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if "rate" in metric:
        return f"{100 * value:.2f}%"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def format_comparison(comparison: Comparison) -> str:
    """The predicted-against-measured table, then the SLO checks, for a terminal."""
    header = (
        f"{'scope':<28} {'metric':<14} {'predicted [95% interval]':>30} "
        f"{'measured':>10} {'error':>9}  holds"
    )
    lines = [f"predicted vs measured: {comparison.scenario}", header, "-" * len(header)]
    for value in comparison.values:
        interval = ""
        if value.low is not None and value.high is not None:
            interval = f" [{_number(value.low, value.metric)}, {_number(value.high, value.metric)}]"
        predicted = _number(value.predicted, value.metric) + interval
        if value.error is None:
            error = "-"
        elif value.metric.endswith("ms"):
            error = f"{100 * value.error:+.1f}%"
        elif "rate" in value.metric:
            error = f"{100 * value.error:+.2f}pt"
        else:
            error = f"{value.error:+.1f}s"
        holds = {True: "yes", False: "NO", None: "-"}[value.holds]
        lines.append(
            f"{value.scope:<28} {value.metric:<14} {predicted:>30} "
            f"{_number(value.measured, value.metric):>10} {error:>9}  {holds}"
        )
    if comparison.slo:
        lines.append("")
        lines.append(f"{'SLO (measured)':<28} {'metric':<14} {'limit':>10} {'measured':>10}  holds")
        for check in comparison.slo:
            holds = {True: "yes", False: "NO", None: "-"}[check.holds]
            lines.append(
                f"{check.scope:<28} {check.metric:<14} {_number(check.limit, check.metric):>10} "
                f"{_number(check.measured, check.metric):>10}  {holds}"
            )
    lines.append("")
    lines.append("verdict: " + ("holds" if comparison.holds else "BREACHED"))
    return "\n".join(lines)
