"""The guard, the engine's async adapter around the policy core: what it records for each
way a call can end, and that a timed-out call never holds the caller past its timeout."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from engine.policy import BreakerState, ManualClock, Outcome, ResiliencePolicy
from engine.policyfile import load_policy
from engine.service.guard import (
    CallerError,
    DependencyUnavailable,
    Guard,
    NotFound,
    caller_errors_ignored,
    retry_after_seconds,
)
from engine.service.trace import RequestTrace, current_trace


class Observed:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Outcome]] = []
        self.rejected: list[str] = []

    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None:
        self.calls.append((dependency, outcome))

    def on_rejected(self, dependency: str) -> None:
        self.rejected.append(dependency)


def make_guard(
    timeout_s: float = 0.2, minimum_calls: int = 2
) -> tuple[Guard, ResiliencePolicy, Observed, ManualClock]:
    config = load_policy()
    breakers = dict(config.breakers)
    breakers["postgres"] = replace(
        breakers["postgres"], minimum_calls=minimum_calls, call_timeout_s=timeout_s
    )
    clock = ManualClock(1000.0)
    policy = ResiliencePolicy(replace(config, breakers=breakers), clock)
    observed = Observed()
    guard = Guard(
        policy,
        {name: breaker.call_timeout_s for name, breaker in breakers.items()},
        {"postgres": caller_errors_ignored},
        observed,
        lambda: policy.eta.seconds,
    )
    return guard, policy, observed, clock


async def test_a_success_is_recorded_and_timed_in_the_request_trace() -> None:
    guard, _, observed, _ = make_guard()
    trace = RequestTrace()
    token = current_trace.set(trace)
    try:

        async def query() -> int:
            await asyncio.sleep(0.01)
            return 42

        assert await guard.call("postgres", query) == 42
    finally:
        current_trace.reset(token)
    assert observed.calls == [("postgres", Outcome.SUCCESS)]
    assert trace.spent_s["postgres"] >= 0.01
    assert trace.server_timing().startswith("postgres;dur=")


async def test_a_caller_error_is_ignored_and_re_raised_as_is() -> None:
    guard, policy, observed, _ = make_guard()

    async def missing() -> None:
        raise NotFound("no such sku")

    for _ in range(5):
        with pytest.raises(NotFound):
            await guard.call("postgres", missing)
    assert observed.calls == [("postgres", Outcome.IGNORED)] * 5
    assert policy.status().breakers["postgres"].state is BreakerState.CLOSED


async def test_a_timeout_fails_within_the_call_timeout_even_if_cleanup_blocks() -> None:
    guard, _, observed, _ = make_guard(timeout_s=0.1)
    cleaned_up = asyncio.Event()

    async def stalled() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            # A client whose cancellation blocks (asyncpg cancelling through a stalled proxy).
            await asyncio.shield(asyncio.sleep(0.5))
            cleaned_up.set()

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable) as raised:
        await guard.call("postgres", stalled)
    assert time.perf_counter() - started < 0.4
    assert raised.value.reason == "call timed out"
    assert observed.calls == [("postgres", Outcome.FAILURE)]
    await asyncio.wait_for(cleaned_up.wait(), timeout=2)  # it did finish, in the background


async def test_failures_open_the_breaker_then_calls_are_rejected_without_running() -> None:
    guard, policy, observed, _ = make_guard(minimum_calls=2)

    async def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            await guard.call("postgres", refused)
    assert policy.status().breakers["postgres"].state is BreakerState.OPEN
    ran = False

    async def never() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(DependencyUnavailable) as raised:
        await guard.call("postgres", never)
    assert not ran
    assert observed.rejected == ["postgres"]
    assert "OPEN" in raised.value.reason
    assert int(raised.value.retry_after_header) >= 1


async def test_a_cancelled_trial_call_gives_its_half_open_permit_back() -> None:
    guard, policy, _, clock = make_guard(minimum_calls=2)

    async def refused() -> None:
        raise ConnectionResetError

    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            await guard.call("postgres", refused)
    clock.advance(policy.config.breakers["postgres"].open_s + 1)
    policy.tick()
    assert policy.status().breakers["postgres"].state is BreakerState.HALF_OPEN

    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    trial = asyncio.create_task(guard.call("postgres", slow))
    await started.wait()
    assert policy.status().breakers["postgres"].half_open_in_flight == 1
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert policy.status().breakers["postgres"].half_open_in_flight == 0

    async def fine() -> str:
        return "ok"

    assert await guard.call("postgres", fine) == "ok"  # the permit was there to take
    assert policy.status().breakers["postgres"].state is BreakerState.CLOSED


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_seconds(0.0) == 1
    assert retry_after_seconds(0.2) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.01) == 2
    assert retry_after_seconds(float("inf")) == 1


def test_caller_errors_carry_their_status() -> None:
    assert NotFound("x").status_code == 404
    assert CallerError("x").status_code == 400
    assert caller_errors_ignored(NotFound("x")) is Outcome.IGNORED
    assert caller_errors_ignored(TimeoutError()) is Outcome.FAILURE
