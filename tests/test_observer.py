"""The observer: the engine's events recorded in order, at the run times the engine stamped
on them, with a status sample each second; and the check that every acknowledged write is
in PostgreSQL.

Transitions are caused on demand through the admin endpoint (forcing the Redis breaker
open, then back to normal), so their moment is known to within one request's round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.faults import RunClock
from chaos.observer import (
    AckedWrite,
    EngineObserver,
    event_row,
    read_acked_writes,
    verify_acknowledged_writes,
)
from chaos.staging import StagingState
from reports.runfolder import STATES_SCHEMA
from tests.fixtures_engine import EngineServer, launch_engine, postgres_direct_dsn

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
# A run time computed from the engine's stamp may differ from ours by rounding only; with
# the wall clock, by the offset drift between the two clocks over the test's seconds.
STAMP_SLACK_S = 0.02


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def observed_engine(
    engine_stack: StagingState, fast_policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineServer]:
    """An engine of its own: this module forces its breakers (a 1 s dwell, so that the
    level comes back within the test)."""
    log = tmp_path_factory.mktemp("observer") / "engine.log"
    server = launch_engine(engine_stack, log, policy=fast_policy)
    yield server
    server.stop()


def _kinds(observer: EngineObserver, kind: str) -> list[dict[str, Any]]:
    return [row for row in observer.rows() if row["kind"] == kind]


def test_events_are_recorded_in_order_at_the_engines_run_times(
    observed_engine: EngineServer,
) -> None:
    engine = observed_engine
    run_clock = RunClock.start_now()
    # The same events through both conversions: the engine's monotonic stamp (same host)
    # and its wall-clock stamp.
    by_monotonic = EngineObserver(engine.url, engine.api_key, run_clock, replication=3)
    by_wall = EngineObserver(engine.url, engine.api_key, run_clock, clock_basis="wall")
    with by_monotonic.running(), by_wall.running(), engine.admin() as admin:
        wait_until(lambda: len(_kinds(by_monotonic, "sample")) >= 1, "a first status sample")
        opened_from = run_clock.now()
        response = admin.put("/resilience/breakers/redis", json={"state": "FORCED_OPEN"})
        opened_to = run_clock.now()
        assert response.status_code == 200, response.text
        wait_until(
            lambda: any(r["level"] == "DEGRADED" for r in _kinds(by_monotonic, "sample")),
            "a DEGRADED sample",
        )
        closed_from = run_clock.now()
        response = admin.put("/resilience/breakers/redis", json={"state": None})
        closed_to = run_clock.now()
        assert response.status_code == 200, response.text
        wait_until(
            lambda: any(r["to_state"] == "OPTIMAL" for r in _kinds(by_monotonic, "level_change")),
            "the level back to OPTIMAL",
        )
        wait_until(lambda: by_wall.since == by_monotonic.since, "both observers at the same event")
    assert by_monotonic.clock_basis == "monotonic" and by_wall.clock_basis == "wall"
    assert by_monotonic.poll_errors == [] and by_wall.poll_errors == []

    # In the engine's order, each once, with non-decreasing run times.
    seqs = [event["seq"] for event in by_monotonic.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    event_rows = [row for row in by_monotonic.rows() if row["kind"] != "sample"]
    assert len(event_rows) == len(seqs)
    times = [row["t"] for row in event_rows]
    assert times == sorted(times)

    transitions = _kinds(by_monotonic, "breaker_transition")
    assert [(r["subject"], r["from_state"], r["to_state"]) for r in transitions] == [
        ("redis", "CLOSED", "FORCED_OPEN"),
        ("redis", "FORCED_OPEN", "CLOSED"),
    ]
    # Stamped when the engine made the change: inside the admin request's round trip.
    assert opened_from - STAMP_SLACK_S <= transitions[0]["t"] <= opened_to + STAMP_SLACK_S
    assert closed_from - STAMP_SLACK_S <= transitions[1]["t"] <= closed_to + STAMP_SLACK_S
    assert transitions[0]["level"] == "DEGRADED" and transitions[0]["replication"] == 3

    levels = _kinds(by_monotonic, "level_change")
    assert (levels[0]["from_state"], levels[0]["to_state"], levels[0]["score"]) == (
        "OPTIMAL", "DEGRADED", 85.0,
    )  # fmt: skip
    assert levels[0]["t"] >= transitions[0]["t"]
    assert levels[-1]["to_state"] == "OPTIMAL" and levels[-1]["t"] > transitions[1]["t"]

    # Both conversions agree on every event.
    wall_times = {
        e["seq"]: row["t"] for e, row in zip(by_wall.events, _event_rows(by_wall), strict=True)
    }
    for event, row in zip(by_monotonic.events, event_rows, strict=True):
        assert abs(wall_times[event["seq"]] - row["t"]) < STAMP_SLACK_S

    # A status sample at each whole second of run time, with the score, level and ETA.
    samples = _kinds(by_monotonic, "sample")
    assert len(samples) >= 2
    for sample in samples:
        assert abs(sample["t"] - round(sample["t"])) < 0.25
        assert sample["level"] in ("OPTIMAL", "DEGRADED")
        assert 0.0 <= sample["score"] <= 100.0 and sample["eta_s"] >= 0.0
    assert by_monotonic.table().schema.equals(STATES_SCHEMA)


def _event_rows(observer: EngineObserver) -> list[dict[str, Any]]:
    return [row for row in observer.rows() if row["kind"] != "sample"]


def test_every_kind_of_event_becomes_a_row_as_the_simulator_writes_it() -> None:
    flag = event_row(
        {"kind": "flag_change", "feature": "batch_import", "forced": False}, 1.5, 0, "OPTIMAL"
    )
    assert (flag["subject"], flag["to_state"], flag["level"]) == ("batch_import", "off", "OPTIMAL")
    feature = event_row(
        {"kind": "feature_change", "feature": "ai_recommendations", "from_mode": "primary",
         "to_mode": "fallback", "reason": "level"},
        2.0, 1, "DEGRADED",
    )  # fmt: skip
    assert (feature["subject"], feature["from_state"], feature["to_state"]) == (
        "ai_recommendations", "primary", "fallback",
    )  # fmt: skip
    recovery = event_row(
        {"kind": "recovery_observed", "predicted_s": 42.0, "actual_s": 40.5,
         "confidence": "low"},
        3.0, 0, "OPTIMAL",
    )  # fmt: skip
    assert recovery["reason"] == "predicted 42 s, took 40.5 s (low confidence)"
    assert set(flag) == set(STATES_SCHEMA.names)


# --------------------------------------------------------------------------- acknowledged writes


def _place_writes(engine: EngineServer, count: int) -> list[AckedWrite]:
    acked: list[AckedWrite] = []
    with engine.client() as client:
        for n in range(count):
            key = f"observer-{uuid.uuid4().hex}"
            if n % 2:
                response = client.post(
                    "/api/orders",
                    json={"customer_ref": "observer-test",
                          "lines": [{"sku": "SKU-000003", "quantity": 1}]},
                    headers={"Idempotency-Key": key},
                )  # fmt: skip
                assert response.status_code == 201, response.text
                acked.append(AckedWrite("order", int(response.json()["order_id"]), key))
            else:
                response = client.post(
                    "/api/inventory/SKU-000003/adjustments",
                    json={"delta": 1, "reason": "receipt"},
                )
                assert response.status_code == 201, response.text
                acked.append(AckedWrite("adjustment", int(response.json()["movement_id"]), None))
    return acked


def test_a_lost_acknowledged_write_is_reported(
    engine_stack: StagingState, observed_engine: EngineServer, tmp_path: Path
) -> None:
    acked = _place_writes(observed_engine, 6)
    never_written = [
        AckedWrite("order", max(w.id or 0 for w in acked) + 1_000_000_000, None),
        AckedWrite("adjustment", None, f"never-sent-{uuid.uuid4().hex}"),
        # A real order's id under a key that was never used: half of it is missing.
        AckedWrite("order", acked[1].id, f"never-sent-{uuid.uuid4().hex}"),
    ]
    path = tmp_path / "acked-writes.jsonl"
    path.write_text("".join(w.to_json_line() + "\n" for w in [*acked, *never_written]))

    verdict = verify_acknowledged_writes(postgres_direct_dsn(engine_stack), path)
    assert verdict.failed and verdict.checked == 9
    assert verdict.by_kind == {"order": 5, "adjustment": 4}
    lost = {(lost.write.line, lost.missing) for lost in verdict.lost}
    assert lost == {
        (7, (f"orders.id = {never_written[0].id}",)),
        (8, ("idempotency_keys[inventory_write]",)),
        (9, ("idempotency_keys[order_processing]",)),
    }
    assert "3 of 9 acknowledged writes LOST" in verdict.describe()

    path.write_text("".join(w.to_json_line() + "\n" for w in acked))
    assert verify_acknowledged_writes(postgres_direct_dsn(engine_stack), path).ok


def test_the_acknowledged_writes_file_is_read_strictly(tmp_path: Path) -> None:
    path = tmp_path / "acked-writes.jsonl"
    good = json.dumps({"kind": "order", "id": 1, "idempotency_key": None, "t": 3.2})
    # A last line cut short by a crash is skipped: that write was never fully recorded.
    path.write_text(f"{good}\n\n{good}\n" + '{"kind": "order", "i')
    assert [w.line for w in read_acked_writes(path)] == [1, 3]
    for line, message in (
        ('{"kind": "refund", "id": 1}', "kind must be one of"),
        ('{"kind": "order"}', "neither id nor idempotency_key"),
        ('{"kind": "order", "id": "7"}', "id must be an integer"),
        ("not json at all}", "not JSON"),
    ):
        path.write_text(f"{good}\n{line}\n")
        with pytest.raises(ValueError, match=rf"acked-writes.jsonl:2: {message}"):
            read_acked_writes(path)
