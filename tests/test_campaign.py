"""`reslab campaign` end to end on a real staging stack: outage, signals, kill -9, abort."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from chaos.campaign import CampaignOptions, CampaignResult, run_campaign
from chaos.staging import StagingState
from chaos.toxiproxy import ToxiproxyClient
from tests.fixtures_campaign import assert_toxiproxy_clean

REPO = Path(__file__).resolve().parent.parent
RESLAB = [sys.executable, "-m", "reslab.cli"]

OUTAGE = """
name: campaign-outage
load: {model: open, rate: 40, duration: 45s}
mix: {inventory_read: 50, order_processing: 20, product_search: 15, dashboard_summary: 15}
warmup: 3s
faults:
  - {at: 10s, duration: 8s, target: postgres, toxic: down}
slo: {p95_ms: 1000, error_rate: 0.05, recovery_s: 30}
tolerance: {p95: 0.5, recovery_s: 10}
seed: 7
"""

# A long fault, for stopping a campaign in the middle of it.
LONG_FAULT = """
name: campaign-long-fault
load: {model: open, rate: 20, duration: 40s}
mix: {inventory_read: 60, dashboard_summary: 40}
faults:
  - {at: 2s, duration: 30s, target: redis, toxic: latency, attributes: {latency: 100}}
  - {at: 2s, duration: 30s, target: s3, toxic: down}
seed: 3
"""

ABORTING = """
name: campaign-abort
load: {model: open, rate: 40, duration: 40s}
mix: {order_processing: 60, product_search: 40}
faults:
  - {at: 3s, duration: 30s, target: postgres, toxic: down}
