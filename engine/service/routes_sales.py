"""Sales features: dashboard_summary, order_processing, report_export, complex_analytics."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from engine.policy import ServeMode
from engine.service import cache as cache_keys
from engine.service.api_common import (
    SKU_PATTERN,
    IdempotencyKey,
    now_iso,
    plain,
    row_dict,
    write_response,
)
from engine.service.container import Services, ServicesDep
from engine.service.db import Database
from engine.service.features import attempt, best_effort, enter
from engine.service.guard import Conflict, DependencyUnavailable, NotFound
from engine.service.idempotency import key_scope, request_fingerprint, run_write
from engine.service.security import Caller, require_api_key
from engine.service.trace import ServedBy, mark_served

router = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)], tags=["sales"])

# --- dashboard_summary ---------------------------------------------------------------------

_SUMMARY_TOTALS = """
SELECT (SELECT count(*) FROM products) AS skus,
       (SELECT sum(i.on_hand * p.unit_cost) FROM inventory AS i JOIN products AS p USING (sku))
           AS stock_value,
       (SELECT count(*) FROM inventory WHERE on_hand <= reorder_point) AS low_stock_skus,
       (SELECT count(*) FROM orders WHERE created_at >= date_trunc('day', now()))
           AS orders_today,
       recent.revenue_30d, recent.units_30d, recent.sales_lines_30d
FROM (SELECT coalesce(sum(quantity * unit_price), 0) AS revenue_30d,
             coalesce(sum(quantity), 0) AS units_30d,
             count(*) AS sales_lines_30d
      FROM sales WHERE sold_at >= now() - interval '30 days') AS recent
"""

_SUMMARY_CATEGORIES = """
SELECT p.category, sum(s.quantity * s.unit_price) AS revenue_30d, sum(s.quantity) AS units_30d
FROM sales AS s JOIN products AS p USING (sku)
WHERE s.sold_at >= now() - interval '30 days'
GROUP BY p.category
ORDER BY revenue_30d DESC
"""


async def _compute_summary(services: Services) -> dict[str, Any]:
    async with services.db.connection() as connection:
        totals = await connection.fetchrow(_SUMMARY_TOTALS)
        categories = await connection.fetch(_SUMMARY_CATEGORIES)
    summary = row_dict(totals) if totals is not None else {}
    summary["categories"] = [row_dict(row) for row in categories]
    summary["as_of"] = now_iso()
    return summary


@router.get("/summary", summary="The dashboard's figures (dashboard_summary)")
async def dashboard_summary(services: ServicesDep) -> JSONResponse:
    decision = enter(services.policy, "dashboard_summary")
    redis_error: DependencyUnavailable | None = None
    postgres_error: DependencyUnavailable | None = None
    if decision.mode is ServeMode.PRIMARY:
        # Fresh cache → PostgreSQL (then fill the cache) → the fallback below.
        cached, redis_error = await attempt(
            services.guard, "redis", lambda: services.cache.get(cache_keys.SUMMARY_KEY)
        )
        if cached is not None:
            return JSONResponse(cached)
        if redis_error is not None:
            mark_served(ServedBy.FALLBACK)
        summary, postgres_error = await _summary_from_postgres(
            services, fill_cache=redis_error is None
        )
        if summary is not None:
            return JSONResponse(summary)
    # The fallback: the last good summary, marked stale.
    last_good = await _last_good_summary(services, redis_usable=redis_error is None)
    if last_good is not None:
        mark_served(ServedBy.STALE)
        return JSONResponse({**last_good, "stale": True})
    if postgres_error is None:
        # No good summary yet (a fresh start) and PostgreSQL not tried: compute one.
        summary, postgres_error = await _summary_from_postgres(services, fill_cache=False)
        if summary is not None:
            mark_served(ServedBy.FALLBACK)
            return JSONResponse(summary)
    assert postgres_error is not None
    raise postgres_error


async def _last_good_summary(services: Services, *, redis_usable: bool) -> dict[str, Any] | None:
    """The stale copy in Redis (shared by every engine), else this process's own copy."""
    if redis_usable:
        stale, _ = await attempt(
            services.guard, "redis", lambda: services.cache.get_stale(cache_keys.SUMMARY_KEY)
        )
        if stale is not None:
            return dict(stale)
    return services.last_good_summary


