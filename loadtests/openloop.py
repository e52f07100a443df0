"""The open-loop generator: Poisson arrivals that follow the target rate, sent on time
whatever the service does, with an account of every send that came late.

Why open loop (MEASURING.md): a closed-loop client waits for an answer before its next
request, so a stalled server is sent less and its stall is under-sampled (coordinated
omission). Here arrival times are fixed in advance, each request is sent in a greenlet of its
own (a slow answer never delays the next send), and latency is measured from the *scheduled*
time: if the generator itself falls behind, the delay is charged to latency and the send is
counted as late.

This module is the generator's logic, free of Locust and gevent so that it can be tested
with a fake clock:

- `arrival_chunks` — the arrival process: a non-homogeneous Poisson process with intensity
  `LoadProfile.rate_at(t)`, drawn by thinning (Lewis and Shedler) piece by piece, each arrival
  labelled with a feature drawn from the scenario's mix. Seeded: the same seed gives the same
  arrivals and features.
- `share_of` — one generator's share when several processes generate: every process draws
  the whole schedule from the same seed and keeps every n-th arrival. The merged schedule is
  therefore the same whatever the number of processes.
- `drive` — the send loop: sleep until each arrival is due, then dispatch it.
- `LatenessTracker` — how many sends were late, by how much (max, p99).
- `connection_pool_size` — a client pool large enough for the rate.

The Locust user that runs it under gevent is `loadtests.locust_users.OpenLoopUser`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loadtests.shapes import LoadProfile
from reports.runfolder import FEATURE_CODES

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int8]

# Arrivals are drawn this many seconds at a time, so that a long run never holds its whole
# schedule in memory and the draw of one window is cheap.
DEFAULT_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class Arrivals:
    """A chunk of the schedule: times (s from t = 0, ascending) and feature codes
    (`reports.runfolder.FEATURE_CODES`)."""

    times: FloatArray
    features: CodeArray

    def __len__(self) -> int:
        return len(self.times)


def mix_codes(fractions: Mapping[str, float]) -> tuple[CodeArray, FloatArray]:
    """A mix (`Scenario.mix_fractions()`) as feature codes and their probabilities."""
    if not fractions:
        raise ValueError("the mix has no feature with a weight above 0")
    codes = np.array([FEATURE_CODES[name] for name in fractions], dtype=np.int8)
    probabilities = np.array(list(fractions.values()), dtype=np.float64)
    return codes, probabilities / probabilities.sum()


def _thinned_window(
    start: float,
    end: float,
    rate_start: float,
    rate_end: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Arrivals on [start, end) of a Poisson process whose rate goes linearly from
    `rate_start` to `rate_end`: a homogeneous process at the larger rate, each point kept with
    probability rate(t) / that rate."""
    bound = max(rate_start, rate_end)
    length = end - start
    if bound <= 0.0 or length <= 0.0:
        return np.empty(0, dtype=np.float64)
    count = int(rng.poisson(bound * length))
    # Given their number, the points of a homogeneous Poisson process are uniform.
    times = np.sort(rng.uniform(start, end, count))
    if rate_start == rate_end:
        return times
    rates = rate_start + (rate_end - rate_start) * (times - start) / length
    keep = rng.uniform(0.0, bound, count) < rates
    return times[keep]


def arrival_chunks(
    profile: LoadProfile,
    fractions: Mapping[str, float],
    rng: np.random.Generator,
    window_s: float = DEFAULT_WINDOW_S,
) -> Iterator[Arrivals]:
    """The whole schedule of `profile`, a window at a time (empty windows are skipped)."""
    codes, probabilities = mix_codes(fractions)
    for piece in profile.pieces:
        length = piece.end - piece.start
        windows = max(1, math.ceil(length / window_s))
        for index in range(windows):
            start = piece.start + length * index / windows
            end = (
                piece.end if index == windows - 1 else piece.start + length * (index + 1) / windows
            )
            times = _thinned_window(start, end, piece.rate_at(start), piece.rate_at(end), rng)
            if len(times) == 0:
                continue
            features = codes[rng.choice(len(codes), size=len(times), p=probabilities)]
            yield Arrivals(times, features.astype(np.int8, copy=False))


def share_of(chunks: Iterable[Arrivals], slot: int, generators: int) -> Iterator[Arrivals]:
    """Generator `slot`'s share (of `generators`): the arrivals whose index in the whole
    schedule is `slot` modulo `generators`."""
    if not 0 <= slot < generators:
        raise ValueError(f"slot {slot} is not one of {generators} generators")
    if generators == 1:
        yield from chunks
        return
    first = 0
    for chunk in chunks:
        offset = (slot - first) % generators
        picked = slice(offset, None, generators)
        first += len(chunk)
        if offset < len(chunk):
            yield Arrivals(chunk.times[picked], chunk.features[picked])