abort: {error_rate: 0.5, for: 3s}
seed: 5
"""


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def outage_campaign(
    campaign_stack: tuple[StagingState, Path], tmp_path_factory: pytest.TempPathFactory
) -> CampaignResult:
    state, policy = campaign_stack
    tmp = tmp_path_factory.mktemp("campaign")
    return run_campaign(
        CampaignOptions(
            scenario=str(write(tmp, "outage", OUTAGE)),
            staging_file=state.state_dir / "staging.json",
            out_dir=tmp / "runs",
            sim_replications=3,
            policy=policy,
        ),
        echo=lambda *_: None,
    )


def test_a_bad_scenario_exits_2_with_nothing_started(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad", OUTAGE.replace("target: postgres", "target: mongodb"))
    state_dir = tmp_path / "staging"
    env = {**os.environ, "RESLAB_STAGING_DIR": str(state_dir)}
    finished = subprocess.run(
        [*RESLAB, "campaign", str(bad), "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert finished.returncode == 2, finished.stderr
    assert "faults[0].target" in finished.stderr
    assert not state_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_the_outage_campaign_measures_predicts_and_rolls_back(
    outage_campaign: CampaignResult, campaign_stack: tuple[StagingState, Path]
) -> None:
    result = outage_campaign
    assert result.exit_code in (0, 1), result.messages
    assert result.measured_dir is not None and result.predicted_dir is not None
    for run in (result.measured_dir, result.predicted_dir):
        for name in ("requests.parquet", "states.parquet", "faults.parquet", "summary.json"):
            assert (run / name).exists(), f"{run.name}/{name}"
    compared = json.loads((result.measured_dir / "compare.json").read_text())
    assert {value["scope"] for value in compared["values"]} >= {"overall", "fault"}
    assert result.comparison is not None
    # Rollback: nothing left behind, as Toxiproxy itself says.
    assert_toxiproxy_clean(campaign_stack[0])
    # No acknowledged write lost.
    assert result.lost_writes is not None and result.lost_writes.ok
    assert result.lost_writes.checked > 0


def test_the_breaker_opened_and_the_levels_followed_the_policy(
    outage_campaign: CampaignResult,
) -> None:
    assert outage_campaign.measured_dir is not None
    states = pd.read_parquet(outage_campaign.measured_dir / "states.parquet")
    faults = pd.read_parquet(outage_campaign.measured_dir / "faults.parquet")
    applied = float(faults["applied_at"].iloc[0])
    removed = float(faults["removed_at"].iloc[0])
    transitions = states[
        (states["kind"] == "breaker_transition") & (states["subject"] == "postgres")
    ]
    opened = transitions[transitions["to_state"] == "OPEN"]["t"]
    assert len(opened) and applied <= opened.min() <= removed
    levels = states[states["kind"] == "level_change"].sort_values("t")
    # The default weights: postgres open is a score of 70, DEGRADED; then back to OPTIMAL.
    assert "DEGRADED" in levels["to_state"].tolist()
    assert levels["to_state"].iloc[-1] == "OPTIMAL"
    assert levels[levels["to_state"] == "DEGRADED"]["t"].min() >= applied
    summary = json.loads((outage_campaign.measured_dir / "summary.json").read_text())
    (fault,) = summary["metrics"]["faults"]
    assert fault["detection_s"]["mean"] is not None
    assert fault["recovery_s"]["mean"] is not None


def _wait_for_a_fault(state: StagingState, deadline_s: float = 60.0) -> None:
    limit = time.monotonic() + deadline_s
    with ToxiproxyClient(state.toxiproxy_url) as client:
        while time.monotonic() < limit:
            proxies = client.proxies()
            if any(not p.enabled for p in proxies.values()) or any(
                client.toxics(name) for name in proxies
            ):
                return
            time.sleep(0.2)
    pytest.fail("the campaign never applied its faults")


def _start_campaign(scenario: Path, state: StagingState, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RESLAB, "campaign", str(scenario), "--no-predict",
         "--staging", str(state.state_dir / "staging.json"), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_the_middle_of_a_fault_leaves_no_toxic(
    campaign_stack: tuple[StagingState, Path], tmp_path: Path, signum: int, exit_code: int
) -> None:
    state, _ = campaign_stack
    process = _start_campaign(write(tmp_path, "long", LONG_FAULT), state, tmp_path / "runs")
    try:
        _wait_for_a_fault(state)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == exit_code, output
    assert_toxiproxy_clean(state)


def test_after_kill_9_the_next_run_clears_the_leftovers_first(
    campaign_stack: tuple[StagingState, Path], tmp_path: Path
) -> None:
    state, _ = campaign_stack
    scenario = write(tmp_path, "long", LONG_FAULT)
    killed = _start_campaign(scenario, state, tmp_path / "runs")
    try:
        _wait_for_a_fault(state)
        killed.kill()
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    # The load generator runs in a session of its own: stop it as the operator would.
    subprocess.run(["pkill", "-f", f"locust.*--host {state.engine_url}"], check=False)
    with ToxiproxyClient(state.toxiproxy_url) as client:
        left = [name for name in client.proxies() if client.toxics(name)]
    assert left, "a kill -9 should have left the faults in place"
    short = write(
        tmp_path,
        "short",
        OUTAGE.replace("duration: 45s", "duration: 12s").replace(
            "{at: 10s, duration: 8s", "{at: 4s, duration: 4s"
        ),
    )
    rerun = _start_campaign(short, state, tmp_path / "runs2")
    output, _ = rerun.communicate(timeout=120)
    assert "cleared first" in output, output
    assert rerun.returncode in (0, 1), output
    assert_toxiproxy_clean(state)


def test_an_abort_condition_stops_the_run_and_rolls_back(
    campaign_stack: tuple[StagingState, Path], tmp_path: Path
) -> None:
    state, _ = campaign_stack
    result = run_campaign(
        CampaignOptions(
            scenario=str(write(tmp_path, "abort", ABORTING)),
            staging_file=state.state_dir / "staging.json",
            out_dir=tmp_path / "runs",
            predict=False,
        ),
        echo=lambda *_: None,
    )
    assert result.exit_code == 1, result.messages
    (replication,) = result.replications
    assert replication.aborted is not None and "error rate" in replication.aborted
    # It stopped long before the scenario's 40 s of load at 40 req/s were sent.
    assert replication.load.sent < 0.5 * 40 * 40
    assert_toxiproxy_clean(state)
