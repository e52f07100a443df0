"""Policy files: the shipped ones load; a bad one names the field and the rule it breaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.policy import Level, PolicyError, policy_from_mapping
from engine.policyfile import DEFAULT_POLICY, POLICIES_DIR, PolicyFileError, load_policy


def raw_default() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY.read_text())
    return loaded


def test_default_policy_has_the_documented_numbers() -> None:
    config = load_policy()
    postgres = config.breakers["postgres"]
    assert (postgres.weight, postgres.failure_rate_threshold, postgres.window_s) == (0.3, 0.3, 10)
    assert (postgres.open_s, postgres.half_open_permits, postgres.call_timeout_s) == (30, 1, 2.0)
    assert config.breakers["openai"].open_s == 60
    assert config.breakers["redis"].slow_call_s == 0.05
    assert config.levels.dwell_s == 10 and config.levels.hysteresis == 2
    assert config.features["batch_import"].worst_level is Level.OPTIMAL


def test_db_first_swaps_only_the_weights() -> None:
    default, db_first = load_policy(), load_policy(POLICIES_DIR / "db-first.yaml")
    assert db_first.breakers["postgres"].weight == 0.5
    assert db_first.breakers["openai"].weight == 0.3
    assert db_first.features == default.features
    assert db_first.breakers["redis"] == default.breakers["redis"]


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (
            lambda p: p["breakers"]["redis"].update(weight=-1),
            "breakers.redis.weight",
            "must be > 0",
        ),
        (
            lambda p: p["breakers"]["s3"].update(failure_rate_threshold=1.5),
            "breakers.s3.failure_rate_threshold",
            "must be in (0, 1]",
        ),
        (
            lambda p: p["breakers"]["openai"].update(minimum_calls=2.5),
            "breakers.openai.minimum_calls",
            "whole number",
        ),
        (
            lambda p: p["breakers"]["openai"].update(timeout=3),
            "breakers.openai.timeout",
            "unknown field",
        ),
        (lambda p: p["breakers"].pop("postgres"), "breakers.postgres", "is required"),
        (
            lambda p: p["breakers"].update(mysql=p["breakers"]["postgres"]),
            "breakers.mysql",
            "unknown dependency",
        ),
        (
            lambda p: p["levels"]["thresholds"].update(DEGRADED=95),
            "levels.thresholds.OPTIMAL",
            "must be above DEGRADED's",
        ),
        (
            lambda p: p["features"]["batch_import"].update(worst_level="SOMETIMES"),
            "features.batch_import.worst_level",
            "unknown level",
        ),
        (
            lambda p: p["features"]["batch_import"].update(needs=["mongodb"]),
            "features.batch_import.needs[0]",
            "unknown dependency",
        ),
        (
            lambda p: p["breakers"]["redis"].update(open_s="soon"),
            "breakers.redis.open_s",
            "must be a number",
        ),
    ],
)
def test_a_bad_policy_names_the_field_and_the_rule(change: Any, field: str, rule: str) -> None:
    raw = raw_default()
    change(raw)
    with pytest.raises(PolicyError) as raised:
        policy_from_mapping(raw)
    assert raised.value.field == field
    assert rule in raised.value.rule


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("breakers: [1, 2\n")
    with pytest.raises(PolicyFileError, match=r"broken.yaml: \(yaml\): is not valid YAML"):
        load_policy(broken)
    with pytest.raises(PolicyFileError, match="cannot be read"):
        load_policy(tmp_path / "missing.yaml")
