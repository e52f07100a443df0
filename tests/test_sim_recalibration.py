"""A calibrated prediction reproduces the run it was fitted on.

The synthetic measured run is made the way the model sees the engine: arrivals queue for
the engine's one worker (each feature with its own overhead, one of them ten times the
others), then call their dependencies. A PostgreSQL call is a fast core with a tail of
waits that does not grow with the query's cost (what a shared machine adds), so one
feature's queries cost six times another's in the median but not in the tail. Its
`Server-Timing` headers are what the engine sends. Calibrated on it, the model must give
back its latency percentiles: neither queue the overheads twice (they were measured with
the wait for the worker in them), nor stretch the tail of the service times with a
feature's scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.policyfile import load_policy
from reports.runfolder import (
    FAULTS_FILE,
    FEATURE_CODES,
    OUTCOME_CODES,
    STATES_FILE,
    RequestsWriter,
    faults_table,
    requests_table,
    states_table,
    write_table,
)
from scenarios.schema import Scenario
from sim.calibrate import calibrate_run
from sim.model import simulate_replication
from sim.parameters import load_parameters

RATE = 100.0
DURATION_S = 120.0
MIX = {"health_status": 0.3, "metrics_export": 0.1, "product_search": 0.3, "order_processing": 0.3}
# The engine's own work per feature: (median ms, sigma).
OVERHEAD = {
    "health_status": (1.5, 0.3),
    "metrics_export": (12.0, 0.2),
    "product_search": (1.5, 0.3),
    "order_processing": (1.8, 0.3),
}
# PostgreSQL: the query's core (median ms, sigma) per feature, and a tail of waits.
QUERY = {"product_search": (1.0, 0.3), "order_processing": (6.0, 0.3)}
TAIL_SHARE = 0.1
TAIL_MEAN_MS = 20.0
REDIS = (0.5, 0.3)
REPLICATIONS = 3


def _lognormal(rng: np.random.Generator, median_sigma: tuple[float, float]) -> float:
    median, sigma = median_sigma
    return median * math.exp(sigma * rng.standard_normal())


def _measured_run(run_dir: Path) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    count = rng.poisson(RATE * DURATION_S)
    scheduled = np.sort(rng.uniform(0.0, DURATION_S, count))
    features = rng.choice(list(MIX), size=count, p=list(MIX.values()))
    free_at = 0.0
    latency: list[float] = []
    timings: list[str] = []
    for at, feature in zip((scheduled * 1e3).tolist(), features.tolist(), strict=True):
        free_at = max(at, free_at) + _lognormal(rng, OVERHEAD[feature])
        spent: dict[str, float] = {}
        if feature in QUERY:
            query = _lognormal(rng, QUERY[feature])
            if rng.random() < TAIL_SHARE:
                query += rng.exponential(TAIL_MEAN_MS)
            spent["postgres"] = query
        if feature == "order_processing":
            spent["redis"] = _lognormal(rng, REDIS)  # the inventory entries it invalidates
        latency.append(free_at - at + sum(spent.values()))
        timings.append(", ".join(f"{name};dur={ms:.1f}" for name, ms in spent.items()))
    table = requests_table(
        replication=0,
        scheduled=scheduled,
        start=scheduled,
        end=scheduled + np.asarray(latency) / 1e3,
        feature_codes=np.array([FEATURE_CODES[f] for f in features]),
        status=np.full(count, 200),
        outcome_codes=np.full(count, OUTCOME_CODES["ok"]),
        source="measured",
        server_timing=timings,
    )
    with RequestsWriter(run_dir) as writer:
        writer.write(table)
    write_table(run_dir, STATES_FILE, states_table([]))
    write_table(run_dir, FAULTS_FILE, faults_table([]))
    return pd.DataFrame({"feature": features, "latency_ms": latency})


@pytest.fixture(scope="module")
def measured_and_predicted(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("measured")
    measured = _measured_run(run_dir)
    calibration: dict[str, Any] = json.loads(calibrate_run(run_dir).read_text())
    parameters = load_parameters(calibration)
    scenario = Scenario.model_validate(
        {
            "name": "recalibration",
            "load": {"model": "open", "rate": RATE, "duration": DURATION_S},
            "mix": MIX,
            "seed": 3,
        }
    )
    policy = load_policy()
    predicted = pd.concat(
        [
            simulate_replication(scenario, policy, parameters, replication, 3)
            .requests.to_pandas()
            .assign(feature=lambda t: t["feature"].astype(str))
            for replication in range(REPLICATIONS)
        ]
    )
    return measured, predicted, calibration


def _percentiles(frame: pd.DataFrame) -> tuple[float, float]:
    p50, p95 = np.percentile(frame["latency_ms"].to_numpy(), [50, 95])
    return float(p50), float(p95)


@pytest.mark.parametrize("feature", [None, *MIX])
def test_the_prediction_reproduces_the_run_it_was_fitted_on(
    measured_and_predicted: tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]],
    feature: str | None,
) -> None:
    measured, predicted, _ = measured_and_predicted
    if feature is not None:
        measured = measured[measured["feature"] == feature]
        predicted = predicted[predicted["feature"] == feature]
    measured_p50, measured_p95 = _percentiles(measured)
    predicted_p50, predicted_p95 = _percentiles(predicted)
    assert predicted_p50 == pytest.approx(measured_p50, rel=0.08)
    assert predicted_p95 == pytest.approx(measured_p95, rel=0.12)


def test_the_overheads_are_the_demands_without_the_wait(
    measured_and_predicted: tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]],
) -> None:
    _, _, calibration = measured_and_predicted
    report = calibration["fit"]["feature_overhead"]
    for feature, (median, _) in OVERHEAD.items():
        assert report[feature]["median_ms"] == pytest.approx(median, rel=0.08)
    # Each feature's PostgreSQL calls are its own: the tail is not stretched by a scale.
    services = calibration["feature_services"]
    assert set(services["order_processing"]) == {"postgres", "redis"}
    assert set(services["product_search"]) == {"postgres"}
