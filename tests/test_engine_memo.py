"""Single flight: concurrent misses of a heavy aggregate share one computation."""

from __future__ import annotations

import asyncio

import pytest

from engine.service.memo import SingleFlight


async def test_concurrent_callers_share_one_computation() -> None:
    flight: SingleFlight[int] = SingleFlight()
    runs = 0

    async def compute() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return 7

    results = await asyncio.gather(*(flight.get("k", compute) for _ in range(10)))
    assert results == [7] * 10
    assert runs == 1
    assert await flight.get("k", compute) == 7
    assert runs == 2  # no memory without a TTL: the next miss computes again


async def test_a_result_is_remembered_for_its_ttl_and_a_failure_never() -> None:
    flight: SingleFlight[int] = SingleFlight(ttl_s=60.0)
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("down")
        return attempts

    with pytest.raises(ConnectionError):
        await flight.get("k", flaky)
    assert await flight.get("k", flaky) == 2
    assert await flight.get("k", flaky) == 2
    assert attempts == 2


async def test_the_first_caller_going_away_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def compute() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(flight.get("k", compute))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.get("k", compute))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "done"
