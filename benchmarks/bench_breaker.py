"""Overhead of one guarded async call: our breaker against four circuit-breaker libraries.

Each contender awaits the same trivial coroutine through its breaker, N times in a loop,
inside one event loop and one process. The rounds are interleaved (every round runs every
contender once, starting at a different contender each round), and the median of the rounds
is reported. The overhead of a contender is its median minus the median of a plain `await`
of the same coroutine; the ratio `vs ours` divides a contender's overhead by our breaker's.

What each contender measures, in CLOSED state and on the success path:

- plain await           `await work()`.
- reslab breaker        the minimal async adapter below (`guarded`): clock, `acquire`,
                        await, clock, `record`, over `engine.policy.CircuitBreaker` with the
                        default policy's `postgres` configuration and the engine's clock.
- pybreaker             `await breaker.call_async(work)`: pybreaker's async API, which runs
                        through a Tornado `gen.coroutine` (it wraps the awaited coroutine in
                        an asyncio Task, so every call takes a turn of the event loop).
- aiobreaker            `await breaker.call_async(work)`.
- purgatory             `async with await factory.get_breaker("postgres"): await work()`
                        (`AsyncCircuitBreakerFactory`, in-memory state).
- circuitbreaker        `await work_decorated()`, the `@circuit` decorator on a coroutine
                        function.

Labelled separately, and not part of the comparison with the libraries:

- reslab facade         `ResiliencePolicy.acquire/record` (the engine's entry points) in the
                        same minimal adapter, with `perf_counter` for the call's duration.
- engine Guard.call     `engine.service.guard.Guard.call`, the engine's full adapter: a Task
                        per call for the call timeout, the request trace and an observer.
- sync                  pybreaker's `CircuitBreaker.call` and our breaker around a plain
                        function, against a plain call of that function.

Usage: `python benchmarks/bench_breaker.py [--rounds 7] [--seconds 0.2] [--output PATH]`.
The figures go to `benchmarks/results/breaker.json`; a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from engine.policy import CircuitBreaker, Outcome, PolicyConfig, Rejected, ResiliencePolicy
from engine.policyfile import load_policy
from engine.system_clock import SystemClock

T = TypeVar("T")

DEPENDENCY = "postgres"
RESULTS = Path(__file__).resolve().parent / "results" / "breaker.json"
# The library breakers get the same shape of configuration: 5 failures, 30 s open.
FAIL_MAX = 5
RESET_S = 30.0
# Targets: our overhead per call, and how many times less it must be than the fastest library's.
TARGET_OVERHEAD_NS = 500.0
TARGET_SPEEDUP = 1.5

Loop = Callable[[int], Awaitable[int]]

# Reading an Enum member off its class costs ~70 ns on Python 3.11, as much as a whole
# `acquire`; an adapter reads the two it needs once.
_FAILURE = Outcome.FAILURE


# --- the guarded calls ---------------------------------------------------------------------


class BreakerRejected(Exception):
    def __init__(self, rejected: Rejected) -> None:
        super().__init__(f"{rejected.dependency} breaker is {rejected.state.value}")
        self.rejected = rejected


async def guarded(
    breaker: CircuitBreaker, clock: Callable[[], float], fn: Callable[[], Awaitable[T]]
) -> T:
    """The minimal async adapter over the core breaker."""
    now = clock()
    permit = breaker.acquire(now)
    if isinstance(permit, Rejected):
        raise BreakerRejected(permit)
    try:
        result = await fn()
    except asyncio.CancelledError:
        breaker.release(permit, clock())
        raise
    except Exception:
        end = clock()
        breaker.record(permit, _FAILURE, end - now, end)
        raise
    end = clock()
    breaker.record_success(permit, end - now, end)
    return result


async def guarded_policy(
    policy: ResiliencePolicy, dependency: str, fn: Callable[[], Awaitable[T]]
) -> T:
    """The same adapter over the facade, which reads its own clock."""
    permit = policy.acquire(dependency)
    if isinstance(permit, Rejected):
        raise BreakerRejected(permit)
    started = time.perf_counter()
    try:
        result = await fn()
    except asyncio.CancelledError:
        policy.release(permit)
        raise
    except Exception:
        policy.record(permit, _FAILURE, time.perf_counter() - started)
        raise
    policy.record_success(permit, time.perf_counter() - started)
    return result


def guarded_sync(breaker: CircuitBreaker, clock: Callable[[], float], fn: Callable[[], T]) -> T:
    now = clock()
    permit = breaker.acquire(now)
    if isinstance(permit, Rejected):
        raise BreakerRejected(permit)
    try:
        result = fn()
    except Exception:
        end = clock()
        breaker.record(permit, _FAILURE, end - now, end)
        raise
    end = clock()
    breaker.record_success(permit, end - now, end)
    return result


async def work() -> int:
    return 1


def work_sync() -> int:
    return 1


async def self_check() -> None:
    """Not timed: the adapter does guard. Failures open a fresh breaker; then it rejects."""
    config = load_policy().breakers[DEPENDENCY]
    clock = SystemClock().monotonic
    breaker = CircuitBreaker(DEPENDENCY, config, clock())

    async def failing() -> int:
        raise ConnectionError("down")

    for _ in range(config.minimum_calls):
        with contextlib.suppress(ConnectionError):
            await guarded(breaker, clock, failing)
    try:
        await guarded(breaker, clock, work)
    except BreakerRejected:
        return
    raise AssertionError("the breaker did not open after a run of failures")


# --- the contenders ------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    group: str  # "compared" (ours and the four libraries), "reslab" or "sync"
    baseline: str  # key of the contender its overhead is measured against
    api: str
    loop: Loop


class _Observer:
    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None:
        pass

    def on_rejected(self, dependency: str) -> None:
        pass


async def _engine_guard_loop(config: PolicyConfig, state: dict[str, Any]) -> Loop | None:
    """The service's own adapter, if it imports and answers; otherwise the row is left out."""
    try:
        from engine.service.guard import Guard

        guard = Guard(
            ResiliencePolicy(config, SystemClock()), {DEPENDENCY: 2.0}, {}, _Observer(), lambda: 1.0
        )
        if await guard.call(DEPENDENCY, work) != 1:
            raise AssertionError("Guard.call did not return the call's result")
    except Exception as error:  # the service is not what this benchmark measures
        state["guard_error"] = repr(error)
        return None

    async def guard_loop(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await guard.call(DEPENDENCY, work)
        return result

    return guard_loop


async def build_contenders() -> tuple[list[Contender], dict[str, Any]]:
    config = load_policy()
    clock = SystemClock().monotonic
    breaker = CircuitBreaker(DEPENDENCY, config.breakers[DEPENDENCY], clock())
    sync_breaker = CircuitBreaker(DEPENDENCY, config.breakers[DEPENDENCY], clock())
    policy = ResiliencePolicy(config, SystemClock())
    state: dict[str, Any] = {"breaker": breaker, "clock": clock, "policy": policy}
    contenders: list[Contender] = []

    async def plain(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await work()
        return result

    async def ours(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await guarded(breaker, clock, work)
        return result

    contenders += [
        Contender("plain", "plain await", "compared", "plain", "await work()", plain),
        Contender(
            "reslab",
            "reslab breaker",
            "compared",
            "plain",
            "guarded(): CircuitBreaker.acquire/record",
            ours,
        ),
    ]

    import pybreaker

    # `call_async` is untyped (it returns a Tornado coroutine).
    pb: Any = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_S, name=DEPENDENCY)
    if pybreaker.HAS_TORNADO_SUPPORT:

        async def pybreaker_loop(n: int) -> int:
            result = 0
            for _ in range(n):
                result = await pb.call_async(work)
            return result

        contenders.append(
            Contender(
                "pybreaker",
                "pybreaker",
                "compared",
                "plain",
                "await CircuitBreaker.call_async(work) (Tornado gen.coroutine)",
                pybreaker_loop,
            )
        )

    from datetime import timedelta

    import aiobreaker

    ab = aiobreaker.CircuitBreaker(
        fail_max=FAIL_MAX, timeout_duration=timedelta(seconds=RESET_S), name=DEPENDENCY
    )

    async def aiobreaker_loop(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await ab.call_async(work)
        return result

    import purgatory

    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=FAIL_MAX, default_ttl=RESET_S)
    await factory.initialize()
    await factory.get_breaker(DEPENDENCY)  # registers the circuit once, outside the timing

    async def purgatory_loop(n: int) -> int:
        result = 0
        for _ in range(n):
            async with await factory.get_breaker(DEPENDENCY):
                result = await work()
        return result

    import circuitbreaker

    circuit_work = circuitbreaker.circuit(
        failure_threshold=FAIL_MAX, recovery_timeout=RESET_S, name=DEPENDENCY
    )(work)

    async def circuitbreaker_loop(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await circuit_work()
        return result

    contenders += [
        Contender(
            "aiobreaker",
            "aiobreaker",
            "compared",
            "plain",
            "await CircuitBreaker.call_async(work)",
            aiobreaker_loop,
        ),
        Contender(
            "purgatory",
            "purgatory",
            "compared",
            "plain",
            "async with await AsyncCircuitBreakerFactory.get_breaker(name)",
            purgatory_loop,
        ),
        Contender(
            "circuitbreaker",
            "circuitbreaker",
            "compared",
            "plain",
            "@circuit on an async def",
            circuitbreaker_loop,
        ),
    ]

    async def facade(n: int) -> int:
        result = 0
        for _ in range(n):
            result = await guarded_policy(policy, DEPENDENCY, work)
        return result

    contenders.append(
        Contender(
            "reslab_facade",
            "reslab facade",
            "reslab",
            "plain",
            "guarded_policy(): ResiliencePolicy.acquire/record",
            facade,
        )
    )

    guard_loop = await _engine_guard_loop(config, state)
    if guard_loop is not None:
        contenders.append(
            Contender(
                "engine_guard",
                "engine Guard.call",
                "reslab",
                "plain",
                "Guard.call(): facade + a Task per call for the timeout + trace",
                guard_loop,
            )
        )

    pb_sync = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_S)

    async def plain_sync(n: int) -> int:
        result = 0
        for _ in range(n):
            result = work_sync()
        return result

    async def ours_sync(n: int) -> int:
        result = 0
        for _ in range(n):
            result = guarded_sync(sync_breaker, clock, work_sync)
        return result

    async def pybreaker_sync(n: int) -> int:
        result = 0
        for _ in range(n):
            result = pb_sync.call(work_sync)
        return result

    contenders += [
        Contender("plain_sync", "plain call (sync)", "sync", "plain_sync", "work()", plain_sync),
        Contender(
            "reslab_sync",
            "reslab breaker (sync)",
            "sync",
            "plain_sync",
            "guarded_sync(): CircuitBreaker.acquire/record",
            ours_sync,
        ),
        Contender(
            "pybreaker_sync",
            "pybreaker (sync)",
            "sync",
            "plain_sync",
            "CircuitBreaker.call(work) (holds an RLock)",
            pybreaker_sync,
        ),
    ]
    state["library_breakers"] = {
        "pybreaker": pb,
        "aiobreaker": ab,
        "circuitbreaker": circuit_work,
    }
    return contenders, state


# --- measuring -----------------------------------------------------------------------------


async def per_call_ns(loop: Loop, n: int) -> float:
    gc.collect()
    started = time.perf_counter_ns()
    result = await loop(n)
    elapsed = time.perf_counter_ns() - started
    if result != 1:
        raise AssertionError(f"the guarded call returned {result!r}")
    return elapsed / n


async def calibrate(loop: Loop, seconds: float) -> int:
    """The number of calls that takes about `seconds`."""
    n = 1_000
    while True:
        took_ns = (await per_call_ns(loop, n)) * n
        if took_ns >= 50_000_000:  # 50 ms is long enough to extrapolate
            break
        n *= 4
    return max(1_000, int(round(seconds * 1e9 * n / took_ns, -3)))


async def run(rounds: int, seconds: float) -> dict[str, Any]:
    await self_check()
    contenders, state = await build_contenders()
    calls = {c.key: await calibrate(c.loop, seconds) for c in contenders}
    samples: dict[str, list[float]] = {c.key: [] for c in contenders}
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            samples[contender.key].append(await per_call_ns(contender.loop, calls[contender.key]))
        print(f"  round {round_index + 1}/{rounds} done", file=sys.stderr)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    # The minima are a cross-check: other load on the machine only ever adds time.
    minima = {key: min(values) for key, values in samples.items()}
    ours_overhead = medians["reslab"] - medians["plain"]
    rows: list[dict[str, Any]] = []
    for c in contenders:
        median = medians[c.key]
        overhead = median - medians[c.baseline]
        is_baseline = c.key == c.baseline
        rows.append(
            {
                "key": c.key,
                "label": c.label,
                "group": c.group,
                "api": c.api,
                "baseline": c.baseline,
                "calls_per_round": calls[c.key],
                "rounds_ns": [round(value, 1) for value in samples[c.key]],
                "median_ns": round(median, 1),
                "min_ns": round(min(samples[c.key]), 1),
                "max_ns": round(max(samples[c.key]), 1),
                "overhead_ns": None if is_baseline else round(overhead, 1),
                "overhead_from_minima_ns": (
                    None if is_baseline else round(minima[c.key] - minima[c.baseline], 1)
                ),
                "ratio_to_baseline": round(median / medians[c.baseline], 2),
                "overhead_vs_reslab": (
                    round(overhead / ours_overhead, 2)
                    if c.group == "compared" and not is_baseline and ours_overhead > 0
                    else None
                ),
            }
        )

    libraries = [
        row for row in rows if row["group"] == "compared" and row["key"] not in ("plain", "reslab")
    ]
    fastest = min(libraries, key=lambda row: row["overhead_ns"])
    speedup = fastest["overhead_ns"] / ours_overhead if ours_overhead > 0 else float("inf")
    ours_from_minima = minima["reslab"] - minima["plain"]
    fastest_from_minima = min(libraries, key=lambda row: row["overhead_from_minima_ns"])

    breaker = state["breaker"]
    snapshot = breaker.snapshot(state["clock"]())
    checks = {
        "reslab_breaker_state": snapshot.state.value,
        "reslab_breaker_calls_in_window": snapshot.calls,
        "pybreaker_state": state["library_breakers"]["pybreaker"].current_state,
        "aiobreaker_state": str(state["library_breakers"]["aiobreaker"].current_state),
    }
    if "guard_error" in state:
        checks["engine_guard_skipped"] = state["guard_error"]

    return {
        "benchmark": "breaker: overhead of one guarded async call",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "event_loop": type(asyncio.get_running_loop()).__module__
        + "."
        + type(asyncio.get_running_loop()).__name__,
        "method": {
            "rounds": rounds,
            "seconds_per_measurement": seconds,
            "statistic": "median of the rounds, ns per call (time.perf_counter_ns)",
            "order": "interleaved: each round runs every contender once, rotating the start",
            "overhead": "median(contender) - median(its baseline)",
            "path": "CLOSED state, success path only",
            "dependency": DEPENDENCY,
        },
        "versions": _versions(),
        "results": rows,
        "targets": {
            "overhead_ns_at_most": TARGET_OVERHEAD_NS,
            "reslab_overhead_ns": round(ours_overhead, 1),
            "overhead_met": ours_overhead <= TARGET_OVERHEAD_NS,
            "speedup_at_least": TARGET_SPEEDUP,
            "fastest_library": fastest["key"],
            "fastest_library_overhead_ns": fastest["overhead_ns"],
            "speedup_vs_fastest_library": round(speedup, 2),
            "speedup_met": speedup >= TARGET_SPEEDUP,
            "cross_check_from_minima": {
                "reslab_overhead_ns": round(ours_from_minima, 1),
                "fastest_library": fastest_from_minima["key"],
                "fastest_library_overhead_ns": fastest_from_minima["overhead_from_minima_ns"],
                "speedup_vs_fastest_library": round(
                    fastest_from_minima["overhead_from_minima_ns"] / ours_from_minima, 2
                )
                if ours_from_minima > 0
                else None,
            },
        },
        "checks": checks,
    }


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("reslab", "pybreaker", "aiobreaker", "purgatory", "circuitbreaker", "tornado"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


# --- reporting -----------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['benchmark']}  ({report['date']}, Python {report['python']}, "
        f"{report['cpu_count']} CPUs, {report['method']['rounds']} rounds, "
        f"{report['event_loop']})",
        "",
        f"{'contender':<24}{'median ns':>11}{'min–max ns':>17}{'overhead ns':>13}"
        f"{'× baseline':>12}{'vs ours':>9}",
    ]
    titles = {
        "compared": "async, against a plain await",
        "reslab": "our other entry points (async, against a plain await)",
        "sync": "sync, against a plain call",
    }
    group = None
    for row in report["results"]:
        if row["group"] != group:
            group = row["group"]
            lines.append(f"-- {titles[group]}")
        overhead = "" if row["overhead_ns"] is None else f"{row['overhead_ns']:.0f}"
        versus = "" if row["overhead_vs_reslab"] is None else f"{row['overhead_vs_reslab']:.1f}×"
        spread = f"{row['min_ns']:.0f}–{row['max_ns']:.0f}"
        lines.append(
            f"{row['label']:<24}{row['median_ns']:>11.0f}{spread:>17}{overhead:>13}"
            f"{row['ratio_to_baseline']:>11.2f}×{versus:>9}"
        )
    targets = report["targets"]
    lines += [
        "",
        f"our overhead {targets['reslab_overhead_ns']:.0f} ns per call "
        f"(target ≤ {targets['overhead_ns_at_most']:.0f} ns): "
        + ("met" if targets["overhead_met"] else "NOT met"),
        f"fastest library: {targets['fastest_library']} at "
        f"{targets['fastest_library_overhead_ns']:.0f} ns, "
        f"{targets['speedup_vs_fastest_library']:.2f}× our overhead "
        f"(target ≥ {targets['speedup_at_least']}×): "
        + ("met" if targets["speedup_met"] else "NOT met"),
    ]
    check = targets["cross_check_from_minima"]
    if check["speedup_vs_fastest_library"] is not None:
        lines.append(
            f"cross-check from the minima of the rounds: our overhead "
            f"{check['reslab_overhead_ns']:.0f} ns; {check['fastest_library']} "
            f"{check['fastest_library_overhead_ns']:.0f} ns, "
            f"{check['speedup_vs_fastest_library']:.2f}× ours"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--seconds", type=float, default=0.2, help="target time of one measurement (default 0.2)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.rounds, args.seconds))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(render(report))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
