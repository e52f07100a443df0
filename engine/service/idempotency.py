"""Writes that are safe to retry: the first answer to an `Idempotency-Key` is stored in the
write's own transaction and returned to every retry.

The key row is inserted first with `ON CONFLICT DO NOTHING`: a concurrent request with the
same key waits on the unique index until the first one commits (and then finds its answer)
or rolls back (and then does the work itself). Nothing is stored for a write that did not
commit, so an answer that was never acknowledged cannot be replayed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.service.guard import Conflict

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class WriteResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def request_fingerprint(*parts: Any) -> str:
    """A digest of what the request asked for, to refuse a key reused for another request."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_scope(feature: str, caller_key_id: str) -> str:
    """Keys are the caller's own: two clients choosing the same key do not collide."""
    return f"{feature}:{caller_key_id}"


async def run_write(
    connection: asyncpg.Connection,
    scope: str,
    key: str | None,
    fingerprint: str,
    work: Work,
) -> WriteResult:
    """Run `work` in a transaction, or return the stored answer of an earlier `key` in the
    same `scope` (see `key_scope`)."""
    async with connection.transaction():
        if key is not None:
            claimed = await connection.fetchval(
                """INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING RETURNING true""",
                scope,
                key,
                fingerprint,
            )
            if not claimed:
                row = await connection.fetchrow(
                    """SELECT request_hash, status_code, response FROM idempotency_keys
                       WHERE scope = $1 AND key = $2""",
                    scope,
                    key,
                )
                if row is None or row["status_code"] is None:
                    raise Conflict("a request with this Idempotency-Key is still in progress")
                if row["request_hash"] != fingerprint:
                    raise Conflict("this Idempotency-Key was used for a different request")
                return WriteResult(row["status_code"], row["response"], replayed=True)
        status_code, body = await work(connection)
        if key is not None:
            await connection.execute(
                """UPDATE idempotency_keys SET status_code = $3, response = $4
                   WHERE scope = $1 AND key = $2""",
                scope,
                key,
                status_code,
                body,
            )
    # Only here, after the commit, may the caller acknowledge the write.
    return WriteResult(status_code, body, replayed=False)
