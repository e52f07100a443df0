"""The scenario schema: what a valid scenario is, and how a bad one is reported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scenarios import (
    DEFAULT_MIX,
    FEATURE_NAMES,
    TOXIC_ATTRIBUTES,
    ClosedLoad,
    OpenLoad,
    Scenario,
    ScenarioError,
    Tolerance,
    format_duration,
    list_catalog,
    load_scenario,
    load_scenario_text,
    parse_duration,
    parse_scenario,
    resolve_scenario_path,
    scenario_hash,
    validate_files,
)
from scenarios.schema import (
    BandwidthFault,
    DownFault,
    LatencyAttributes,
    LatencyFault,
    NoAttributes,
)

# ARCHITECTURE.md's example, character for character; `test_the_example_is_the_documented_one`
# keeps the two in step when the document is at hand.
EXAMPLE = """\
name: postgres-outage
load: {model: open, rate: 200, duration: 120s}   # or {model: closed, users: 100, wait: 0.5s..1.5s}
mix: {inventory_read: 60, dashboard_summary: 10, order_processing: 10, product_search: 10, ai_pricing_suggestion: 10}
faults:
  - {at: 30s, duration: 40s, target: postgres, toxic: down}
  - {at: 80s, duration: 20s, target: redis, toxic: latency, attributes: {latency: 150, jitter: 50}, toxicity: 0.5}
