"""Load shapes: how much load a run offers, and when, derived from the scenario.

Two models (MEASURING.md):

- **open** — the target rate follows the scenario's `OpenLoad.rate_at`: a ramp, a held rate,
  steps, a burst. The rate is produced by open-loop generators (`loadtests.openloop`), one
  per load-generating Locust process, each sending at Poisson arrival times whatever the
  responses. The shape's job is to keep exactly one generator per process alive for the
  length of the load plus a drain, then to end the test. Scaling the *number of users* with
  the rate (Locust's usual way) would make the rate depend on response times — the closed
  loop the open model exists to avoid.
- **closed** — `ClosedLoad.users` users, started at `spawn_rate_per_s`, each sending, waiting
  a uniform time in the scenario's wait range, and sending again, until the load's end.

The classes here are pure (no Locust import: importing Locust patches the whole process with
gevent). `loadtests.locust_users.ScenarioShape` and the preset shapes beside it are the
Locust `LoadTestShape` classes that call `tick` once a second.

Times are seconds on the load's clock: t = 0 is the first scheduled arrival, shared by every
generator process (`loadtests.plan.LoadPlan.t0_epoch`).

The seed's profiles are the catalog scenarios ``ramp-100-500`` (100 → 500 req/s over 90 s,
then 30 s at 500), ``sustained-500``, ``burst-5000`` (5,000 req/s for 5 s over 200 req/s),
``closed-100-users``, ``closed-500-users`` and ``closed-1000-users``, plus ``steps``
(100, 200, 300, 400, 500 req/s for 30 s each), which `PROFILES` names.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from scenarios import (
    ClosedLoad,
    OpenLoad,
    RatePiece,
    Scenario,
    load_scenario,
    parse_scenario,
    resolve_scenario_path,
)
from scenarios.schema import Burst, Hold, Ramp, Step

UserKind = Literal["open", "closed"]

# After the last arrival an open run waits this long at most for answers still in flight
# (a generator that has all its answers reports so and the run ends earlier).
DEFAULT_DRAIN_S = 16.0


# --------------------------------------------------------------------------- the target rate


def _final_base_rate(load: OpenLoad) -> float:
    """The base rate after the last shape segment: what holds once the shape is over (a burst
    leaves the base rate unchanged, so this is not always the last piece's rate)."""
    base = load.rate if load.rate is not None else 0.0
    for segment in load.shape:
        action = segment.action
        if isinstance(action, Ramp):
            base = action.end_rate
        elif isinstance(action, Hold):
            base = base if action.rate is None else action.rate
        elif isinstance(action, Step):
            base = action.rate
        elif isinstance(action, Burst):
            pass
    return base


def _piece_start(piece: RatePiece) -> float:
    return piece.start


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """An open load's target rate over [0, `duration_s`), as linear pieces.

    Without an override these are the scenario's own pieces, so `rate_at` equals
    `OpenLoad.rate_at` everywhere. A shorter override cuts the timeline; a longer one holds
    the final base rate until the new end.
    """

    pieces: tuple[RatePiece, ...]
    duration_s: float

    @classmethod
    def from_load(cls, load: OpenLoad, duration_s: float | None = None) -> LoadProfile:
        pieces = load.pieces
        if duration_s is None or duration_s == load.duration_s:
            return cls(pieces, load.duration_s)
        if duration_s <= 0:
            raise ValueError(f"a load lasts longer than 0 s (got {duration_s!r})")
        if duration_s > load.duration_s:
            base = _final_base_rate(load)
            extended = (*pieces, RatePiece(load.duration_s, duration_s, base, base))
            return cls(extended, duration_s)
        cut: list[RatePiece] = []
        for piece in pieces:
            if piece.start >= duration_s:
                break
            if piece.end > duration_s:
                piece = RatePiece(
                    piece.start, duration_s, piece.start_rate, piece.rate_at(duration_s)
                )
            cut.append(piece)
        return cls(tuple(cut), duration_s)

    def rate_at(self, t: float) -> float:
        """The target rate (req/s) at `t`; 0 outside [0, `duration_s`)."""
        if not 0.0 <= t < self.duration_s:
            return 0.0
        index = bisect.bisect_right(self.pieces, t, key=_piece_start) - 1
        return self.pieces[index].rate_at(t)

    @property
    def max_rate(self) -> float:
        return max((max(p.start_rate, p.end_rate) for p in self.pieces), default=0.0)

    @property
    def expected_requests(self) -> float:
        """The integral of the rate: the mean number of arrivals."""
        return sum(piece.expected_requests for piece in self.pieces)

    @property
    def mean_rate(self) -> float:
        return self.expected_requests / self.duration_s if self.duration_s > 0 else 0.0


# --------------------------------------------------------------------------- the shapes


@dataclass(frozen=True, slots=True)
class ShapeTick:
    """What a `LoadTestShape.tick` returns: the user count, the spawn rate (users per second)
    and which kind of user to run."""

    users: int
    spawn_rate: float
    user_kind: UserKind


@dataclass(frozen=True, slots=True)
class OpenShape:
    """One open-loop generator per load-generating process from the test start until the load
    is over and its answers are in (or `drain_s` has passed)."""

    profile: LoadProfile
    drain_s: float = DEFAULT_DRAIN_S

    @property
    def duration_s(self) -> float:
        return self.profile.duration_s

    def rate_at(self, t: float) -> float:
        """The target rate at load time `t`: what the generators together follow."""
        return self.profile.rate_at(t)

    def tick(
        self, t: float | None, generators: int, generators_finished: int = 0
    ) -> ShapeTick | None:
        """`t`: load time, None before t = 0 is fixed; `generators`: how many processes
        generate load; `generators_finished`: how many have sent everything and have every
        answer. None ends the test."""
        count = max(1, generators)
        end = self.profile.duration_s
        if t is not None and t >= end and (generators_finished >= count or t >= end + self.drain_s):
            return None
        # All generators at once: each follows its share of the same schedule from t = 0.
        return ShapeTick(count, float(count), "open")


@dataclass(frozen=True, slots=True)
class ClosedShape:
    """`users` users started at `spawn_rate` per second, until the load's end."""

    load: ClosedLoad
    duration_s: float

    def users_at(self, t: float) -> int:
        """How many users have started by load time `t` (Locust starts them at the spawn
        rate from t = 0, as the simulator does)."""
        if not 0.0 <= t < self.duration_s:
            return 0
        return min(self.load.users, math.floor(t * self.load.spawn_rate_per_s) + 1)

    def tick(
        self, t: float | None, generators: int = 1, generators_finished: int = 0
    ) -> ShapeTick | None:
        if t is not None and t >= self.duration_s:
            return None
        return ShapeTick(self.load.users, self.load.spawn_rate_per_s, "closed")


Shape = OpenShape | ClosedShape


def shape_for(
    scenario: Scenario, duration_s: float | None = None, drain_s: float = DEFAULT_DRAIN_S
) -> Shape:
    """The shape of a scenario's load, optionally with another length."""
    load = scenario.load
    if isinstance(load, OpenLoad):
        return OpenShape(LoadProfile.from_load(load, duration_s), drain_s)
    return ClosedShape(load, duration_s if duration_s is not None else load.duration_s)


# --------------------------------------------------------------------------- profiles

_STEPS = {
    "name": "steps-100-500",
    "description": (
        "Steps of 100, 200, 300, 400 and 500 req/s, 30 s each, default mix, no faults: a "
        "staircase shows at which step p95 leaves its baseline."
    ),
    "load": {
        "model": "open",
        "shape": [{"step": {"rate": rate, "for": "30s"}} for rate in (100, 200, 300, 400, 500)],
    },
    "warmup": "10s",
    "seed": 20,
}

PROFILES: Mapping[str, str] = MappingProxyType(
    {
        "ramp": "ramp-100-500",
        "sustained": "sustained-500",
        "burst": "burst-5000",
        "steps": "steps-100-500",
        "users-100": "closed-100-users",
        "users-500": "closed-500-users",
        "users-1000": "closed-1000-users",
    }
)
"""The seed's load profiles, by short name → the scenario that carries each."""


def profile_scenario(name: str) -> Scenario:
    """The scenario of a profile of `PROFILES`."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r} (profiles: {', '.join(PROFILES)})")
    if PROFILES[name] == _STEPS["name"]:
        return parse_scenario(_STEPS, source=f"profile {name}")
    return load_scenario(resolve_scenario_path(PROFILES[name]))
