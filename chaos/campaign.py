"""`reslab campaign`: one scenario, run for real and predicted, side by side.

In order, for each replication: the staging stack (a running one, or started here); the
rollback guard (which first clears what a killed run left); a warm-up; then, from one t = 0,
the Locust load (a subprocess), the fault schedule, the observer of the engine's events and
the steady-state monitor; rollback; the measured tables. Then the acknowledged writes are
checked in PostgreSQL, the simulator is calibrated from this campaign's baseline phase (when
it has one) and run on the same scenario, and the two summaries are compared.

Exit codes: 0 everything holds; 1 an SLO or tolerance breached, a run aborted, or an
acknowledged write lost; 2 bad input (nothing started); 3 infrastructure failure (staging,
Toxiproxy, the load generator).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chaos.faults import FaultInjectionError, FaultScheduler, RunClock
from chaos.observer import EngineObserver, LostWrites, verify_acknowledged_writes
from chaos.rollback import RollbackError, RollbackGuard, default_lock_path, exit_code_for
from chaos.staging import StagingError, StagingStack, StagingState
from chaos.steady_state import PrometheusErrorSource, SteadyStateMonitor
from chaos.toxiproxy import ToxiproxyClient, ToxiproxyError
from engine.policyfile import DEFAULT_POLICY, PolicyFileError, load_policy
from loadtests.runner import LoadResult, LoadRunError, start_load
from reports.compare import COMPARE_FILE, Comparison, compare_run_dirs, format_comparison
from reports.runfolder import (
    FAULTS_FILE,
    REQUESTS_FILE,
    STATES_FILE,
    faults_table,
    new_run_dir,
    states_table,
    write_summary,
)
from reports.summary import summarize_run
from scenarios import Scenario, ScenarioError, load_scenario, resolve_scenario_path, scenario_hash
from sim.runfolder import file_hash, software_versions

EXIT_OK, EXIT_BREACHED, EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE = 0, 1, 2, 3
DEFAULT_RUNS_DIR = Path("runs")
WARMUP_S = 3.0
# t = 0 lies this far ahead of the load's start, so every part is ready when it comes.
START_LEAD_S = 3.0


class CampaignError(RuntimeError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class CampaignOptions:
    scenario: str
    replications: int = 1
    workers: int = 0
    predict: bool = True
    staging_file: Path | None = None
    out_dir: Path = DEFAULT_RUNS_DIR
    sim_replications: int = 10
    policy: Path | None = None
    duration_override: float | None = None


@dataclass
class ReplicationOutcome:
    replication: int
    load: LoadResult
    aborted: str | None
    rollback: str
    leftovers: str | None
    observer_errors: list[str]


@dataclass
class CampaignResult:
    exit_code: int
    measured_dir: Path | None = None
    predicted_dir: Path | None = None
    comparison: Comparison | None = None
    lost_writes: LostWrites | None = None
    replications: list[ReplicationOutcome] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


# --- staging ---------------------------------------------------------------------------------


def _staging(options: CampaignOptions) -> StagingState:
    if options.staging_file is not None:
        stack = StagingStack(state_dir=options.staging_file.parent)
        state = stack.load_state()
        if state is None:
            raise CampaignError(f"{options.staging_file}: no staging stack there", EXIT_BAD_INPUT)
        if not stack.healthy():
            raise CampaignError(
                f"the staging stack of {options.staging_file} is not healthy "
                "(`reslab staging status`)",
                EXIT_INFRASTRUCTURE,
            )
        return state
    return StagingStack().up()


def _warm_up(state: StagingState) -> None:
    """A few seconds of reads so that caches, pools and the engine's code paths are warm."""
    headers = {"X-API-Key": state.api_key}
    paths = ["/api/summary", "/api/recommendations"] + [
        f"/api/inventory/SKU-{number:06d}" for number in range(1, 41)
    ]
    deadline = time.monotonic() + WARMUP_S
    with httpx.Client(base_url=state.engine_url, headers=headers, timeout=5.0) as client:
        while time.monotonic() < deadline:
            for path in paths:
                # A dependency still waking up is no reason to stop: the load will tell.
                with contextlib.suppress(httpx.HTTPError):
                    client.get(path)


