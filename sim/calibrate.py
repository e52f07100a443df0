"""Fit the model's parameters to a measured run folder (`reslab calibrate RUN_DIR`).

From the baseline phase's successful requests (after the warmup, before any fault), using
each request's `Server-Timing` (milliseconds spent per dependency):

- per dependency, the service time of one call, from the features whose healthy primary
  branch calls that dependency exactly once; fitted as a lognormal (maximum likelihood; when
  the header's 0.1 ms rounding is coarse for the values, the likelihood of the rounding
  intervals) and as an empirical distribution, each on one half of the samples and judged
  by the Kolmogorov–Smirnov distance to the other half. The lognormal is kept unless the
  empirical is closer by more than sampling noise explains;
- per feature and dependency, the scale of its calls against that base (ratio of medians),
  and, with enough samples, the distribution of the feature's own calls, which the model
  uses instead: a measured service time's tail is mostly waiting (for a pooled connection,
  for the event loop, for a CPU the machine shares), which a scale would stretch with the
  query's cost;
- the cache hit ratios (an inventory read that touched PostgreSQL was a miss);
- the engine's own overhead: latency minus the time spent in dependencies, less the time
  the request waited for the engine's worker (`sim.server.service_demands`: the model
  queues the overheads for the worker, so a measured overhead taken as it is would be
  queued twice), pooled and, with enough samples, per feature;

and, when the run had a PostgreSQL fault, from the reads during it:

- the inventory cache's stale ratio: among the inventory reads that needed a stale copy
  (served `stale`, or a 503 because there was none), the share that found one. Without
  such a fault (or with too few of those reads) the calibration leaves it out, and the
  model derives it from the hit ratio (`sim.parameters`).

Writes ``calibration.json`` (the shape of `sim/defaults.json`, with a ``fit`` report) into
the run folder and returns its path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from engine.policy import DEPENDENCIES
from reports.runfolder import parse_server_timing, read_run
from sim.flows import calls_by_dependency
from sim.parameters import load_parameters
from sim.server import service_demands

CALIBRATION_FILE = "calibration.json"

# Server-Timing carries one decimal of a millisecond.
TIMING_RESOLUTION_MS = 0.1
# Quantiles kept for an empirical distribution.
EMPIRICAL_POINTS = 201
# Below this many samples a dependency keeps its default.
MIN_SAMPLES = 30
# From this many samples a feature gets its own overhead and service-time distributions
# (below MIN_SAMPLES, its samples' empirical distribution: too few to judge a lognormal).
FEATURE_MIN_SAMPLES = 15
# A feature's own lognormal whose held-out KS p-value is below this gives way to the
# empirical: a measured service time is often a fast core with a long tail of waits, which
# a lognormal fits with a median too high and a tail too long.
LOGNORMAL_REJECTED_P = 0.01

# Which cache each hit ratio is read from, and the dependency a miss touches.
_HIT_RATIO_SOURCES = {
    "inventory": ("inventory_read", "postgres"),
    "summary": ("dashboard_summary", "postgres"),
    "top_sellers": ("ai_recommendations", "postgres"),
}

# An inventory read that needed a stale copy during a PostgreSQL fault found one (served
# `stale`) or found none: the engine then answers 503 with PostgreSQL's failure (`error`)
# or its breaker's refusal (`rejected`).
_STALE_FOUND = "stale"
_STALE_MISSING = frozenset({"error", "rejected"})


def fit_lognormal(
    values_ms: np.ndarray, resolution_ms: float = TIMING_RESOLUTION_MS
) -> tuple[float, float]:
    """(median ms, sigma) by maximum likelihood; with rounded values, of the intervals
    [v − r/2, v + r/2] they stand for."""
    values = np.asarray(values_ms, dtype=np.float64)
    positive = values[values > 0]
    logs = np.log(positive if len(positive) else np.array([resolution_ms]))
    mu, sigma = float(np.mean(logs)), float(np.std(logs))
    if resolution_ms <= 0 or float(np.median(values)) > 50 * resolution_ms:
        return math.exp(mu), max(sigma, 1e-6)
    levels, counts = np.unique(
        np.round(values / resolution_ms).astype(np.int64), return_counts=True
    )
    low = np.maximum((levels - 0.5) * resolution_ms, 1e-9)
    high = (levels + 0.5) * resolution_ms
    log_low, log_high = np.log(low), np.log(high)

    def negative_log_likelihood(theta: np.ndarray) -> float:
        m, log_s = theta
        s = math.exp(log_s)
        mass = stats.norm.cdf((log_high - m) / s) - stats.norm.cdf((log_low - m) / s)
        return float(-np.sum(counts * np.log(np.maximum(mass, 1e-300))))

    result = optimize.minimize(
        negative_log_likelihood,
        np.array([mu, math.log(max(sigma, 1e-3))]),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 2000},
    )
    m, log_s = result.x
    return math.exp(float(m)), math.exp(float(log_s))


def _dequantised(values: np.ndarray, rng: np.random.Generator, resolution_ms: float) -> np.ndarray:
    """Spread rounded values over their rounding interval, so that a KS test against a
    continuous distribution does not see the rounding's steps as misfit."""
    if resolution_ms <= 0:
        return values
    jitter = rng.uniform(-resolution_ms / 2, resolution_ms / 2, len(values))
    return np.maximum(values + jitter, 1e-6)


