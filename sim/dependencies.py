"""A dependency as the engine sees it: a pool of connections behind a Toxiproxy proxy.

The pool holds `pool_size` connections (the policy's), opened at start. A call checks one out
(or waits, up to `pool_acquire_timeout_s`), takes a service time drawn from the calibration
(the feature's own, or the dependency's times the feature's scale), plus whatever the toxics on that connection add, and gives the
connection back; a connection the call broke (timed out, reset, closed) is reopened on its
next use, paying `connect_s` and drawing its toxics afresh. While the proxy is down, open
connections are dropped and new ones are refused after `refused_s`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.policy import BreakerConfig
from sim.parameters import DependencyParameters
from sim.sampling import Stream, UniformStream
from sim.toxics import CallFailure, ConnectionToxics, Toxic, call_effect


class Connection:
    __slots__ = ("alive", "caller", "index", "toxics")

    def __init__(self, index: int) -> None:
        self.index = index
        self.alive = True
        self.toxics = ConnectionToxics()
        # Whoever holds the connection: what a dropped connection must tell.
        self.caller: Any = None


class Dependency:
    __slots__ = (
        "_lifo",
        "_service",
        "_uniform",
        "acquire_timeout_s",
        "call_timeout_s",
        "connect_s",
        "connections",
        "down",
        "idle",
        "name",
        "refused_s",
        "request_bytes",
        "response_bytes",
        "toxics",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        breaker: BreakerConfig,
        parameters: DependencyParameters,
        service: Stream,
        uniform: UniformStream,
    ) -> None:
        self.name = name
        self.call_timeout_s = breaker.call_timeout_s
        self.acquire_timeout_s = breaker.pool_acquire_timeout_s
        self.connect_s = parameters.connect_s
        self.refused_s = parameters.refused_s
        self.request_bytes = parameters.request_bytes
        self.response_bytes = parameters.response_bytes
        self._lifo = parameters.pool_order == "lifo"
        self._service = service
        self._uniform = uniform
        self.connections = [Connection(index) for index in range(breaker.pool_size)]
        self.idle: deque[Connection] = deque(self.connections)
        # Callers waiting for a connection, oldest first; a caller that gave up stays here
        # until it reaches the front (cheaper than removing it) and is skipped then.
        self.waiting: deque[Any] = deque()
        self.toxics: list[Toxic] = []
        self.down = False

    # --- the pool --------------------------------------------------------------------------

    def checkout(self) -> Connection | None:
        idle = self.idle
        if not idle:
            return None
        return idle.pop() if self._lifo else idle.popleft()

    def checkin(self, connection: Connection) -> None:
        connection.caller = None
        self.idle.append(connection)

    @property
    def in_use(self) -> int:
        return len(self.connections) - len(self.idle)

    # --- one call --------------------------------------------------------------------------

    def plan_call(
        self, connection: Connection, now: float, scale: float, service: Stream | None = None
    ) -> tuple[float, int]:
        """How long a call on `connection` starting now takes, and how it fails (0: it
        does not); the caller applies the call timeout. `service`: the calling feature's
        own service times, instead of the dependency's times `scale`."""
        duration = (self._service if service is None else service).next() * scale
        if not connection.alive:
            if self.down:
                return self.refused_s, CallFailure.REFUSED
            self._reopen(connection, now)
            duration += self.connect_s
        if not self.toxics:
            return duration, CallFailure.NONE
        failure = CallFailure.NONE
        state = connection.toxics
        for toxic in self.toxics:
            reached_at = state.since.get(toxic.fault_id)
            if reached_at is None:
                continue
            duration, failure = call_effect(
                toxic,
                reached_at,
                state,
                now,
                duration,
                self.request_bytes,
                self.response_bytes,
                self._uniform,
            )
            if failure:
                break
        return duration, failure

    def _reopen(self, connection: Connection, now: float) -> None:
        connection.alive = True
        connection.toxics.clear()
        for toxic in self.toxics:
            self._draw(connection, toxic, now)

    def _draw(self, connection: Connection, toxic: Toxic, now: float) -> None:
        if toxic.toxicity >= 1.0 or self._uniform.next() < toxic.toxicity:
            connection.toxics.since[toxic.fault_id] = now

    # --- faults ----------------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic, now: float) -> None:
        self.toxics.append(toxic)
        for connection in self.connections:
            if connection.alive:
                self._draw(connection, toxic, now)

    def remove_toxic(self, fault_id: int) -> None:
        self.toxics = [toxic for toxic in self.toxics if toxic.fault_id != fault_id]
        for connection in self.connections:
            connection.toxics.since.pop(fault_id, None)
            connection.toxics.bytes_since.pop(fault_id, None)

    def go_down(self) -> list[Any]:
        """Disable the proxy: every connection is dropped; returns the callers whose calls
        were in flight, for the model to fail."""
        self.down = True
        dropped = []
        for connection in self.connections:
            connection.alive = False
            if connection.caller is not None:
                dropped.append(connection.caller)
        return dropped

    def come_up(self) -> None:
        self.down = False