# --- one measured replication --------------------------------------------------------------


def _run_replication(
    scenario: Scenario,
    scenario_path: Path,
    state: StagingState,
    options: CampaignOptions,
    replication: int,
    load_dir: Path,
) -> tuple[ReplicationOutcome, pa.Table, pa.Table]:
    lock_path = default_lock_path(state.state_dir)
    with RollbackGuard(state.toxiproxy_url, lock_path=lock_path, label=scenario.name) as guard:
        leftovers = guard.leftovers.describe() if guard.leftovers else None
        _warm_up(state)
        # One t = 0 for the load (wall clock, another process) and for the faults and the
        # observer (monotonic clock, this process), read together.
        run_clock = RunClock(time.monotonic() + START_LEAD_S, time.time() + START_LEAD_S)
        t0_epoch = run_clock.t0_wall
        load = start_load(
            scenario_path,
            state.engine_url,
            state.api_key,
            load_dir,
            options.workers,
            options.duration_override,
            t0_epoch=t0_epoch,
        )
        stop = threading.Event()

        def stop_all(*_: object) -> None:
            stop.set()

        observer = EngineObserver(
            state.engine_url, state.api_key, run_clock, replication=replication
        )
        client = ToxiproxyClient(state.toxiproxy_url)
        scheduler = FaultScheduler(
            scenario.faults,
            client,
            guard.ledger,
            run_clock.t0_monotonic,
            replication=replication,
            on_failure=stop_all,
        )
        monitor = (
            SteadyStateMonitor(
                scenario.abort,
                PrometheusErrorSource(state.engine_url),
                run_clock.t0_monotonic,
                on_violation=stop_all,
            )
            if scenario.abort is not None
            else None
        )
        finished = threading.Event()
        loaded: list[LoadResult] = []

        def wait_for_load() -> None:
            try:
                loaded.append(load.wait())
            finally:
                finished.set()

        try:
            with contextlib.ExitStack() as running:
                running.enter_context(observer.running())
                running.enter_context(scheduler.running())
                if monitor is not None:
                    running.enter_context(monitor.running())
                threading.Thread(target=wait_for_load, name="load", daemon=True).start()
                while not finished.wait(0.2):
                    if stop.is_set():
                        load.stop()  # an abort or a refused fault: end the load now
                        break
                finished.wait()
        finally:
            load.stop()
            client.close()
        if not loaded:
            raise LoadRunError("the load generator did not report")
        result = loaded[0]
    scheduler.raise_if_failed()
    violation = monitor.violation if monitor is not None else None
    aborted = violation.reason if violation is not None else None
    faults = scheduler.table()
    # A fault never applied (the run aborted first) is not a fault "as actually applied".
    applied = faults.filter(pa.compute.is_valid(faults["applied_at"]))
    outcome = ReplicationOutcome(
        replication=replication,
        load=result,
        aborted=aborted,
        rollback=guard.report.describe() if guard.report else "nothing to roll back",
        leftovers=leftovers,
        observer_errors=list(observer.poll_errors),
    )
    return outcome, applied, observer.table()


# --- the campaign ----------------------------------------------------------------------------


