"""Inventory features: inventory_read, inventory_write, stock_timeline, product_search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from engine.service import cache as cache_keys
from engine.service.api_common import (
    SKU_PATTERN,
    IdempotencyKey,
    Sku,
    now_iso,
    plain,
    row_dict,
    write_response,
)
from engine.service.container import ServicesDep
from engine.service.features import attempt, best_effort, enter
from engine.service.guard import Conflict, NotFound
from engine.service.idempotency import key_scope, request_fingerprint, run_write
from engine.service.security import Caller, require_api_key
from engine.service.trace import ServedBy, mark_served

router = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)], tags=["inventory"])

_INVENTORY_ROW = """
SELECT p.sku, p.name, p.category, p.price, i.on_hand, i.reorder_point,
       i.on_hand <= i.reorder_point AS low_stock, i.updated_at
FROM inventory AS i JOIN products AS p USING (sku)
WHERE i.sku = $1
"""


@router.get("/inventory/{sku}", summary="Stock of one SKU (inventory_read)")
async def read_inventory(sku: Sku, services: ServicesDep) -> JSONResponse:
    # Redis hit → serve; miss → PostgreSQL, then fill the cache; Redis down → PostgreSQL
    # directly; PostgreSQL down → the stale copy; both → 503. Forced off by an operator
    # (with both stores healthy): the fallback reads PostgreSQL directly, as when Redis is down.
    enter(services.policy, "inventory_read")
    guard, cache = services.guard, services.cache
    key = cache_keys.inventory_key(sku)
    cached: Any = None
    redis_error: Exception | None = None
    forced_off = services.policy.flags.get("inventory_read") is False
    if forced_off:
        mark_served(ServedBy.FALLBACK)
    else:
        cached, redis_error = await attempt(guard, "redis", lambda: cache.get(key))
        if cached is not None:
            return JSONResponse(cached)
        if redis_error is not None:
            mark_served(ServedBy.FALLBACK)
    row, postgres_error = await attempt(
        guard, "postgres", lambda: services.db.fetchrow(_INVENTORY_ROW, sku)
    )
    if postgres_error is not None:
        if redis_error is None:
            stale, _ = await attempt(guard, "redis", lambda: cache.get_stale(key))
            if stale is not None:
                mark_served(ServedBy.STALE)
                return JSONResponse(stale)
        raise postgres_error
    if row is None:
        raise NotFound(f"unknown sku {sku!r}")
    document = row_dict(row)
    document["as_of"] = now_iso()
    if redis_error is None and not forced_off:
        ttl = cache_keys.ttl_for(cache_keys.INVENTORY_TTL_S, services.policy.level)
        await best_effort(guard, "redis", lambda: cache.put(key, document, ttl))
    return JSONResponse(document)


# The stock change and its movement in one statement; no row when the SKU is unknown or the
# change would take the stock below zero.
_ADJUST = """
WITH changed AS (
    UPDATE inventory SET on_hand = on_hand + $2, updated_at = now()
    WHERE sku = $1 AND on_hand + $2 >= 0
    RETURNING sku, on_hand, updated_at
),
movement AS (
    INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
    SELECT sku, updated_at, $2, $3, $4 FROM changed
    RETURNING id
)
SELECT changed.on_hand, changed.updated_at, movement.id AS movement_id
FROM changed, movement
"""


class Adjustment(BaseModel):
    delta: int = Field(ge=-100_000, le=100_000, description="Units added (+) or removed (-)")
    reason: Literal["count", "damage", "receipt", "return", "correction"]
    note: str | None = Field(default=None, max_length=200)

    @field_validator("delta")
    @classmethod
    def _changes_something(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return delta


@router.post(
    "/inventory/{sku}/adjustments",
    status_code=201,
    summary="Adjust the stock of one SKU (inventory_write)",
)
async def adjust_inventory(
    sku: Sku,
    adjustment: Adjustment,
    services: ServicesDep,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    enter(services.policy, "inventory_write")

    async def adjust(connection: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
        row = await connection.fetchrow(
            _ADJUST, sku, adjustment.delta, adjustment.reason, adjustment.note
        )
        if row is None:
            exists = await connection.fetchval("SELECT on_hand FROM inventory WHERE sku = $1", sku)
            if exists is None:
                raise NotFound(f"unknown sku {sku!r}")
            raise Conflict(f"delta: would leave {sku} below zero (on hand {exists})")
        movement_id = row["movement_id"]
        return 201, {
            "sku": sku,
            "movement_id": movement_id,
            "delta": adjustment.delta,
            "reason": adjustment.reason,
            "on_hand": row["on_hand"],
            "committed_at": plain(row["updated_at"]),
        }

    fingerprint = request_fingerprint(sku, adjustment.model_dump())

    async def write() -> Any:
        async with services.db.connection() as connection:
            return await run_write(
                connection,
                key_scope("inventory_write", caller.key_id),
                idempotency_key,
                fingerprint,
                adjust,
            )

    result = await services.guard.call("postgres", write)
    await best_effort(
        services.guard, "redis", lambda: services.cache.invalidate(cache_keys.inventory_key(sku))
    )
    return write_response(result)


_TIMELINE = """
WITH bounds AS (
    SELECT date_trunc('day', now()) - make_interval(days => $2 - 1) AS first_day
),
opening AS (
    SELECT coalesce(sum(quantity), 0)::bigint AS on_hand
    FROM stock_movements, bounds
    WHERE sku = $1 AND moved_at < bounds.first_day
),
daily AS (
    SELECT date_trunc('day', moved_at) AS day,
           coalesce(sum(quantity) FILTER (WHERE quantity > 0), 0)::bigint AS received,
           coalesce(-sum(quantity) FILTER (WHERE quantity < 0), 0)::bigint AS shipped,
           sum(quantity)::bigint AS net
    FROM stock_movements, bounds
    WHERE sku = $1 AND moved_at >= bounds.first_day
    GROUP BY 1
)
SELECT days.day::date AS day,
       coalesce(daily.received, 0) AS received,
       coalesce(daily.shipped, 0) AS shipped,
       (opening.on_hand + sum(coalesce(daily.net, 0)) OVER (ORDER BY days.day))::bigint
           AS on_hand
