"""The fault scheduler: a scenario's faults applied and removed at their times, and the times
Toxiproxy accepted each change recorded for faults.parquet.

The order of operations is checked on a manual clock with a recording stand-in for
Toxiproxy (no sleeping); the times, the attributes and the effect on traffic against the
real Toxiproxy of the staging stack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from chaos.faults import FaultInjectionError, FaultRecord, FaultScheduler, toxic_name
from chaos.rollback import ChangeLedger, RollbackGuard
from chaos.staging import StagingState
from chaos.toxiproxy import Proxy, Stream, Toxic, ToxiproxyClient, ToxiproxyError
from engine.policy.clock import ManualClock
from reports.runfolder import FAULTS_SCHEMA
from scenarios.loader import parse_scenario
from scenarios.schema import FaultBase

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0


def scenario_faults(*faults: Mapping[str, Any], duration: str = "120s") -> tuple[FaultBase, ...]:
    scenario = parse_scenario(
        {
            "name": "fault-scheduler-test",
            "load": {"model": "open", "rate": 1, "duration": duration},
            "faults": list(faults),
        }
    )
    return scenario.faults


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- on a manual clock


class RecordingToxiproxy:
    """Answers like Toxiproxy and notes each call with the clock's time."""

    def __init__(
        self, clock: ManualClock, refuse_proxy: str | None = None, fail_removals: bool = False
    ) -> None:
        self.clock = clock
        self.refuse_proxy = refuse_proxy
        self.fail_removals = fail_removals
        self.calls: list[tuple[float, str, str, str | None]] = []

    def _refuse(self, proxy: str) -> None:
        if proxy == self.refuse_proxy:
            raise ToxiproxyError("POST", f"/proxies/{proxy}", 404, "proxy not found")

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Toxic:
        self._refuse(proxy)
        self.calls.append((self.clock.monotonic(), "add", proxy, name))
        return Toxic(name or type, type, stream, toxicity, {**(attributes or {}), "server": 1})

    def remove_toxic(self, proxy: str, name: str) -> None:
        if self.fail_removals:
            raise ToxiproxyError("DELETE", f"/proxies/{proxy}/toxics/{name}", 500, "boom")
        self.calls.append((self.clock.monotonic(), "remove", proxy, name))

    def disable_proxy(self, name: str) -> Proxy:
        self._refuse(name)
        self.calls.append((self.clock.monotonic(), "disable", name, None))
        return Proxy(name, "127.0.0.1:1", "127.0.0.1:2", False)

    def enable_proxy(self, name: str) -> Proxy:
        self.calls.append((self.clock.monotonic(), "enable", name, None))
        return Proxy(name, "127.0.0.1:1", "127.0.0.1:2", True)


def manual_scheduler(
    faults: tuple[FaultBase, ...], t0: float = 100.0, *, now: float | None = None, **kwargs: Any
) -> tuple[FaultScheduler, RecordingToxiproxy, ManualClock]:
    """A scheduler whose t = 0 is `t0` on a manual clock that reads `now` (default `t0`)."""
    clock = ManualClock(t0 if now is None else now)
    toxiproxy = RecordingToxiproxy(
        clock, kwargs.pop("refuse_proxy", None), kwargs.pop("fail_removals", False)
    )

    def wait(seconds: float) -> bool:
        clock.advance(seconds)
        return False

    ledger = ChangeLedger(clock=clock.monotonic)
    scheduler = FaultScheduler(
        faults, toxiproxy, ledger, t0, clock=clock.monotonic, wait=wait, **kwargs
    )
    return scheduler, toxiproxy, clock