def _measured_summary(
    scenario: Scenario,
    scenario_path: Path,
    policy_path: Path,
    run_dir: Path,
    outcomes: Sequence[ReplicationOutcome],
    lost: LostWrites | None,
) -> dict[str, Any]:
    abort = (scenario.abort.error_rate, scenario.abort.duration) if scenario.abort else None
    metrics, per_replication = summarize_run(
        run_dir,
        slo_p95_ms=float(scenario.slo.p95_ms),
        warmup_s=float(scenario.warmup),
        duration_s=float(scenario.duration_s),
        abort=abort,
    )
    return {
        "source": "measured",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": {
            "name": scenario.name,
            "path": str(scenario_path),
            "hash": scenario_hash(scenario),
            "duration_s": float(scenario.duration_s),
            "warmup_s": float(scenario.warmup),
            "slo": scenario.slo.model_dump(),
            "tolerance": scenario.tolerance.model_dump(),
        },
        # The engine runs the staging stack's policy file; this is the one it was given.
        "policy": {
            "name": load_policy(policy_path).name,
            "path": str(policy_path),
            "hash": file_hash(policy_path),
        },
        "seed": scenario.seed,
        "software": software_versions(),
        "command": " ".join(sys.argv),
        "replications": len(outcomes),
        "load": [
            {
                "replication": outcome.replication,
                "sent": outcome.load.sent,
                "answered": outcome.load.answered,
                "late": outcome.load.late,
                "max_lateness_s": outcome.load.max_lateness_s,
                "achieved_rate": outcome.load.achieved_rate,
                "acked_writes": outcome.load.acked_writes,
                "aborted": outcome.aborted,
                "rollback": outcome.rollback,
                "leftovers_cleared_first": outcome.leftovers,
                "observer_errors": outcome.observer_errors[:20],
            }
            for outcome in outcomes
        ],
        "acknowledged_writes": None
        if lost is None
        else {
            "checked": lost.checked,
            "lost": len(lost.lost),
            "describe": lost.describe(),
        },
        "metrics": metrics,
        "per_replication": [
            {key: value for key, value in row.items() if key != "levels"} for row in per_replication
        ],
    }


def _merge_requests(run_dir: Path, load_dirs: Sequence[Path]) -> None:
    tables = []
    for replication, load_dir in enumerate(load_dirs):
        table = pq.read_table(load_dir / REQUESTS_FILE)
        column = pa.array([replication] * table.num_rows, pa.int32())
        tables.append(
            table.set_column(table.schema.get_field_index("replication"), "replication", column)
        )
    pq.write_table(pa.concat_tables(tables), run_dir / REQUESTS_FILE)


def _concat_acked(run_dir: Path, load_dirs: Sequence[Path]) -> Path:
    target = run_dir / "acked_writes.jsonl"
    with target.open("w", encoding="utf-8") as out:
        for load_dir in load_dirs:
            path = load_dir / "acked_writes.jsonl"
            if path.exists():
                out.write(path.read_text(encoding="utf-8"))
    return target


