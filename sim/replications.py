"""N replications of a scenario, in parallel processes, written as one run folder.

Replication r runs with the seed sequence (scenario seed, r), so its result does not depend
on how many processes ran or in which order they finished; the folder is written in
replication order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.policy import PolicyConfig
from engine.policyfile import DEFAULT_POLICY, load_policy
from reports.runfolder import RequestsWriter, new_run_dir
from reports.summary import aggregate, summarize_replication
from scenarios.loader import load_scenario, resolve_scenario_path, scenario_hash
from scenarios.schema import Scenario
from sim.model import ReplicationResult, simulate_replication
from sim.parameters import ModelParameters, load_parameters
from sim.runfolder import predicted_summary, write_predicted_summary, write_tables

DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True, slots=True)
class ReplicationOutput:
    result: ReplicationResult
    summary: dict[str, Any]
    wall_s: float
    peak_rss_bytes: int


def _peak_rss_bytes() -> int:
    import resource

    # ru_maxrss is in kilobytes on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_replication(
    scenario: Scenario,
    policy: PolicyConfig,
    parameters: ModelParameters,
    replication: int,
    seed: int,
) -> ReplicationOutput:
    """One replication and its metrics (run in a worker process)."""
    started = time.perf_counter()
    result = simulate_replication(scenario, policy, parameters, replication, seed)
    summary = summarize_replication(
        result.requests.to_pandas(),
        result.states.to_pandas(),
        result.faults.to_pandas(),
        slo_p95_ms=scenario.slo.p95_ms,
        warmup_s=scenario.warmup,
        duration_s=scenario.duration_s,
        abort=(scenario.abort.error_rate, scenario.abort.duration) if scenario.abort else None,
    )
    return ReplicationOutput(result, summary, time.perf_counter() - started, _peak_rss_bytes())


def _default_jobs(replications: int) -> int:
    return max(1, min(replications, os.cpu_count() or 1))


def run_replications(
    scenario: Scenario,
    policy: PolicyConfig,
    parameters: ModelParameters,
    replications: int,
    seed: int,
    jobs: int | None = None,
    progress: bool = False,
) -> Iterator[ReplicationOutput]:
    """The replications' outputs, in replication order, as soon as each is next in line."""
    jobs = _default_jobs(replications) if jobs is None else max(1, jobs)
    bar = tqdm(
        total=replications, desc=f"simulating {scenario.name}", unit="rep", disable=not progress
    )
    try:
        if jobs == 1:
            for replication in range(replications):
                yield run_replication(scenario, policy, parameters, replication, seed)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures: dict[Future[ReplicationOutput], int] = {
                pool.submit(run_replication, scenario, policy, parameters, r, seed): r
                for r in range(replications)
            }
            ready: dict[int, ReplicationOutput] = {}
            next_out = 0
            for future in as_completed(futures):
                ready[futures[future]] = future.result()
                bar.update()
                while next_out in ready:
                    yield ready.pop(next_out)
                    next_out += 1
    finally:
        bar.close()


def run_simulation(
    scenario_path: str | Path | Scenario,
    replications: int = 10,
    jobs: int | None = None,
    policy_path: str | Path | None = None,
    calibration_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Simulate a scenario `replications` times and write the run folder; returns its path.

    `scenario_path` is a file, a catalog name (``postgres-outage``) or a `Scenario`. The run
    folder goes under `out_dir` (default ``runs/``) as ``<scenario>-<UTC timestamp>/``.
    """
    if replications < 1:
        raise ValueError("replications must be at least 1")
    if isinstance(scenario_path, Scenario):
        scenario, source_path = scenario_path, None
    else:
        source_path = resolve_scenario_path(scenario_path)
        scenario = load_scenario(source_path)
    policy = load_policy(policy_path)
    parameters = load_parameters(calibration_path)
    # Without a seed in the scenario each run draws its own, and the summary records it.
    seed = (
        scenario.seed
        if scenario.seed is not None
        else int(np.random.SeedSequence().generate_state(1)[0])
    )
    run_dir = new_run_dir(out_dir if out_dir is not None else DEFAULT_RUNS_DIR, scenario.name)
    started = time.perf_counter()
    states, faults, summaries = [], [], []
    with RequestsWriter(run_dir) as writer:
        for output in run_replications(
            scenario, policy, parameters, replications, seed, jobs, progress
        ):
            writer.write(output.result.requests)
            states.append(output.result.states)
            faults.append(output.result.faults)
            summaries.append(output.summary)
    write_tables(run_dir, states, faults)
    summary = predicted_summary(
        scenario=scenario,
        scenario_path=source_path,
        scenario_hash=scenario_hash(scenario),
        policy_name=policy.name,
        policy_path=Path(policy_path) if policy_path is not None else DEFAULT_POLICY,
        calibration_path=Path(calibration_path) if calibration_path is not None else None,
        calibration_hash=parameters.hash,
        seed=seed,
        replications=replications,
        metrics=aggregate(summaries),
        per_replication=summaries,
        wall_s=time.perf_counter() - started,
    )
    write_predicted_summary(run_dir, summary)
    return run_dir
