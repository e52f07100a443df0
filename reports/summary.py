"""The metrics of a run folder, as MEASURING.md defines them, for either side.

Per replication (a measured run is one replication):

- phases, by each request's scheduled time: *warmup* (excluded), *baseline* (before the first
  fault), *fault* (while any fault is applied), *recovery* (from a fault's removal until
  recovered) and *after* (the rest);
- per phase and overall: exact percentiles of the latency (numpy, from the raw samples), the
  mean, and the shares of each outcome; the error rate is the share not served (shed,
  rejected, error);
- per fault: detection time (its application to the first OPEN of its target's breaker) and
  recovery time (its removal to the first moment from which, for 10 s, every breaker is
  CLOSED, the level is OPTIMAL and the 5 s-windowed p95 is under the SLO);
- the level each second (from the one-second samples).

Across replications every number becomes a mean with a 95 % Student-t interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from reports.runfolder import OUTCOMES, UNSERVED_OUTCOMES, read_run

PHASES = ("baseline", "fault", "recovery", "after")
PERCENTILES = (50, 95, 99)
LEVELS = ("OPTIMAL", "DEGRADED", "LIMITED", "MINIMAL", "EMERGENCY")

# Recovery needs every condition to hold this long (MEASURING.md).
RECOVERY_HOLD_S = 10.0
# The p95 that recovery watches is over the requests completed in the last 5 s.
RECOVERY_WINDOW_S = 5.0
# Resolution of the search for the moment of recovery, between the policy's own events.
RECOVERY_STEP_S = 0.1
# A breaker that opens this soon after its fault was removed still counts as detecting it.
DETECTION_GRACE_S = 1.0

_WARMUP = -1
_CLOSED_LIKE = frozenset({"CLOSED", "DISABLED", "METRICS_ONLY"})


# --- one replication -----------------------------------------------------------------------


def outcome_codes(column: pd.Series) -> np.ndarray:
    """A requests table's outcome column as indexes into `OUTCOMES` (int8): a million
    requests are a million small integers, not a million strings."""
    categorical = column.astype(pd.CategoricalDtype(list(OUTCOMES)))
    codes = categorical.cat.codes.to_numpy()
    if (codes < 0).any():
        unknown = sorted(set(column[codes < 0].astype(str)))
        raise ValueError(f"unknown outcomes {unknown} (known: {', '.join(OUTCOMES)})")
    return np.asarray(codes, dtype=np.int8)


def latency_stats(latency_ms: np.ndarray, outcomes: np.ndarray) -> dict[str, Any]:
    """Percentiles, mean and outcome shares of one group of requests; `outcomes` are
    indexes into `OUTCOMES`."""
    count = len(latency_ms)
    row: dict[str, Any] = {"requests": count}
    for q in PERCENTILES:
        row[f"p{q}_ms"] = float(np.percentile(latency_ms, q)) if count else None
    row["mean_ms"] = float(np.mean(latency_ms)) if count else None
    counts = np.bincount(outcomes, minlength=len(OUTCOMES))
    for code, outcome in enumerate(OUTCOMES):
        row[f"{outcome}_rate"] = float(counts[code]) / count if count else None
    unserved = sum(int(counts[OUTCOMES.index(name)]) for name in UNSERVED_OUTCOMES)
    row["error_rate"] = float(unserved) / count if count else None
    return row


def _state_timeline(states: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times at which "every breaker CLOSED and the level OPTIMAL" may change, and whether
    it holds from each of them on."""
    events = states[states["kind"].isin(("breaker_transition", "level_change"))].sort_values(
        "t", kind="stable"
    )
    not_closed: set[str] = set()
    level = "OPTIMAL"
    times = [-math.inf]
    healthy = [True]
    for kind, subject, to_state, t in zip(
        events["kind"], events["subject"], events["to_state"], events["t"], strict=True
    ):
        if kind == "breaker_transition":
            if to_state in _CLOSED_LIKE:
                not_closed.discard(subject)
            else:
                not_closed.add(subject)
        else:
            level = to_state
        times.append(float(t))
        healthy.append(not not_closed and level == "OPTIMAL")
    return np.asarray(times), np.asarray(healthy, dtype=bool)


