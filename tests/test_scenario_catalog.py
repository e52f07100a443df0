"""The catalog of shipped scenarios: every file valid, and the experiments the project needs."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from scenarios import (
    ClosedLoad,
    OpenLoad,
    Scenario,
    catalog_dir,
    list_catalog,
    load_scenario,
    load_scenario_text,
    scenario_hash,
    validate_files,
)
from scenarios.schema import DEPENDENCIES, DownFault, FaultBase

ARCHITECTURE = Path(__file__).resolve().parents[1].parent / "shared" / "ARCHITECTURE.md"
CATALOG = list_catalog()


def catalog() -> dict[str, Scenario]:
    return {path.stem: load_scenario(path) for path in CATALOG}


def test_the_catalog_lives_in_the_scenarios_package() -> None:
    assert catalog_dir() == Path(__file__).resolve().parents[1] / "scenarios"
    assert len(CATALOG) >= 10


def test_every_catalog_file_validates() -> None:
    assert [(path.name, error) for path, error in validate_files(CATALOG) if error] == []


@pytest.mark.parametrize("path", CATALOG, ids=lambda path: path.stem)
def test_a_catalog_scenario_is_named_after_its_file_and_practical(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description, "a catalog scenario says what it tests"
    assert "2-core" in scenario.description, "and whether a 2-core machine can run it"
    assert 60 <= scenario.duration_s <= 180
    if scenario.faults:
        last_end = max(fault.end for fault in scenario.faults)
        assert scenario.duration_s - last_end >= 20, "room to watch the recovery"


def test_no_two_catalog_scenarios_are_the_same_experiment() -> None:
    hashes = [scenario_hash(scenario) for scenario in catalog().values()]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.skipif(not ARCHITECTURE.is_file(), reason="ARCHITECTURE.md is not beside the repo")
def test_postgres_outage_is_the_architecture_example() -> None:
    section = ARCHITECTURE.read_text(encoding="utf-8").split("## Scenarios are data", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    documented = load_scenario_text(block.group(1), "ARCHITECTURE.md")
    assert scenario_hash(catalog()["postgres-outage"]) == scenario_hash(documented)


# --------------------------------------------------------------------------------------------
# The kinds of experiment the catalog must hold
# --------------------------------------------------------------------------------------------


def open_rate(scenario: Scenario) -> OpenLoad | None:
    return scenario.load if isinstance(scenario.load, OpenLoad) else None


def overlapping(first: FaultBase, second: FaultBase) -> bool:
    return first.at < second.end and second.at < first.end


def only_down(target: str) -> Callable[[Scenario], bool]:
    def matches(scenario: Scenario) -> bool:
        return [(fault.target, fault.toxic) for fault in scenario.faults] == [(target, "down")]

    return matches


def latency_with_jitter(target: str) -> Callable[[Scenario], bool]:
    def matches(scenario: Scenario) -> bool:
        return any(
            fault.target == target
            and fault.toxic == "latency"
            and fault.toxiproxy_attributes()["jitter"] > 0
            for fault in scenario.faults
        )

    return matches


def partial_toxicity(scenario: Scenario) -> bool:
    return any(fault.toxic != "down" and 0 < fault.toxicity < 1 for fault in scenario.faults)


def two_dependencies_down_at_once(scenario: Scenario) -> bool:
    downs = [fault for fault in scenario.faults if isinstance(fault, DownFault)]
    return any(
        first.target != second.target and overlapping(first, second)
        for index, first in enumerate(downs)
        for second in downs[index + 1 :]
    )


def flapping(scenario: Scenario) -> bool:
    for target in DEPENDENCIES:
        downs = sorted(
            (
                fault
                for fault in scenario.faults
                if fault.target == target and fault.toxic == "down"
            ),
            key=lambda fault: fault.at,
        )
        gaps = [later.at - earlier.end for earlier, later in itertools.pairwise(downs)]
        if len(downs) >= 3 and all(gap > 0 for gap in gaps):
            return True
    return False


def s3_bandwidth(scenario: Scenario) -> bool:
    return any(fault.target == "s3" and fault.toxic == "bandwidth" for fault in scenario.faults)


def ramp_100_to_500(scenario: Scenario) -> bool:
    load = open_rate(scenario)
    return load is not None and any(
        (piece.start_rate, piece.end_rate) == (100, 500) for piece in load.pieces
    )


def sustained_500(scenario: Scenario) -> bool:
    load = open_rate(scenario)
    return load is not None and any(
        piece.start_rate == piece.end_rate == 500 and piece.end - piece.start >= 60
        for piece in load.pieces
    )


def burst_5000_for_5s(scenario: Scenario) -> bool:
    load = open_rate(scenario)
    return load is not None and any(
        piece.start_rate == piece.end_rate == 5000 and piece.end - piece.start == 5
        for piece in load.pieces
    )


def closed_users(users: int) -> Callable[[Scenario], bool]:
    def matches(scenario: Scenario) -> bool:
        return isinstance(scenario.load, ClosedLoad) and scenario.load.users == users

    return matches


REQUIRED_KINDS: dict[str, Callable[[Scenario], bool]] = {
    **{f"{target} down": only_down(target) for target in DEPENDENCIES},
    **{f"{target} latency with jitter": latency_with_jitter(target) for target in DEPENDENCIES},
    "partial toxicity": partial_toxicity,
    "two dependencies down at once": two_dependencies_down_at_once,
    "a flapping dependency": flapping,
    "a bandwidth limit on S3": s3_bandwidth,
    "ramp 100 → 500 req/s": ramp_100_to_500,
    "sustained 500 req/s": sustained_500,
    "burst of 5,000 req/s for 5 s": burst_5000_for_5s,
    "closed, 100 users": closed_users(100),
    "closed, 500 users": closed_users(500),
    "closed, 1,000 users": closed_users(1000),
    "no faults (the calibration baseline)": lambda scenario: not scenario.faults,
}


@pytest.mark.parametrize("kind", REQUIRED_KINDS)
def test_the_catalog_holds_each_required_kind_of_experiment(kind: str) -> None:
    matching = [name for name, scenario in catalog().items() if REQUIRED_KINDS[kind](scenario)]
    assert matching, f"no catalog scenario is {kind}"


def test_latency_with_jitter_comes_in_at_least_two_separate_files() -> None:
    files = {
        name
        for name, scenario in catalog().items()
        for target in DEPENDENCIES
        if latency_with_jitter(target)(scenario)
    }
    assert len(files) >= 2