slo: {p95_ms: 250, error_rate: 0.01, recovery_s: 60}
abort: {error_rate: 0.5, for: 15s}
tolerance: {p95: 0.10, recovery_s: 2.0}
"""

ARCHITECTURE = Path(__file__).resolve().parents[1].parent / "shared" / "ARCHITECTURE.md"


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE)
    assert isinstance(data, dict)
    return data


REMOVE = object()


def scenario_with(**changes: Any) -> dict[str, Any]:
    """The example with top-level fields replaced, or removed when the value is `REMOVE`."""
    data = {**example(), **changes}
    return {key: value for key, value in data.items() if value is not REMOVE}


def error_of(data: dict[str, Any]) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, "test.yaml")
    return caught.value


def open_load(**fields: Any) -> OpenLoad:
    return OpenLoad.model_validate({"model": "open", **fields})


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


def test_the_example_validates_unchanged() -> None:
    scenario = load_scenario_text(EXAMPLE, "example.yaml")

    assert scenario.name == "postgres-outage"
    assert isinstance(scenario.load, OpenLoad)
    assert scenario.load.rate_at(0) == 200
    assert scenario.duration_s == 120
    assert scenario.mix["inventory_read"] == 60
    down, latency = scenario.faults
    assert isinstance(down, DownFault)
    assert (down.at, down.duration, down.end, down.target) == (30, 40, 70, "postgres")
    assert isinstance(latency, LatencyFault)
    assert latency.attributes == LatencyAttributes(latency=150, jitter=50)
    assert latency.toxiproxy_attributes() == {"latency": 150, "jitter": 50}
    assert (latency.toxicity, latency.stream) == (0.5, "downstream")
    assert (scenario.slo.p95_ms, scenario.slo.error_rate, scenario.slo.recovery_s) == (
        250,
        0.01,
        60,
    )
    assert scenario.abort is not None
    assert (scenario.abort.error_rate, scenario.abort.duration) == (0.5, 15)
    assert (scenario.tolerance.p95, scenario.tolerance.recovery_s) == (0.10, 2.0)


@pytest.mark.skipif(not ARCHITECTURE.is_file(), reason="ARCHITECTURE.md is not beside the repo")
def test_the_example_is_the_documented_one() -> None:
    document = ARCHITECTURE.read_text(encoding="utf-8")
    section = document.split("## Scenarios are data", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    assert block.group(1) == EXAMPLE


def test_the_comment_form_of_a_closed_load_validates_with_a_duration() -> None:
    load = ClosedLoad.model_validate(
        {"model": "closed", "users": 100, "wait": "0.5s..1.5s", "duration": "120s"}
    )
    assert (load.users, load.wait.low, load.wait.high, load.duration_s) == (100, 0.5, 1.5, 120)


def test_models_are_frozen() -> None:
    scenario = parse_scenario(example())
    with pytest.raises(ValidationError):
        scenario.name = "other"


# --------------------------------------------------------------------------------------------
# Each rule, by example: the error names the field path and the rule
# --------------------------------------------------------------------------------------------


def faults_with(index: int, **changes: Any) -> list[dict[str, Any]]:
    faults: list[dict[str, Any]] = [dict(fault) for fault in example()["faults"]]
    faults[index].update(changes)
    return faults


RULES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top-level field", {"tolerence": {"p95": 0.1}}, "tolerence", "did you mean"),
    (
        "unknown nested field",
        {"slo": {"p95_ms": 250, "p99_ms": 400}},
        "slo.p99_ms",
        "unknown field 'p99_ms'",
    ),
    ("missing name", {"name": REMOVE}, "name", "is required"),
    ("name not a string", {"name": 404}, "name", "valid string"),
    ("name not a slug", {"name": "Postgres Outage"}, "name", "not a slug"),
    (
        "unknown feature in mix",
        {"mix": {"inventory_read": 1, "inventry_write": 1}},
        "mix.inventry_write",
        "unknown feature 'inventry_write'; did you mean 'inventory_write'?",
    ),
    ("negative weight", {"mix": {"inventory_read": -1}}, "mix.inventory_read", ">= 0"),
    ("weights add up to 0", {"mix": {"inventory_read": 0}}, "mix", "more than 0"),
    (
        "bad toxic attribute",
        {"faults": faults_with(1, attributes={"latency": 150, "jiter": 50})},
        "faults[1].attributes.jiter",
        "not an attribute of the latency toxic; it takes latency, jitter",
    ),
    (
        "attribute of another toxic",
        {"faults": faults_with(1, toxic="bandwidth", attributes={"rate": 10, "jitter": 5})},
        "faults[1].attributes.jitter",
        "not an attribute of the bandwidth toxic; it takes rate",
    ),
    (
        "negative attribute",
        {"faults": faults_with(1, attributes={"latency": 150, "jitter": -5})},
        "faults[1].attributes.jitter",
        ">= 0 (got -5)",
    ),
    (
        "fractional attribute",
        {"faults": faults_with(1, attributes={"latency": 150.5})},
        "faults[1].attributes.latency",
        "valid integer",
    ),
    (
        "missing required attribute",
        {"faults": faults_with(1, attributes={"jitter": 5})},
        "faults[1].attributes.latency",
        "is required",
    ),
    (
        "attributes on down",
        {"faults": faults_with(0, attributes={"latency": 1})},
        "faults[0].attributes.latency",
        "takes no attributes",
    ),
    (
        "toxicity on down",
        {"faults": faults_with(0, toxicity=0.5)},
        "faults[0].toxicity",
        "disables the whole proxy",
    ),
    ("toxicity above 1", {"faults": faults_with(1, toxicity=1.5)}, "faults[1].toxicity", "<= 1"),
    ("toxicity below 0", {"faults": faults_with(1, toxicity=-0.1)}, "faults[1].toxicity", ">= 0"),
    ("bad stream", {"faults": faults_with(1, stream="sideways")}, "faults[1].stream", "upstream"),
    (
        "unknown toxic",
        {"faults": faults_with(1, toxic="latncy")},
        "faults[1].toxic",
        "'latncy' is not one of",
    ),
    (
        "unknown target",
        {"faults": faults_with(1, target="redsi")},
        "faults[1].target",
        "did you mean 'redis'?",
    ),
    (
        "fault beyond the load",
        {"faults": faults_with(1, at="110s")},
        "faults[1].duration",
        "ends at 130 s (110 s + 20 s), after the load ends at 120 s",
    ),
    (
        "fault during warm-up",
        {"warmup": "40s"},
        "faults[0].at",
        "during the warm-up",
    ),
    (
        "overlapping faults of one kind",
        {"faults": [*example()["faults"], {**example()["faults"][0], "at": "50s"}]},
        "faults[2]",
        "overlaps faults[0]",
    ),
    (
        "bad duration string",
        {"load": {"model": "open", "rate": 200, "duration": "120 sec"}},
        "load.duration",
        "not a duration: '120 sec'",
    ),
    (
        "negative duration",
        {"faults": faults_with(0, duration="-5s")},
        "faults[0].duration",
        "cannot be negative",
    ),
    (
        "zero duration",
        {"faults": faults_with(0, duration=0)},
        "faults[0].duration",
        "must be > 0 (got 0)",
    ),
    (
        "unknown load model",
        {"load": {"model": "opn", "rate": 1, "duration": 10}},
        "load.model",
        "'opn' is not one of: open, closed",
    ),
    (
        "missing load model",
        {"load": {"rate": 1, "duration": 10}},
        "load.model",
        "is required (one of: open, closed)",
    ),
    (
        "open load without rate or shape",
        {"load": {"model": "open", "duration": "120s"}},
        "load.rate",
        "needs a rate or a shape",
    ),
    (
        "shape longer than the duration",
        {"load": {"model": "open", "duration": 60, "shape": [{"hold": {"rate": 5, "for": 90}}]}},
        "load.duration",
        "the shape lasts 90 s, longer than the duration 60 s",
    ),
    (
        "shape entry of two kinds",
        {
            "load": {
                "model": "open",
                "shape": [{"hold": {"rate": 5, "for": 9}, "burst": {"rate": 9, "for": 1}}],
            }
        },
        "load.shape[0]",
        "exactly one of ramp, hold, step, burst (found: hold, burst)",
    ),
    (
        "bad duration inside a shape",
        {"load": {"model": "open", "shape": [{"ramp": {"from": 1, "to": 5, "over": "1x"}}]}},
        "load.shape[0].ramp.over",
        "not a duration",
    ),
    (
        "closed load without users",
        {"load": {"model": "closed", "duration": 120}},
        "load.users",
        "is required",
    ),
    (
        "backwards wait range",
        {"load": {"model": "closed", "users": 5, "wait": "2s..1s", "duration": 120}},
        "load.wait.high",
        "runs backwards",
    ),
    ("error rate above 1", {"slo": {"error_rate": 2}}, "slo.error_rate", "<= 1"),
    (
        "abort longer than the run",
        {"abort": {"error_rate": 0.5, "for": "5m"}},
        "abort.for",
        "never act",
    ),
    ("negative seed", {"seed": -1}, "seed", ">= 0"),
]


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [pytest.param(change, field, rule, id=label) for label, change, field, rule in RULES],
)
def test_a_broken_rule_names_the_field_path(change: dict[str, Any], field: str, rule: str) -> None:
    error = error_of(scenario_with(**change))

    assert field in error.fields, str(error)
    assert rule in str(error)
    assert str(error).startswith("test.yaml: ")


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = scenario_with(seed=-1, tolerence={}, mix={"nope": 1})
    assert set(error_of(data).fields) == {"seed", "tolerence", "mix.nope"}


def test_slicer_variation_must_stay_below_its_average() -> None:
    fault = {
        "at": 30,
        "duration": 10,
        "target": "s3",
        "toxic": "slicer",
        "attributes": {"average_size": 10, "size_variation": 10},
    }
    error = error_of(scenario_with(faults=[fault]))
    assert error.fields == ("faults[0].attributes.size_variation",)


def test_every_toxic_accepts_its_documented_attributes() -> None:
    values = {"latency": 100, "jitter": 10, "rate": 64, "delay": 5, "timeout": 0, "bytes": 1024}
    values |= {"average_size": 64, "size_variation": 8}
    faults = [
        {
            "at": 10 * index,
            "duration": 5,
            "target": "redis",
            "toxic": toxic,
            "attributes": {name: values[name] for name in attributes},
        }
        for index, (toxic, attributes) in enumerate(TOXIC_ATTRIBUTES.items())
    ]
    scenario = parse_scenario(scenario_with(faults=faults))
    assert [fault.toxic for fault in scenario.faults] == list(TOXIC_ATTRIBUTES)
    assert TOXIC_ATTRIBUTES["down"] == ()
    assert TOXIC_ATTRIBUTES["slicer"] == ("average_size", "size_variation", "delay")


def test_defaulted_attributes_and_fields() -> None:
    faults = [
        {"at": 10, "duration": 5, "target": "postgres", "toxic": "timeout"},
        {"at": 10, "duration": 5, "target": "s3", "toxic": "bandwidth", "attributes": {"rate": 8}},
    ]
    timeout, bandwidth = parse_scenario(scenario_with(faults=faults)).faults
    assert timeout.toxiproxy_attributes() == {"timeout": 0}
    assert isinstance(bandwidth, BandwidthFault)
    assert (bandwidth.toxicity, bandwidth.stream) == (1.0, "downstream")


def test_same_toxic_in_both_directions_and_back_to_back_faults_are_allowed() -> None:
    bandwidth = {"target": "s3", "toxic": "bandwidth", "attributes": {"rate": 32}}
    faults = [
        {"at": 10, "duration": 20, "stream": "upstream", **bandwidth},
        {"at": 10, "duration": 20, "stream": "downstream", **bandwidth},
        {"at": 40, "duration": 5, "target": "redis", "toxic": "down"},
        {"at": 45, "duration": 5, "target": "redis", "toxic": "down"},
    ]
    assert len(parse_scenario(scenario_with(faults=faults)).faults) == 4


def test_a_down_fault_has_no_attributes() -> None:
    down = parse_scenario(example()).faults[0]
    assert down.attributes == NoAttributes()
    assert down.toxiproxy_attributes() == {}


# --------------------------------------------------------------------------------------------
# Files and YAML
# --------------------------------------------------------------------------------------------


def test_errors_from_a_file_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(EXAMPLE.replace("jitter: 50", "jitter: -5"), encoding="utf-8")

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    assert str(caught.value).startswith(f"{path}:6: faults[1].attributes.jitter: ")
    assert caught.value.problems[0].line == 6


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(EXAMPLE.replace("mix: {", "mix: ["), "broken.yaml")
    assert str(caught.value).startswith("broken.yaml:3: not valid YAML")


def test_duplicate_keys_are_an_error_not_a_silent_overwrite() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(EXAMPLE + "faults: []\n", "twice.yaml")
    assert "duplicate key 'faults' (first on line 4)" in str(caught.value)


@pytest.mark.parametrize(("text", "found"), [("", "an empty document"), ("- a\n", "a list")])
def test_a_scenario_is_a_mapping(text: str, found: str) -> None:
    with pytest.raises(ScenarioError, match=f"found {found}"):
        load_scenario_text(text, "odd.yaml")


def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "absent.yaml")


def test_validate_files_reports_each_file_without_raising(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("toxic: down", "toxic: dwn"), encoding="utf-8")

    results = dict(validate_files([tmp_path]))

    assert results[good] is None
    error = results[bad]
    assert error is not None and error.fields == ("faults[0].toxic",)
    assert [path for path, _ in validate_files([good, bad])] == [good, bad]


def test_resolve_scenario_path_accepts_a_catalog_name_or_a_path(tmp_path: Path) -> None:
    assert resolve_scenario_path("postgres-outage") in list_catalog()
    path = tmp_path / "mine.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert resolve_scenario_path(path) == path
    with pytest.raises(ScenarioError, match="nor a catalog scenario"):
        resolve_scenario_path("no-such-scenario")


# --------------------------------------------------------------------------------------------
# Hash
# --------------------------------------------------------------------------------------------


def test_scenario_hash_is_of_the_normalised_content() -> None:
    original = parse_scenario(example())
    digest = scenario_hash(original)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)

    spelled_differently = example()
    spelled_differently["load"] = {"model": "open", "rate": 200.0, "duration": "2m"}
    spelled_differently["faults"][0]["at"] = 30
    spelled_differently["description"] = "prose does not change the experiment"
    assert scenario_hash(parse_scenario(spelled_differently)) == digest

    changed = example()
    changed["faults"][1]["toxicity"] = 0.6
    assert scenario_hash(parse_scenario(changed)) != digest


def test_an_omitted_mix_hashes_like_the_default_mix_written_out() -> None:
    without = {key: value for key, value in example().items() if key != "mix"}
    written = {**without, "mix": dict(DEFAULT_MIX)}
    assert scenario_hash(parse_scenario(without)) == scenario_hash(parse_scenario(written))


# --------------------------------------------------------------------------------------------
# Mix
# --------------------------------------------------------------------------------------------


def test_the_default_mix_covers_every_feature_and_favours_inventory_reads() -> None:
    without = {key: value for key, value in example().items() if key != "mix"}
    scenario = parse_scenario(without)

    assert set(scenario.mix) == set(FEATURE_NAMES)
    assert max(scenario.mix, key=scenario.mix.__getitem__) == "inventory_read"
    assert sum(DEFAULT_MIX.values()) == 100


def test_mix_fractions_are_probabilities_in_feature_order() -> None:
    mix = {"product_search": 1, "inventory_read": 3, "batch_import": 0}
    fractions = parse_scenario(scenario_with(mix=mix)).mix_fractions()
    assert fractions == {"inventory_read": 0.75, "product_search": 0.25}
    assert list(fractions) == [name for name in FEATURE_NAMES if name in fractions]


# --------------------------------------------------------------------------------------------
# Open load: rate_at
# --------------------------------------------------------------------------------------------


def test_a_constant_rate_needs_no_shape() -> None:
    load = open_load(rate=200, duration="120s")
    assert [load.rate_at(t) for t in (0, 60, 119.99)] == [200, 200, 200]
    assert (load.rate_at(-0.1), load.rate_at(120)) == (0, 0)
    assert (load.duration_s, load.max_rate, load.expected_requests) == (120, 200, 24_000)


def test_rate_at_follows_a_ramp_a_hold_a_burst_and_a_step() -> None:
    load = open_load(
        shape=[
            {"ramp": {"from": 100, "to": 500, "over": "60s"}},
            {"hold": {"for": "60s"}},
            {"burst": {"rate": 5000, "for": "5s"}},
            {"hold": {"for": "5s"}},
            {"step": {"rate": 200, "for": "30s"}},
        ]
    )
    assert load.duration_s == 160
    assert load.rate_at(0) == 100
    assert load.rate_at(15) == 200
    assert load.rate_at(30) == 300
    assert load.rate_at(59.999) == pytest.approx(500, abs=0.01)
    assert load.rate_at(60) == 500  # the hold keeps the ramp's end
    assert load.rate_at(119.9) == 500
    assert load.rate_at(120) == load.rate_at(124.9) == 5000
    assert load.rate_at(125) == 500  # after a burst, back to the rate before it
    assert load.rate_at(130) == load.rate_at(159.9) == 200
    assert load.rate_at(160) == 0
    assert load.max_rate == 5000


def test_after_the_shape_the_base_rate_holds_until_the_duration() -> None:
    load = open_load(rate=200, duration=90, shape=[{"burst": {"rate": 5000, "for": 5}}])
    assert (load.rate_at(0), load.rate_at(4.9), load.rate_at(5), load.rate_at(89)) == (
        5000,
        5000,
        200,
        200,
    )
    assert load.duration_s == 90


def test_a_ramp_without_from_starts_at_the_base_rate() -> None:
    load = open_load(rate=100, shape=[{"ramp": {"to": 300, "over": 10}}])
    assert (load.rate_at(0), load.rate_at(5)) == (100, 200)
    assert load.expected_requests == pytest.approx(2000)


def test_a_load_that_never_sends_is_refused() -> None:
    with pytest.raises(ValidationError, match="never sends a request"):
        open_load(rate=0, duration=10)


# --------------------------------------------------------------------------------------------
# Closed load: wait ranges
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "low", "high"),
    [
        ("0.5s..1.5s", 0.5, 1.5),
        ("500ms..1.5s", 0.5, 1.5),
        ("1..3", 1.0, 3.0),
        (" 2s .. 4s ", 2.0, 4.0),
        ("1s", 1.0, 1.0),
        (2, 2.0, 2.0),
        (0, 0.0, 0.0),
        ({"low": 1, "high": "2s"}, 1.0, 2.0),
    ],
)
def test_closed_wait_parses_a_range_or_a_constant(wait: object, low: float, high: float) -> None:
    load = ClosedLoad.model_validate({"model": "closed", "users": 10, "wait": wait, "duration": 60})
    assert (load.wait.low, load.wait.high) == (low, high)
    assert load.wait.mean == (low + high) / 2


def test_closed_defaults() -> None:
    load = ClosedLoad.model_validate({"model": "closed", "users": 500, "duration": "2m"})
    assert str(load.wait) == "500ms..1500ms"
    assert (load.spawn_rate_per_s, load.ramp_up_s, load.duration_s) == (500, 1, 120)
    paced = ClosedLoad.model_validate(
        {"model": "closed", "users": 500, "spawn_rate": 50, "duration": 60}
    )
    assert paced.ramp_up_s == 10


@pytest.mark.parametrize("wait", ["1s..", "..1s", "1s..2s..3s", "soon", True])
def test_bad_waits_name_the_field(wait: object) -> None:
    data = scenario_with(load={"model": "closed", "users": 5, "wait": wait, "duration": 120})
    assert error_of(data).fields[0].startswith("load.wait")


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("120s", 120.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1.5m", 90.0),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("30", 30.0),
        (" 30 s ", 30.0),
        (45, 45.0),
        (2.5, 2.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("120 sec", "not a duration"),
        ("1h", "not a duration"),
        ("s", "not a duration"),
        ("", "not a duration"),
        ("-5s", "cannot be negative"),
        (-1, "cannot be negative"),
        (float("inf"), "not a finite duration"),
        (float("nan"), "not a finite duration"),
        (True, "not a duration"),
        (None, "not a duration"),
        ([1], "not a duration"),
    ],
)
def test_bad_durations_say_which_forms_are_accepted(value: object, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_duration(value)


def test_format_duration_is_readable() -> None:
    assert [format_duration(s) for s in (120.0, 0.25, 0.0, 1.5)] == [
        "120s",
        "250ms",
        "0s",
        "1500ms",
    ]


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=10**9))
def test_units_scale_exactly(count: int) -> None:
    assert parse_duration(f"{count}ms") == count / 1000
    assert parse_duration(f"{count}s") == parse_duration(count) == count
    assert parse_duration(f"{count}m") == count * 60


# --------------------------------------------------------------------------------------------
# Properties of rate_at over random shapes
# --------------------------------------------------------------------------------------------

rates = st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False)
lengths = st.floats(min_value=0.01, max_value=300, allow_nan=False, allow_infinity=False)
segments = st.one_of(
    st.builds(lambda a, b, s: {"ramp": {"from": a, "to": b, "over": s}}, rates, rates, lengths),
    st.builds(lambda b, s: {"ramp": {"to": b, "over": s}}, rates, lengths),
    st.builds(lambda r, s: {"hold": {"rate": r, "for": s}}, rates, lengths),
    st.builds(lambda s: {"hold": {"for": s}}, lengths),
    st.builds(lambda r, s: {"step": {"rate": r, "for": s}}, rates, lengths),
    st.builds(lambda r, s: {"burst": {"rate": r, "for": s}}, rates, lengths),
)
shapes = st.lists(segments, min_size=1, max_size=8)


def build_or_none(base: float, shape: list[dict[str, Any]]) -> OpenLoad | None:
    try:
        return open_load(rate=base, shape=shape)
    except ValidationError:
        return None  # a load whose every rate is 0 is refused; nothing to check


@given(rates, shapes, st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=20))
def test_rate_at_is_never_negative_and_stays_within_each_piece(
    base: float, shape: list[dict[str, Any]], fractions: list[float]
) -> None:
    load = build_or_none(base, shape)
    if load is None:
        return
    for fraction in fractions:
        t = fraction * load.duration_s
        rate = load.rate_at(t)
        assert rate >= 0
        assert rate <= load.max_rate
    assert load.rate_at(load.duration_s) == 0
    for piece in load.pieces:
        middle = (piece.start + piece.end) / 2
        low, high = sorted((piece.start_rate, piece.end_rate))
        assert low - 1e-9 <= load.rate_at(middle) <= high + 1e-9


@given(rates, shapes)
def test_rate_at_equals_the_configured_rate_on_holds_steps_and_bursts(
    base: float, shape: list[dict[str, Any]]
) -> None:
    load = build_or_none(base, shape)
    if load is None:
        return
    start = 0.0
    for segment in shape:
        ((kind, spec),) = segment.items()
        length = spec.get("over", spec.get("for"))
        middle = start + length / 2
        if kind in ("step", "burst") or (kind == "hold" and "rate" in spec):
            assert load.rate_at(middle) == spec["rate"]
        start += length


# --------------------------------------------------------------------------------------------
# Tolerance
# --------------------------------------------------------------------------------------------


def test_tolerance_is_relative_for_percentiles_and_absolute_for_times_and_rates() -> None:
    tolerance = Tolerance(p95=0.10, recovery_s=2.0, error_rate=0.01)
    assert tolerance.prediction_holds("p95", predicted=108, measured=100) is True
    assert tolerance.prediction_holds("p95", predicted=115, measured=100) is False
    assert tolerance.prediction_holds("recovery_s", predicted=41.5, measured=40) is True
    assert tolerance.prediction_holds("recovery_s", predicted=43, measured=40) is False
    assert tolerance.prediction_holds("error_rate", predicted=0.015, measured=0.01) is True
    assert tolerance.prediction_holds("error_rate", predicted=0.03, measured=0.01) is False


def test_a_measurement_inside_the_predicted_interval_holds() -> None:
    tolerance = Tolerance(p95=0.01)
    assert tolerance.prediction_holds("p95", 150, 100, interval=(95, 160)) is True
    assert tolerance.prediction_holds("p95", 150, 100, interval=(120, 160)) is False


def test_unjudged_metrics_and_zero_measurements() -> None:
    tolerance = Tolerance()
    assert tolerance.prediction_holds("p99", 1, 2) is None
    assert tolerance.prediction_holds("p95", 0, 0) is True
    assert tolerance.prediction_holds("p95", 1, 0) is False
    with pytest.raises(ValueError, match="unknown metric"):
        tolerance.prediction_holds("p90", 1, 1)


def test_scenario_defaults_are_documented_values() -> None:
    minimal = Scenario.model_validate(
        {"name": "minimal", "load": {"model": "open", "rate": 10, "duration": 60}}
    )
    assert (minimal.slo.p95_ms, minimal.slo.error_rate, minimal.slo.recovery_s) == (250, 0.01, 60)
    assert (minimal.tolerance.p95, minimal.tolerance.recovery_s) == (0.10, 5.0)
    assert minimal.tolerance.p50 is minimal.tolerance.error_rate is None
    assert (minimal.faults, minimal.abort, minimal.warmup, minimal.seed) == ((), None, 0, None)


def test_scenarios_are_hashable_and_equal_by_content() -> None:
    first, second = parse_scenario(example()), parse_scenario(example())
    assert first == second
    assert len({first, second}) == 1


def test_shape_lengths_that_miss_the_duration_by_rounding_still_fit() -> None:
    load = open_load(
        duration=0.3, shape=[{"hold": {"rate": 1, "for": 0.1}}, {"hold": {"rate": 2, "for": 0.2}}]
    )
    assert load.duration_s == 0.3
    assert load.rate_at(0.25) == 2
