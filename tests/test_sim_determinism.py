"""The same seed gives the same requests table, whatever ran in between."""

from __future__ import annotations

import pyarrow.parquet as pq

from engine.policyfile import load_policy
from scenarios.schema import Scenario
from sim import run_simulation
from sim.model import simulate_replication
from sim.parameters import load_parameters


def _scenario(seed: int) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "determinism",
            "load": {"model": "open", "rate": 150, "duration": 40},
            "faults": [
                {
                    "at": 5,
                    "duration": 10,
                    "target": "redis",
                    "toxic": "latency",
                    "attributes": {"latency": 60, "jitter": 20},
                    "toxicity": 0.4,
                },
                {"at": 15, "duration": 10, "target": "postgres", "toxic": "down"},
                {"at": 20, "duration": 10, "target": "openai", "toxic": "timeout"},
            ],
            "seed": seed,
        }
    )


def test_same_seed_same_requests() -> None:
    policy, parameters = load_policy(), load_parameters()
    first = simulate_replication(_scenario(3), policy, parameters, 0, 3)
    simulate_replication(_scenario(4), policy, parameters, 0, 4)  # something in between
    again = simulate_replication(_scenario(3), policy, parameters, 0, 3)
    assert first.requests.num_rows > 5000
    assert first.requests.equals(again.requests)
    assert first.states.equals(again.states)


def test_other_seed_other_requests() -> None:
    policy, parameters = load_policy(), load_parameters()
    one = simulate_replication(_scenario(3), policy, parameters, 0, 3)
    other = simulate_replication(_scenario(3), policy, parameters, 1, 3)
    assert not one.requests.equals(other.requests)


def test_run_folder_does_not_depend_on_jobs(tmp_path) -> None:
    scenario = Scenario.model_validate(
        {
            "name": "jobs",
            "load": {"model": "closed", "users": 20, "wait": "0.1s..0.3s", "duration": 15},
            "seed": 5,
        }
    )
    serial = run_simulation(
        scenario, replications=2, jobs=1, out_dir=tmp_path / "a", progress=False
    )
    parallel = run_simulation(
        scenario, replications=2, jobs=2, out_dir=tmp_path / "b", progress=False
    )
    assert pq.read_table(serial / "requests.parquet").equals(
        pq.read_table(parallel / "requests.parquet")
    )
