"""Each Toxiproxy toxic, and a disabled proxy, as `sim.toxics` reduces it to what one
dependency call experiences; and toxicity drawn once per connection (MEASURING.md)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from engine.policyfile import load_policy
from scenarios.schema import Fault
from sim.dependencies import Dependency
from sim.parameters import DependencyParameters
from sim.sampling import Constant, Stream, UniformStream
from sim.toxics import CallFailure, ConnectionToxics, Toxic, call_effect

SERVICE_S = 0.002  # every call's own service time: a constant, so effects read exactly
REQUEST_BYTES = 300
RESPONSE_BYTES = 2000
FAULT_AT = 10.0
FAULT_FOR = 20.0
NOW = 12.0  # a call starting 2 s into the fault

_FAULT = TypeAdapter(Fault)


def toxic(kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes: int) -> Toxic:
    fault: dict[str, Any] = {
        "at": FAULT_AT,
        "duration": FAULT_FOR,
        "target": "postgres",
        "toxic": kind,
        "attributes": attributes,
    }
    if kind != "down":
        fault |= {"stream": stream, "toxicity": toxicity}
    return Toxic.from_fault(0, _FAULT.validate_python(fault))


def uniform(seed: int = 1) -> UniformStream:
    return UniformStream(np.random.default_rng(seed))


def effect(
    applied: Toxic,
    *,
    reached_at: float = FAULT_AT,
    now: float = NOW,
    state: ConnectionToxics | None = None,
    draws: UniformStream | None = None,
) -> tuple[float, CallFailure]:
    duration, failure = call_effect(
        applied,
        reached_at,
        state if state is not None else ConnectionToxics(),
        now,
        SERVICE_S,
        REQUEST_BYTES,
        RESPONSE_BYTES,
        draws if draws is not None else uniform(),
    )
    return duration, CallFailure(failure)


# --- one call ---------------------------------------------------------------------------------


def test_latency_adds_its_delay_once_per_call() -> None:
    latency = toxic("latency", latency=150)
    assert latency.latency_s == 0.150 and latency.jitter_s == 0.0
    assert effect(latency) == (pytest.approx(SERVICE_S + 0.150), CallFailure.NONE)


def test_latency_jitter_is_uniform_around_the_latency_and_seeded() -> None:
    jittery = toxic("latency", latency=100, jitter=40)
    draws, same_draws = uniform(7), uniform(7)
    added = np.array([effect(jittery, draws=draws)[0] - SERVICE_S for _ in range(4000)])
    again = np.array([effect(jittery, draws=same_draws)[0] - SERVICE_S for _ in range(4000)])
    assert np.array_equal(added, again)
    assert added.min() >= 0.060 - 1e-12 and added.max() <= 0.140 + 1e-12
    # Uniform on [60, 140] ms: mean 100 ms, standard deviation 40/√3 ms.
    assert added.mean() == pytest.approx(0.100, abs=4 * 0.040 / math.sqrt(3) / math.sqrt(4000))
    assert added.std() == pytest.approx(0.040 / math.sqrt(3), rel=0.05)


def test_latency_never_makes_a_call_shorter() -> None:
    # A jitter larger than the latency cannot take time away.
    wide = toxic("latency", latency=10, jitter=50)
    draws = uniform(3)
    durations = [effect(wide, draws=draws)[0] for _ in range(1000)]
    assert min(durations) == pytest.approx(SERVICE_S)
    assert max(durations) <= SERVICE_S + 0.060 + 1e-12


def test_bandwidth_limits_the_bytes_in_its_direction() -> None:
    downstream = toxic("bandwidth", rate=10)  # KB/s
    upstream = toxic("bandwidth", stream="upstream", rate=10)
    slowed = SERVICE_S + RESPONSE_BYTES / 10_000
    assert effect(downstream) == (pytest.approx(slowed), CallFailure.NONE)
    assert effect(upstream) == (pytest.approx(SERVICE_S + REQUEST_BYTES / 10_000), CallFailure.NONE)


def test_bandwidth_of_zero_holds_the_data_like_timeout_zero() -> None:
    stalled = toxic("bandwidth", rate=0)
    assert stalled.kind == "timeout" and stalled.timeout_s == 0.0
    assert effect(stalled) == effect(toxic("timeout"))


def test_slow_close_costs_a_pooled_call_nothing() -> None:
    assert effect(toxic("slow_close", delay=500)) == (SERVICE_S, CallFailure.NONE)


def test_timeout_zero_holds_the_data_until_the_toxic_is_removed() -> None:
    held = toxic("timeout", timeout=0)
    duration, failure = effect(held)
    assert failure is CallFailure.NONE
    assert duration == pytest.approx(FAULT_AT + FAULT_FOR - NOW + SERVICE_S)
    # ... which is longer than any call timeout of the policy: the caller gives up first.
    assert duration > max(b.call_timeout_s for b in load_policy().breakers.values())


def test_timeout_above_zero_closes_the_connection_after_it() -> None:
    closing = toxic("timeout", timeout=5000)
    # The toxic reached the connection at 10 s; a call at 12 s waits for the close at 15 s.
    assert effect(closing) == (pytest.approx(3.0), CallFailure.CLOSED)
    # A call after the close finds the connection closed at once.
    assert effect(closing, now=16.0) == (0.0, CallFailure.CLOSED)
    # A connection opened later is closed `timeout` after it opened.
    assert effect(closing, reached_at=14.0, now=14.5) == (pytest.approx(4.5), CallFailure.CLOSED)


@pytest.mark.parametrize("timeout_ms", [0, 300])
def test_reset_peer_resets_once_its_data_passes(timeout_ms: int) -> None:
    upstream = toxic("reset_peer", stream="upstream", timeout=timeout_ms)
    downstream = toxic("reset_peer", timeout=timeout_ms)
    held_s = timeout_ms / 1e3
    # Upstream the request is held and reset; downstream the response, once served.
    assert effect(upstream) == (pytest.approx(held_s), CallFailure.RESET)
    assert effect(downstream) == (pytest.approx(SERVICE_S + held_s), CallFailure.RESET)


def test_slicer_sends_slices_a_delay_apart() -> None:
    sliced = toxic("slicer", average_size=300, size_variation=50, delay=2000)  # delay in µs
    slices = math.ceil(RESPONSE_BYTES / 300)  # 7
    assert effect(sliced) == (pytest.approx(SERVICE_S + slices * 0.002), CallFailure.NONE)
    upstream = toxic("slicer", stream="upstream", average_size=1000, delay=500)
    assert effect(upstream) == (pytest.approx(SERVICE_S + 1 * 0.0005), CallFailure.NONE)


def test_limit_data_closes_the_connection_once_its_bytes_have_passed() -> None:
    per_call = REQUEST_BYTES + RESPONSE_BYTES
    limited = toxic("limit_data", bytes=3 * per_call)
    state = ConnectionToxics()
    outcomes = [effect(limited, state=state)[1] for _ in range(5)]
    assert outcomes == [CallFailure.NONE] * 3 + [CallFailure.CLOSED] * 2
    # A reopened connection starts counting again.
    state.clear()
    assert effect(limited, state=state) == (SERVICE_S, CallFailure.NONE)


def test_from_fault_reads_toxiproxy_units() -> None:
    assert toxic("latency", latency=250, jitter=20).jitter_s == pytest.approx(0.020)
    assert toxic("bandwidth", rate=64).bytes_per_s == 64_000.0
    assert toxic("timeout", timeout=1500).timeout_s == pytest.approx(1.5)
    assert toxic("slicer", average_size=64, delay=250).slice_delay_s == pytest.approx(250e-6)
    assert toxic("limit_data", bytes=1024).limit_bytes == 1024
    down = toxic("down")
    assert (down.start, down.end, down.upstream) == (FAULT_AT, FAULT_AT + FAULT_FOR, False)


# --- connections: the pool behind the proxy ----------------------------------------------------


def dependency(pool_size: int, seed: int = 11) -> Dependency:
    breaker = dataclasses.replace(load_policy().breakers["postgres"], pool_size=pool_size)
    parameters = DependencyParameters(
        service=Constant(SERVICE_S),
        connect_s=0.005,
        refused_s=0.001,
        request_bytes=REQUEST_BYTES,
        response_bytes=RESPONSE_BYTES,
        pool_order="lifo",
    )
    rng = np.random.default_rng(seed)
    return Dependency(
        "postgres", breaker, parameters, Stream(parameters.service, rng), UniformStream(rng)
    )


def test_down_drops_open_connections_and_refuses_new_ones() -> None:
    postgres = dependency(pool_size=3)
    busy = postgres.checkout()
    assert busy is not None
    busy.caller = "a call in flight"
    assert postgres.go_down() == ["a call in flight"]
    assert not any(connection.alive for connection in postgres.connections)
    assert postgres.plan_call(busy, NOW, 1.0) == (0.001, CallFailure.REFUSED)
    postgres.come_up()
    # Back up: the connection is opened again, which costs the connect time once.
    reopened = postgres.plan_call(busy, NOW, 1.0)
    assert reopened == (pytest.approx(SERVICE_S + 0.005), CallFailure.NONE)
    assert postgres.plan_call(busy, NOW, 1.0) == (pytest.approx(SERVICE_S), CallFailure.NONE)


def test_toxicity_is_the_share_of_connections_made_toxic() -> None:
    connections, toxicity = 4000, 0.3
    postgres = dependency(pool_size=connections)
    postgres.add_toxic(toxic("latency", toxicity=toxicity, latency=100), FAULT_AT)
    toxic_share = np.mean([0 in c.toxics.since for c in postgres.connections])
    assert toxic_share == pytest.approx(
        toxicity, abs=4 * math.sqrt(toxicity * (1 - toxicity) / connections)
    )


def test_toxicity_is_drawn_once_per_connection() -> None:
    postgres = dependency(pool_size=200)
    postgres.add_toxic(toxic("latency", toxicity=0.5, latency=100), FAULT_AT)
    for connection in postgres.connections:
        # Every call on a connection sees the same draw: all slow, or none.
        durations = {round(postgres.plan_call(connection, NOW, 1.0)[0], 9) for _ in range(20)}
        expected = SERVICE_S + 0.100 if 0 in connection.toxics.since else SERVICE_S
        assert durations == {round(expected, 9)}
    # A connection that is opened again draws afresh, with the same toxicity.
    for connection in postgres.connections:
        connection.alive = False
        postgres.plan_call(connection, NOW, 1.0)
    redrawn = np.mean([0 in c.toxics.since for c in postgres.connections])
    assert 0.3 < redrawn < 0.7
    # Removing the toxic heals every connection.
    postgres.remove_toxic(0)
    assert {postgres.plan_call(c, NOW, 1.0)[0] for c in postgres.connections} == {SERVICE_S}


def test_the_same_seed_draws_the_same_toxic_connections() -> None:
    def toxic_connections(seed: int) -> list[int]:
        postgres = dependency(pool_size=100, seed=seed)
        postgres.add_toxic(toxic("latency", toxicity=0.4, latency=50), FAULT_AT)
        return [c.index for c in postgres.connections if 0 in c.toxics.since]

    assert toxic_connections(5) == toxic_connections(5)
    assert toxic_connections(5) != toxic_connections(6)
