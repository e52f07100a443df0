"""`reslab nightly SUITE.yaml`: a list of campaigns, a JUnit XML verdict and a summary JSON.

A suite file:

    name: nightly
    out: runs/nightly            # optional; default runs/nightly-<UTC timestamp>
    staging: .staging/staging.json   # optional; default: the local stack, started if needed
    defaults: {replications: 1, workers: 0, predict: true, sim_replications: 10}
    scenarios:
      - postgres-down
      - {scenario: redis-latency, replications: 2}

Each scenario becomes a JUnit test suite with one test case per check: each predicted-
against-measured value with a tolerance, each SLO check, the acknowledged writes, the abort
guard, and the run itself (an infrastructure failure is a JUnit *error*, a breach a
*failure*). The exit code is the worst of the campaigns': 3 over 2 over 1 over 0.
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from chaos.campaign import (
    EXIT_BAD_INPUT,
    EXIT_INFRASTRUCTURE,
    EXIT_OK,
    CampaignOptions,
    CampaignResult,
    format_result,
    run_campaign,
)
from scenarios import ScenarioError, load_scenario, resolve_scenario_path

_OPTION_FIELDS = {
    "replications", "workers", "predict", "sim_replications", "duration_override", "policy",
}  # fmt: skip
# Worst first: what decides the suite's exit code.
_SEVERITY = {EXIT_INFRASTRUCTURE: 4, EXIT_BAD_INPUT: 3, 1: 2, EXIT_OK: 0}


class SuiteError(ValueError):
    """A suite file that cannot run; the message names the field."""


@dataclass(frozen=True, slots=True)
class SuiteEntry:
    scenario: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    out: Path
    entries: tuple[SuiteEntry, ...]
    staging: Path | None = None


def load_suite(path: Path) -> Suite:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SuiteError(f"{path}: cannot be read as YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: must be a mapping with a `scenarios` list")
    unknown = set(raw) - {"name", "out", "staging", "defaults", "scenarios"}
    if unknown:
        raise SuiteError(f"{path}: {sorted(unknown)[0]}: unknown field")
    defaults = raw.get("defaults") or {}
    _check_options(path, "defaults", defaults)
    listed = raw.get("scenarios")
    if not isinstance(listed, list) or not listed:
        raise SuiteError(f"{path}: scenarios: must be a non-empty list")
    entries = []
    for index, item in enumerate(listed):
        where = f"scenarios[{index}]"
        if isinstance(item, str):
            item = {"scenario": item}
        if not isinstance(item, dict) or "scenario" not in item:
            raise SuiteError(f"{path}: {where}: must be a name or {{scenario: NAME, ...}}")
        options = {key: value for key, value in item.items() if key != "scenario"}
        _check_options(path, where, options)
        try:
            load_scenario(resolve_scenario_path(str(item["scenario"])))
        except (ScenarioError, FileNotFoundError) as error:
            raise SuiteError(f"{path}: {where}.scenario: {error}") from None
        merged = {**defaults, **options}
        if "policy" in merged:
            merged["policy"] = Path(merged["policy"])
        entries.append(SuiteEntry(str(item["scenario"]), merged))
    name = str(raw.get("name", path.stem))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(raw["out"]) if raw.get("out") else Path("runs") / f"{name}-{stamp}"
    staging = Path(raw["staging"]) if raw.get("staging") else None
    return Suite(name, out, tuple(entries), staging)


def _check_options(path: Path, where: str, options: Any) -> None:
    if not isinstance(options, dict):
        raise SuiteError(f"{path}: {where}: must be a mapping")
    for key in options:
        if key not in _OPTION_FIELDS:
            raise SuiteError(
                f"{path}: {where}.{key}: unknown option "
                f"(one of {', '.join(sorted(_OPTION_FIELDS))})"
            )


def _case(suite: ET.Element, name: str, classname: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(suite, "testcase", name=name, classname=classname, time=f"{seconds:.3f}")


def junit_for(scenario: str, result: CampaignResult, seconds: float) -> ET.Element:
    suite = ET.Element("testsuite", name=scenario)
    run = _case(suite, "campaign", scenario, seconds)
    if result.exit_code in (EXIT_INFRASTRUCTURE, EXIT_BAD_INPUT) or result.exit_code > 3:
        ET.SubElement(run, "error", message="; ".join(result.messages) or "campaign failed")
    for outcome in result.replications:
        case = _case(suite, f"replication {outcome.replication}: steady state", scenario)
        if outcome.aborted:
            ET.SubElement(case, "failure", message=f"aborted: {outcome.aborted}")
    if result.lost_writes is not None:
        case = _case(suite, "acknowledged writes committed", scenario)
        if not result.lost_writes.ok:
            ET.SubElement(case, "failure", message=result.lost_writes.describe())
    if result.comparison is not None:
        for value in result.comparison.values:
            if value.holds is None:
                continue
            case = _case(suite, f"predicted {value.scope}: {value.metric}", scenario)
            if value.holds is False:
                ET.SubElement(
                    case,
                    "failure",
                    message=(
                        f"predicted {value.predicted} [{value.low}, {value.high}], "
                        f"measured {value.measured}"
                    ),
                )
        for check in result.comparison.slo:
            if check.holds is None:
                continue
            case = _case(suite, f"SLO {check.scope}: {check.metric}", scenario)
            if check.holds is False:
                ET.SubElement(
                    case, "failure", message=f"limit {check.limit}, measured {check.measured}"
                )
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("time", f"{seconds:.3f}")
    return suite


def run_suite(suite: Suite, echo: Any = print) -> int:
    suite.out.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites", name=suite.name)
    rows: list[dict[str, Any]] = []
    worst = EXIT_OK
    for entry in suite.entries:
        echo(f"== {entry.scenario}")
        started = time.monotonic()
        result = run_campaign(
            CampaignOptions(
                scenario=entry.scenario,
                out_dir=suite.out,
                staging_file=suite.staging,
                **entry.options,
            ),
            echo=echo,
        )
        seconds = time.monotonic() - started
        echo(format_result(result))
        root.append(junit_for(entry.scenario, result, seconds))
        rows.append(
            {
                "scenario": entry.scenario,
                "exit_code": result.exit_code,
                "seconds": round(seconds, 1),
                "measured_run": str(result.measured_dir) if result.measured_dir else None,
                "predicted_run": str(result.predicted_dir) if result.predicted_dir else None,
                "holds": result.comparison.holds if result.comparison else None,
                "messages": result.messages,
            }
        )
        if _SEVERITY.get(result.exit_code, 1) > _SEVERITY.get(worst, 1):
            worst = result.exit_code
    ET.indent(root)
    ET.ElementTree(root).write(suite.out / "junit.xml", encoding="utf-8", xml_declaration=True)
    (suite.out / "summary.json").write_text(
        json.dumps({"suite": suite.name, "exit_code": worst, "scenarios": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    echo(f"\nJUnit: {suite.out / 'junit.xml'}\nsummary: {suite.out / 'summary.json'}")
    return worst


def nightly_main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: reslab nightly SUITE.yaml", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        suite = load_suite(Path(argv[0]))
    except SuiteError as error:
        print(f"reslab: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_suite(suite)
