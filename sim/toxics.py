"""Faults as Toxiproxy applies them, reduced to what a dependency call experiences.

Toxiproxy puts a toxic on a connection (a "link") with probability `toxicity`, once per
connection and direction, when the toxic is added or the connection is opened; the draw
holds for the connection's life (MEASURING.md). Per call, a toxic on the call's connection:

- latency: delays the call's data by latency ± jitter (uniform), once per call in the
  toxic's direction (a small request or response is one chunk);
- bandwidth: the call's bytes in that direction take bytes / (rate · 1000) s;
- slicer: the bytes go as ceil(bytes / average_size) slices, `delay` µs apart;
- timeout 0: the data is held until the toxic is removed, so the call usually hits its call
  timeout; timeout > 0: the data stops and the connection is closed `timeout` after the
  toxic reached it;
- reset_peer: the first data through the toxic is held `timeout`, then the connection is
  reset (TCP RST);
- limit_data: the connection is closed once `bytes` bytes have passed since the toxic
  reached it;
- slow_close: delays only the closing of a socket, which a pooled call does not wait for.

`down` (a disabled proxy) is not a toxic: the dependency model refuses new connections and
drops the open ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from scenarios.schema import FaultBase
from sim.sampling import UniformStream


class CallFailure(IntEnum):
    """Why a dependency call failed; NONE for a call that answered."""

    NONE = 0
    TIMEOUT = 1  # the call timeout expired
    REFUSED = 2  # a new connection was refused (disabled proxy)
    RESET = 3  # the connection was reset or dropped under the call
    CLOSED = 4  # the proxy closed the connection (timeout > 0, limit_data)
    POOL_TIMEOUT = 5  # no connection became free within the pool's acquire timeout


@dataclass(frozen=True, slots=True)
class Toxic:
    """One scenario fault on one dependency, with its attributes in seconds and bytes."""

    fault_id: int
    kind: str
    upstream: bool
    toxicity: float
    start: float
    end: float
    latency_s: float = 0.0
    jitter_s: float = 0.0
    bytes_per_s: float = 0.0
    timeout_s: float = 0.0
    slice_bytes: int = 1
    slice_delay_s: float = 0.0
    limit_bytes: int = 0

    @classmethod
    def from_fault(cls, fault_id: int, fault: FaultBase) -> Toxic:
        """From a scenario's fault."""
        attributes: dict[str, int] = fault.toxiproxy_attributes()
        common: dict[str, Any] = {
            "fault_id": fault_id,
            "kind": fault.toxic,
            "upstream": fault.stream == "upstream",
            "toxicity": float(fault.toxicity),
            "start": float(fault.at),
            "end": float(fault.end),
        }
        kind = fault.toxic
        if kind == "latency":
            return cls(
                **common,
                latency_s=attributes["latency"] / 1e3,
                jitter_s=attributes.get("jitter", 0) / 1e3,
            )
        if kind == "bandwidth":
            # A rate of 0 passes nothing: the same as holding the data.
            if attributes["rate"] == 0:
                return cls(**{**common, "kind": "timeout"})
            return cls(**common, bytes_per_s=attributes["rate"] * 1000.0)
        if kind in ("timeout", "reset_peer"):
            return cls(**common, timeout_s=attributes.get("timeout", 0) / 1e3)
        if kind == "slicer":
            return cls(
                **common,
                slice_bytes=attributes["average_size"],
                slice_delay_s=attributes.get("delay", 0) / 1e6,
            )
        if kind == "limit_data":
            return cls(**common, limit_bytes=attributes["bytes"])
        return cls(**common)  # slow_close, down


class ConnectionToxics:
    """The toxics that reached one connection: fault id → when, and bytes passed since."""

    __slots__ = ("bytes_since", "since")

    def __init__(self) -> None:
        self.since: dict[int, float] = {}
        self.bytes_since: dict[int, int] = {}

    def clear(self) -> None:
        self.since.clear()
        self.bytes_since.clear()


def call_effect(
    toxic: Toxic,
    reached_at: float,
    state: ConnectionToxics,
    now: float,
    duration_s: float,
    request_bytes: int,
    response_bytes: int,
    uniform: UniformStream,
) -> tuple[float, CallFailure]:
    """The call's duration with `toxic` applied to it, and how it fails (if it does)."""
    kind = toxic.kind
    data_bytes = request_bytes if toxic.upstream else response_bytes
    if kind == "latency":
        jitter = toxic.jitter_s * (2.0 * uniform.next() - 1.0) if toxic.jitter_s else 0.0
        return duration_s + max(0.0, toxic.latency_s + jitter), CallFailure.NONE
    if kind == "bandwidth":
        return duration_s + data_bytes / toxic.bytes_per_s, CallFailure.NONE
    if kind == "slicer":
        slices = max(1, math.ceil(data_bytes / toxic.slice_bytes))
        return duration_s + slices * toxic.slice_delay_s, CallFailure.NONE
    if kind == "timeout":
        if toxic.timeout_s > 0:
            # The data stops from the moment the toxic reached the connection, which it
            # closes `timeout` later: a call waits for that close (or finds it closed).
            closes_at = reached_at + toxic.timeout_s
            return max(0.0, closes_at - now), CallFailure.CLOSED
        # Held until the toxic is removed; the caller's call timeout usually comes first.
        return max(0.0, toxic.end - now) + duration_s, CallFailure.NONE
    if kind == "reset_peer":
        # The first data through the toxic is held `timeout`, then the connection is reset:
        # upstream that is the request, at once; downstream the response, once served.
        held_from = 0.0 if toxic.upstream else duration_s
        return held_from + toxic.timeout_s, CallFailure.RESET
    if kind == "limit_data":
        passed = state.bytes_since.get(toxic.fault_id, 0) + request_bytes + response_bytes
        state.bytes_since[toxic.fault_id] = passed
        if passed > toxic.limit_bytes:
            return duration_s, CallFailure.CLOSED
        return duration_s, CallFailure.NONE
    return duration_s, CallFailure.NONE  # slow_close
