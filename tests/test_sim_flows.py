"""The flow table covers the 16 features and agrees with the policy file."""

from __future__ import annotations

import pytest

from engine.policy import FEATURE_NAMES
from engine.policyfile import load_policy
from sim.flows import FLOWS, Served, calls_by_dependency, primary_dependencies

POLICY = load_policy()


def test_every_feature_has_a_flow() -> None:
    assert tuple(FLOWS) == FEATURE_NAMES
    assert set(FLOWS) == set(POLICY.features)


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_primary_path_calls_what_the_policy_says_it_needs(feature: str) -> None:
    assert primary_dependencies(feature) == frozenset(POLICY.features[feature].needs)


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_fallbacks_use_only_what_the_policy_lets_them(feature: str) -> None:
    flow, spec = FLOWS[feature], POLICY.features[feature]
    if spec.fallback is None:
        assert not flow.fallbacks and not flow.fallback_when
        return
    allowed = set(spec.fallback.needs) | set(spec.fallback.needs_any) | set(spec.needs)
    for name, path in flow.fallbacks.items():
        assert path.served is not Served.PRIMARY, name
        assert path.dependencies <= allowed, name
    # Whatever is unavailable, a fallback the policy would allow is chosen.
    assert flow.choose_fallback(frozenset(spec.needs)) is not None or spec.fallback.needs_any


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_failures_lead_to_known_fallbacks(feature: str) -> None:
    flow = FLOWS[feature]
    for path in (flow.primary, *flow.fallbacks.values()):
        for call in path.calls:
            if call.on_failure is not None:
                assert call.on_failure in flow.fallbacks


def test_inventory_read_as_policy_md_describes_it() -> None:
    flow = FLOWS["inventory_read"]
    assert [(c.dependency, c.operation) for c in flow.primary.calls] == [
        ("redis", "get"),
        ("postgres", "select"),
        ("redis", "set"),
    ]
    direct = flow.choose_fallback({"redis"})
    stale = flow.choose_fallback({"postgres"})
    assert direct is not None and direct.dependencies == {"postgres"}
    assert stale is not None and stale.served is Served.STALE and stale.dependencies == {"redis"}


def test_branches_for_server_timing() -> None:
    # A cache hit touches only Redis, once; a miss calls Redis twice and PostgreSQL once.
    assert calls_by_dependency("inventory_read", {"redis"}) == {"redis": 1}
    assert calls_by_dependency("inventory_read", {"redis", "postgres"}) == {
        "redis": 2,
        "postgres": 1,
    }
    assert calls_by_dependency("inventory_read", {"postgres"}) is None
    assert calls_by_dependency("health_status", set()) == {}
