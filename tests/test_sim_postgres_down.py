"""A `down` fault on PostgreSQL gives the level trajectory POLICY.md implies: OPTIMAL, then
DEGRADED while the breaker is open (score 70), then OPTIMAL again, and not before the
breaker's open time plus the dwell have passed."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.policyfile import load_policy
from reports.summary import summarize_replication
from scenarios.schema import Scenario
from sim.model import ReplicationResult, simulate_replication
from sim.parameters import load_parameters

FAULT_AT = 20.0
FAULT_FOR = 30.0


@pytest.fixture(scope="module")
def run() -> ReplicationResult:
    scenario = Scenario.model_validate(
        {
            "name": "postgres-down-test",
            "load": {"model": "open", "rate": 200, "duration": 90},
            "faults": [
                {"at": FAULT_AT, "duration": FAULT_FOR, "target": "postgres", "toxic": "down"}
            ],
            "seed": 11,
        }
    )
    return simulate_replication(scenario, load_policy(), load_parameters(), 0, 11)


def _states(run: ReplicationResult) -> pd.DataFrame:
    states: pd.DataFrame = run.states.to_pandas()
    return states


def test_level_trajectory(run: ReplicationResult) -> None:
    states = _states(run)
    levels = states[states["kind"] == "level_change"]
    trajectory = ["OPTIMAL", *levels["to_state"].tolist()]
    assert trajectory[0] == "OPTIMAL" and trajectory[-1] == "OPTIMAL"
    assert "DEGRADED" in trajectory
    # A PostgreSQL outage alone never takes the level below DEGRADED (score 70).
    assert set(trajectory) == {"OPTIMAL", "DEGRADED"}
    assert levels["t"].iloc[0] >= FAULT_AT


def test_breaker_cycle_and_score(run: ReplicationResult) -> None:
    states = _states(run)
    breaker = states[(states["kind"] == "breaker_transition") & (states["subject"] == "postgres")]
    assert breaker["to_state"].tolist() == ["OPEN", "HALF_OPEN", "CLOSED"]
    opened, half_open = breaker["t"].iloc[0], breaker["t"].iloc[1]
    assert FAULT_AT <= opened < FAULT_AT + FAULT_FOR
    assert half_open >= opened + load_policy().breakers["postgres"].open_s
    samples = states[
        (states["kind"] == "sample") & (states["t"] > opened) & (states["t"] < half_open)
    ]
    assert len(samples) > 20
    assert set(samples["score"]) == {70.0}
    assert set(samples["level"]) == {"DEGRADED"}
    other = states[(states["kind"] == "breaker_transition") & (states["subject"] != "postgres")]
    assert other.empty


def test_recovery_not_before_open_time_plus_dwell(run: ReplicationResult) -> None:
    policy = load_policy()
    states = _states(run)
    opened = states[(states["kind"] == "breaker_transition") & (states["to_state"] == "OPEN")][
        "t"
    ].iloc[0]
    back = states[(states["kind"] == "level_change") & (states["to_state"] == "OPTIMAL")]["t"].iloc[
        -1
    ]
    assert back >= opened + policy.breakers["postgres"].open_s + policy.levels.dwell_s
    # ... and not much later: one tick after the dwell once the trial call has closed it.
    assert (
        back
        <= opened
        + policy.breakers["postgres"].open_s
        + policy.levels.dwell_s
        + 2 * policy.levels.tick_s
    )

    summary = summarize_replication(
        run.requests.to_pandas(), states, run.faults.to_pandas(), slo_p95_ms=250.0, duration_s=90.0
    )
    (fault,) = summary["faults"]
    assert fault["detection_s"] == pytest.approx(opened - FAULT_AT)
    assert fault["recovery_s"] is not None
    assert FAULT_AT + FAULT_FOR + fault["recovery_s"] >= back - 1e-9


def test_requests_during_the_outage(run: ReplicationResult) -> None:
    requests = run.requests.to_pandas()
    states = _states(run)
    opened = states[(states["kind"] == "breaker_transition") & (states["to_state"] == "OPEN")][
        "t"
    ].iloc[0]
    during = requests[(requests["scheduled"] > opened) & (requests["end"] < FAULT_AT + FAULT_FOR)]
    outcome = during.groupby(during["feature"].astype(str))["outcome"].agg(
        lambda x: set(x.astype(str))
    )
    # Writes never answer 2xx without PostgreSQL; inventory reads come from the cache.
    assert outcome["order_processing"] == {"shed"}
    assert outcome["inventory_read"] <= {"stale", "error"}
    assert outcome["dashboard_summary"] == {"stale"}
    assert outcome["health_status"] == {"ok"}
    assert set(during["status"][during["outcome"].astype(str) == "shed"]) == {503}