async def _summary_from_postgres(
    services: Services, *, fill_cache: bool
) -> tuple[dict[str, Any] | None, DependencyUnavailable | None]:
    """Compute the summary (one computation shared by concurrent misses) and keep it as the
    last good one; with `fill_cache`, also store it in Redis for the level's TTL."""
    guard = services.guard
    try:
        summary = await services.summary_flight.get(
            "summary", lambda: guard.call("postgres", lambda: _compute_summary(services))
        )
    except DependencyUnavailable as exc:
        return None, exc
    services.last_good_summary = summary
    if fill_cache:
        ttl = cache_keys.ttl_for(cache_keys.SUMMARY_TTL_S, services.policy.level)
        await best_effort(
            guard, "redis", lambda: services.cache.put(cache_keys.SUMMARY_KEY, summary, ttl)
        )
    return summary, None


# --- order_processing ----------------------------------------------------------------------


class OrderLine(BaseModel):
    sku: str = Field(pattern=SKU_PATTERN)
    quantity: int = Field(ge=1, le=1000)


class OrderRequest(BaseModel):
    customer_ref: str = Field(min_length=1, max_length=64)
    lines: list[OrderLine] = Field(min_length=1, max_length=50)


_PLACE_ORDER = """
WITH new_order AS (
    INSERT INTO orders (customer_ref, total) VALUES ($1, $2) RETURNING id, created_at
),
lines AS (
    SELECT * FROM unnest($3::text[], $4::integer[], $5::numeric[]) AS l(sku, quantity, price)
),
sold AS (
    INSERT INTO sales (sku, sold_at, quantity, unit_price, order_id)
    SELECT lines.sku, o.created_at, lines.quantity, lines.price, o.id FROM lines, new_order AS o
),
moved AS (
    INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
    SELECT lines.sku, o.created_at, -lines.quantity, 'sale', 'order-' || o.id
    FROM lines, new_order AS o
),
taken AS (
    UPDATE inventory AS i SET on_hand = i.on_hand - lines.quantity, updated_at = o.created_at
    FROM lines, new_order AS o WHERE i.sku = lines.sku
)
SELECT id, created_at FROM new_order
"""


async def _place_order(
    connection: asyncpg.Connection, order: OrderRequest
) -> tuple[int, dict[str, Any]]:
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    skus = sorted(wanted)
    # Rows locked in SKU order: two orders over the same SKUs cannot deadlock.
    stock = await connection.fetch(
        """SELECT i.sku, i.on_hand, p.price FROM inventory AS i JOIN products AS p USING (sku)
           WHERE i.sku = ANY($1::text[]) ORDER BY i.sku FOR UPDATE OF i""",
        skus,
    )
    found = {row["sku"]: row for row in stock}
    missing = [sku for sku in skus if sku not in found]
    if missing:
        raise NotFound(f"unknown sku {missing[0]!r}")
    short = [sku for sku in skus if found[sku]["on_hand"] < wanted[sku]]
    if short:
        raise Conflict(f"insufficient stock for {', '.join(short)}")
    quantities = [wanted[sku] for sku in skus]
    prices: list[Decimal] = [found[sku]["price"] for sku in skus]
    total = sum(
        (price * quantity for price, quantity in zip(prices, quantities, strict=True)), Decimal(0)
    )
    # One statement for the four writes: one round trip, however many lines.
    header = await connection.fetchrow(_PLACE_ORDER, order.customer_ref, total, skus, quantities,
                                       prices)  # fmt: skip
    assert header is not None
    order_id, created_at = header["id"], header["created_at"]
    return 201, {
        "order_id": order_id,
        "customer_ref": order.customer_ref,
        "created_at": plain(created_at),
        "total": plain(total),
        "lines": [
            {"sku": sku, "quantity": quantity, "unit_price": plain(price)}
            for sku, quantity, price in zip(skus, quantities, prices, strict=True)
        ],
    }


@router.post("/orders", status_code=201, summary="Place an order (order_processing)")
async def place_order(
    order: OrderRequest,
    services: ServicesDep,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    enter(services.policy, "order_processing")
    fingerprint = request_fingerprint(order.model_dump())

    async def write() -> Any:
        async with services.db.connection() as connection:
            return await run_write(
                connection,
                key_scope("order_processing", caller.key_id),
                idempotency_key,
                fingerprint,
                lambda conn: _place_order(conn, order),
            )

    result = await services.guard.call("postgres", write)
    keys = [cache_keys.inventory_key(line.sku) for line in order.lines]
    await best_effort(services.guard, "redis", lambda: services.cache.invalidate(*keys))
    return write_response(result)


# --- report_export -------------------------------------------------------------------------

_REPORT = """
SELECT s.sku, p.name, p.category, sum(s.quantity)::bigint AS units,
       sum(s.quantity * s.unit_price) AS revenue, count(*) AS sales_lines
FROM sales AS s JOIN products AS p USING (sku)
WHERE s.sold_at >= now() - make_interval(days => $1)
GROUP BY s.sku, p.name, p.category
ORDER BY revenue DESC, s.sku
"""

_CHUNK_BYTES = 64 * 1024


async def _report_csv(db: Database, days: int) -> bytes:
    """The report as CSV with its header line, written by PostgreSQL (`COPY ... CSV HEADER`).

    Decoding thousands of rows into Python values and writing them out again with `csv`
    took the engine over 10 ms of CPU per report; PostgreSQL's CSV is the same bytes (a
    header of the column names; numbers as PostgreSQL prints them, as `str` of asyncpg's
    values does; fields quoted only when they hold a comma, a quote or a line break).
    """
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    async with db.connection() as connection:
        await connection.copy_from_query(_REPORT, days, output=collect, format="csv", header=True)
    return b"".join(chunks)


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _CHUNK_BYTES):
        yield data[start : start + _CHUNK_BYTES]