class _RecoveryProbe:
    """Answers "are all three recovery conditions true at t?", computing each once."""

    def __init__(
        self,
        states: pd.DataFrame,
        end_times: np.ndarray,
        latency_by_end: np.ndarray,
        slo_p95_ms: float,
    ) -> None:
        self._state_times, self._state_healthy = _state_timeline(states)
        self._ends = end_times
        self._latency = latency_by_end
        self._slo = slo_p95_ms
        self.event_times = self._state_times[1:]

    def holds(self, t: float) -> bool:
        index = int(np.searchsorted(self._state_times, t, side="right")) - 1
        if not self._state_healthy[index]:
            return False
        low = int(np.searchsorted(self._ends, t - RECOVERY_WINDOW_S, side="right"))
        high = int(np.searchsorted(self._ends, t, side="right"))
        if high <= low:
            return True  # nothing completed in the window: nothing was slow
        return float(np.percentile(self._latency[low:high], 95)) < self._slo


def recovery_time(probe: _RecoveryProbe, removed_at: float, horizon: float) -> float | None:
    """Seconds from `removed_at` to the first moment from which the conditions hold for
    `RECOVERY_HOLD_S`; None if that is not seen before `horizon`."""
    steps = np.arange(removed_at, horizon + 1e-9, RECOVERY_STEP_S)
    events = probe.event_times[(probe.event_times > removed_at) & (probe.event_times <= horizon)]
    grid = np.union1d(steps, events)
    memo: dict[int, bool] = {}

    def ok(index: int) -> bool:
        if index not in memo:
            memo[index] = probe.holds(float(grid[index]))
        return memo[index]

    start = 0
    while start < len(grid):
        last = int(np.searchsorted(grid, grid[start] + RECOVERY_HOLD_S, side="right"))
        if grid[start] + RECOVERY_HOLD_S > horizon:
            return None  # cannot be seen holding long enough before the run ends
        broken = next((j for j in range(start, last) if not ok(j)), None)
        if broken is None:
            return float(grid[start] - removed_at)
        start = broken + 1
    return None


def _phases(
    scheduled: np.ndarray,
    warmup_s: float,
    faults: Sequence[tuple[float, float]],
    recoveries: Sequence[tuple[float, float]],
) -> np.ndarray:
    """Each request's phase, as an index into `PHASES` (`_WARMUP` for the warm-up)."""
    labels = np.full(len(scheduled), PHASES.index("after"), dtype=np.int8)
    first_fault = min((start for start, _ in faults), default=math.inf)
    labels[scheduled < first_fault] = PHASES.index("baseline")
    for start, end in recoveries:
        labels[(scheduled >= start) & (scheduled < end)] = PHASES.index("recovery")
    for start, end in faults:
        labels[(scheduled >= start) & (scheduled < end)] = PHASES.index("fault")
    labels[scheduled < warmup_s] = _WARMUP
    return labels


def abort_time(
    scheduled: np.ndarray, outcomes: np.ndarray, error_rate: float, for_s: float
) -> float | None:
    """When the scenario's abort guard would stop the run: the end of the first `for_s`
    seconds in which every one-second bin's error rate (by scheduled time) was at or above
    `error_rate`; None if it never would."""
    if not len(scheduled):
        return None
    seconds = np.floor(scheduled).astype(np.int64)
    bins = int(seconds.max()) + 1
    unserved = np.isin(outcomes, [OUTCOMES.index(name) for name in UNSERVED_OUTCOMES])
    totals = np.bincount(seconds, minlength=bins)
    failed = np.bincount(seconds, weights=unserved, minlength=bins)
    high = (totals > 0) & (failed >= error_rate * np.maximum(totals, 1))
    needed = max(1, math.ceil(for_s))
    run = 0
    for second, is_high in enumerate(high.tolist()):
        run = run + 1 if is_high else 0
        if run >= needed:
            return float(second + 1)
    return None


