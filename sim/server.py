"""The engine's own work per request: its worker slots and per-request overhead."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

import numpy as np

from sim.sampling import Distribution


class EngineServer:
    """The engine's own work per request: `workers` slots, first come first served.

    The queue is fed by arrivals alone, so each request's time out of it follows from the
    arrivals: Lindley's recursion, done = max(arrival, a worker's free time) + overhead.
    A request's overhead is drawn from its feature's own distribution when it has one
    (`by_feature`, keyed by feature code), else from `overhead`.
    """

    __slots__ = ("_by_feature", "_free_at", "_overhead", "_rng", "_zero")

    def __init__(
        self,
        workers: int,
        overhead: Distribution,
        rng: np.random.Generator,
        by_feature: Mapping[int, Distribution] | None = None,
    ) -> None:
        self._free_at = [0.0] * workers  # a heap of the times each worker is next free
        self._overhead = overhead
        self._by_feature = dict(by_feature or {})
        self._rng = rng
        self._zero = all(
            d.kind == "constant" and d.mean_s == 0.0 for d in (overhead, *self._by_feature.values())
        )

    @property
    def in_order(self) -> bool:
        """Whether requests leave in the order they arrived (one worker, or no overhead)."""
        return self._zero or len(self._free_at) == 1

    def _draw(self, count: int, features: np.ndarray | None) -> np.ndarray:
        overheads = self._overhead.draw(self._rng, count)
        if self._by_feature and features is not None:
            for code, distribution in self._by_feature.items():
                mine = features == code
                picked = int(np.count_nonzero(mine))
                if picked:
                    overheads[mine] = distribution.draw(self._rng, picked)
        return overheads

    def done_at(self, arrivals: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """When each of these (sorted) arrivals leaves the queue; `features` are their
        feature codes (None: every one draws the common overhead)."""
        if self._zero:
            return arrivals
        overheads = self._draw(len(arrivals), features)
        free_at = self._free_at
        if len(free_at) == 1:
            # d_n = S_n + max(d_0, max_k≤n (a_k − S_{k−1})) with S the overheads' running sum.
            sums = np.cumsum(overheads)
            slack = arrivals - (sums - overheads)
            slack[0] = max(slack[0], free_at[0])
            done = sums + np.maximum.accumulate(slack)
            free_at[0] = float(done[-1])
            return done
        done_list = []
        for arrival, overhead in zip(arrivals.tolist(), overheads.tolist(), strict=True):
            begin = free_at[0] if free_at[0] > arrival else arrival
            heapq.heapreplace(free_at, begin + overhead)
            done_list.append(begin + overhead)
        return np.asarray(done_list)


def service_demands(arrivals: np.ndarray, sojourns: np.ndarray, workers: int) -> np.ndarray:
    """The overheads that, queued as `EngineServer` queues them, give these (measured) times
    in the engine's own work: Lindley's recursion inverted.

    A measured overhead is the time a request spent in the engine outside its dependency
    calls, waiting for a worker included. Request n (in arrival order) begins when a worker
    is free, max(a_n, f_n), and must leave at a_n + w_n, so its demand is what is left:
    a_n + w_n − max(a_n, f_n). One that left earlier than first come first served allows
    (it overtook a request that was waiting) gets no demand; it then holds the worker for
    no time, and the next requests see the queue as it was.
    """
    free_at = [0.0] * workers
    demands = np.empty(len(arrivals), dtype=np.float64)
    order = np.argsort(arrivals, kind="stable")
    for index in order.tolist():
        arrival = float(arrivals[index])
        begin = free_at[0] if free_at[0] > arrival else arrival
        demand = arrival + float(sojourns[index]) - begin
        if demand < 0.0:
            demand = 0.0
        heapq.heapreplace(free_at, begin + demand)
        demands[index] = demand
    return demands
