"""Calibration recovers known distributions, ratios and scales from synthetic measured run
folders whose Server-Timing headers have the engine's shape (sim.flows)."""

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
TOP_SELLERS_HIT_RATIO = 0.9
SEARCH_SCALE = 1.5  # product_search's queries take 1.5 times an inventory select
REQUESTS = 20_000
BASELINE_S = 100.0

# The run with a PostgreSQL outage after its baseline: the share of inventory reads that
# need a stale copy and find one, and a Redis fault at the outage's end, whose reads say
# nothing about it (their stale lookups fail whether or not the copy exists).
STALE_RATIO = 0.3
OUTAGE = (BASELINE_S, BASELINE_S + 30.0)
REDIS_FAULT = (BASELINE_S + 25.0, BASELINE_S + 30.0)
OUTAGE_READS = 3000
OUTAGE_FRESH_HITS = 0.1


def _fault_row(index: int, target: str, window: tuple[float, float]) -> dict[str, Any]:
    return {
        "replication": 0,
        "index": index,
        "target": target,
        "toxic": "down",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": "{}",
        "scheduled_at": window[0],
        "scheduled_end": window[1],
        "applied_at": window[0] + 0.01,
        "removed_at": window[1] + 0.01,
    }


def _synthetic_run(run_dir: Path, *, with_outage: bool = False) -> None:
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
    overheads: list[float] = []
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
            # The top sellers for the prompt (cache, else PostgreSQL then cached), then the
            # model.
            spent["redis"] = draw("redis")
            if rng.random() >= TOP_SELLERS_HIT_RATIO:
                spent["postgres"] = draw("postgres")
                spent["redis"] += draw("redis")
            spent["openai"] = draw("openai")
        else:
            # invoice_upload: the id reserved in PostgreSQL, the file to S3, the row.
            spent["postgres"] = draw("postgres")
            spent["s3"] = draw("s3")
            spent["postgres"] += draw("postgres")
        overhead = OVERHEAD[0] * math.exp(OVERHEAD[1] * rng.standard_normal())
        # The engine's header: milliseconds with one decimal.
        timings.append(", ".join(f"{name};dur={ms:.1f}" for name, ms in spent.items()))
        overheads.append(overhead)
        latency.append(sum(spent.values()))
    scheduled = np.sort(rng.uniform(0.0, BASELINE_S, REQUESTS))
    # The engine's own work queues for its one worker, as the model has it: each request's
    # time outside its dependency calls is its wait for the worker plus its overhead.
    free_at = 0.0
    for index, (at, overhead) in enumerate(zip(scheduled.tolist(), overheads, strict=True)):
        free_at = max(at * 1e3, free_at) + overhead
        latency[index] += free_at - at * 1e3
    codes = [FEATURE_CODES[f] for f in features]
    status = [200] * REQUESTS
    outcomes = [OUTCOME_CODES["ok"]] * REQUESTS
    faults: list[dict[str, Any]] = []
    if with_outage:
        outage_scheduled = np.sort(rng.uniform(*OUTAGE, OUTAGE_READS))
        for at in outage_scheduled.tolist():
            redis_down = REDIS_FAULT[0] <= at < REDIS_FAULT[1]
            if not redis_down and rng.random() < OUTAGE_FRESH_HITS:
                answer = (200, "ok", f"redis;dur={draw('redis'):.1f}")
            elif not redis_down and rng.random() < STALE_RATIO:
                answer = (200, "stale", f"redis;dur={2 * draw('redis'):.1f}")
            else:
                # No stale copy: 503 with PostgreSQL's refusal (breaker open) or failure.
                refused = rng.random() < 0.8
                answer = (503, "rejected" if refused else "error", f"redis;dur={draw('redis'):.1f}")
            status.append(answer[0])
            outcomes.append(OUTCOME_CODES[answer[1]])
            timings.append(answer[2])
            latency.append(1.0)
            codes.append(FEATURE_CODES["inventory_read"])
        scheduled = np.concatenate([scheduled, outage_scheduled])
        faults = [_fault_row(0, "postgres", OUTAGE), _fault_row(1, "redis", REDIS_FAULT)]
    end = scheduled + np.asarray(latency) / 1e3
    table = requests_table(
        replication=0,
        scheduled=scheduled,
        start=scheduled,
        end=end,
        feature_codes=np.array(codes),
        status=np.array(status),
        outcome_codes=np.array(outcomes),
        source="measured",
        server_timing=timings,
    )
    with RequestsWriter(run_dir) as writer:
        writer.write(table)
    write_table(run_dir, STATES_FILE, states_table([]))
    write_table(run_dir, FAULTS_FILE, faults_table(faults))


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
    assert calibration["cache_hit_ratios"]["top_sellers"] == pytest.approx(
        TOP_SELLERS_HIT_RATIO, abs=0.02
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


def test_without_a_postgres_fault_the_stale_ratio_is_the_default(
    calibration: dict[str, Any],
) -> None:
    assert "stale_ratios" not in calibration
    assert calibration["fit"]["stale_ratios"]["inventory"]["samples"] == 0
    # The default: the (calibrated) hit ratio; the single-key caches keep theirs.
    parameters = load_parameters(calibration)
    hit_ratio = calibration["cache_hit_ratios"]["inventory"]
    assert parameters.stale_ratios["inventory"] == hit_ratio
    assert parameters.stale_ratios["summary"] == 1.0


@pytest.fixture(scope="module")
def outage_calibration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("measured-outage")
    _synthetic_run(run_dir, with_outage=True)
    loaded: dict[str, Any] = json.loads(calibrate_run(run_dir).read_text())
    return loaded


def test_stale_ratio_recovered_from_a_postgres_outage(
    outage_calibration: dict[str, Any],
) -> None:
    needed = outage_calibration["fit"]["stale_ratios"]["inventory"]["samples"]
    # The reads of the outage that were not fresh hits, less those of the Redis fault.
    redis_share = (REDIS_FAULT[1] - REDIS_FAULT[0]) / (OUTAGE[1] - OUTAGE[0])
    expected = OUTAGE_READS * (1.0 - redis_share) * (1.0 - OUTAGE_FRESH_HITS)
    assert needed == pytest.approx(expected, rel=0.08)
    # Four standard errors of a proportion from that many reads.
    tolerance = 4.0 * math.sqrt(STALE_RATIO * (1.0 - STALE_RATIO) / needed)
    ratio = outage_calibration["stale_ratios"]["inventory"]
    assert ratio == pytest.approx(STALE_RATIO, abs=tolerance)
    assert load_parameters(outage_calibration).stale_ratios["inventory"] == ratio
    # The baseline, before the outage, still gives the service times.
    fit = outage_calibration["fit"]["dependencies"]["redis"]["lognormal"]
    assert fit["median_ms"] == pytest.approx(TRUTH["redis"][0], rel=0.03)


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