def _time_or(value: Any, default: Any) -> float:
    """A recorded time, or the scheduled one where none was recorded."""
    return float(default) if value is None or pd.isna(value) else float(value)


def summarize_replication(
    requests: pd.DataFrame,
    states: pd.DataFrame,
    faults: pd.DataFrame,
    *,
    slo_p95_ms: float,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    abort: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The metrics of one replication's rows of a run folder; `abort` is the scenario's
    guard (error rate, for how many seconds), if it has one."""
    latency = requests["latency_ms"].to_numpy(dtype=np.float64)
    outcomes = outcome_codes(requests["outcome"])
    scheduled = requests["scheduled"].to_numpy(dtype=np.float64)
    ends = requests["end"].to_numpy(dtype=np.float64)
    order = np.argsort(ends, kind="stable")
    horizon = float(ends.max()) if len(ends) else 0.0
    if duration_s is not None:
        horizon = max(horizon, duration_s)
    probe = _RecoveryProbe(states, ends[order], latency[order], slo_p95_ms)
    transitions = states[states["kind"] == "breaker_transition"]
    fault_rows: list[dict[str, Any]] = []
    fault_spans: list[tuple[float, float]] = []
    recovery_spans: list[tuple[float, float]] = []
    fault_records = faults.sort_values("index").to_dict("records")
    for fault in fault_records:
        applied = _time_or(fault["applied_at"], fault["scheduled_at"])
        removed = _time_or(fault["removed_at"], fault["scheduled_end"])
        opened = transitions[
            (transitions["subject"] == fault["target"])
            & (transitions["to_state"] == "OPEN")
            & (transitions["t"] >= applied)
            & (transitions["t"] <= removed + DETECTION_GRACE_S)
        ]["t"]
        detection = float(opened.min() - applied) if len(opened) else None
        recovery = recovery_time(probe, removed, horizon)
        fault_spans.append((applied, removed))
        recovery_spans.append((removed, removed + recovery if recovery is not None else horizon))
        fault_rows.append(
            {
                "index": int(fault["index"]),
                "target": fault["target"],
                "toxic": fault["toxic"],
                "applied_at": applied,
                "removed_at": removed,
                "detection_s": detection,
                "recovery_s": recovery,
            }
        )
    labels = _phases(scheduled, warmup_s, fault_spans, recovery_spans)
    measured = labels != _WARMUP
    phases = {
        phase: latency_stats(latency[labels == code], outcomes[labels == code])
        for code, phase in enumerate(PHASES)
    }
    samples = states[states["kind"] == "sample"].sort_values("t")
    return {
        "overall": latency_stats(latency[measured], outcomes[measured]),
        "phases": phases,
        "faults": fault_rows,
        "levels": {
            "t": samples["t"].round(6).tolist(),
            "level": samples["level"].tolist(),
        },
        "worst_level": max(samples["level"].tolist(), key=LEVELS.index, default="OPTIMAL"),
        "lowest_score": float(samples["score"].min()) if len(samples) else None,
        "abort_at": abort_time(scheduled, outcomes, *abort) if abort else None,
    }


# --- across replications -------------------------------------------------------------------


def interval(values: Iterable[float | None], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t interval of the values that exist; `missing` counts the None."""
    listed = list(values)
    present = np.array([v for v in listed if v is not None], dtype=np.float64)
    n = len(present)
    result: dict[str, Any] = {"mean": None, "low": None, "high": None, "n": n}
    result["missing"] = len(listed) - n
    if n == 0:
        return result
    mean = float(np.mean(present))
    result["mean"] = mean
    if n >= 2:
        half = float(
            stats.t.ppf(0.5 + confidence / 2.0, n - 1) * np.std(present, ddof=1) / math.sqrt(n)
        )
        # Every metric here is a time, a count or a share: none is below 0.
        result["low"], result["high"] = max(0.0, mean - half), mean + half
    return result


def _stats_intervals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = [key for key in rows[0] if key != "requests"] if rows else []
    result: dict[str, Any] = {"requests": interval(row["requests"] for row in rows)}
    for key in keys:
        result[key] = interval(row[key] for row in rows)
    return result


def _level_timeline(per_replication: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per second: the median, best and worst level over the replications, merged into
    segments over which those three stay the same."""
    by_second: dict[int, list[int]] = {}
    for summary in per_replication:
        for t, level in zip(summary["levels"]["t"], summary["levels"]["level"], strict=True):
            by_second.setdefault(round(t), []).append(LEVELS.index(level))
    segments: list[dict[str, Any]] = []
    for second in sorted(by_second):
        levels = sorted(by_second[second])
        entry = (
            LEVELS[levels[(len(levels) - 1) // 2]],
            LEVELS[levels[0]],
            LEVELS[levels[-1]],
        )
        if (
            segments
            and (segments[-1]["median"], segments[-1]["best"], segments[-1]["worst"]) == entry
        ):
            segments[-1]["to"] = float(second)
            continue
        segments.append(
            {
                "from": float(second),
                "to": float(second),
                "median": entry[0],
                "best": entry[1],
                "worst": entry[2],
            }
        )
    return segments


def aggregate(per_replication: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Intervals over replications of every metric of `summarize_replication`."""
    if not per_replication:
        raise ValueError("no replications to aggregate")
    faults: list[dict[str, Any]] = []
    for index, first in enumerate(per_replication[0]["faults"]):
        rows = [summary["faults"][index] for summary in per_replication]
        faults.append(
            {
                "index": first["index"],
                "target": first["target"],
                "toxic": first["toxic"],
                "applied_at": interval(row["applied_at"] for row in rows),
                "removed_at": interval(row["removed_at"] for row in rows),
                "detection_s": interval(row["detection_s"] for row in rows),
                "recovery_s": interval(row["recovery_s"] for row in rows),
            }
        )
    return {
        "overall": _stats_intervals([s["overall"] for s in per_replication]),
        "phases": {
            phase: _stats_intervals([s["phases"][phase] for s in per_replication])
            for phase in PHASES
        },
        "faults": faults,
        "lowest_score": interval(s["lowest_score"] for s in per_replication),
        "worst_levels": [s["worst_level"] for s in per_replication],
        # How many replications the abort guard would have stopped, and when.
        "aborted": sum(1 for s in per_replication if s.get("abort_at") is not None),
        "abort_at": interval(s.get("abort_at") for s in per_replication),
        "level_timeline": _level_timeline(per_replication),
    }


def summarize_tables(
    requests: pd.DataFrame,
    states: pd.DataFrame,
    faults: pd.DataFrame,
    *,
    slo_p95_ms: float,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    abort: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(aggregated metrics, per-replication metrics) of a whole run folder's tables."""
    per_replication = []
    for replication in sorted(requests["replication"].unique().tolist()):
        per_replication.append(
            summarize_replication(
                requests[requests["replication"] == replication],
                states[states["replication"] == replication],
                faults[faults["replication"] == replication],
                slo_p95_ms=slo_p95_ms,
                warmup_s=warmup_s,
                duration_s=duration_s,
                abort=abort,
            )
        )
    return aggregate(per_replication), per_replication


def summarize_run(
    run_dir: str | Path,
    *,
    slo_p95_ms: float,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    abort: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`summarize_tables` of a run folder on disk (either side's)."""
    run = read_run(run_dir)
    return summarize_tables(
        run.requests,
        run.states,
        run.faults,
        slo_p95_ms=slo_p95_ms,
        warmup_s=warmup_s,
        duration_s=duration_s,
        abort=abort,
    )
