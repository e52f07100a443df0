"""Faults injected through Toxiproxy into a running engine: breakers trip on the real
failures, the level follows, every feature falls back or answers 503 with Retry-After
(never 500), acknowledged writes survive, and the engine recovers to OPTIMAL.

The engine runs a fast policy (open 2 s, small minimum calls, 1 s dwell, 1 s LLM and S3
timeouts) so that a whole trip and recovery takes seconds. Waiting is always a poll with
a deadline that keeps traffic flowing: a half-open breaker only closes on trial calls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from chaos.staging import StagingState
from chaos.toxiproxy import ToxiproxyClient
from tests.fixtures_engine import EngineServer, launch_engine, postgres_direct_dsn

pytestmark = pytest.mark.integration

DEPENDENCIES = ("openai", "postgres", "redis", "s3")


@pytest.fixture(scope="module")
def fast_engine(
    engine_stack: StagingState, engine_logs: Path, fast_policy: Path
) -> Iterator[EngineServer]:
    server = launch_engine(engine_stack, engine_logs / "fast-engine.log", policy=fast_policy)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_direct(engine_stack: StagingState) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(engine_stack.url("redis"))
    yield client
    client.close()


class Recorder:
    """Every response the test saw, to check afterwards that none was a 500."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []

    def __call__(self, response: httpx.Response) -> None:
        self.statuses.append((f"{response.request.method} {response.request.url.path}",
                              response.status_code))  # fmt: skip

    def server_errors(self) -> list[tuple[str, int]]:
        return [entry for entry in self.statuses if entry[1] >= 500 and entry[1] != 503]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def api(
    fast_engine: EngineServer, toxiproxy: ToxiproxyClient, recorder: Recorder
) -> Iterator[httpx.Client]:
    """A client of the fast engine; after the test the faults are gone and the engine is
    back to every breaker CLOSED and level OPTIMAL, so the next test starts healthy."""
    with fast_engine.client(event_hooks={"response": [recorder]}) as client:
        yield client
        toxiproxy.reset()
        wait_for(lambda: healthy(client), timeout=40.0, drive=lambda: drive_all(client))
    assert recorder.server_errors() == []


