"""The engine's own work per request: its worker slots and per-request overhead."""

from __future__ import annotations

import heapq

import numpy as np

from sim.sampling import Distribution


class EngineServer:
    """The engine's own work per request: `workers` slots, first come first served.

    The queue is fed by arrivals alone, so each request's time out of it follows from the
    arrivals: Lindley's recursion, done = max(arrival, a worker's free time) + overhead.
    """

    __slots__ = ("_free_at", "_overhead", "_rng", "_zero")

    def __init__(self, workers: int, overhead: Distribution, rng: np.random.Generator) -> None:
        self._free_at = [0.0] * workers  # a heap of the times each worker is next free
        self._overhead = overhead
        self._rng = rng
        self._zero = overhead.kind == "constant" and overhead.mean_s == 0.0

    @property
    def in_order(self) -> bool:
        """Whether requests leave in the order they arrived (one worker, or no overhead)."""
        return self._zero or len(self._free_at) == 1

    def done_at(self, arrivals: np.ndarray) -> np.ndarray:
        """When each of these (sorted) arrivals leaves the queue."""
        if self._zero:
            return arrivals
        overheads = self._overhead.draw(self._rng, len(arrivals))
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
