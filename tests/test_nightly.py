"""`reslab nightly`: a suite of campaigns → JUnit XML, a summary JSON and an exit code."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chaos.nightly import SuiteError, load_suite, nightly_main, run_suite
from chaos.staging import StagingState
from tests.fixtures_campaign import assert_toxiproxy_clean

SHORT = """
name: nightly-short
load: {model: open, rate: 30, duration: 20s}
mix: {inventory_read: 70, dashboard_summary: 30}
warmup: 2s
faults:
  - {at: 5s, duration: 4s, target: redis, toxic: down}
slo: {p95_ms: 2000, error_rate: 0.5, recovery_s: 15}
tolerance: {p95: 0.5, recovery_s: 10}
seed: 4
"""


def test_a_suite_names_its_bad_field(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("scenarios:\n  - {scenario: postgres-blip, replicas: 2}\n")
    with pytest.raises(SuiteError, match=r"scenarios\[0\].replicas: unknown option"):
        load_suite(suite)
    suite.write_text("scenarios: [no-such-scenario]\n")
    with pytest.raises(SuiteError, match=r"scenarios\[0\].scenario"):
        load_suite(suite)
    assert nightly_main([str(suite)]) == 2


def test_the_shipped_suites_load() -> None:
    for path in Path("scenarios/suites").glob("*.yaml"):
        assert load_suite(path).entries


def test_a_suite_writes_junit_and_a_summary(
    campaign_stack: tuple[StagingState, Path], tmp_path: Path
) -> None:
    state, policy = campaign_stack
    scenario = tmp_path / "short.yaml"
    scenario.write_text(SHORT)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        f"name: check\nout: {tmp_path / 'out'}\nstaging: {state.state_dir / 'staging.json'}\n"
        f"defaults: {{sim_replications: 2, policy: {policy}}}\nscenarios:\n  - {scenario}\n"
    )
    suite = load_suite(suite_file)
    code = run_suite(suite, echo=lambda *_: None)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exit_code"] == code
    (row,) = summary["scenarios"]
    assert row["exit_code"] == code and code in (0, 1)
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    (suite_element,) = root.findall("testsuite")
    cases = suite_element.findall("testcase")
    names = {case.get("name") for case in cases}
    assert "campaign" in names and "acknowledged writes committed" in names
    assert any(name and name.startswith("SLO ") for name in names)
    failures = sum(1 for case in cases if case.find("failure") is not None)
    assert int(suite_element.get("failures", "-1")) == failures
    assert (failures > 0) == (code == 1)
    assert_toxiproxy_clean(state)
