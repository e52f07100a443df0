"""Half-open under concurrency: asyncio callers through the engine's own guard adapter."""

from __future__ import annotations

import asyncio
import contextlib

from engine.policy import BreakerState, ManualClock, Outcome, Permit, ResiliencePolicy
from engine.service.guard import DependencyUnavailable, Guard
from tests.policy_helpers import DEFAULT


class CountingObserver:
    def __init__(self) -> None:
        self.rejected = 0

    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None:
        pass

    def on_rejected(self, dependency: str) -> None:
        self.rejected += 1


def open_postgres() -> tuple[ResiliencePolicy, ManualClock, Guard, CountingObserver]:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    for _ in range(DEFAULT.breakers["postgres"].minimum_calls):
        permit = policy.acquire("postgres")
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    assert policy.breakers["postgres"].state is BreakerState.OPEN
    observer = CountingObserver()
    guard = Guard(policy, {"postgres": 2.0}, {}, observer, lambda: policy.eta.seconds)
    clock.advance(DEFAULT.breakers["postgres"].open_s)  # right after the open time
    return policy, clock, guard, observer


async def test_fifty_callers_at_a_failing_dependency_only_permits_reach_it() -> None:
    policy, _, guard, observer = open_postgres()
    reached = 0
    gate = asyncio.Event()

    async def still_failing() -> None:
        nonlocal reached
        reached += 1
        await gate.wait()  # all 50 are in flight before any trial ends
        raise ConnectionRefusedError("still down")

    async def caller() -> None:
        with contextlib.suppress(DependencyUnavailable):
            await guard.call("postgres", still_failing)

    callers = [asyncio.create_task(caller()) for _ in range(50)]
    await asyncio.sleep(0)  # let every caller reach the breaker
    gate.set()
    await asyncio.gather(*callers)
    assert reached == DEFAULT.breakers["postgres"].half_open_permits == 1
    assert observer.rejected == 49
    assert policy.breakers["postgres"].state is BreakerState.OPEN  # the trial failed


async def test_redis_admits_exactly_its_two_permits() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    for _ in range(DEFAULT.breakers["redis"].minimum_calls):
        permit = policy.acquire("redis")
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    clock.advance(DEFAULT.breakers["redis"].open_s)
    guard = Guard(policy, {"redis": 0.25}, {}, CountingObserver(), lambda: 1.0)
    reached = 0
    gate = asyncio.Event()

    async def slow_ok() -> str:
        nonlocal reached
        reached += 1
        await gate.wait()
        return "PONG"

    async def caller() -> str | None:
        try:
            return await guard.call("redis", slow_ok)
        except DependencyUnavailable:
            return None

    callers = [asyncio.create_task(caller()) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*callers)
    assert reached == 2
    assert answers.count("PONG") == 2
    assert policy.breakers["redis"].state is BreakerState.CLOSED


async def test_a_cancelled_trial_gives_its_permit_back() -> None:
    policy, _, guard, _ = open_postgres()
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    trial = asyncio.create_task(guard.call("postgres", hangs))
    await started.wait()
    blocked = policy.acquire("postgres")
    assert not isinstance(blocked, Permit)  # the only permit is out
    trial.cancel()
    await asyncio.gather(trial, return_exceptions=True)
    assert trial.cancelled()

    async def answers() -> int:
        return 1

    assert await guard.call("postgres", answers) == 1  # the permit came back
    assert policy.breakers["postgres"].state is BreakerState.CLOSED


async def test_a_late_result_of_an_older_epoch_is_ignored() -> None:
    clock = ManualClock()
    policy = ResiliencePolicy(DEFAULT, clock)
    guard = Guard(policy, {"postgres": 2.0}, {}, CountingObserver(), lambda: 1.0)
    release_old = asyncio.Event()

    async def old_call() -> None:
        await release_old.wait()
        raise ConnectionResetError("late")

    old = asyncio.create_task(guard.call("postgres", old_call))  # admitted while CLOSED
    await asyncio.sleep(0)
    for _ in range(10):
        permit = policy.acquire("postgres")
        assert isinstance(permit, Permit)
        policy.record(permit, Outcome.FAILURE, 0.01)
    clock.advance(30.0)
    trial = policy.acquire("postgres")
    assert isinstance(trial, Permit)
    release_old.set()
    await asyncio.gather(old, return_exceptions=True)
    assert policy.breakers["postgres"].state is BreakerState.HALF_OPEN  # not reopened
    policy.record(trial, Outcome.SUCCESS, 0.002)
    assert policy.breakers["postgres"].state is BreakerState.CLOSED
