"""The simulator's side of the clock seam: the policy core reads SimPy's `env.now`."""

from __future__ import annotations

import simpy


class SimClock:
    """`engine.policy.Clock` over a SimPy environment: simulated seconds, monotonic by
    construction, so the policy core runs unchanged under simulated time."""

    __slots__ = ("_env",)

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env

    def monotonic(self) -> float:
        now: float = self._env.now
        return now
