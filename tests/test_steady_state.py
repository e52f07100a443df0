"""The steady-state hypothesis as an abort guard: an error rate at or above the scenario's
threshold for its duration aborts the run, and the rollback follows.

The rule is checked on synthetic series (no clock, no sleeping); then a real engine is
driven into it — PostgreSQL's proxy disabled under a loop of writes — and judged from the
engine's own Prometheus counters.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from chaos.faults import FaultScheduler
from chaos.observer import AckedWrite, verify_acknowledged_writes
from chaos.rollback import RollbackGuard
from chaos.staging import StagingState
from chaos.steady_state import (
    ErrorCounts,
    IntervalSample,
    PrometheusErrorSource,
    RequestTally,
    SteadyStateGuard,
    SteadyStateMonitor,
    Violation,
    counts_from_exposition,
    is_error_status,
)
from chaos.toxiproxy import ToxiproxyClient
from engine.policy.clock import ManualClock
from engine.service.metrics import EngineMetrics
from scenarios.loader import parse_scenario
from scenarios.schema import Abort
from tests.fixtures_engine import EngineServer, launch_engine, postgres_direct_dsn

DEADLINE_S = 30.0


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def series(*per_second: tuple[int, int]) -> list[IntervalSample]:
    """One-second intervals from t = 0 with (errors, total) each."""
    return [IntervalSample(float(k), float(k + 1), e, n) for k, (e, n) in enumerate(per_second)]


# --------------------------------------------------------------------------- the rule


def test_a_bad_run_as_long_as_the_duration_violates_the_hypothesis() -> None:
    guard = SteadyStateGuard(error_rate=0.5, duration_s=3.0)
    samples = series(
        (0, 10),  # 0–1 good
        (6, 10),  # 1–2 bad: a run starts at 1
        (7, 10),  # 2–3 bad
        (1, 10),  # 3–4 good: the run is broken after 2 s
        (5, 10),  # 4–5 bad (at the threshold counts): a run starts at 4
        (0, 0),  # 5–6 no requests: neither starts nor breaks a run
        (9, 10),  # 6–7 bad: 3 s since 4
        (0, 10),  # never seen: the hypothesis is already violated
    )
    verdicts = [guard.observe(sample) for sample in samples]
    assert verdicts[:6] == [None] * 6
    violation = verdicts[6]
    assert violation is not None
    assert (violation.t, violation.since) == (7.0, 4.0)
    assert (violation.errors, violation.total) == (14, 20)
    assert violation.reason.startswith("error rate 70.0% >= 50% for 3.0 s (t=4.0..7.0 s")
    assert verdicts[7] is violation


def test_a_healthy_series_and_silence_alone_never_abort() -> None:
    guard = SteadyStateGuard.from_abort(Abort.model_validate({"error_rate": 0.5, "for": "2s"}))
    for sample in series(*[(4, 10)] * 20, *[(0, 0)] * 20):
        assert guard.observe(sample) is None


def test_the_monitor_takes_deltas_survives_a_counter_reset_and_aborts_once() -> None:
    readings: list[ErrorCounts | Exception] = [
        ErrorCounts(0, 100),  # t=0: the baseline
        ErrorCounts(1, 200),  # 0–1: 1 of 100
        ErrorCounts(2, 210),  # 1–2: 1 of 10
        ErrorCounts(8, 20),  # 2–3: the engine restarted; 8 of 20 since, still good
        ErrorCounts(28, 40),  # 3–4: 20 of 20, a bad run starts at 3
        OSError("connection refused"),  # 4–5: unreadable, does not break the run
        ErrorCounts(40, 52),  # 5–6: 12 of 12; 3 s since 3
    ]
    clock = ManualClock(1000.0)
    violations: list[Violation] = []

    class Source:
        def read(self) -> ErrorCounts:
            reading = readings.pop(0)
            if isinstance(reading, Exception):
                raise reading
            return reading

    monitor = SteadyStateMonitor(
        Abort.model_validate({"error_rate": 0.5, "for": "3s"}),
        Source(),
        t0_monotonic=1000.0,
        on_violation=violations.append,
        clock=clock.monotonic,
    )
    verdicts = []
    for _ in range(7):
        verdicts.append(monitor.tick())
        clock.advance(1.0)
    assert verdicts[:6] == [None] * 6
    assert [(s.errors, s.total) for s in monitor.samples] == [
        (1, 100), (1, 10), (8, 20), (20, 20), (12, 12),
    ]  # fmt: skip
    assert monitor.read_errors and "connection refused" in monitor.read_errors[0]
    assert monitor.aborted.is_set() and violations == [monitor.violation]
    assert verdicts[6] is monitor.violation is not None
    assert (monitor.violation.since, monitor.violation.t) == (3.0, 6.0)
    assert (monitor.violation.errors, monitor.violation.total) == (32, 32)
    monitor.tick()  # a later tick reports nothing new
    assert len(violations) == 1


def test_what_counts_as_an_error() -> None:
    assert [is_error_status(s) for s in (200, 201, 404, 409, 422, 429, 500, 503, 0)] == [
        False, False, False, False, False, True, True, True, True,
    ]  # fmt: skip
    tally = RequestTally()
    for status in (200, 503, 429, 0, 404, 201):
        tally.record(status)
    assert tally.read() == ErrorCounts(3, 6)


def test_the_engines_own_metrics_give_the_counts_of_api_routes() -> None:
    metrics = EngineMetrics()
    route = "/api/inventory/{sku}"
    for status, times in ((200, 7), (503, 2), (429, 1), (404, 3)):
        for _ in range(times):
            metrics.on_request("GET", route, status, "primary", 0.01)
    metrics.on_request("POST", "/api/orders", 500, "primary", 0.01)
    # The campaign's own polling is not part of the load.
    for _ in range(50):
        metrics.on_request("GET", "/metrics", 200, "primary", 0.001)
        metrics.on_request("GET", "/resilience/status", 200, "primary", 0.001)
    counts = counts_from_exposition(metrics.exposition().decode())
    assert counts == ErrorCounts(errors=4, total=14)


# --------------------------------------------------------------------------- rollback follows


def test_an_abort_stops_the_schedule_and_the_rollback_follows(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, tmp_path: Path
) -> None:
    faults = parse_scenario(
        {
            "name": "abort-test",
            "load": {"model": "open", "rate": 1, "duration": "60s"},
            "faults": [{"at": 0, "duration": "50s", "target": "redis", "toxic": "down"}],
        }
    ).faults
    tally = RequestTally()
    url = engine_stack.toxiproxy_url
    with (
        RollbackGuard(url, lock_path=tmp_path / "chaos.lock.json") as guard,
        ToxiproxyClient(url) as client,
    ):
        t0 = time.monotonic()
        scheduler = FaultScheduler(faults, client, guard.ledger, t0)
        monitor = SteadyStateMonitor(
            Abort.model_validate({"error_rate": 0.5, "for": "1s"}),
            tally,
            t0,
            interval_s=0.25,
            on_violation=lambda _: scheduler.stop(),
        )
        with scheduler.running(), monitor.running():
            wait_until(lambda: not toxiproxy.get_proxy("redis").enabled, "redis down")
            # A synthetic load: two errors for every success, until the guard acts.
            for status in itertools.cycle((503, 200, 503)):
                tally.record(status)
                if monitor.aborted.wait(0.002):
                    break
            assert scheduler.done.wait(DEADLINE_S)
    assert monitor.violation is not None and monitor.violation.rate is not None
    assert monitor.violation.rate >= 0.5
    assert toxiproxy.get_proxy("redis").enabled
    (record,) = scheduler.records()
    assert record.removed_at is not None and record.removed_at < record.scheduled_end


# --------------------------------------------------------------------------- a real engine


@pytest.fixture(scope="module")
def fast_engine(
    engine_stack: StagingState, fast_policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineServer]:
    """An engine of its own (short open times): this module breaks its PostgreSQL."""
    log = tmp_path_factory.mktemp("steady-state") / "engine.log"
    server = launch_engine(engine_stack, log, policy=fast_policy)
    yield server
    server.stop()


class WriteLoop:
    """Writes as fast as one client can — orders and stock adjustments, each with an
    Idempotency-Key — and remembers the acknowledged ones."""

    def __init__(self, engine: EngineServer) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.acked: list[AckedWrite] = []
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.engine.client() as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                key = f"steady-{uuid.uuid4().hex}"
                try:
                    if n % 2:
                        kind, id_field = "order", "order_id"
                        response = client.post(
                            "/api/orders",
                            json={"customer_ref": "steady-state-test",
                                  "lines": [{"sku": "SKU-000002", "quantity": 1}]},
                            headers={"Idempotency-Key": key},
                        )  # fmt: skip
                    else:
                        kind, id_field = "adjustment", "movement_id"
                        response = client.post(
                            "/api/inventory/SKU-000002/adjustments",
                            json={"delta": 1, "reason": "receipt"},
                            headers={"Idempotency-Key": key},
                        )
                except httpx.HTTPError:
                    self.statuses.append(0)
                    continue
                self.statuses.append(response.status_code)
                if response.is_success:
                    self.acked.append(AckedWrite(kind, int(response.json()[id_field]), key))


def test_a_postgres_outage_under_writes_aborts_the_run_and_rolls_back(
    engine_stack: StagingState,
    toxiproxy: ToxiproxyClient,
    fast_engine: EngineServer,
    tmp_path: Path,
) -> None:
    faults = parse_scenario(
        {
            "name": "postgres-outage-abort",
            "load": {"model": "open", "rate": 1, "duration": "60s"},
            "faults": [{"at": "1.5s", "duration": "45s", "target": "postgres", "toxic": "down"}],
        }
    ).faults
    writes = WriteLoop(fast_engine)
    source = PrometheusErrorSource(fast_engine.url)
    url = engine_stack.toxiproxy_url
    try:
        with (
            RollbackGuard(url, lock_path=tmp_path / "chaos.lock.json") as guard,
            ToxiproxyClient(url) as client,
        ):
            t0 = time.monotonic()
            scheduler = FaultScheduler(faults, client, guard.ledger, t0)

            def abort(_: Violation) -> None:  # what the campaign does: stop load and faults
                writes.stop.set()
                scheduler.stop()

            monitor = SteadyStateMonitor(
                Abort.model_validate({"error_rate": 0.5, "for": "2s"}),
                source,
                t0,
                on_violation=abort,
            )
            writes.thread.start()
            with scheduler.running(), monitor.running():
                wait_until(
                    lambda: monitor.aborted.is_set() or not writes.thread.is_alive(),
                    "the abort",
                )
                assert monitor.aborted.is_set(), f"the writes stopped: {writes.statuses[-5:]}"
            writes.thread.join(DEADLINE_S)
    finally:
        writes.stop.set()
        source.close()

    violation = monitor.violation
    assert violation is not None and violation.total > 0 and violation.errors > 0
    (record,) = scheduler.records()
    assert record.applied_at is not None and record.removed_at is not None
    # The bad run began with the outage (to the second the monitor samples at), and ended
    # the run long before the fault's scheduled end.
    assert violation.since >= record.applied_at - 1.0
    assert record.removed_at < record.scheduled_end
    assert "error rate" in violation.reason
    assert 503 in writes.statuses and 500 not in writes.statuses  # a fault is never a 500
    # Asked of Toxiproxy: the rollback left nothing behind.
    proxies = toxiproxy.proxies()
    assert all(p.enabled and not p.toxics for p in proxies.values())
    # And nothing the engine acknowledged before or during the outage was lost.
    assert writes.acked, "no write succeeded before the outage"
    verdict = verify_acknowledged_writes(postgres_direct_dsn(engine_stack), writes.acked)
    assert verdict.ok, verdict.describe()
