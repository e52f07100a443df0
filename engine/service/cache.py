"""A read-through cache in Redis, with a long-lived stale copy beside every fresh entry.

The fresh entry expires after a TTL that grows as the level worsens (a degraded engine
leans on its cache to spare PostgreSQL); the stale copy lives a day, so that when
PostgreSQL is down an inventory read or the summary can still answer, marked stale.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.policy import Level, Outcome

STALE_TTL_S = 24 * 3600

# Fresh-entry lifetime, as a multiple of the entry's base TTL, at each level.
_TTL_MULTIPLIER: dict[Level, int] = {
    Level.OPTIMAL: 1,
    Level.DEGRADED: 2,
    Level.LIMITED: 4,
    Level.MINIMAL: 8,
    Level.EMERGENCY: 16,
}

INVENTORY_TTL_S = 30
SUMMARY_TTL_S = 10
TOP_SELLERS_TTL_S = 60


def ttl_for(base_s: int, level: Level) -> int:
    return base_s * _TTL_MULTIPLIER[level]


def inventory_key(sku: str) -> str:
    return f"inventory:{sku}"


SUMMARY_KEY = "summary"


def top_sellers_key(limit: int) -> str:
    return f"top-sellers:{limit}"


def _stale_key(key: str) -> str:
    return f"stale:{key}"


def classify_error(exc: BaseException) -> Outcome:
    """Every Redis error is a failure: a cache has no caller errors."""
    return Outcome.FAILURE


class Cache:
    def __init__(
        self, url: str, pool_size: int, acquire_timeout_s: float, call_timeout_s: float
    ) -> None:
        # No retries inside the client: the breaker must see every failure, and a retry
        # would spend the caller's call timeout twice.
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=acquire_timeout_s,
            socket_timeout=call_timeout_s,
            socket_connect_timeout=call_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis(connection_pool=self._pool)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def get(self, key: str) -> Any | None:
        raw = await self._client.get(key)
        return None if raw is None else json.loads(raw)

    async def get_stale(self, key: str) -> Any | None:
        return await self.get(_stale_key(key))

    async def put(self, key: str, value: Any, ttl_s: int) -> None:
        """Store a fresh entry and its stale copy in one round trip."""
        payload = json.dumps(value, separators=(",", ":"))
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(key, payload, ex=ttl_s)
            pipe.set(_stale_key(key), payload, ex=STALE_TTL_S)
            await pipe.execute()

    async def invalidate(self, *keys: str) -> None:
        """Drop fresh entries after a write; the stale copies stay, as a fallback only."""
        if keys:
            await self._client.delete(*keys)

    async def flush(self) -> None:
        await self._client.flushdb()
