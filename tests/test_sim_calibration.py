"""Calibration recovers known distributions from a synthetic measured run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

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
from sim.calibrate import calibrate_run, fit_distribution, fit_lognormal
from sim.parameters import load_parameters

# The truth the synthetic run is drawn from: (median ms, sigma) per dependency.
TRUTH = {"postgres": (2.0, 0.5), "redis": (0.3, 0.4), "s3": (8.0, 0.5), "openai": (40.0, 0.6)}
OVERHEAD = (0.8, 0.3)
INVENTORY_HIT_RATIO = 0.8
SEARCH_SCALE = 1.5  # product_search's queries take 1.5 times an inventory select
REQUESTS = 20_000


def _synthetic_run(run_dir: Path) -> None:
    rng = np.random.default_rng(42)

    def draw(name: str, scale: float = 1.0) -> float:
        median, sigma = TRUTH[name]
        return scale * median * math.exp(sigma * rng.standard_normal())

    features = rng.choice(
        ["inventory_read", "product_search", "ai_recommendations", "invoice_upload"],
        size=REQUESTS,
        p=[0.5, 0.2, 0.15, 0.15],
    )
    timings: list[str] = []
    latency: list[float] = []
    for feature in features:
        spent: dict[str, float] = {}
        if feature == "inventory_read":
            spent["redis"] = draw("redis")
            if rng.random() >= INVENTORY_HIT_RATIO:
                spent["postgres"] = draw("postgres")
                spent["redis"] += draw("redis")
        elif feature == "product_search":
            spent["postgres"] = draw("postgres", SEARCH_SCALE)
        elif feature == "ai_recommendations":
            spent["openai"] = draw("openai")
        else:
            spent["s3"] = draw("s3")
            spent["postgres"] = draw("postgres")
        overhead = OVERHEAD[0] * math.exp(OVERHEAD[1] * rng.standard_normal())
        # The engine's header: milliseconds with one decimal.
        timings.append(", ".join(f"{name};dur={ms:.1f}" for name, ms in spent.items()))
        latency.append(overhead + sum(spent.values()))
    scheduled = np.sort(rng.uniform(0.0, 100.0, REQUESTS))
    end = scheduled + np.asarray(latency) / 1e3
    table = requests_table(
        replication=0,
        scheduled=scheduled,
        start=scheduled,
        end=end,
        feature_codes=np.array([FEATURE_CODES[f] for f in features]),
        status=np.full(REQUESTS, 200),
        outcome_codes=np.full(REQUESTS, OUTCOME_CODES["ok"]),
        source="measured",
        server_timing=timings,
    )
    with RequestsWriter(run_dir) as writer:
        writer.write(table)
    write_table(run_dir, STATES_FILE, states_table([]))
    write_table(run_dir, FAULTS_FILE, faults_table([]))


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("measured")
    _synthetic_run(run_dir)
    path = calibrate_run(run_dir)
    assert path == run_dir / "calibration.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@pytest.mark.parametrize("dependency", sorted(TRUTH))
def test_service_times_recovered(calibration: dict[str, Any], dependency: str) -> None:
    median, sigma = TRUTH[dependency]
    fit = calibration["fit"]["dependencies"][dependency]["lognormal"]
    assert fit["median_ms"] == pytest.approx(median, rel=0.03)
    assert fit["sigma"] == pytest.approx(sigma, rel=0.05)
    assert calibration["dependencies"][dependency]["service"]["kind"] == "lognormal"


def test_hit_ratio_scale_and_overhead(calibration: dict[str, Any]) -> None:
    assert calibration["cache_hit_ratios"]["inventory"] == pytest.approx(
        INVENTORY_HIT_RATIO, abs=0.015
    )
    assert calibration["scales"]["product_search"]["postgres"] == pytest.approx(
        SEARCH_SCALE, rel=0.04
    )
    overhead = calibration["server"]["overhead"]
    assert overhead["median_ms"] == pytest.approx(OVERHEAD[0], rel=0.05)


def test_calibration_loads_as_parameters(calibration: dict[str, Any]) -> None:
    parameters = load_parameters(calibration)
    assert parameters.dependencies["s3"].service.kind == "lognormal"
    assert parameters.scale("product_search", "postgres") == pytest.approx(SEARCH_SCALE, rel=0.04)


def test_lognormal_fit_of_rounded_values() -> None:
    rng = np.random.default_rng(1)
    values = np.round(0.3 * np.exp(0.4 * rng.standard_normal(20_000)), 1)
    median, sigma = fit_lognormal(values, resolution_ms=0.1)
    assert median == pytest.approx(0.3, rel=0.03)
    assert sigma == pytest.approx(0.4, rel=0.05)


def test_bimodal_data_chooses_empirical() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(5.0, 0.2, 5000), rng.normal(50.0, 1.0, 5000)])
    fitted = fit_distribution(values, resolution_ms=0.0)
    assert fitted["chosen"]["kind"] == "empirical"
    assert fitted["report"]["lognormal"]["ks_pvalue"] < 0.01


def test_a_predicted_run_cannot_calibrate(tmp_path: Path) -> None:
    table = requests_table(
        replication=0,
        scheduled=np.zeros(3),
        start=np.zeros(3),
        end=np.ones(3),
        feature_codes=np.zeros(3, dtype=np.int8),
        status=np.full(3, 200),
        outcome_codes=np.zeros(3, dtype=np.int8),
        source="predicted",
    )
    assert isinstance(table, pa.Table)
    with RequestsWriter(tmp_path) as writer:
        writer.write(table)
    write_table(tmp_path, STATES_FILE, states_table([]))
    write_table(tmp_path, FAULTS_FILE, faults_table([]))
    with pytest.raises(ValueError, match="Server-Timing"):
        calibrate_run(tmp_path)
