"""A load run end to end: requests built from the seed's ids, outcomes read from the
engine's answers, part files merged into the run-folder schema, and real Locust runs
against a real engine (one process, then a master with two workers)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow.parquet as pq
import pytest

from chaos.staging import StagingState
from loadtests.openloop import arrival_rng, schedule
from loadtests.recording import (
    ACKED_WRITES_FILE,
    LOAD_FILE,
    AckedWritesLog,
    RequestRecorder,
    classify_outcome,
    merge_parts,
    part_paths,
    write_json,
)
from loadtests.requests_mix import (
    FEATURE_ROUTES,
    InvoicePool,
    RequestFactory,
    SeedCatalog,
)
from loadtests.runner import LoadRunError, check_loopback, run_load
from loadtests.shapes import LoadProfile
from reports.runfolder import (
    FEATURE_CODES,
    OUTCOME_CODES,
    REQUESTS_SCHEMA,
    SERVED_OUTCOMES,
    parse_server_timing,
    read_requests,
)
from scenarios import OpenLoad, load_scenario
from tests.fixtures_engine import EngineServer, launch_engine, postgres_direct_dsn

OK, FALLBACK, STALE, SHED, REJECTED, ERROR = (
    OUTCOME_CODES[name] for name in ("ok", "fallback", "stale", "shed", "rejected", "error")
)


def body(reason: str, **extra: object) -> bytes:
    return json.dumps(
        {"error": "feature_unavailable", "feature": "x", "reason": reason, **extra}
    ).encode()


# --------------------------------------------------------------------------- outcomes


def test_served_answers_are_classified_by_x_served_by() -> None:
    assert classify_outcome(200, "primary") == OK
    assert classify_outcome(201, None) == OK
    assert classify_outcome(200, "fallback") == FALLBACK
    assert classify_outcome(200, "stale") == STALE


def test_a_503_is_shed_rejected_or_error_by_its_reason() -> None:
    # The policy's decisions (FeatureMatrix): the feature is off.
    assert classify_outcome(503, "fallback", body("level LIMITED is worse than DEGRADED")) == SHED
    assert classify_outcome(503, "fallback", body("forced off by a flag")) == SHED
    assert classify_outcome(503, "fallback", body("postgres breaker is open")) == SHED
    # The guard refused a call the handler needed: its breaker state in capitals.
    assert classify_outcome(503, "fallback", body("postgres breaker is OPEN")) == REJECTED
    assert classify_outcome(503, "fallback", body("openai breaker is HALF_OPEN")) == REJECTED
    assert classify_outcome(503, "fallback", body("s3 breaker is FORCED_OPEN")) == REJECTED
    # A dependency call failed.
    assert classify_outcome(503, "fallback", body("call failed (ConnectionRefusedError)")) == ERROR
    assert classify_outcome(503, "fallback", body("call timed out")) == ERROR
    # A body that says what happened is taken at its word.
    assert classify_outcome(503, None, body("whatever", outcome="rejected")) == REJECTED
    assert classify_outcome(503, None, b"<html>busy</html>") == ERROR
    assert classify_outcome(503, None, None) == ERROR


def test_anything_else_is_an_error() -> None:
    for status in (0, 400, 401, 404, 409, 422, 429, 500, 502, 504):
        assert classify_outcome(status, "primary", b"{}") == ERROR


# --------------------------------------------------------------------------- requests


def test_every_feature_has_a_request_built_from_seed_ids() -> None:
    catalog = SeedCatalog(skus=500)
    invoices = InvoicePool()
    invoices.add(42)
    factory = RequestFactory(catalog, random.Random(1), "run1-g0", invoices)
    keys: set[str] = set()
    for feature, route in FEATURE_ROUTES.items():
        for _ in range(50):
            spec = factory.build(feature)
            assert spec.feature == feature
            method, _, template = route.partition(" ")
            assert spec.method == method
            assert spec.name in template or spec.name == template
            assert spec.url.startswith("/")
            for number in re.findall(r"SKU-(\d{6})", spec.url + (spec.body or b"").decode()):
                assert 1 <= int(number) <= 500
            if spec.content_type == "application/json":
                assert spec.body is not None
                json.loads(spec.body)
            if spec.idempotency_key is not None:
                assert spec.idempotency_key.startswith("run1-g0-")
                assert spec.idempotency_key not in keys
                keys.add(spec.idempotency_key)
            headers = spec.headers("k")
            assert headers["X-API-Key"] == "k"
    writes = ("order_processing", "inventory_write", "batch_import")
    assert all(factory.build(name).idempotency_key for name in writes)
    assert factory.build("ai_invoice_enhancement").path == "/api/invoices/42/enhance"
    # Same seed, same requests.
    again = RequestFactory(catalog, random.Random(1), "run1-g0", invoices)
    first = RequestFactory(catalog, random.Random(1), "run1-g0", invoices)
    assert [again.build("order_processing").body for _ in range(5)] == [
        first.build("order_processing").body for _ in range(5)
    ]
    with pytest.raises(ValueError):
        factory.build("teleport")


def test_reads_favour_the_best_sellers() -> None:
    catalog = SeedCatalog()
    rng = random.Random(4)
    numbers = np.array([int(catalog.popular_sku(rng)[4:]) for _ in range(20_000)])
    assert numbers.min() >= 1 and numbers.max() <= 10_000
    # P(number ≤ k) = sqrt(k / n): a tenth of the SKUs take about a third of the reads.
    assert np.mean(numbers <= 1000) == pytest.approx(np.sqrt(0.1), abs=0.02)


def test_only_loopback_hosts_are_loaded() -> None:
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:1")
    assert check_loopback("http://[::1]:80")
    for host in ("http://10.0.0.1:80", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:80"):
        with pytest.raises(LoadRunError):
            check_loopback(host)


# --------------------------------------------------------------------------- merging


def test_parts_merge_into_one_sorted_requests_file(tmp_path: Path) -> None:
    write_json(tmp_path / LOAD_FILE, {"t0_epoch": 1.0, "late_threshold_s": 0.005})
    rows = {
        "a": [(0.30, 0.30, 200, OK), (0.10, 0.112, 503, SHED)],
        "b": [(0.20, 0.2001, 200, FALLBACK), (0.05, 0.05, 0, ERROR)],
    }
    code = FEATURE_CODES["inventory_read"]
    for part, requests in rows.items():
        requests_path, acked_path, stats_path = part_paths(tmp_path, part)
        recorder = RequestRecorder(requests_path, replication=0, batch_rows=1)
        for scheduled, start, status, outcome in requests:
            recorder.add(code, scheduled, start, start + 0.01, status, outcome, "redis;dur=0.4")
        recorder.close()
        recorder.add(code, 9.0, 9.0, 9.1, 200, OK, None)  # after the close: dropped
        assert recorder.dropped == 1
        acked = AckedWritesLog(acked_path)
        acked.add({"feature": "order_processing", "id": len(part), "end": 0.4, "replication": 0})
        acked.close()
        write_json(
            stats_path, {"sent": len(requests), "scheduled": len(requests), "cpu_user_s": 0.5}
        )

    summary = merge_parts(tmp_path)
    table = pq.read_table(tmp_path / "requests.parquet")
    assert table.schema.equals(REQUESTS_SCHEMA)
    frame = read_requests(tmp_path)
    assert frame["scheduled"].tolist() == [0.05, 0.10, 0.20, 0.30]
    assert frame["latency_ms"].to_numpy() == pytest.approx(
        (frame["end"] - frame["scheduled"]).to_numpy() * 1000
    )
    assert summary.rows == 4 and summary.parts == 2
    assert summary.lateness.late == 1  # the one sent 12 ms after its time
    assert summary.lateness.max_s == pytest.approx(0.012)
    assert summary.outcomes["shed"] == 1 and summary.outcomes["error"] == 1
    assert summary.counter("sent") == 4
    assert len((tmp_path / ACKED_WRITES_FILE).read_text().splitlines()) == 2
    load = json.loads((tmp_path / LOAD_FILE).read_text())
    assert load["result"]["rows"] == 4 and load["result"]["cpu_s"] == 1.0
    # Merging again changes nothing.
    merge_parts(tmp_path)
    assert read_requests(tmp_path)["scheduled"].tolist() == [0.05, 0.10, 0.20, 0.30]


# --------------------------------------------------------------------------- real runs

SCENARIO = """\
name: load-run-test
load: {model: open, rate: 50, duration: 10s}
seed: 23
"""


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "load-run-test.yaml"
    path.write_text(SCENARIO)
    return path


def expected_arrivals(scenario_file: Path) -> np.ndarray:
    scenario = load_scenario(scenario_file)
    assert isinstance(scenario.load, OpenLoad) and scenario.seed is not None
    chunks = schedule(
        LoadProfile.from_load(scenario.load), scenario.mix_fractions(), arrival_rng(scenario.seed)
    )
    return np.concatenate([chunk.times for chunk in chunks])


async def committed(
    dsn: str, orders: list[int], movements: list[int], keys: list[str]
) -> tuple[int, int, int]:
    connection = await asyncpg.connect(dsn)
    try:
        found_orders = await connection.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::bigint[])", orders
        )
        found_movements = await connection.fetchval(
            "SELECT count(*) FROM stock_movements WHERE id = ANY($1::bigint[])", movements
        )
        found_keys = await connection.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE key = ANY($1::text[]) AND status_code IS NOT NULL",
            keys,
        )
        return int(found_orders), int(found_movements), int(found_keys)
    finally:
        await connection.close()


@pytest.mark.integration
def test_an_open_loop_run_records_every_request_from_its_scheduled_time(
    engine: EngineServer, engine_stack: StagingState, scenario_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_load(scenario_file, engine.url, engine.api_key, run_dir)

    assert result.ok, result.exit_codes
    expected = expected_arrivals(scenario_file)
    assert 400 < len(expected) < 600
    assert result.scheduled == result.sent == result.answered == len(expected)
    assert result.unanswered == 0 and result.generators == 1

    table = pq.read_table(result.requests_path)
    assert table.schema.equals(REQUESTS_SCHEMA)
    frame = read_requests(run_dir)
    # The seeded schedule, exactly: the same arrivals the schedule function draws.
    assert np.allclose(np.sort(frame["scheduled"].to_numpy()), expected)
    assert set(frame["source"]) == {"measured"} and set(frame["replication"]) == {0}
    assert (frame["start"] >= frame["scheduled"]).all() and (frame["end"] > frame["start"]).all()
    # Latency runs from the scheduled time, not from the send.
    assert frame["latency_ms"].to_numpy() == pytest.approx(
        (frame["end"] - frame["scheduled"]).to_numpy() * 1000
    )
    assert ((frame["latency_ms"] / 1000) >= frame["end"] - frame["start"] - 1e-9).all()
    assert frame["scheduled"].min() >= 0 and frame["scheduled"].max() < 10.0
    # A healthy engine serves everything from its primary path.
    assert set(frame["outcome"]) <= SERVED_OUTCOMES
    assert (frame["status"].between(200, 299)).all()
    timed = frame[frame["feature"] == "inventory_read"]["server_timing"]
    assert timed.notna().all() and all("redis" in parse_server_timing(text) for text in timed)
    assert frame["feature"].nunique() >= 10

    load = json.loads(result.load_json_path.read_text())
    assert load["seed"] == 23 and load["model"] == "open" and "api_key" not in json.dumps(load)
    assert load["t0_epoch"] == result.t0_epoch
    assert load["result"]["sent"] == result.sent
    assert result.late == int(
        ((frame["start"] - frame["scheduled"]) > result.late_threshold_s).sum()
    )
    assert result.max_lateness_s == pytest.approx(
        float((frame["start"] - frame["scheduled"]).max())
    )
    assert result.cpu_s > 0

    # Every acknowledged write is in PostgreSQL.
    acked = [json.loads(line) for line in result.acked_writes_path.read_text().splitlines()]
    ok_writes = frame[frame["feature"].isin(["order_processing", "inventory_write"])]
    assert len(acked) == result.acked_writes == len(ok_writes) > 0
    orders = [record["id"] for record in acked if record["feature"] == "order_processing"]
    movements = [record["id"] for record in acked if record["feature"] == "inventory_write"]
    keys = [record["idempotency_key"] for record in acked]
    assert all(isinstance(value, int) for value in orders + movements)
    found = asyncio.run(committed(postgres_direct_dsn(engine_stack), orders, movements, keys))
    assert found == (len(orders), len(movements), len(keys))


@pytest.fixture
def degraded_engine(engine_stack: StagingState, engine_logs: Path) -> Iterator[EngineServer]:
    """An engine of its own with product search forced off and PostgreSQL's breaker forced
    open: shed, rejected and fallback answers all show up."""
    server = launch_engine(engine_stack, engine_logs / "engine-load-degraded.log")
    try:
        with server.admin() as admin:
            flag = admin.put("/resilience/flags/product_search", json={"forced": False})
            breaker = admin.put("/resilience/breakers/postgres", json={"state": "FORCED_OPEN"})
            assert (flag.status_code, breaker.status_code) == (200, 200)
        yield server
    finally:
        server.stop()


@pytest.mark.integration
def test_workers_record_their_shares_and_outcomes_come_from_the_answers(
    degraded_engine: EngineServer, scenario_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_load(
        scenario_file, degraded_engine.url, degraded_engine.api_key, run_dir, workers=2
    )

    assert result.ok, result.exit_codes
    assert result.generators == 2 and result.workers == 2
    parts = sorted(path.name for path in (run_dir / "parts").glob("requests-*.parquet"))
    assert len(parts) == 2
    frame = read_requests(run_dir)
    # The two shares make up the one seeded schedule.
    assert np.allclose(frame["scheduled"].to_numpy(), expected_arrivals(scenario_file))
    assert frame["scheduled"].is_monotonic_increasing
    per_part = [pq.read_table(run_dir / "parts" / name).num_rows for name in parts]
    assert sum(per_part) == len(frame) and min(per_part) >= len(frame) // 2 - 1

    by_feature = {
        str(feature): set(outcomes)
        for feature, outcomes in frame.groupby("feature", observed=True)["outcome"]
    }
    assert by_feature["product_search"] == {"shed"}  # the flag
    assert by_feature["order_processing"] == {"shed"}  # needs PostgreSQL, whose breaker is open
    assert "rejected" in by_feature["inventory_read"]  # a cache miss, refused by the breaker
    assert by_feature["health_status"] == {"ok"}
    served = frame["outcome"].isin(SERVED_OUTCOMES)
    assert (frame["status"][served].between(200, 299)).all()
    assert (frame["status"][~served] == 503).all()
    assert result.outcomes["shed"] > 0 and result.outcomes["rejected"] > 0
    # Nothing was acknowledged, so nothing is claimed.
    assert result.acked_writes == 0
    stats = [json.loads(path.read_text()) for path in (run_dir / "parts").glob("stats-*.json")]
    assert sorted(entry["role"] for entry in stats) == ["master", "worker", "worker"]


def test_only_the_locust_side_imports_locust() -> None:
    # Locust patches the whole process with gevent when imported: the modules a campaign,
    # a test or the CLI imports must not pull it in.
    code = (
        "import sys\n"
        "import loadtests.runner, loadtests.recording, loadtests.openloop, loadtests.shapes\n"
        "import loadtests.requests_mix, loadtests.plan, loadtests.config\n"
        "print(sorted(name for name in ('locust', 'gevent') if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