def run_campaign(options: CampaignOptions, echo: Any = print) -> CampaignResult:
    # Bad input fails here, before anything starts.
    try:
        scenario_path = resolve_scenario_path(options.scenario)
        scenario = load_scenario(scenario_path)
        policy_path = options.policy or DEFAULT_POLICY
        load_policy(policy_path)
    except (ScenarioError, PolicyFileError, FileNotFoundError) as error:
        return CampaignResult(EXIT_BAD_INPUT, messages=[str(error)])
    if options.replications < 1 or options.workers < 0:
        return CampaignResult(EXIT_BAD_INPUT, messages=["replications >= 1 and workers >= 0"])
    if options.policy is not None and options.predict:
        echo("note: the engine runs the staging stack's policy; --policy applies to the prediction")

    result = CampaignResult(EXIT_OK)
    try:
        state = _staging(options)
    except (StagingError, CampaignError) as error:
        code = error.exit_code if isinstance(error, CampaignError) else EXIT_INFRASTRUCTURE
        return CampaignResult(code, messages=[f"staging: {error}"])

    run_dir = new_run_dir(options.out_dir, f"{scenario.name}-measured")
    result.measured_dir = run_dir
    load_dirs: list[Path] = []
    faults: list[pa.Table] = []
    states: list[pa.Table] = []
    try:
        for replication in range(options.replications):
            echo(
                f"replication {replication + 1}/{options.replications}: "
                f"{scenario.duration_s:g} s of load against {state.engine_url}"
            )
            load_dir = run_dir / "load" / str(replication)
            load_dirs.append(load_dir)
            outcome, fault_rows, state_rows = _run_replication(
                scenario, scenario_path, state, options, replication, load_dir
            )
            result.replications.append(outcome)
            faults.append(fault_rows)
            states.append(state_rows)
            echo(f"  sent {outcome.load.sent}, late {outcome.load.late}; {outcome.rollback}")
            if outcome.leftovers:
                echo(f"  cleared first, left by an earlier run: {outcome.leftovers}")
            if outcome.aborted:
                echo(f"  ABORTED: {outcome.aborted}")
    except (
        FaultInjectionError,
        RollbackError,
        ToxiproxyError,
        LoadRunError,
        StagingError,
    ) as error:
        result.exit_code = EXIT_INFRASTRUCTURE
        result.messages.append(f"infrastructure: {error}")
        return result
    except (KeyboardInterrupt, SystemExit) as error:
        result.exit_code = exit_code_for(error)
        result.messages.append(f"interrupted: {type(error).__name__}; rollback done")
        return result

    _merge_requests(run_dir, load_dirs)
    pq.write_table(pa.concat_tables(faults) if faults else faults_table([]), run_dir / FAULTS_FILE)
    pq.write_table(pa.concat_tables(states) if states else states_table([]), run_dir / STATES_FILE)
    acked = _concat_acked(run_dir, load_dirs)
    try:
        result.lost_writes = verify_acknowledged_writes(state.url("postgres"), acked)
    except Exception as error:  # the database itself is unreachable: infrastructure
        result.messages.append(f"could not check acknowledged writes: {error}")
        result.exit_code = EXIT_INFRASTRUCTURE
    summary = _measured_summary(
        scenario, scenario_path, policy_path, run_dir, result.replications, result.lost_writes
    )
    write_summary(run_dir, summary)

    from sim import format_summary, run_simulation
    from sim.calibrate import calibrate_run

    echo("")
    echo(format_summary(summary))
    if options.predict:
        calibration: Path | None = None
        if summary["metrics"]["phases"]["baseline"]["requests"]["mean"]:
            try:
                calibration = calibrate_run(run_dir)
            except (ValueError, OSError) as error:
                result.messages.append(f"calibration skipped: {error}")
        predicted_dir = run_simulation(
            scenario_path,
            replications=options.sim_replications,
            policy_path=options.policy,
            calibration_path=calibration,
            out_dir=options.out_dir,
            progress=False,
        )
        result.predicted_dir = predicted_dir
        predicted = json.loads((predicted_dir / "summary.json").read_text(encoding="utf-8"))
        echo("")
        echo(format_summary(predicted))
        comparison = compare_run_dirs(predicted_dir, run_dir, scenario)
        result.comparison = comparison
        (run_dir / COMPARE_FILE).write_text(
            json.dumps(comparison.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
        echo("")
        echo(format_comparison(comparison))
        if not comparison.holds and result.exit_code == EXIT_OK:
            result.exit_code = EXIT_BREACHED
    if result.lost_writes is not None and not result.lost_writes.ok:
        result.messages.append(result.lost_writes.describe())
        result.exit_code = result.exit_code or EXIT_BREACHED
    if any(outcome.aborted for outcome in result.replications):
        result.exit_code = result.exit_code or EXIT_BREACHED
    return result


def format_result(result: CampaignResult) -> str:
    lines = list(result.messages)
    if result.measured_dir:
        lines.append(f"measured run:  {result.measured_dir}")
    if result.predicted_dir:
        lines.append(f"predicted run: {result.predicted_dir}")
    if result.lost_writes is not None:
        lines.append(f"acknowledged writes: {result.lost_writes.describe()}")
    verdict = {
        EXIT_OK: "holds",
        EXIT_BREACHED: "breached",
        EXIT_BAD_INPUT: "bad input",
        EXIT_INFRASTRUCTURE: "infrastructure failure",
    }.get(result.exit_code, "interrupted")
    lines.append(f"campaign: {verdict} (exit {result.exit_code})")
    return "\n".join(lines)


def requests_frame(run_dir: Path) -> pd.DataFrame:
    """The measured requests of a campaign's run folder (for notebooks and tests)."""
    frame: pd.DataFrame = pq.read_table(run_dir / REQUESTS_FILE).to_pandas()
    return frame
