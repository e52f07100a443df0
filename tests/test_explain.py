"""`reslab policy explain`: POLICY.md's table for the default policy, and the controller agrees."""

from __future__ import annotations

import json
from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy import (
    DEPENDENCIES,
    Level,
    ManualClock,
    Outcome,
    Permit,
    ResiliencePolicy,
    explain,
)
from engine.policyfile import POLICIES_DIR, load_policy
from reslab.cli import main
from tests.policy_helpers import DEFAULT

# POLICY.md, "Degradation levels": open breakers → score → level, for the default policy.
POLICY_MD_TABLE = [
    ("none", 100, "OPTIMAL"),
    ("s3", 95, "OPTIMAL"),
    ("redis", 85, "DEGRADED"),
    ("redis + s3", 80, "DEGRADED"),
    ("postgres", 70, "DEGRADED"),
    ("postgres + s3", 65, "LIMITED"),
    ("postgres + redis", 55, "LIMITED"),
    ("openai", 50, "LIMITED"),
    ("postgres + redis + s3", 50, "LIMITED"),
    ("openai + s3", 45, "MINIMAL"),
    ("openai + redis", 35, "MINIMAL"),
    ("openai + redis + s3", 30, "MINIMAL"),
    ("openai + postgres", 20, "EMERGENCY"),
    ("openai + postgres + s3", 15, "EMERGENCY"),
    ("openai + postgres + redis", 5, "EMERGENCY"),
    ("all four", 0, "EMERGENCY"),
]


def test_explain_reproduces_the_policy_table() -> None:
    rows = [(row.label, row.score, row.level.name) for row in explain(DEFAULT)]
    assert rows == POLICY_MD_TABLE


def test_features_served_per_row_follow_the_level_and_the_open_breakers() -> None:
    rows = {row.label: row for row in explain(DEFAULT)}
    assert len(rows["none"].served) == 16
    postgres = rows["postgres"]
    assert set(postgres.served) == {"health_status", "metrics_export"}
    assert "inventory_read" in postgres.fallback and "order_processing" in postgres.off
    assert all(len(row.served) + len(row.fallback) + len(row.off) == 16 for row in rows.values())


def test_db_first_differs_where_the_weights_moved() -> None:
    rows = {
        row.label: (row.score, row.level)
        for row in explain(load_policy(POLICIES_DIR / "db-first.yaml"))
    }
    assert rows["postgres"] == (50.0, Level.LIMITED)
    assert rows["openai"] == (70.0, Level.DEGRADED)
    assert rows["redis"] == (85.0, Level.DEGRADED)


def test_the_json_output_is_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["policy", "explain", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [
        (row["label"], row["score"], row["level"]) for row in printed["rows"]
    ] == POLICY_MD_TABLE


def test_a_bad_policy_exits_2_naming_the_field(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES_DIR / "default.yaml").read_text().replace("weight: 0.15", "weight: 0"))
    assert main(["policy", "explain", "--policy", str(bad)]) == 2
    assert "breakers.redis.weight: must be > 0" in capsys.readouterr().err


ALL_SUBSETS = [subset for count in range(5) for subset in combinations(DEPENDENCIES, count)]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ALL_SUBSETS), st.sampled_from(["default.yaml", "db-first.yaml"]))
def test_explain_is_consistent_with_the_controller(
    opened: tuple[str, ...], policy_file: str
) -> None:
    config = load_policy(POLICIES_DIR / policy_file)
    expected = {row.open_breakers: row for row in explain(config)}[opened]
    clock = ManualClock()
    policy = ResiliencePolicy(config, clock)
    for dependency in opened:
        for _ in range(config.breakers[dependency].minimum_calls):
            permit = policy.acquire(dependency)
            assert isinstance(permit, Permit)
            policy.record(permit, Outcome.FAILURE, 0.001)
    clock.advance(0.5)
    policy.tick()
    assert policy.score == expected.score
    assert policy.level is expected.level
    served = tuple(name for name in config.features if policy.decide(name).mode.value == "primary")
    assert served == expected.served