@router.get(
    "/reports/sales.csv",
    summary="Sales by SKU as CSV, archived to S3 (report_export)",
    response_class=StreamingResponse,
)
async def export_sales_report(
    services: ServicesDep, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> StreamingResponse:
    decision = enter(services.policy, "report_export")
    report = await services.guard.call("postgres", lambda: _report_csv(services.db, days))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="sales-{days}d-{stamp}.csv"'}
    archived = False
    if decision.mode is ServeMode.PRIMARY:
        object_key = f"reports/sales-{days}d-{stamp}-{uuid.uuid4().hex[:8]}.csv"
        archived = await best_effort(
            services.guard, "s3", lambda: services.store.put(object_key, report, "text/csv")
        )
        if archived:
            headers["X-Report-Archive"] = object_key
    if not archived:
        # S3 down: the report still streams, only without its archive copy.
        mark_served(ServedBy.FALLBACK)
        headers["X-Report-Archive"] = "none"
    return StreamingResponse(_chunks(report), media_type="text/csv", headers=headers)


# --- complex_analytics ---------------------------------------------------------------------

_WEEKLY_TRENDS = """
WITH weekly AS (
    SELECT date_trunc('week', s.sold_at) AS week, p.category,
           sum(s.quantity * s.unit_price) AS revenue, sum(s.quantity)::bigint AS units
    FROM sales AS s JOIN products AS p USING (sku)
    WHERE s.sold_at >= date_trunc('week', now()) - make_interval(weeks => $1)
    GROUP BY 1, 2
)
SELECT week::date AS week, category, revenue, units,
       round(revenue / nullif(lag(revenue) OVER w, 0) - 1, 4) AS growth,
       round(avg(revenue) OVER (w ROWS BETWEEN 3 PRECEDING AND CURRENT ROW), 2)
           AS moving_avg_4w
FROM weekly
WINDOW w AS (PARTITION BY category ORDER BY week)
ORDER BY category, week
"""

_TOP_MOVERS = """
WITH recent AS (
    SELECT sku,
           sum(quantity * unit_price) FILTER (WHERE sold_at >= now() - interval '28 days')
               AS last_4w,
           sum(quantity * unit_price) FILTER (WHERE sold_at < now() - interval '28 days')
               AS previous_4w
    FROM sales
    WHERE sold_at >= now() - interval '56 days'
    GROUP BY sku
)
SELECT r.sku, p.name, p.category, coalesce(r.last_4w, 0) AS last_4w,
       coalesce(r.previous_4w, 0) AS previous_4w,
       coalesce(r.last_4w, 0) - coalesce(r.previous_4w, 0) AS change
FROM recent AS r JOIN products AS p USING (sku)
ORDER BY abs(coalesce(r.last_4w, 0) - coalesce(r.previous_4w, 0)) DESC, r.sku
LIMIT 10
"""


@router.get("/analytics/trends", summary="Weekly revenue trends (complex_analytics)")
async def analytics_trends(
    services: ServicesDep, weeks: Annotated[int, Query(ge=2, le=52)] = 12
) -> JSONResponse:
    enter(services.policy, "complex_analytics")

    async def analyse() -> dict[str, Any]:
        async with services.db.connection() as connection:
            trends = await connection.fetch(_WEEKLY_TRENDS, weeks)
            movers = await connection.fetch(_TOP_MOVERS)
        by_category: dict[str, list[dict[str, Any]]] = {}
        for row in trends:
            entry = row_dict(row)
            by_category.setdefault(entry.pop("category"), []).append(entry)
        return {
            "weeks": weeks,
            "categories": by_category,
            "top_movers": [row_dict(row) for row in movers],
            "as_of": now_iso(),
        }

    body = await services.trends_memo.get(
        f"weeks={weeks}", lambda: services.guard.call("postgres", analyse)
    )
    return JSONResponse(body)
