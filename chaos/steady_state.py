"""The steady-state hypothesis as an abort guard: stop a campaign whose error rate stays at or
above the scenario's ``abort.error_rate`` for ``abort.for`` seconds.

chaostoolkit-lib checks a steady-state hypothesis before and after an experiment; on real
staging we also need it *during* the run, as a guard: a fault that takes the service down
harder than predicted must end the experiment, not run its whole course. The rollback always
follows (:class:`chaos.rollback.RollbackGuard`).

The error rate is measured each second (`interval_s`) from cumulative counts of requests
and errors, taken from one of two sources:

- :class:`PrometheusErrorSource`: the engine's own counters (``GET /metrics``), the request
  histogram's ``_count`` by route and status — no dependence on the load generator;
- :class:`RequestTally`: counts the load side feeds (one ``record(status)`` per response),
  which also sees requests the engine never answered (status 0).

An *error* is a 5xx or a 429 (POLICY.md: a dependency fault answers 503 and the rate limit
429; both are requests the service did not serve), or no answer at all.

The rule (:class:`SteadyStateGuard`, pure and clock-free): each interval with requests is
*bad* when its rate is at or above the threshold, *good* otherwise. A run of bad intervals
starts at the beginning of its first one; an interval without any request neither starts
nor breaks a run (a service that answers nothing is not healthy); a good interval breaks
it. The hypothesis is violated when a run has lasted ``for`` seconds. The simulator reports
an abort by the same rule, so that a prediction and a measurement abort alike.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chaos.background import BackgroundLoop
from scenarios.schema import Abort

__all__ = [
    "REQUEST_COUNT_METRIC",
    "ErrorCountSource",
    "ErrorCounts",
    "IntervalSample",
    "PrometheusErrorSource",
    "RequestTally",
    "SteadyStateGuard",
    "SteadyStateMonitor",
    "Violation",
    "is_error_status",
]

# engine/service/metrics.py: Histogram "reslab_http_request_duration_seconds" with labels
# method, route (the route template) and status; its `_count` series counts responses.
REQUEST_COUNT_METRIC = "reslab_http_request_duration_seconds"
API_ROUTE_PREFIX = "/api/"

Clock = Callable[[], float]

# Floating-point sums of interval lengths must not miss the duration by an ulp.
_EPSILON_S = 1e-6


def is_error_status(status: int) -> bool:
    """5xx, 429, or no answer (0)."""
    return status == 0 or status == 429 or status >= 500


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    """Cumulative counts since some origin (a process start, a tally's creation)."""

    errors: int
    total: int


class ErrorCountSource(Protocol):
    def read(self) -> ErrorCounts:
        """The cumulative counts now; raises when they cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalSample:
    """Requests answered between run times `start` and `end`."""

    start: float
    end: float
    errors: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.errors / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class Violation:
    """The hypothesis failed at run time `t`; the bad run began at `since`."""

    t: float
    since: float
    threshold: float
    duration_s: float
    errors: int
    total: int
    reason: str

    @property
    def rate(self) -> float | None:
        return self.errors / self.total if self.total else None


class SteadyStateGuard:
    """The abort rule over a series of interval samples (see the module's docstring)."""

    def __init__(self, error_rate: float, duration_s: float) -> None:
        if not 0 < error_rate <= 1:
            raise ValueError(f"error_rate must lie in (0, 1], got {error_rate}")
        if duration_s <= 0:
            raise ValueError(f"the duration must be positive, got {duration_s}")
        self.error_rate = error_rate
        self.duration_s = duration_s
        self._since: float | None = None
        self._errors = 0
        self._total = 0
        self.violation: Violation | None = None

    @classmethod
    def from_abort(cls, abort: Abort) -> SteadyStateGuard:
        return cls(abort.error_rate, abort.duration)

    @property
    def bad_since(self) -> float | None:
        """The start of the current run of bad intervals, if one is under way."""
        return self._since

    def observe(self, sample: IntervalSample) -> Violation | None:
        """Feed one interval; returns the violation (once, and then again for every later
        sample, since a violated hypothesis stays violated)."""
        if self.violation is not None:
            return self.violation
        rate = sample.rate
        if rate is None:
            if self._since is None:
                return None
        elif rate >= self.error_rate:
            if self._since is None:
                self._since = sample.start
                self._errors = self._total = 0
            self._errors += sample.errors
            self._total += sample.total
        else:
            self._since = None
            return None
        return self._check(sample.end, "")

    def observe_unreadable(self, start: float, end: float, why: str) -> Violation | None:
        """An interval whose counts could not be read (the engine's /metrics did not answer):
        like an interval without requests, it neither starts nor breaks a run — and when
        no run is under way, a run of unreadable intervals is judged on its own."""
        if self.violation is not None:
            return self.violation
        if self._since is None:
            self._since = start
            self._errors = self._total = 0
        return self._check(end, why)

    def _check(self, end: float, why: str) -> Violation | None:
        assert self._since is not None
        if end - self._since + _EPSILON_S < self.duration_s:
            return None
        if self._total:
            reason = (
                f"error rate {self._errors / self._total:.1%} >= {self.error_rate:.0%} for "
                f"{end - self._since:.1f} s (t={self._since:.1f}..{end:.1f} s: {self._errors} of "
                f"{self._total} requests answered 5xx or 429, or not at all)"
            )
        else:
            reason = (
                f"no error counts for {end - self._since:.1f} s (t={self._since:.1f}..{end:.1f} s)"
            )
        if why:
            reason += f"; last: {why}"
        self.violation = Violation(
            t=end,
            since=self._since,
            threshold=self.error_rate,
            duration_s=self.duration_s,
            errors=self._errors,
            total=self._total,
            reason=reason,
        )
        return self.violation


# --------------------------------------------------------------------------- sources


class PrometheusErrorSource:
    """Counts from the engine's ``GET /metrics`` (public, no key): the sum of the request
    histogram's ``_count`` over routes under ``/api/`` — the campaign's own polling of
    ``/metrics`` and ``/resilience/*`` would otherwise dilute the rate."""

    def __init__(
        self,
        engine_url: str,
        *,
        route_prefix: str = API_ROUTE_PREFIX,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.route_prefix = route_prefix
        self._http = httpx.Client(
            base_url=engine_url.rstrip("/"), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def read(self) -> ErrorCounts:
        response = self._http.get("/metrics")
        response.raise_for_status()
        return counts_from_exposition(response.text, self.route_prefix)


def counts_from_exposition(text: str, route_prefix: str = API_ROUTE_PREFIX) -> ErrorCounts:
    """Cumulative (errors, total) from a Prometheus text exposition of the engine."""
    errors = total = 0
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_COUNT_METRIC:
            continue
        for sample in family.samples:
            if sample.name != f"{REQUEST_COUNT_METRIC}_count":
                continue
            if not sample.labels.get("route", "").startswith(route_prefix):
                continue
            count = int(sample.value)
            total += count
            try:
                status = int(sample.labels.get("status", "0"))
            except ValueError:
                status = 0
            if is_error_status(status):
                errors += count
    return ErrorCounts(errors, total)


class RequestTally:
    """Counts the load side feeds: call :meth:`record` with each response's status (0 when
    there was none). Thread-safe."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._errors = 0
        self._total = 0

    def record(self, status: int) -> None:
        error = is_error_status(status)
        with self._mutex:
            self._total += 1
            if error:
                self._errors += 1

    def read(self) -> ErrorCounts:
        with self._mutex:
            return ErrorCounts(self._errors, self._total)


# --------------------------------------------------------------------------- the monitor


class SteadyStateMonitor(BackgroundLoop):
    """Reads `source` every `interval_s` seconds of run time and applies the abort rule.

    On a violation it sets :attr:`aborted`, keeps :attr:`violation` and calls
    `on_violation` once (from its thread) — the campaign's cue to stop the load and the
    fault schedule; the rollback follows in the campaign's ``finally``. Reads that fail are
    kept in :attr:`read_errors`.
    """

    thread_name = "steady-state monitor"
    join_timeout_s = 5.0

    def __init__(
        self,
        abort: Abort | SteadyStateGuard,
        source: ErrorCountSource,
        t0_monotonic: float,
        *,
        interval_s: float = 1.0,
        on_violation: Callable[[Violation], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.guard = (
            abort if isinstance(abort, SteadyStateGuard) else SteadyStateGuard.from_abort(abort)
        )
        self.source = source
        self.t0 = t0_monotonic
        self.interval_s = interval_s
        self._on_violation = on_violation
        self._clock = clock
        super().__init__()
        self._last: tuple[float, ErrorCounts] | None = None
        self.aborted = threading.Event()
        self.violation: Violation | None = None
        self.samples: list[IntervalSample] = []
        self.read_errors: list[str] = []

    def tick(self, at: float | None = None) -> Violation | None:
        """Read the source once and judge the interval since the previous read (the first
        read only sets the baseline). Called by the monitor's thread with the tick's
        scheduled time `at` (monotonic), so that a few milliseconds of wake-up jitter cannot
        make two one-second intervals add up to 1.9999 s; callable directly (then the
        clock's reading stamps the interval)."""
        t = (self._clock() if at is None else at) - self.t0
        try:
            counts = self.source.read()
        except Exception as exc:  # any failure to read is an unreadable interval
            why = f"{type(exc).__name__}: {exc}"
            self.read_errors.append(f"t={t:.1f}: {why}")
            if self._last is None:
                return None
            start = self._last[0]
            self._last = (t, self._last[1])
            return self._judge(self.guard.observe_unreadable(start, t, why))
        if self._last is None:
            self._last = (t, counts)
            return None
        start, previous = self._last
        self._last = (t, counts)
        if counts.total < previous.total or counts.errors < previous.errors:
            # The counters restarted (the engine did): the counts are all new.
            previous = ErrorCounts(0, 0)
        sample = IntervalSample(
            start, t, counts.errors - previous.errors, counts.total - previous.total
        )
        self.samples.append(sample)
        return self._judge(self.guard.observe(sample))

    def _judge(self, violation: Violation | None) -> Violation | None:
        if violation is not None and not self.aborted.is_set():
            self.violation = violation
            self.aborted.set()
            if self._on_violation is not None:
                with contextlib.suppress(Exception):  # the abort itself must not fail
                    self._on_violation(violation)
        return violation

    def run(self) -> None:
        """Tick on a fixed rate until stopped or violated."""
        next_tick = self._clock()
        while not self._stop.is_set():
            if self.tick(at=next_tick) is not None:
                return
            next_tick += self.interval_s
            delay = next_tick - self._clock()
            if delay < 0:  # a slow read: skip the missed ticks rather than bunch them
                next_tick = self._clock()
                delay = 0.0
            if self._stop.wait(delay):
                return