def fit_distribution(
    values_ms: np.ndarray, resolution_ms: float = TIMING_RESOLUTION_MS, seed: int = 0
) -> dict[str, Any]:
    """The better of a lognormal and an empirical fit, with the goodness of fit of both;
    `resolution_ms` is how coarsely the values were rounded (0: not at all)."""
    rng = np.random.default_rng(seed)
    raw = np.asarray(values_ms, dtype=np.float64)
    values = _dequantised(raw, rng, resolution_ms)
    shuffled = rng.permutation(values)
    train, test = shuffled[::2], shuffled[1::2]
    median_ms, sigma = fit_lognormal(raw, resolution_ms)
    train_median, train_sigma = fit_lognormal(train, resolution_ms=0.0)
    lognormal_ks = stats.kstest(test, "lognorm", args=(train_sigma, 0.0, train_median))
    quantiles = np.quantile(train, np.linspace(0.0, 1.0, EMPIRICAL_POINTS))
    grid = np.linspace(0.0, 1.0, EMPIRICAL_POINTS)

    def empirical_cdf(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(x, quantiles, grid, left=0.0, right=1.0), dtype=np.float64)

    empirical_ks = stats.kstest(test, empirical_cdf)
    # Both are judged on data they were not fitted to. A difference in KS distance below
    # the 95 % critical distance of a two-sample test at this size is noise: the lognormal,
    # two parameters against two hundred, stands unless the empirical is clearly better.
    margin = 1.36 * math.sqrt(2.0 / max(1, len(test)))
    gain = float(lognormal_ks.statistic) - float(empirical_ks.statistic)
    choose_empirical = gain > margin
    lognormal = {"kind": "lognormal", "median_ms": median_ms, "sigma": sigma}
    empirical = {
        "kind": "empirical",
        "quantiles_ms": [round(float(q), 6) for q in np.quantile(values, grid)],
    }
    return {
        "chosen": empirical if choose_empirical else lognormal,
        "candidates": {"lognormal": lognormal, "empirical": empirical},
        "report": {
            "samples": len(values),
            "chosen": "empirical" if choose_empirical else "lognormal",
            "ks_noise_margin": margin,
            "lognormal": {
                "median_ms": median_ms,
                "sigma": sigma,
                "ks_statistic": float(lognormal_ks.statistic),
                "ks_pvalue": float(lognormal_ks.pvalue),
            },
            "empirical": {
                "ks_statistic": float(empirical_ks.statistic),
                "ks_pvalue": float(empirical_ks.pvalue),
            },
            "median_ms": float(np.median(values_ms)),
            "p95_ms": float(np.percentile(values_ms, 95)),
        },
    }


def _fit_feature(values_ms: np.ndarray, resolution_ms: float) -> dict[str, Any]:
    """A feature's own distribution: as `fit_distribution`, but empirical when the held-out
    half rejects the lognormal, or with fewer than MIN_SAMPLES values (too few to judge a
    lognormal; the empirical never reaches past what was measured)."""
    if len(values_ms) >= MIN_SAMPLES:
        fitted = fit_distribution(values_ms, resolution_ms)
        report = fitted["report"]
        if report["chosen"] == "lognormal" and (
            report["lognormal"]["ks_pvalue"] < LOGNORMAL_REJECTED_P
            and report["lognormal"]["ks_statistic"] > report["empirical"]["ks_statistic"]
        ):
            return {
                "chosen": fitted["candidates"]["empirical"],
                "report": {**report, "chosen": "empirical"},
            }
        return fitted
    grid = np.linspace(0.0, 1.0, EMPIRICAL_POINTS)
    values = np.sort(np.asarray(values_ms, dtype=np.float64))
    return {
        "chosen": {
            "kind": "empirical",
            "quantiles_ms": [round(float(q), 6) for q in np.quantile(values, grid)],
        },
        "report": {
            "samples": len(values),
            "chosen": "empirical",
            "median_ms": float(np.median(values)),
            "p95_ms": float(np.percentile(values, 95)),
        },
    }


