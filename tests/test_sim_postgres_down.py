"""A `down` fault on PostgreSQL gives the level trajectory POLICY.md implies: OPTIMAL, then
DEGRADED while the breaker is open (score 70), then OPTIMAL again, and not before the
breaker's open time plus the dwell have passed. Inventory reads during it answer from a
fresh entry while one lasts, else from a stale copy as often as the stale ratio says."""

from __future__ import annotations

import math

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
    # Writes never answer 2xx without PostgreSQL; inventory reads come from the cache: a
    # fresh entry while it lasts, else a stale copy, else PostgreSQL's refusal.
    assert outcome["order_processing"] == {"shed"}
    assert outcome["inventory_read"] <= {"ok", "stale", "rejected", "error"}
    fresh_ttl_s = load_parameters().fresh_ttl_s["inventory"]
    inventory = during[during["feature"].astype(str) == "inventory_read"]
    fresh = inventory[inventory["outcome"].astype(str) == "ok"]
    # (Refills stop at the first read that looks for a stale copy, just after the start.)
    assert fresh["scheduled"].max() < FAULT_AT + fresh_ttl_s + 1.0
    assert outcome["dashboard_summary"] == {"stale"}
    assert outcome["health_status"] == {"ok"}
    assert set(during["status"][during["outcome"].astype(str) == "shed"]) == {503}


STALE_RATIO = 0.3


def _inventory_outage(hit_ratio: float) -> pd.DataFrame:
    """Inventory reads alone through a long PostgreSQL outage, with a stale ratio of
    STALE_RATIO; the requests of the fault phase."""
    scenario = Scenario.model_validate(
        {
            "name": "stale-ratio-test",
            "load": {"model": "open", "rate": 200, "duration": 80},
            "mix": {"inventory_read": 1},
            "faults": [{"at": 10, "duration": 60, "target": "postgres", "toxic": "down"}],
            "seed": 5,
        }
    )
    parameters = load_parameters(
        {
            "cache_hit_ratios": {"inventory": hit_ratio},
            "stale_ratios": {"inventory": STALE_RATIO},
        }
    )
    requests: pd.DataFrame = simulate_replication(
        scenario, load_policy(), parameters, 0, 5
    ).requests.to_pandas()
    return requests[(requests["scheduled"] >= 10.0) & (requests["scheduled"] < 70.0)]


def _within_sampling_error(share: float, expected: float, samples: int) -> bool:
    return abs(share - expected) < 4.0 * math.sqrt(expected * (1.0 - expected) / samples)


def test_fault_phase_stale_share_is_the_stale_ratio() -> None:
    # No fresh entries: every read during the fault needs a stale copy.
    during = _inventory_outage(hit_ratio=0.0)
    outcomes = during["outcome"].astype(str)
    assert set(outcomes) <= {"stale", "rejected", "error"}
    share = float((outcomes == "stale").mean())
    assert _within_sampling_error(share, STALE_RATIO, len(during)), share
    # Found nothing: refused by PostgreSQL's open breaker, or failed before it opened.
    assert (outcomes == "rejected").sum() > (outcomes == "error").sum()


def test_fresh_entries_lapse_then_stale_copies_answer() -> None:
    # Fresh entries answer at first, and none once their lifetime has passed; the reads
    # that found no fresh entry find a stale copy as often as the stale ratio says.
    during = _inventory_outage(hit_ratio=0.9)
    fresh_ttl_s = load_parameters().fresh_ttl_s["inventory"]
    outcomes = during["outcome"].astype(str)
    fresh = during[outcomes == "ok"]
    assert fresh["scheduled"].min() < 12.0
    assert fresh["scheduled"].max() < 10.0 + fresh_ttl_s + 1.0
    needed = during[outcomes != "ok"]
    share = float((needed["outcome"].astype(str) == "stale").mean())
    assert _within_sampling_error(share, STALE_RATIO, len(needed)), share
