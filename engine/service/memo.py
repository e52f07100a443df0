"""In-process single flight, with an optional short memory of the result.

When a cached aggregate expires under load, every request that misses would otherwise run
the same heavy query at once (a stampede) and take the PostgreSQL pool with it. Here the
first caller starts the computation and every caller, the first included, awaits that one
result; with `ttl_s > 0` the result is also kept that long. A failure is never remembered:
the next caller tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, ttl_s: float = 0.0, max_entries: int = 256) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._results: dict[str, tuple[float, T]] = {}
        self._in_flight: dict[str, asyncio.Task[T]] = {}

    async def get(self, key: str, compute: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._ttl_s > 0:
            remembered = self._results.get(key)
            if remembered is not None and remembered[0] > time.monotonic():
                return remembered[1]
        task = self._in_flight.get(key)
        if task is None:
            # A task of its own: the request that started it may go away, the others still
            # wait for its result.
            task = asyncio.ensure_future(compute())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if task.cancelled() or task.exception() is not None or self._ttl_s <= 0:
            return
        if len(self._results) >= self._max_entries:
            self._results.clear()
        self._results[key] = (time.monotonic() + self._ttl_s, task.result())