def _baseline_window(requests: pd.DataFrame, faults: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    """Every request of the baseline phase: after the warmup, before the first fault."""
    selected = requests[requests["scheduled"] >= warmup_s]
    if len(faults):
        first = faults["applied_at"].fillna(faults["scheduled_at"]).min()
        selected = selected[selected["scheduled"] < first]
    return selected


def _overheads_ms(window: pd.DataFrame, workers: int) -> np.ndarray:
    """Per request of `window`: the engine's service demand (ms), its measured overhead
    (latency less the time in dependencies) less its wait for one of the `workers`."""
    spent = np.array(
        [sum(parse_server_timing(h).values()) for h in window["server_timing"].tolist()],
        dtype=np.float64,
    )
    measured = np.maximum(window["latency_ms"].to_numpy(dtype=np.float64) - spent, 0.0)
    if "replication" not in window:
        return (
            service_demands(window["scheduled"].to_numpy(np.float64), measured / 1e3, workers) * 1e3
        )
    demands = np.empty(len(window), dtype=np.float64)
    replications = window["replication"].to_numpy(dtype=np.int64)
    scheduled = window["scheduled"].to_numpy(dtype=np.float64)
    for replication in np.unique(replications).tolist():
        mine = replications == replication
        demands[mine] = service_demands(scheduled[mine], measured[mine] / 1e3, workers) * 1e3
    return demands


def _fault_windows(faults: pd.DataFrame, target: str) -> dict[int, list[tuple[float, float]]]:
    """Per replication, the (start, end) of each fault on `target` as it was applied (its
    scheduled end when its removal was not recorded)."""
    windows: dict[int, list[tuple[float, float]]] = {}
    if faults.empty or "target" not in faults:
        return windows
    on_target = faults[faults["target"].astype(str) == target]
    starts = on_target["applied_at"].to_numpy(dtype=np.float64, na_value=np.nan)
    ends = (
        on_target["removed_at"]
        .fillna(on_target["scheduled_end"])
        .to_numpy(dtype=np.float64, na_value=np.nan)
    )
    replications = (
        on_target["replication"].to_numpy(dtype=np.int64)
        if "replication" in on_target
        else np.zeros(len(on_target), dtype=np.int64)
    )
    for start, end, replication in zip(
        starts.tolist(), ends.tolist(), replications.tolist(), strict=True
    ):
        if not math.isnan(start):  # a fault never applied had no effect
            windows.setdefault(int(replication), []).append((start, end))
    return windows


def _within(scheduled: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(scheduled), dtype=bool)
    for start, end in windows:
        inside |= (scheduled >= start) & (scheduled < end)
    return inside


def stale_ratio_from_faults(
    requests: pd.DataFrame, faults: pd.DataFrame
) -> tuple[float | None, int]:
    """(share of the inventory reads that needed a stale copy during a PostgreSQL fault and
    found one, how many needed one); the share is None without such reads.

    Reads while Redis was faulted too are left out: a stale lookup that failed says nothing
    about whether the copy existed."""
    postgres = _fault_windows(faults, "postgres")
    if not postgres:
        return None, 0
    redis = _fault_windows(faults, "redis")
    reads = requests[requests["feature"].astype(str) == "inventory_read"]
    replications = (
        reads["replication"].to_numpy(dtype=np.int64)
        if "replication" in reads
        else np.zeros(len(reads), dtype=np.int64)
    )
    scheduled = reads["scheduled"].to_numpy(dtype=np.float64)
    during = np.zeros(len(reads), dtype=bool)
    for replication, windows in postgres.items():
        mine = replications == replication
        during |= (
            mine & _within(scheduled, windows) & ~_within(scheduled, redis.get(replication, []))
        )
    outcome = reads["outcome"].astype(str).to_numpy()
    status = reads["status"].to_numpy(dtype=np.int64)
    found = during & (outcome == _STALE_FOUND)
    missing = during & (status == 503) & np.isin(outcome, list(_STALE_MISSING))
    needed = int(found.sum() + missing.sum())
    if needed == 0:
        return None, 0
    return float(found.sum()) / needed, needed


def calibration_from_requests(
    requests: pd.DataFrame, faults: pd.DataFrame | None = None, warmup_s: float = 0.0
) -> dict[str, Any]:
    """The calibration mapping (the shape of sim/defaults.json, plus a fit report)."""
    window = _baseline_window(
        requests,
        faults if faults is not None else pd.DataFrame(columns=["applied_at", "scheduled_at"]),
        warmup_s,
    )
    if "server_timing" not in window or window["server_timing"].isna().all():
        raise ValueError("the run has no Server-Timing: calibrate from a measured run")
    defaults = load_parameters()
    # Every request of the phase queued for the engine's worker, whatever its outcome.
    demands = _overheads_ms(window, defaults.server.workers)
    is_ok = (window["outcome"].astype(str) == "ok").to_numpy()
    baseline = window[is_ok]
    features = baseline["feature"].astype(str).tolist()
    timings = [parse_server_timing(header) for header in baseline["server_timing"].tolist()]
    baseline_demands = demands[is_ok]

    # (feature, dependency) → the single-call samples of that dependency in that feature.
    single: dict[tuple[str, str], list[float]] = {}
    overhead: list[float] = []
    overhead_by_feature: dict[str, list[float]] = {}
    misses: dict[str, list[bool]] = {key: [] for key in _HIT_RATIO_SOURCES}
    for feature, spent, demand in zip(features, timings, baseline_demands.tolist(), strict=True):
        touched = frozenset(name for name in spent if name in DEPENDENCIES)
        counts = calls_by_dependency(feature, touched)
        if counts is None:
            continue  # not a healthy primary branch (a fallback served it, or a new route)
        overhead.append(demand)
        overhead_by_feature.setdefault(feature, []).append(demand)
        for dependency, count in counts.items():
            if count == 1:
                single.setdefault((feature, dependency), []).append(spent[dependency])
        for cache, (source, miss_dependency) in _HIT_RATIO_SOURCES.items():
            if feature == source:
                misses[cache].append(miss_dependency in touched)

    dependencies: dict[str, Any] = {}
    scales: dict[str, dict[str, float]] = {}
    feature_services: dict[str, dict[str, Any]] = {}
    fit_report: dict[str, Any] = {"dependencies": {}, "scales": {}, "feature_services": {}}
    for (feature, dependency), calls in sorted(single.items()):
        if len(calls) >= FEATURE_MIN_SAMPLES:
            fitted = _fit_feature(np.asarray(calls), TIMING_RESOLUTION_MS)
            feature_services.setdefault(feature, {})[dependency] = fitted["chosen"]
            fit_report["feature_services"].setdefault(feature, {})[dependency] = fitted["report"]
    for dependency in DEPENDENCIES:
        by_feature = {
            f: np.asarray(v)
            for (f, d), v in single.items()
            if d == dependency and len(v) >= MIN_SAMPLES
        }
        if not by_feature:
            fit_report["dependencies"][dependency] = "kept the default: too few samples"
            continue
        # The base is what the features the defaults call at scale 1 see; without any, the
        # best-sampled feature's calls are the base.
        base = [f for f in by_feature if defaults.scale(f, dependency) == 1.0]
        if not base:
            base = [max(by_feature, key=lambda f: len(by_feature[f]))]
        base_samples = np.concatenate([by_feature[f] for f in base])
        fitted = fit_distribution(base_samples)
        dependencies[dependency] = {"service": fitted["chosen"]}
        fit_report["dependencies"][dependency] = {**fitted["report"], "from_features": sorted(base)}
        base_median = float(np.median(base_samples))
        for feature, samples in by_feature.items():
            if feature in base or base_median <= 0:
                continue
            scale = float(np.median(samples)) / base_median
            scales.setdefault(feature, {})[dependency] = round(scale, 4)
            fit_report["scales"].setdefault(feature, {})[dependency] = {
                "samples": len(samples),
                "scale": scale,
            }

    ratios: dict[str, float] = {}
    for cache, observed in misses.items():
        if len(observed) >= MIN_SAMPLES:
            ratios[cache] = 1.0 - float(np.mean(observed))
    fit_report["cache_hit_ratios"] = {cache: {"samples": len(v)} for cache, v in misses.items()}

    result: dict[str, Any] = {"format": 1, "source": "calibrate", "dependencies": dependencies}
    if ratios:
        result["cache_hit_ratios"] = ratios
    stale_ratio, needed = (
        stale_ratio_from_faults(requests, faults) if faults is not None else (None, 0)
    )
    if stale_ratio is not None and needed >= MIN_SAMPLES:
        result["stale_ratios"] = {"inventory": stale_ratio}
        fit_report["stale_ratios"] = {
            "inventory": {"samples": needed, "from": "inventory reads during a PostgreSQL fault"}
        }
    else:
        why = (
            f"only {needed} inventory reads needed a stale copy during a PostgreSQL fault"
            if needed
            else "no inventory read needed a stale copy during a PostgreSQL fault"
        )
        fit_report["stale_ratios"] = {
            "inventory": {"samples": needed, "from": f"the hit ratio (default): {why}"}
        }
    if scales:
        result["scales"] = scales
    if feature_services:
        result["feature_services"] = feature_services
    if len(overhead) >= MIN_SAMPLES:
        # Latency less rounded dependency times: not itself rounded, but blurred by the
        # rounding of the parts, and never below the rounding's reach.
        values = np.maximum(np.asarray(overhead), TIMING_RESOLUTION_MS / 2)
        fitted = fit_distribution(values, resolution_ms=0.0)
        result["server"] = {"overhead": fitted["chosen"]}
        fit_report["server_overhead"] = fitted["report"]
        own: dict[str, Any] = {}
        fit_report["feature_overhead"] = {}
        for feature, demands_ms in sorted(overhead_by_feature.items()):
            if len(demands_ms) >= FEATURE_MIN_SAMPLES:
                values = np.maximum(np.asarray(demands_ms), TIMING_RESOLUTION_MS / 2)
                fitted = _fit_feature(values, resolution_ms=0.0)
                own[feature] = fitted["chosen"]
                fit_report["feature_overhead"][feature] = fitted["report"]
        if own:
            result["server"]["feature_overhead"] = own
    result["fit"] = fit_report
    return result


def calibrate_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Fit the model to a measured run folder; writes calibration.json, returns its path."""
    run = read_run(run_dir)
    warmup_s = float(run.summary.get("scenario", {}).get("warmup_s") or 0.0)
    calibration = calibration_from_requests(run.requests, run.faults, warmup_s)
    calibration["fit"]["run"] = str(run.path)
    path = Path(out) if out is not None else run.path / CALIBRATION_FILE
    path.write_text(json.dumps(calibration, indent=2) + "\n", encoding="utf-8")
    return path


def describe_fit(calibration: Mapping[str, Any]) -> str:
    """A short terminal account of a calibration's fit."""
    lines = []
    report = calibration.get("fit", {})
    for dependency, entry in report.get("dependencies", {}).items():
        if isinstance(entry, str):
            lines.append(f"{dependency:9} {entry}")
            continue
        fit = entry["lognormal"]
        lines.append(
            f"{dependency:9} {entry['chosen']:9} n={entry['samples']:<6} lognormal median "
            f"{fit['median_ms']:.3f} ms sigma {fit['sigma']:.3f} (KS {fit['ks_statistic']:.3f}, "
            f"p {fit['ks_pvalue']:.2g}); empirical KS {entry['empirical']['ks_statistic']:.3f}"
        )
    for cache, ratio in calibration.get("cache_hit_ratios", {}).items():
        lines.append(f"cache {cache}: hit ratio {ratio:.3f}")
    for cache, entry in report.get("stale_ratios", {}).items():
        stated = calibration.get("stale_ratios", {}).get(cache)
        if stated is None:
            lines.append(f"cache {cache}: stale ratio from {entry['from']}")
        else:
            lines.append(
                f"cache {cache}: stale ratio {stated:.3f} (n={entry['samples']}, from {entry['from']})"
            )
    if "server_overhead" in report:
        fit = report["server_overhead"]["lognormal"]
        lines.append(f"engine overhead: median {fit['median_ms']:.3f} ms sigma {fit['sigma']:.3f}")
    return "\n".join(lines)
