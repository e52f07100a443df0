"""Two cheap kinds of SimPy event for the model's hot path.

A simulated hour at 500 req/s is millions of events, so what each costs matters:

- `Wake` is a timeout that carries its callback: half the cost of `env.timeout(...)` plus
  `callbacks.append(...)`;
- `ArrivalQueue` hands requests to a handler at their times through one event object,
  rescheduled for each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import simpy
from simpy.events import NORMAL


class Wake(simpy.events.Event):
    """A timeout that carries its callback: half the cost of `env.timeout(...)` plus
    `callbacks.append(...)`, which matters at a few events per simulated request."""

    def __init__(
        self, env: simpy.Environment, delay: float, value: Any, callback: Callable[[Any], None]
    ) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = value
        self._ok = True
        env.schedule(self, NORMAL, delay)


class ArrivalQueue(simpy.events.Event):
    """The open model's requests in the order they leave the engine's overhead queue, handed
    to the handler by this one event, rescheduled for each. SimPy reads only an event's
    callbacks and value when it fires, so one object serves a whole hour of arrivals, and
    the schedule holds one entry for them instead of a second's worth."""

    def __init__(self, env: simpy.Environment, handler: Callable[[Any], None]) -> None:
        self.env = env
        self.callbacks = []
        self._value = None
        self._ok = True
        self._handler = handler
        self._times: deque[float] = deque()
        self._requests: deque[Any] = deque()
        self._armed = False

    def extend(self, times: list[float], requests: list[Any]) -> None:
        """Queue more requests; `times` must not be earlier than any queued already."""
        self._times.extend(times)
        self._requests.extend(requests)
        if not self._armed and self._times:
            self._arm()

    def _arm(self) -> None:
        self._armed = True
        self.callbacks = [self._fire]
        self.env.schedule(self, NORMAL, self._times[0] - self.env.now)

    def _fire(self, _event: Any) -> None:
        self._times.popleft()
        request = self._requests.popleft()
        self._armed = False
        if self._times:
            self._arm()
        self._handler(request)
