"""The open-loop generator's schedule: seeded Poisson arrivals at the right mean rate,
thinning that follows a ramp, the mix, shares for several processes, the send loop with a
fake clock, and the account of late sends."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from loadtests.openloop import (
    Arrivals,
    LatenessTracker,
    arrival_chunks,
    arrival_rng,
    connection_pool_size,
    drive,
    lateness_summary,
    schedule,
    share_of,
)
from loadtests.shapes import LoadProfile
from reports.runfolder import FEATURE_CODES
from scenarios import OpenLoad, parse_scenario
from scenarios.schema import DEFAULT_MIX

MIX = {"inventory_read": 0.6, "order_processing": 0.3, "health_status": 0.1}


def profile(load: dict[str, object]) -> LoadProfile:
    scenario = parse_scenario({"name": "schedule-test", "load": load})
    assert isinstance(scenario.load, OpenLoad)
    return LoadProfile.from_load(scenario.load)


def all_times(chunks: list[Arrivals]) -> np.ndarray:
    return np.concatenate([chunk.times for chunk in chunks]) if chunks else np.empty(0)


def test_a_constant_rate_is_a_poisson_process_with_that_mean() -> None:
    rate, duration = 200.0, 500.0
    chunks = list(
        arrival_chunks(
            profile({"model": "open", "rate": rate, "duration": duration}), MIX, arrival_rng(11)
        )
    )
    times = all_times(chunks)
    expected = rate * duration
    # Within 4 standard deviations of a Poisson count.
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < duration
    # Gaps are exponential with mean 1/rate (windows are independent, so the gaps across
    # window boundaries are too).
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.02)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 1e-3
    # Counts per second are Poisson: variance ≈ mean.
    per_second = np.bincount(times.astype(int), minlength=int(duration))
    assert per_second.var() / per_second.mean() == pytest.approx(1.0, abs=0.15)


def test_the_schedule_is_seeded() -> None:
    shape = profile({"model": "open", "rate": 300, "duration": 20})
    first = list(arrival_chunks(shape, MIX, arrival_rng(5)))
    again = list(arrival_chunks(shape, MIX, arrival_rng(5)))
    other = list(arrival_chunks(shape, MIX, arrival_rng(6)))
    replication = list(arrival_chunks(shape, MIX, arrival_rng(5, replication=1)))
    assert np.array_equal(all_times(first), all_times(again))
    assert np.array_equal(
        np.concatenate([c.features for c in first]), np.concatenate([c.features for c in again])
    )
    assert not np.array_equal(all_times(first)[:100], all_times(other)[:100])
    assert not np.array_equal(all_times(first)[:100], all_times(replication)[:100])


def integral(shape: LoadProfile, low: float, high: float) -> float:
    """The rate's integral over [low, high] (trapezoids: exact for a linear rate whose kinks
    fall on the grid)."""
    grid = np.linspace(low, high - 1e-9, 2001)
    return float(np.trapezoid([shape.rate_at(float(t)) for t in grid], grid))


def test_thinning_follows_a_ramp() -> None:
    # 0 → 400 req/s over 100 s, then 400 req/s for 20 s.
    shape = profile(
        {
            "model": "open",
            "duration": 120,
            "shape": [{"ramp": {"from": 0, "to": 400, "over": "100s"}}, {"hold": {"for": "20s"}}],
        }
    )
    times = all_times(list(arrival_chunks(shape, MIX, arrival_rng(3))))
    edges = np.arange(0, 121, 10.0)
    counts, _ = np.histogram(times, edges)
    expected = np.array([integral(shape, lo, hi) for lo, hi in itertools.pairwise(edges)])
    assert expected[[0, 1, 2, -1]].tolist() == pytest.approx([200.0, 600.0, 1000.0, 4000.0])
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(chi_square, len(counts)) > 1e-3
    assert len(times) == pytest.approx(
        shape.expected_requests, abs=4 * math.sqrt(shape.expected_requests)
    )


def test_a_burst_is_dense_and_short() -> None:
    shape = profile(
        {
            "model": "open",
            "rate": 100,
            "duration": 20,
            "shape": [{"hold": {"for": "10s"}}, {"burst": {"rate": 5000, "for": "2s"}}],
        }
    )
    times = all_times(list(arrival_chunks(shape, MIX, arrival_rng(8))))
    in_burst = np.count_nonzero((times >= 10) & (times < 12))
    assert abs(in_burst - 10_000) < 4 * math.sqrt(10_000)
    after = np.count_nonzero(times >= 12)
    assert abs(after - 800) < 4 * math.sqrt(800)


def test_features_follow_the_mix() -> None:
    fractions = {name: weight / sum(DEFAULT_MIX.values()) for name, weight in DEFAULT_MIX.items()}
    shape = profile({"model": "open", "rate": 1000, "duration": 100})
    features = np.concatenate(
        [c.features for c in arrival_chunks(shape, fractions, arrival_rng(2))]
    )
    counts = np.bincount(features, minlength=len(FEATURE_CODES))
    expected = np.array([fractions[name] for name in FEATURE_CODES]) * len(features)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert features.dtype == np.int8


def test_shares_partition_the_schedule_whatever_the_number_of_generators() -> None:
    shape = profile({"model": "open", "rate": 250, "duration": 23})
    whole = list(arrival_chunks(shape, MIX, arrival_rng(9)))
    full = all_times(whole)
    for generators in (1, 2, 3, 7):
        shares = [
            all_times(list(schedule(shape, MIX, arrival_rng(9), slot, generators)))
            for slot in range(generators)
        ]
        merged = np.sort(np.concatenate(shares))
        assert np.array_equal(merged, full)
        sizes = [len(share) for share in shares]
        assert max(sizes) - min(sizes) <= 1
        # Round robin over the whole schedule: arrival i goes to slot i mod n.
        assert np.array_equal(shares[1 % generators], full[1 % generators :: generators])
    with pytest.raises(ValueError):
        list(share_of(iter(whole), 3, 3))


class FakeClock:
    """Time advances only when the loop sleeps or a dispatch costs something."""

    def __init__(self, start: float = 0.0, oversleep: float = 0.0) -> None:
        self.t = start
        self.oversleep = oversleep
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        if seconds > 0:
            self.t += seconds + self.oversleep

    def advance(self, seconds: float) -> None:
        self.t += seconds


def chunked(times: list[float], size: int = 4) -> list[Arrivals]:
    code = FEATURE_CODES["inventory_read"]
    return [
        Arrivals(
            np.array(times[i : i + size]), np.full(len(times[i : i + size]), code, dtype=np.int8)
        )
        for i in range(0, len(times), size)
    ]


def test_the_loop_sends_each_arrival_at_its_time_and_never_early() -> None:
    times = [0.1, 0.25, 0.25, 0.4, 1.0, 1.5, 2.75]
    clock = FakeClock(start=-0.5)  # the loop starts before t = 0
    tracker = LatenessTracker(threshold_s=0.005)
    sent: list[tuple[float, float, int]] = []

    def dispatch(scheduled: float, feature: int) -> None:
        sent.append((scheduled, clock.now(), feature))
        tracker.observe(scheduled, clock.now())

    result = drive(chunked(times), clock, dispatch)
    assert result.dispatched == len(times) and not result.abandoned
    assert [s for s, _, _ in sent] == times
    assert all(at == pytest.approx(scheduled) for scheduled, at, _ in sent)
    assert all(at >= scheduled - 1e-12 for scheduled, at, _ in sent)
    summary = tracker.summary()
    assert (summary.sent, summary.late) == (len(times), 0)
    assert summary.max_s == pytest.approx(0.0, abs=1e-12)


def test_a_generator_that_falls_behind_counts_its_late_sends() -> None:
    # Arrivals every 1 ms for 100 ms, but each send costs the loop 3 ms: it falls behind by
    # 2 ms per arrival, so send i goes out at 3·i ms instead of i ms.
    times = [i / 1000 for i in range(100)]
    clock = FakeClock()
    tracker = LatenessTracker(threshold_s=0.005)

    def dispatch(scheduled: float, feature: int) -> None:
        tracker.observe(scheduled, clock.now())
        clock.advance(0.003)

    drive(chunked(times, size=16), clock, dispatch)
    summary = tracker.summary()
    lateness = np.array([2 * i / 1000 for i in range(100)])
    assert summary.sent == 100
    # Late when 2·i ms > 5 ms: i ≥ 3.
    assert summary.late == 97
    assert summary.max_s == pytest.approx(0.198)
    assert summary.p99_s == pytest.approx(float(np.percentile(lateness, 99)))
    assert summary.mean_s == pytest.approx(lateness.mean())
    # Behind schedule the loop does not sleep, but it gives way after every send.
    assert clock.sleeps.count(0.0) >= 99


def test_an_oversleeping_clock_makes_small_lateness_that_is_not_late() -> None:
    times = [i / 100 for i in range(1, 50)]
    clock = FakeClock(oversleep=0.0008)  # gevent wakes up to a millisecond after the timer
    tracker = LatenessTracker(threshold_s=0.005)
    drive(chunked(times), clock, lambda scheduled, _: tracker.observe(scheduled, clock.now()))
    summary = tracker.summary()
    assert summary.late == 0
    assert summary.max_s == pytest.approx(0.0008)


def test_the_loop_stops_when_told() -> None:
    clock = FakeClock()
    sent: list[float] = []
    result = drive(
        chunked([0.1 * i for i in range(50)]),
        clock,
        lambda scheduled, _: sent.append(scheduled),
        should_stop=lambda: clock.now() >= 1.0,
    )
    assert result.abandoned
    assert result.dispatched == len(sent) == 11


def test_lateness_summary_of_raw_samples() -> None:
    samples = [-0.0001, 0.0, 0.001, 0.004, 0.006, 0.2]
    summary = lateness_summary(samples, threshold_s=0.005)
    assert (summary.sent, summary.late) == (6, 2)
    assert summary.max_s == 0.2
    clipped = np.maximum(np.array(samples), 0)
    assert summary.p99_s == pytest.approx(float(np.percentile(clipped, 99)))
    empty = lateness_summary([], 0.005)
    assert (empty.sent, empty.late, empty.max_s) == (0, 0, 0.0)
    assert set(summary.to_dict()) >= {"sent", "late", "max_lateness_s", "p99_lateness_s"}


def test_the_connection_pool_is_sized_for_the_rate() -> None:
    assert connection_pool_size(50) == 64
    assert connection_pool_size(1000) == 500
    assert connection_pool_size(5000) == 2500
    assert connection_pool_size(1e6) == 4000