def test_changes_follow_the_schedule_and_removals_come_first_at_the_same_instant() -> None:
    faults = scenario_faults(
        {"at": "10s", "duration": "20s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 150, "jitter": 50}, "toxicity": 0.5},
        {"at": "20s", "duration": "5s", "target": "postgres", "toxic": "down"},
        {"at": "25s", "duration": "5s", "target": "postgres", "toxic": "down"},
        {"at": "15s", "duration": "10s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 10}, "stream": "upstream"},
    )  # fmt: skip
    scheduler, toxiproxy, _ = manual_scheduler(faults, t0=100.0)
    scheduler.run()

    assert toxiproxy.calls == [
        (110.0, "add", "redis", "reslab-0-latency"),
        (115.0, "add", "redis", "reslab-3-latency"),
        (120.0, "disable", "postgres", None),
        # At 25 s the first `down` ends as the second begins: enable, then disable, so
        # that the proxy stays down; and the upstream latency ends at 25 s too.
        (125.0, "enable", "postgres", None),
        (125.0, "remove", "redis", "reslab-3-latency"),
        (125.0, "disable", "postgres", None),
        (130.0, "remove", "redis", "reslab-0-latency"),
        (130.0, "enable", "postgres", None),
    ]
    records = scheduler.records()
    assert [(r.applied_at, r.removed_at) for r in records] == [
        (10.0, 30.0), (20.0, 25.0), (25.0, 30.0), (15.0, 25.0),
    ]  # fmt: skip
    first = records[0]
    assert (first.target, first.toxic, first.stream, first.toxicity) == (
        "redis", "latency", "downstream", 0.5,
    )  # fmt: skip
    # The attributes as Toxiproxy answered them, not as the scenario wrote them.
    assert first.attributes == {"latency": 150, "jitter": 50, "server": 1}
    assert records[1].attributes == {}
    assert scheduler.ledger.outstanding() == []
    assert scheduler.done.is_set()


def test_a_late_start_applies_what_is_already_due_at_once() -> None:
    faults = scenario_faults({"at": 0, "duration": "5s", "target": "s3", "toxic": "down"})
    scheduler, toxiproxy, _ = manual_scheduler(faults, t0=97.0, now=100.0)  # 3 s late
    scheduler.run()
    assert toxiproxy.calls == [(100.0, "disable", "s3", None), (102.0, "enable", "s3", None)]
    assert scheduler.records()[0].applied_at == 3.0


def test_stopping_early_undoes_the_applied_faults_and_records_their_removal() -> None:
    faults = scenario_faults(
        {"at": "1s", "duration": "50s", "target": "openai", "toxic": "timeout"},
        {"at": "60s", "duration": "10s", "target": "redis", "toxic": "down"},
    )
    changes: list[FaultRecord] = []
    schedulers: list[FaultScheduler] = []

    def stop_after_the_first(record: FaultRecord) -> None:
        changes.append(record)
        schedulers[0].stop()

    scheduler, toxiproxy, _ = manual_scheduler(faults, on_change=stop_after_the_first)
    schedulers.append(scheduler)
    scheduler.run()
    assert [call[1:] for call in toxiproxy.calls] == [
        ("add", "openai", "reslab-0-timeout"),
        ("remove", "openai", "reslab-0-timeout"),
    ]
    records = scheduler.records()
    assert records[0].applied_at == 1.0 and records[0].removed_at is not None
    assert (records[1].applied_at, records[1].removed_at) == (None, None)  # never applied
    assert changes[0].applied_at == 1.0 and changes[0].removed_at is None


def test_a_refused_change_stops_the_schedule_after_undoing_the_rest() -> None:
    faults = scenario_faults(
        {"at": "1s", "duration": "50s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 100}},
        {"at": "2s", "duration": "10s", "target": "postgres", "toxic": "down"},
    )  # fmt: skip
    failures: list[BaseException] = []
    scheduler, toxiproxy, _ = manual_scheduler(
        faults, refuse_proxy="postgres", on_failure=failures.append
    )
    with pytest.raises(FaultInjectionError, match=r"faults\[1\] \(down on postgres\)") as raised:
        scheduler.run()
    assert raised.value.exit_code == 3
    assert failures == [raised.value]
    assert scheduler.error is raised.value
    # The latency toxic was removed; enabling postgres (perhaps never disabled) is tried too.
    assert ("remove", "redis", "reslab-0-latency") in [call[1:] for call in toxiproxy.calls]
    assert scheduler.ledger.outstanding() == []


def test_a_failed_removal_is_kept_for_the_rollback_and_surfaces() -> None:
    faults = scenario_faults(
        {"at": "1s", "duration": "1s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 100}},
    )  # fmt: skip
    scheduler, _, _ = manual_scheduler(faults, fail_removals=True)
    with pytest.raises(FaultInjectionError, match=r"could not be removed: .*HTTP 500"):
        scheduler.run()
    # Still listed as outstanding: the guard's rollback retries it and reports.
    assert [c.toxic for c in scheduler.ledger.outstanding()] == ["reslab-0-latency"]
    assert scheduler.records()[0].removed_at is None


# --------------------------------------------------------------------------- real Toxiproxy


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "chaos.lock.json"


@pytest.fixture
def guarded(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, lock_path: Path
) -> Iterator[RollbackGuard]:
    with RollbackGuard(engine_stack.toxiproxy_url, lock_path=lock_path, label="test") as guard:
        yield guard


def test_faults_are_applied_and_removed_at_their_times_on_the_real_toxiproxy(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, guarded: RollbackGuard
) -> None:
    faults = scenario_faults(
        {"at": "0.5s", "duration": "1.5s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 50, "jitter": 10}, "toxicity": 0.5, "stream": "upstream"},
        {"at": "0.5s", "duration": "1s", "target": "s3", "toxic": "down"},
    )  # fmt: skip
    t0 = time.monotonic()
    scheduler = FaultScheduler(faults, toxiproxy, guarded.ledger, t0, replication=2)
    with scheduler.running():

        def applied() -> bool:
            proxies = toxiproxy.proxies()
            return bool(proxies["redis"].toxics) and not proxies["s3"].enabled

        wait_until(applied, "both faults in Toxiproxy")
        (toxic,) = toxiproxy.toxics("redis")
        assert toxic.name == toxic_name(0, "latency") == "reslab-0-latency"
        assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "upstream", 0.5)
        assert dict(toxic.attributes) == {"latency": 50, "jitter": 10}
        # The lock lists what is applied, as it is applied.
        listed = json.loads(guarded.lock.path.read_text())["changes"]
        assert {(c["proxy"], c["toxic"]) for c in listed} == {
            ("redis", "reslab-0-latency"),
            ("s3", None),
        }
        assert scheduler.done.wait(DEADLINE_S)

    proxies = toxiproxy.proxies()
    assert all(p.enabled and not p.toxics for p in proxies.values())
    records = scheduler.records()
    for record in records:
        assert record.applied_at is not None and record.removed_at is not None
        # Never early, and close behind the schedule (generously: a loaded 2-core machine).
        assert record.scheduled_at <= record.applied_at < record.scheduled_at + 1.0
        assert record.scheduled_end <= record.removed_at < record.scheduled_end + 1.0
    table = scheduler.table()
    assert table.schema.equals(FAULTS_SCHEMA)
    rows = table.to_pylist()
    assert [row["replication"] for row in rows] == [2, 2]
    assert json.loads(rows[0]["attributes"]) == {"latency": 50, "jitter": 10}
    assert rows[1]["toxic"] == "down" and rows[1]["attributes"] == "{}"


def _ping_seconds(client: redis.Redis) -> float:
    started = time.perf_counter()
    assert client.ping()
    return time.perf_counter() - started


def test_a_latency_toxic_really_slows_a_redis_ping_through_the_proxy(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, guarded: RollbackGuard
) -> None:
    latency_ms = 300
    faults = scenario_faults(
        {"at": 0, "duration": "60s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": latency_ms}},
    )  # fmt: skip
    host, port = engine_stack.proxy_address("redis").rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), socket_timeout=10)
    try:
        before = _ping_seconds(client)
        scheduler = FaultScheduler(faults, toxiproxy, guarded.ledger, time.monotonic())
        with scheduler.running():
            wait_until(lambda: bool(toxiproxy.toxics("redis")), "the latency toxic")
            during = _ping_seconds(client)  # the same pooled connection: toxics apply live
        wait_until(lambda: not toxiproxy.toxics("redis"), "the toxic's removal")
        after = _ping_seconds(client)
    finally:
        client.close()
    # A lower bound only: the reply cannot arrive before the toxic's delay has passed.
    assert during >= latency_ms / 1000.0 * 0.95
    assert before < during - latency_ms / 1000.0 / 2
    assert after < during - latency_ms / 1000.0 / 2
    (record,) = scheduler.records()
    assert record.applied_at is not None and record.removed_at is not None


def test_a_fault_toxiproxy_refuses_surfaces_after_the_rollback(
    toxiproxy_server: Any, lock_path: Path
) -> None:
    # A Toxiproxy without a postgres proxy: disabling it is refused with a 404.
    with ToxiproxyClient(toxiproxy_server.url) as client:
        client.create_proxy("redis", "127.0.0.1:9")
    faults = scenario_faults(
        {"at": 0, "duration": "60s", "target": "redis", "toxic": "latency",
         "attributes": {"latency": 100}},
        {"at": "0.2s", "duration": "10s", "target": "postgres", "toxic": "down"},
    )  # fmt: skip
    with (
        pytest.raises(FaultInjectionError, match="HTTP 404") as raised,
        RollbackGuard(toxiproxy_server.url, lock_path=lock_path) as guard,
        ToxiproxyClient(toxiproxy_server.url) as client,
    ):
        FaultScheduler(faults, client, guard.ledger, time.monotonic()).run()
    assert raised.value.exit_code == 3
    with ToxiproxyClient(toxiproxy_server.url) as client:
        assert client.toxics("redis") == []
    assert not lock_path.exists()