FROM bounds, opening,
     generate_series(bounds.first_day, date_trunc('day', now()), interval '1 day') AS days(day)
LEFT JOIN daily ON daily.day = days.day
ORDER BY days.day
"""


@router.get("/stock-timeline", summary="Daily stock of one SKU (stock_timeline)")
async def stock_timeline(
    services: ServicesDep,
    sku: Annotated[str, Query(pattern=SKU_PATTERN)],
    days: Annotated[int, Query(ge=1, le=366)] = 90,
) -> JSONResponse:
    enter(services.policy, "stock_timeline")

    async def timeline() -> list[asyncpg.Record]:
        async with services.db.connection() as connection:
            if not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1)", sku
            ):
                raise NotFound(f"unknown sku {sku!r}")
            rows: list[asyncpg.Record] = await connection.fetch(_TIMELINE, sku, days)
            return rows

    rows = await services.guard.call("postgres", timeline)
    return JSONResponse({"sku": sku, "days": days, "timeline": [row_dict(row) for row in rows]})


# The page of products is chosen first (trigram index on the name, top-N sort) and only its
# rows are joined to their stock by primary key: joining first made PostgreSQL hash the
# whole inventory table for every search. Every product has its inventory row (both are
# created together), so the page is the same.
_SEARCH = """
SELECT p.sku, p.name, p.category, p.price, i.on_hand
FROM (SELECT sku, name, category, price FROM products
      WHERE name ILIKE $1 OR sku = upper($2)
      ORDER BY name, sku
      LIMIT $3) AS p
JOIN inventory AS i USING (sku)
ORDER BY p.name, p.sku
"""


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@router.get("/products", summary="Search products by name or SKU (product_search)")
async def search_products(
    services: ServicesDep,
    q: Annotated[str, Query(min_length=2, max_length=64)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    enter(services.policy, "product_search")
    query = q.strip()
    rows = await services.guard.call(
        "postgres", lambda: services.db.fetch(_SEARCH, _like_pattern(query), query, limit)
    )
    return JSONResponse({"q": q, "items": [row_dict(row) for row in rows]})
