"""Load shapes follow the scenario: the open model's target rate is the scenario's `rate_at`
(cut or extended by a duration override), the closed model runs the scenario's users, and
both end the test on time. Pure: no Locust import, no server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests.shapes import (
    PROFILES,
    ClosedShape,
    LoadProfile,
    OpenShape,
    profile_scenario,
    shape_for,
)
from scenarios import ClosedLoad, OpenLoad, list_catalog, load_scenario, parse_scenario


def open_scenarios() -> list[str]:
    return [path.stem for path in list_catalog() if load_scenario(path).load.model == "open"]


def sample_times(duration: float) -> np.ndarray:
    # Every piece boundary of the catalog falls on a whole second; probe around them too.
    whole = np.arange(0.0, math.ceil(duration) + 2.0, 0.5)
    return np.concatenate([whole, whole - 1e-6, whole + 1e-6, np.linspace(0, duration, 997)])


@pytest.mark.parametrize("name", open_scenarios())
def test_profile_is_the_scenarios_rate_at(name: str) -> None:
    scenario = load_scenario(next(p for p in list_catalog() if p.stem == name))
    load = scenario.load
    assert isinstance(load, OpenLoad)
    profile = LoadProfile.from_load(load)
    for t in sample_times(load.duration_s):
        assert profile.rate_at(float(t)) == load.rate_at(float(t))
    assert profile.expected_requests == pytest.approx(load.expected_requests)
    assert profile.max_rate == load.max_rate


def ramp_load() -> OpenLoad:
    scenario = profile_scenario("ramp")
    assert isinstance(scenario.load, OpenLoad)
    return scenario.load


def test_a_shorter_override_cuts_the_timeline() -> None:
    load = ramp_load()  # 100 → 500 over 90 s, then 500 until 120 s
    profile = LoadProfile.from_load(load, 45.0)
    assert profile.duration_s == 45.0
    for t in np.linspace(0.0, 44.999, 500):
        assert profile.rate_at(float(t)) == pytest.approx(load.rate_at(float(t)))
    assert profile.rate_at(45.0) == 0.0
    # The integral of a ramp from 100 to 300 req/s over 45 s.
    assert profile.expected_requests == pytest.approx((100 + 300) / 2 * 45)


def test_a_longer_override_holds_the_final_base_rate() -> None:
    load = ramp_load()
    profile = LoadProfile.from_load(load, 150.0)
    assert profile.rate_at(119.0) == 500.0
    assert profile.rate_at(149.0) == 500.0
    assert profile.rate_at(150.0) == 0.0
    assert profile.expected_requests == pytest.approx(load.expected_requests + 30 * 500)


def test_extending_after_a_final_burst_returns_to_the_base_rate() -> None:
    scenario = parse_scenario(
        {
            "name": "ends-in-a-burst",
            "load": {
                "model": "open",
                "rate": 50,
                "shape": [{"hold": {"for": "10s"}}, {"burst": {"rate": 900, "for": "2s"}}],
            },
        }
    )
    assert isinstance(scenario.load, OpenLoad)
    profile = LoadProfile.from_load(scenario.load, 20.0)
    assert profile.rate_at(11.0) == 900.0
    assert profile.rate_at(15.0) == 50.0


def test_the_open_shape_keeps_one_generator_per_process_and_ends_after_the_drain() -> None:
    shape = shape_for(profile_scenario("sustained"), drain_s=16.0)
    assert isinstance(shape, OpenShape)
    assert shape.duration_s == 150.0
    for t in (None, -0.5, 0.0, 75.0, 149.9):
        tick = shape.tick(t, generators=3)
        assert tick is not None
        assert (tick.users, tick.user_kind) == (3, "open")
        assert tick.spawn_rate == 3.0  # all at once
    # After the load: until every generator has its answers, or the drain is over.
    assert shape.tick(150.0, generators=3, generators_finished=2) is not None
    assert shape.tick(150.0, generators=3, generators_finished=3) is None
    assert shape.tick(165.9, generators=3) is not None
    assert shape.tick(166.0, generators=3) is None
    # A local run has one generating process even when the runner reports none.
    tick = shape.tick(1.0, generators=0)
    assert tick is not None and tick.users == 1


@pytest.mark.parametrize("profile", ["ramp", "sustained", "burst", "steps"])
def test_the_open_shapes_target_rate_is_the_profiles(profile: str) -> None:
    scenario = profile_scenario(profile)
    shape = shape_for(scenario)
    assert isinstance(shape, OpenShape) and isinstance(scenario.load, OpenLoad)
    for t in sample_times(scenario.duration_s):
        assert shape.rate_at(float(t)) == scenario.load.rate_at(float(t))


def test_the_seed_profiles() -> None:
    ramp = shape_for(profile_scenario("ramp"))
    assert isinstance(ramp, OpenShape)
    assert [ramp.rate_at(t) for t in (0, 45, 90, 119.9)] == [100, 300, 500, 500]

    sustained = shape_for(profile_scenario("sustained"))
    assert isinstance(sustained, OpenShape)
    assert {sustained.rate_at(t) for t in np.linspace(0, 149.9, 50)} == {500.0}

    burst = shape_for(profile_scenario("burst"))
    assert isinstance(burst, OpenShape)
    assert [burst.rate_at(t) for t in (29.9, 30.0, 34.9, 35.0)] == [200, 5000, 5000, 200]
    assert burst.profile.max_rate == 5000

    steps = shape_for(profile_scenario("steps"))
    assert isinstance(steps, OpenShape)
    assert [steps.rate_at(t) for t in (0, 30, 60, 90, 120, 149.9, 150)] == [
        100, 200, 300, 400, 500, 500, 0,
    ]  # fmt: skip

    for name, users in (("users-100", 100), ("users-500", 500), ("users-1000", 1000)):
        scenario = profile_scenario(name)
        assert isinstance(scenario.load, ClosedLoad)
        assert scenario.load.users == users
    assert set(PROFILES) == {
        "ramp", "sustained", "burst", "steps", "users-100", "users-500", "users-1000",
    }  # fmt: skip
    with pytest.raises(KeyError):
        profile_scenario("nope")


def test_the_closed_shape_runs_the_scenarios_users_until_the_end() -> None:
    scenario = profile_scenario("users-100")  # 100 users, 20 a second, 150 s
    shape = shape_for(scenario)
    assert isinstance(shape, ClosedShape)
    tick = shape.tick(None)
    assert tick is not None
    assert (tick.users, tick.spawn_rate, tick.user_kind) == (100, 20.0, "closed")
    assert shape.tick(149.9) == tick
    assert shape.tick(150.0) is None
    assert [shape.users_at(t) for t in (0.0, 0.99, 1.0, 4.9, 5.0, 100.0)] == [
        1,
        20,
        21,
        99,
        100,
        100,
    ]
    assert shape.users_at(150.0) == 0
    shorter = shape_for(scenario, 30.0)
    assert isinstance(shorter, ClosedShape)
    assert shorter.tick(29.0) is not None and shorter.tick(30.0) is None


def test_profile_rejects_a_non_positive_override() -> None:
    with pytest.raises(ValueError):
        LoadProfile.from_load(ramp_load(), 0.0)
