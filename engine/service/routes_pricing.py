"""Pricing and AI features: pricing_update, ai_pricing_suggestion, ai_recommendations."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engine.policy import ServeMode
from engine.service import cache as cache_keys
from engine.service.api_common import Sku, plain, row_dict
from engine.service.container import Services, ServicesDep
from engine.service.features import attempt, best_effort, enter
from engine.service.guard import DependencyUnavailable, NotFound
from engine.service.llm import parse_json_object
from engine.service.security import require_api_key
from engine.service.trace import ServedBy, mark_served

router = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)], tags=["pricing"])

# The rule that prices without the model: cost plus 30 %, rounded half up to the cent.
RULE_MARKUP = Decimal("1.3")
CENT = Decimal("0.01")

# --- pricing_update ------------------------------------------------------------------------


class PriceChange(BaseModel):
    price: Decimal = Field(gt=0, le=1_000_000, max_digits=12, decimal_places=2)


@router.put("/pricing/{sku}", summary="Set the price of one SKU (pricing_update)")
async def update_price(sku: Sku, change: PriceChange, services: ServicesDep) -> JSONResponse:
    enter(services.policy, "pricing_update")

    async def reprice() -> asyncpg.Record:
        async with services.db.connection() as connection, connection.transaction():
            old = await connection.fetchval(
                "SELECT price FROM products WHERE sku = $1 FOR UPDATE", sku
            )
            if old is None:
                raise NotFound(f"unknown sku {sku!r}")
            await connection.execute(
                "UPDATE products SET price = $2, updated_at = now() WHERE sku = $1",
                sku,
                change.price,
            )
            row: asyncpg.Record = await connection.fetchrow(
                """INSERT INTO price_changes (sku, old_price, new_price) VALUES ($1, $2, $3)
                   RETURNING old_price, new_price, changed_at""",
                sku,
                old,
                change.price,
            )
            return row

    row = await services.guard.call("postgres", reprice)
    await best_effort(
        services.guard, "redis", lambda: services.cache.invalidate(cache_keys.inventory_key(sku))
    )
    return JSONResponse({"sku": sku, **row_dict(row)})


# --- ai_pricing_suggestion -----------------------------------------------------------------

_PRICING_FACTS = """
SELECT p.sku, p.name, p.category, p.unit_cost, p.price, i.on_hand, i.reorder_point,
       coalesce((SELECT sum(s.quantity) FROM sales AS s
                 WHERE s.sku = p.sku AND s.sold_at >= now() - interval '30 days'), 0)::bigint
           AS units_30d
FROM products AS p JOIN inventory AS i USING (sku)
WHERE p.sku = $1
"""

_PRICING_SYSTEM = (
    "You are a retail pricing analyst. Answer with one JSON object: "
    '{"suggested_price": number, "confidence": "high"|"medium"|"low", "rationale": text}.'
)


def _pricing_prompt(facts: asyncpg.Record) -> str:
    return (
        f"Suggest a price for {facts['sku']} ({facts['name']}, {facts['category']}). "
        f"cost {facts['unit_cost']}; current price {facts['price']}; "
        f"{facts['units_30d']} units sold in 30 days; {facts['on_hand']} on hand "
        f"(reorder point {facts['reorder_point']})."
    )


def _rule_price(facts: asyncpg.Record) -> dict[str, Any]:
    cost: Decimal = facts["unit_cost"]
    return {
        "suggested_price": plain((cost * RULE_MARKUP).quantize(CENT, ROUND_HALF_UP)),
        "confidence": "low",
        "source": "rule",
        "rationale": "cost x 1.3 (rule-based: the AI suggestion is unavailable)",
    }


def _model_price(answer: str, cost: Decimal) -> dict[str, Any] | None:
    """The model's suggestion, if it gave a usable one: a price between cost and 5 x cost."""
    parsed = parse_json_object(answer)
    if parsed is None:
        return None
    try:
        price = Decimal(str(parsed.get("suggested_price"))).quantize(CENT, ROUND_HALF_UP)
    except ArithmeticError:
        return None
    if not cost <= price <= cost * 5:
        return None
    confidence = parsed.get("confidence")
    return {
        "suggested_price": plain(price),
        "confidence": confidence if confidence in ("high", "medium", "low") else "medium",
        "source": "ai",
        "rationale": str(parsed.get("rationale", ""))[:500],
    }