def schedule(
    profile: LoadProfile,
    fractions: Mapping[str, float],
    rng: np.random.Generator,
    slot: int = 0,
    generators: int = 1,
) -> Iterator[Arrivals]:
    """Generator `slot`'s arrivals: `share_of(arrival_chunks(...))`."""
    return share_of(arrival_chunks(profile, fractions, rng), slot, generators)


def arrival_rng(seed: int, replication: int = 0) -> np.random.Generator:
    """The arrival process's random stream for a run: the same on every generator process."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(replication,)))


# --------------------------------------------------------------------------- the send loop


class ScheduleClock(Protocol):
    """The generator's view of time: `now` in seconds from t = 0; `sleep` gives way to the
    senders (under gevent, `gevent.sleep`; in tests, a fake that advances `now`)."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


# Called with (scheduled time, feature code); what it returns is ignored.
Dispatch = Callable[[float, int], object]


@dataclass(frozen=True, slots=True)
class DriveResult:
    dispatched: int
    # True when the loop was told to stop before the end of its schedule.
    abandoned: bool


def drive(
    arrivals: Iterable[Arrivals],
    clock: ScheduleClock,
    dispatch: Dispatch,
    should_stop: Callable[[], bool] = lambda: False,
) -> DriveResult:
    """Dispatch every arrival at its time: `dispatch(scheduled, feature_code)`.

    The loop never sends early. When it is behind it dispatches without sleeping, but gives
    way (`sleep(0)`) after each dispatch so the senders it started can run; the lateness of
    each send is measured by the sender, when it actually sends.
    """
    dispatched = 0
    for chunk in arrivals:
        for scheduled, feature in zip(chunk.times.tolist(), chunk.features.tolist(), strict=True):
            if should_stop():
                return DriveResult(dispatched, abandoned=True)
            delay = scheduled - clock.now()
            clock.sleep(delay if delay > 0.0 else 0.0)
            dispatch(scheduled, feature)
            dispatched += 1
    return DriveResult(dispatched, abandoned=False)


# --------------------------------------------------------------------------- lateness


@dataclass(frozen=True, slots=True)
class LatenessSummary:
    """How late the sends were: `late` of `sent` came more than `threshold_s` after their
    scheduled time; `max_s` and `p99_s` over all sends."""

    sent: int
    late: int
    threshold_s: float
    max_s: float
    p99_s: float
    mean_s: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "late": self.late,
            "late_threshold_s": self.threshold_s,
            "max_lateness_s": self.max_s,
            "p99_lateness_s": self.p99_s,
            "mean_lateness_s": self.mean_s,
        }


def lateness_summary(lateness_s: npt.ArrayLike, threshold_s: float) -> LatenessSummary:
    """Summarise raw lateness samples (send time − scheduled time, seconds). A sample below 0
    (a clock read before the scheduled time by rounding) counts as on time."""
    samples = np.maximum(np.asarray(lateness_s, dtype=np.float64), 0.0)
    if samples.size == 0:
        return LatenessSummary(0, 0, threshold_s, 0.0, 0.0, 0.0)
    return LatenessSummary(
        sent=int(samples.size),
        late=int(np.count_nonzero(samples > threshold_s)),
        threshold_s=threshold_s,
        max_s=float(samples.max()),
        p99_s=float(np.percentile(samples, 99)),
        mean_s=float(samples.mean()),
    )


class LatenessTracker:
    """Collects each send's lateness as it happens (8 bytes a send) for a live summary."""

    __slots__ = ("_samples", "threshold_s")

    def __init__(self, threshold_s: float) -> None:
        self.threshold_s = threshold_s
        self._samples = array("d")

    def observe(self, scheduled: float, sent: float) -> float:
        """Record a send at `sent` of an arrival due at `scheduled`; returns its lateness."""
        lateness = sent - scheduled
        self._samples.append(lateness)
        return lateness

    def summary(self) -> LatenessSummary:
        return lateness_summary(np.frombuffer(self._samples, dtype=np.float64), self.threshold_s)


# --------------------------------------------------------------------------- sizing


def connection_pool_size(
    rate: float, *, hold_s: float = 0.5, floor: int = 64, ceiling: int = 4000
) -> int:
    """Connections for a generator sending `rate` req/s: by Little's law, the rate times how
    long a connection is held. Half a second covers a healthy engine many times over and a
    degraded one (answers within its call timeouts) a good part of the way; beyond the pool,
    requests wait for a connection inside the client, and that wait is charged to their
    latency, which is measured from the scheduled time."""
    return max(floor, min(ceiling, math.ceil(rate * hold_s)))
