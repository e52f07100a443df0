"""Writes: acknowledged only after the commit, and safe to retry with an Idempotency-Key.

Every check reads PostgreSQL directly (not through its proxy), as a campaign's audit does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from chaos.staging import StagingState
from tests.fixtures_engine import EngineServer, postgres_direct_dsn

pytestmark = pytest.mark.integration


@pytest.fixture
async def database(
    engine_stack: StagingState, engine: EngineServer
) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_direct_dsn(engine_stack))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def api(engine: EngineServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=engine.url, headers={"X-API-Key": engine.api_key}, timeout=30.0
    ) as client:
        yield client


def order(sku: str, quantity: int = 1, customer: str = "writes-test") -> dict[str, object]:
    return {"customer_ref": customer, "lines": [{"sku": sku, "quantity": quantity}]}


async def on_hand(database: asyncpg.Connection, sku: str) -> int:
    value = await database.fetchval("SELECT on_hand FROM inventory WHERE sku = $1", sku)
    assert isinstance(value, int)
    return value


async def test_an_acknowledged_order_is_committed_with_its_stock_movements(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    sku = "SKU-000500"
    before = await on_hand(database, sku)
    response = await api.post("/api/orders", json=order(sku, 2))
    assert response.status_code == 201, response.text
    order_id = response.json()["order_id"]
    # A fresh connection sees it: the answer came after the commit, not before.
    row = await database.fetchrow("SELECT customer_ref, total FROM orders WHERE id = $1", order_id)
    assert row is not None and row["customer_ref"] == "writes-test"
    sold = await database.fetchval(
        "SELECT sum(quantity) FROM sales WHERE order_id = $1 AND sku = $2", order_id, sku
    )
    assert sold == 2
    moved = await database.fetchval(
        "SELECT sum(quantity) FROM stock_movements WHERE reference = $1", f"order-{order_id}"
    )
    assert moved == -2
    assert await on_hand(database, sku) == before - 2


async def test_a_retry_with_the_same_key_returns_the_first_answer_and_writes_once(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    sku = "SKU-000501"
    before = await on_hand(database, sku)
    key = f"writes-{uuid.uuid4()}"
    first = await api.post("/api/orders", json=order(sku, 3), headers={"Idempotency-Key": key})
    retry = await api.post("/api/orders", json=order(sku, 3), headers={"Idempotency-Key": key})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await on_hand(database, sku) == before - 3
    orders = await database.fetchval(
        "SELECT count(DISTINCT order_id) FROM sales WHERE sku = $1 AND order_id = $2",
        sku,
        first.json()["order_id"],
    )
    assert orders == 1


async def test_concurrent_retries_with_one_key_make_one_order(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    sku = "SKU-000502"
    before = await on_hand(database, sku)
    key = f"writes-{uuid.uuid4()}"
    answers = await asyncio.gather(
        *(api.post("/api/orders", json=order(sku, 1), headers={"Idempotency-Key": key})
          for _ in range(6))
    )  # fmt: skip
    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.json()["order_id"] for answer in answers}) == 1
    assert await on_hand(database, sku) == before - 1


async def test_a_key_reused_for_another_request_is_refused(api: httpx.AsyncClient) -> None:
    key = f"writes-{uuid.uuid4()}"
    assert (
        await api.post("/api/orders", json=order("SKU-000503"), headers={"Idempotency-Key": key})
    ).status_code == 201
    other = await api.post(
        "/api/orders", json=order("SKU-000503", 2), headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]


async def test_an_order_beyond_the_stock_writes_nothing(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    sku = "SKU-000504"
    before = await on_hand(database, sku)
    orders_before = await database.fetchval("SELECT count(*) FROM orders")
    key = f"writes-{uuid.uuid4()}"
    response = await api.post(
        "/api/orders",
        json={"customer_ref": "too-much", "lines": [
            {"sku": "SKU-000505", "quantity": 1}, {"sku": sku, "quantity": 1000}]},
        headers={"Idempotency-Key": key},
    )  # fmt: skip
    assert response.status_code == 409
    assert sku in response.json()["detail"]
    assert await on_hand(database, sku) == before
    assert await database.fetchval("SELECT count(*) FROM orders") == orders_before
    # Nothing was acknowledged, so nothing is stored under the key either.
    assert await database.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 0


async def test_adjustments_commit_refuse_negative_stock_and_replay(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    sku = "SKU-000506"
    before = await on_hand(database, sku)
    key = f"writes-{uuid.uuid4()}"
    body = {"delta": -1, "reason": "damage", "note": "dropped"}
    first = await api.post(
        f"/api/inventory/{sku}/adjustments", json=body, headers={"Idempotency-Key": key}
    )
    retry = await api.post(
        f"/api/inventory/{sku}/adjustments", json=body, headers={"Idempotency-Key": key}
    )
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert first.json()["on_hand"] == before - 1 == await on_hand(database, sku)
    movement = await database.fetchrow(
        "SELECT quantity, reason, reference FROM stock_movements WHERE id = $1",
        first.json()["movement_id"],
    )
    assert movement is not None and tuple(movement) == (-1, "damage", "dropped")
    too_many = await api.post(
        f"/api/inventory/{sku}/adjustments", json={"delta": -(before + 10), "reason": "count"}
    )
    assert too_many.status_code == 409
    assert await on_hand(database, sku) == before - 1


async def test_a_write_invalidates_the_cached_inventory(api: httpx.AsyncClient) -> None:
    sku = "SKU-000507"
    cached = (await api.get(f"/api/inventory/{sku}")).json()["on_hand"]
    assert (await api.get(f"/api/inventory/{sku}")).headers["Server-Timing"].startswith("redis")
    await api.post(f"/api/inventory/{sku}/adjustments", json={"delta": 4, "reason": "receipt"})
    assert (await api.get(f"/api/inventory/{sku}")).json()["on_hand"] == cached + 4


async def test_a_batch_import_applies_every_row_in_one_transaction(
    api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    before = {sku: await on_hand(database, sku) for sku in ("SKU-000600", "SKU-000601")}
    csv_body = b"sku,quantity,reference\nSKU-000600,10,PO-9\nSKU-000601,4,PO-9\nSKU-000600,1,\n"
    response = await api.post(
        "/api/batch/import", content=csv_body, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 3
    assert await on_hand(database, "SKU-000600") == before["SKU-000600"] + 11
    assert await on_hand(database, "SKU-000601") == before["SKU-000601"] + 4
    bad = await api.post(
        "/api/batch/import",
        content=b"sku,quantity\nSKU-000600,5\nSKU-NOPE,1\n",
        headers={"Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    assert "SKU-NOPE" in bad.json()["detail"]
    # The whole file or nothing: the valid first row was not applied either.
    assert await on_hand(database, "SKU-000600") == before["SKU-000600"] + 11


async def test_idempotency_keys_belong_to_their_caller(
    engine: EngineServer, api: httpx.AsyncClient, database: asyncpg.Connection
) -> None:
    key = f"writes-{uuid.uuid4()}"
    mine = await api.post("/api/orders", json=order("SKU-000510"), headers={"Idempotency-Key": key})
    async with httpx.AsyncClient(
        base_url=engine.url, headers={"X-API-Key": engine.admin_key}, timeout=30.0
    ) as other_caller:
        theirs = await other_caller.post(
            "/api/orders", json=order("SKU-000511", 2), headers={"Idempotency-Key": key}
        )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["order_id"] != theirs.json()["order_id"]
    assert "Idempotent-Replayed" not in theirs.headers