@router.get(
    "/pricing/{sku}/suggestion", summary="A suggested price for one SKU (ai_pricing_suggestion)"
)
async def suggest_price(sku: Sku, services: ServicesDep) -> JSONResponse:
    decision = enter(services.policy, "ai_pricing_suggestion")
    facts = await services.guard.call("postgres", lambda: services.db.fetchrow(_PRICING_FACTS, sku))
    if facts is None:
        raise NotFound(f"unknown sku {sku!r}")
    suggestion: dict[str, Any] | None = None
    if decision.mode is ServeMode.PRIMARY:
        answer, _ = await attempt(
            services.guard,
            "openai",
            lambda: services.llm.complete(_PRICING_SYSTEM, _pricing_prompt(facts)),
        )
        if answer is not None:
            suggestion = _model_price(answer, facts["unit_cost"])
    if suggestion is None:
        mark_served(ServedBy.FALLBACK)
        suggestion = _rule_price(facts)
    return JSONResponse(
        {
            "sku": sku,
            "current_price": plain(facts["price"]),
            "unit_cost": plain(facts["unit_cost"]),
            **suggestion,
        }
    )


# --- ai_recommendations --------------------------------------------------------------------

_TOP_SELLERS = """
SELECT s.sku, p.name, p.category, sum(s.quantity)::bigint AS units_30d,
       i.on_hand, i.reorder_point
FROM sales AS s JOIN products AS p USING (sku) JOIN inventory AS i USING (sku)
WHERE s.sold_at >= now() - interval '30 days'
GROUP BY s.sku, p.name, p.category, i.on_hand, i.reorder_point
ORDER BY units_30d DESC, s.sku
LIMIT $1
"""

_RECOMMENDATION_SYSTEM = (
    "You are a retail merchandising assistant. Given the best sellers of the last 30 days "
    "with their stock, say in two sentences which to restock or promote first and why."
)


async def _fetch_top_sellers(services: Services, limit: int) -> list[dict[str, Any]]:
    return [row_dict(row) for row in await services.db.fetch(_TOP_SELLERS, limit)]


async def _top_sellers(services: Services, limit: int) -> list[dict[str, Any]]:
    """Top sellers from the cache, else from PostgreSQL (then cached)."""
    guard, cache = services.guard, services.cache
    key = cache_keys.top_sellers_key(limit)
    cached, redis_error = await attempt(guard, "redis", lambda: cache.get(key))
    if cached is not None:
        return list(cached)
    try:
        rows = await services.top_sellers_flight.get(
            key, lambda: guard.call("postgres", lambda: _fetch_top_sellers(services, limit))
        )
    except DependencyUnavailable:
        if redis_error is None:
            stale, _ = await attempt(guard, "redis", lambda: cache.get_stale(key))
            if stale is not None:
                mark_served(ServedBy.STALE)
                return list(stale)
        raise
    if redis_error is None:
        await best_effort(
            guard, "redis", lambda: cache.put(key, rows, cache_keys.TOP_SELLERS_TTL_S)
        )
    return rows


def _recommendation_prompt(sellers: list[dict[str, Any]]) -> str:
    lines = [
        f"- {item['sku']} {item['name']} ({item['category']}): {item['units_30d']} sold, "
        f"{item['on_hand']} on hand, reorder point {item['reorder_point']}"
        for item in sellers
    ]
    return "Best sellers:\n" + "\n".join(lines)


@router.get("/recommendations", summary="What to restock or promote (ai_recommendations)")
async def recommendations(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> JSONResponse:
    decision = enter(services.policy, "ai_recommendations")
    sellers = await _top_sellers(services, limit)
    if decision.mode is ServeMode.PRIMARY:
        advice, _ = await attempt(
            services.guard,
            "openai",
            lambda: services.llm.complete(_RECOMMENDATION_SYSTEM, _recommendation_prompt(sellers)),
        )
        if advice is not None:
            return JSONResponse({"source": "ai", "advice": advice, "items": sellers})
    mark_served(ServedBy.FALLBACK)
    return JSONResponse({"source": "top_sellers", "advice": None, "items": sellers})