def status(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/resilience/status")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def breaker(api: httpx.Client, dependency: str) -> str:
    return str(status(api)["breakers"][dependency]["state"])


def healthy(api: httpx.Client) -> bool:
    current = status(api)
    return current["level"] == "OPTIMAL" and all(
        snapshot["state"] == "CLOSED" for snapshot in current["breakers"].values()
    )


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    drive: Callable[[], object] | None = None,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s")
        if drive is not None:
            drive()
        time.sleep(interval)


def drive_all(api: httpx.Client) -> None:
    """One call on each dependency: trial calls for whatever breaker is half-open."""
    api.get("/api/products", params={"q": "tea", "limit": 1})
    api.get("/api/inventory/SKU-000042")
    api.get("/api/pricing/SKU-000042/suggestion")
    api.get("/api/reports/sales.csv", params={"days": 1})


def assert_503(response: httpx.Response, feature: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["feature"] == feature
    assert body["reason"]


def events_of(api: httpx.Client, since: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get("/resilience/events", params={"since": since}).json()[
        "events"
    ]
    return events


def test_postgres_down_trips_its_breaker_and_the_api_degrades_without_500(
    api: httpx.Client, toxiproxy: ToxiproxyClient, redis_direct: redis.Redis
) -> None:
    since = status(api)["last_event_seq"]
    cached = "SKU-000042"
    assert api.get(f"/api/inventory/{cached}").status_code == 200
    assert api.get("/api/summary").status_code == 200

    toxiproxy.disable_proxy("postgres")
    # Only the long-lived stale copies are left in the cache.
    redis_direct.delete(f"inventory:{cached}", "summary")
    wait_for(
        lambda: breaker(api, "postgres") == "OPEN",
        timeout=15.0,
        drive=lambda: api.get("/api/products", params={"q": "tea"}),
    )
    current = status(api)
    assert current["level"] == "DEGRADED"
    assert current["score"] == 70.0
    assert current["recovery_eta"]["seconds"] >= 1

    order = {"customer_ref": "fault", "lines": [{"sku": "SKU-000001", "quantity": 1}]}
    assert_503(api.post("/api/orders", json=order), "order_processing")
    assert_503(
        api.post("/api/inventory/SKU-000001/adjustments", json={"delta": 1, "reason": "count"}),
        "inventory_write",
    )
    assert_503(api.get("/api/products", params={"q": "tea"}), "product_search")
    assert_503(api.get("/api/analytics/trends"), "complex_analytics")

    stale = api.get(f"/api/inventory/{cached}")
    assert stale.status_code == 200
    assert stale.headers["X-Served-By"] == "stale"
    assert stale.json()["sku"] == cached
    summary = api.get("/api/summary")
    assert summary.status_code == 200
    assert summary.headers["X-Served-By"] == "stale"
    assert summary.json()["stale"] is True
    assert_503(api.get("/api/inventory/SKU-009876"), "inventory_read")  # never cached

    # PostgreSQL and Redis both down: not even a stale copy.
    toxiproxy.disable_proxy("redis")
    assert_503(api.get(f"/api/inventory/{cached}"), "inventory_read")

    # The fault ends: trial calls close the breakers and the level climbs back to OPTIMAL.
    toxiproxy.reset()
    wait_for(lambda: healthy(api), timeout=40.0, drive=lambda: drive_all(api))
    events = events_of(api, since)
    postgres_states = [
        event["to_state"]
        for event in events
        if event["kind"] == "breaker_transition" and event["dependency"] == "postgres"
    ]
    assert postgres_states[0] == "OPEN"
    assert postgres_states[-2:] == ["HALF_OPEN", "CLOSED"]
    levels = [event["to_level"] for event in events if event["kind"] == "level_change"]
    assert levels[0] == "DEGRADED"
    assert levels[-1] == "OPTIMAL"
    assert api.get("/api/products", params={"q": "tea"}).status_code == 200


def test_slow_redis_trips_on_slow_calls_and_reads_go_to_postgres(
    api: httpx.Client, toxiproxy: ToxiproxyClient
) -> None:
    since = status(api)["last_event_seq"]
    toxiproxy.add_toxic("redis", "latency", attributes={"latency": 120, "jitter": 0})
    wait_for(
        lambda: breaker(api, "redis") == "OPEN",
        timeout=15.0,
        drive=lambda: api.get("/api/inventory/SKU-000043"),
    )
    trip = next(
        event for event in events_of(api, since)
        if event["kind"] == "breaker_transition" and event["dependency"] == "redis"
        and event["to_state"] == "OPEN"
    )  # fmt: skip
    assert trip["slow_rate"] >= 0.8
    assert trip["failure_rate"] < 0.15
    read = api.get("/api/inventory/SKU-000043")
    assert read.status_code == 200
    assert read.headers["X-Served-By"] == "fallback"
    assert "redis" not in read.headers["Server-Timing"]
    assert "postgres" in read.headers["Server-Timing"]
    assert status(api)["level"] == "DEGRADED"


def test_an_llm_that_never_answers_gives_the_rule_based_price(
    api: httpx.Client, toxiproxy: ToxiproxyClient
) -> None:
    toxiproxy.add_toxic("openai", "timeout", attributes={"timeout": 0})
    started = time.monotonic()
    slow = api.get("/api/pricing/SKU-000042/suggestion")
    waited = time.monotonic() - started
    assert slow.status_code == 200
    body = slow.json()
    assert body["source"] == "rule"
    assert body["confidence"] == "low"
    rule_price = (Decimal(str(body["unit_cost"])) * Decimal("1.3")).quantize(
        Decimal("0.01"), ROUND_HALF_UP
    )
    assert Decimal(str(body["suggested_price"])) == rule_price
    assert slow.headers["X-Served-By"] == "fallback"
    assert waited < 5.0  # the policy's 1 s call timeout, not the client's own
    wait_for(
        lambda: breaker(api, "openai") == "OPEN",
        timeout=20.0,
        drive=lambda: api.get("/api/pricing/SKU-000042/suggestion"),
    )
    assert status(api)["level"] == "LIMITED"
    fast = api.get("/api/pricing/SKU-000042/suggestion")
    assert fast.json()["source"] == "rule"
    recommendations = api.get("/api/recommendations")
    assert recommendations.status_code == 200
    assert recommendations.headers["X-Served-By"] == "fallback"
    assert recommendations.json()["source"] == "top_sellers"


def test_s3_down_streams_the_report_unarchived_and_refuses_uploads(
    api: httpx.Client, toxiproxy: ToxiproxyClient
) -> None:
    toxiproxy.disable_proxy("s3")
    report = api.get("/api/reports/sales.csv", params={"days": 3})
    assert report.status_code == 200
    assert report.text.startswith("sku,name,category,units,revenue,sales_lines\n")
    assert report.headers["X-Report-Archive"] == "none"
    assert report.headers["X-Served-By"] == "fallback"
    upload = api.post(
        "/api/invoices",
        params={"supplier_id": 2},
        content=b"invoice 1",
        headers={"Content-Type": "text/plain"},
    )
    assert_503(upload, "invoice_upload")
    wait_for(
        lambda: breaker(api, "s3") == "OPEN",
        timeout=15.0,
        drive=lambda: api.get("/api/reports/sales.csv", params={"days": 1}),
    )
    assert status(api)["level"] == "OPTIMAL"  # S3 weighs 5 %: score 95
    assert_503(
        api.post("/api/batch/import", content=b"sku,quantity\nSKU-000001,1\n",
                 headers={"Content-Type": "text/csv"}),
        "batch_import",
    )  # fmt: skip
    assert_503(api.post("/api/invoices/1/enhance"), "ai_invoice_enhancement")


async def test_every_acknowledged_order_is_in_postgres_after_a_fault(
    api: httpx.Client,
    fast_engine: EngineServer,
    toxiproxy: ToxiproxyClient,
    engine_stack: StagingState,
) -> None:
    run = uuid.uuid4().hex[:8]
    outcomes: dict[str, int] = {}
    skus: dict[str, str] = {}

    async def place(client: httpx.AsyncClient, key: str, sku: str) -> int:
        response = await client.post(
            "/api/orders",
            json={"customer_ref": key, "lines": [{"sku": sku, "quantity": 1}]},
            headers={"Idempotency-Key": key},
        )
        return response.status_code

    async def sender(client: httpx.AsyncClient, worker: int, stop_at: float) -> None:
        count = 0
        while time.monotonic() < stop_at:
            key = f"ack-{run}-{worker}-{count}"
            skus[key] = f"SKU-{700 + count % 50:06d}"
            outcomes[key] = await place(client, key, skus[key])
            count += 1
            await asyncio.sleep(0.02)

    async def fault() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(toxiproxy.disable_proxy, "postgres")
        await asyncio.sleep(2.5)
        await asyncio.to_thread(toxiproxy.enable_proxy, "postgres")

    headers = {"X-API-Key": fast_engine.api_key}
    async with httpx.AsyncClient(base_url=fast_engine.url, headers=headers, timeout=30) as client:
        stop_at = time.monotonic() + 5.0
        await asyncio.gather(fault(), *(sender(client, worker, stop_at) for worker in range(4)))
        assert set(outcomes.values()) <= {201, 503}
        acknowledged = {key for key, code in outcomes.items() if code == 201}
        refused = {key for key, code in outcomes.items() if code == 503}
        assert acknowledged and refused

        database = await asyncpg.connect(postgres_direct_dsn(engine_stack))
        try:
            found = await database.fetch(
                "SELECT customer_ref, count(*) AS orders FROM orders "
                "WHERE customer_ref = ANY($1::text[]) GROUP BY customer_ref",
                list(outcomes),
            )
            stored = {row["customer_ref"]: row["orders"] for row in found}
            assert acknowledged <= set(stored)
            assert set(stored.values()) == {1}

            # Retrying the refused ones with their keys, once healthy, makes exactly one
            # order each (a refused write that did commit is replayed, not repeated).
            await asyncio.to_thread(
                wait_for, lambda: healthy(api), timeout=40.0, drive=lambda: drive_all(api)
            )
            for key in sorted(refused):
                assert await place(client, key, skus[key]) == 201
            found = await database.fetch(
                "SELECT customer_ref, count(*) AS orders FROM orders "
                "WHERE customer_ref = ANY($1::text[]) GROUP BY customer_ref",
                list(outcomes),
            )
            assert {row["customer_ref"] for row in found} == set(outcomes)
            assert {row["orders"] for row in found} == {1}
        finally:
            await database.close()
