"""A scripted sequence of call outcomes gives the same breaker transitions in the simulator
(SimPy's clock, the model's call path) as in a unit run of the core on a ManualClock."""

from __future__ import annotations

import dataclasses

from engine.policy import (
    BreakerTransition,
    ManualClock,
    Outcome,
    Permit,
    PolicyConfig,
    Rejected,
    ResiliencePolicy,
    ServeMode,
)
from engine.policyfile import load_policy
from scenarios.schema import Scenario
from sim.dependencies import Connection, Dependency
from sim.model import Model
from sim.parameters import load_parameters
from sim.toxics import CallFailure

FEATURE = "product_search"  # one PostgreSQL call, no fallback

# (start, duration, fails) of each call: healthy traffic, a burst of failures that trips the
# breaker, calls refused while it is open, a failed trial (the open time doubles), then
# successful trials and healthy traffic again. No time falls on a whole second, where the
# 1 s tick runs.
SCRIPT: list[tuple[float, float, bool]] = (
    [(0.05 + 0.1 * i, 0.002, False) for i in range(30)]
    + [(3.05 + 0.05 * i, 0.001, True) for i in range(20)]
    + [(4.55 + 0.5 * i, 0.001, True) for i in range(60)]  # most arrive while OPEN
    + [(35.55 + 0.25 * i, 0.002, i < 3) for i in range(40)]
    + [(100.05 + 0.5 * i, 0.003, False) for i in range(60)]
)


_BY_START = {round(start, 9): (duration, fails) for start, duration, fails in SCRIPT}


class _ScriptedDependency(Dependency):
    """PostgreSQL's pool, with each call's duration and outcome taken from the script."""

    __slots__ = ()

    def plan_call(self, connection: Connection, now: float, scale: float) -> tuple[float, int]:
        duration, fails = _BY_START[round(now, 9)]
        return duration, CallFailure.RESET if fails else CallFailure.NONE


def _policy() -> PolicyConfig:
    policy = load_policy()
    postgres = dataclasses.replace(policy.breakers["postgres"], pool_size=50)
    return dataclasses.replace(policy, breakers={**policy.breakers, "postgres": postgres})


def _transitions(events: list[object]) -> list[tuple[float, str, str, str]]:
    return [
        (round(e.at, 9), e.dependency, e.from_state.value, e.to_state.value)
        for e in events
        if isinstance(e, BreakerTransition)
    ]


def reference_run(policy_config: PolicyConfig) -> list[tuple[float, str, str, str]]:
    """The core alone on a ManualClock, stepped through the same moments as the engine
    would be: decide then acquire at each start, record at each end, tick each second."""
    clock = ManualClock()
    policy = ResiliencePolicy(policy_config, clock)
    events: list[object] = []
    policy.subscribe(events.append)
    moments: list[tuple[float, int, int]] = []  # (time, kind, call): kind 0 tick, 1 start, 2 end
    horizon = 140
    moments += [(float(second), 0, -1) for second in range(horizon + 1)]
    moments += [(start, 1, i) for i, (start, _, _) in enumerate(SCRIPT)]
    permits: dict[int, Permit] = {}
    pending = sorted(moments)
    while pending:
        t, kind, call = pending.pop(0)
        clock.set(t)
        if kind == 0:
            policy.tick()
        elif kind == 1:
            if policy.decide(FEATURE).mode is not ServeMode.PRIMARY:
                continue
            permit = policy.acquire("postgres")
            if isinstance(permit, Rejected):
                continue
            permits[call] = permit
            start, duration, _ = SCRIPT[call]
            pending.append((start + duration, 2, call))
            pending.sort()
        else:
            _, duration, fails = SCRIPT[call]
            outcome = Outcome.FAILURE if fails else Outcome.SUCCESS
            policy.record(permits.pop(call), outcome, duration)
    return _transitions(events)


def simulated_run(policy_config: PolicyConfig) -> list[tuple[float, str, str, str]]:
    scenario = Scenario.model_validate(
        {
            # Background load that calls no dependency, so only the script reaches PostgreSQL.
            "name": "parity",
            "load": {"model": "closed", "users": 1, "wait": "1s", "duration": 140},
            "mix": {"health_status": 1},
            "seed": 1,
        }
    )
    parameters = load_parameters({"server": {"overhead": {"kind": "constant", "value_ms": 0}}})
    model = Model(scenario, policy_config, parameters, replication=0, seed=1)
    events: list[object] = []
    model.policy.subscribe(events.append)
    # The script decides the duration and outcome of each call that reaches the pool.
    model.dependencies["postgres"].__class__ = _ScriptedDependency
    for start, _, _ in SCRIPT:
        model.inject(FEATURE, start)
    model.run()
    # Calls refused by the breaker or shed by the policy never reached the pool.
    return _transitions(events)


def test_same_transitions_as_the_core_alone() -> None:
    policy_config = _policy()
    reference = reference_run(policy_config)
    states = [to for _, _, _, to in reference]
    # The script exercises the whole cycle, including a failed trial.
    assert states[:3] == ["OPEN", "HALF_OPEN", "OPEN"]
    assert states[-1] == "CLOSED"
    assert simulated_run(policy_config) == reference
