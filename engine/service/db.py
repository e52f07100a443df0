"""PostgreSQL through an asyncpg pool sized by the policy; migrations and seeding at start."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from engine.policy import Outcome
from engine.service.guard import CallerError
from engine.service.migrations import MIGRATIONS
from engine.service.seed import seed_statements

log = logging.getLogger(__name__)

# Any two engines starting together serialise their migrations and seeding on this lock.
_SCHEMA_LOCK = 0x5E5AB


def classify_error(exc: BaseException) -> Outcome:
    """A constraint violation or bad data is the caller's error; anything else failed."""
    if isinstance(exc, CallerError | asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
        return Outcome.IGNORED
    return Outcome.FAILURE


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool.

    asyncpg's default reset sends `RESET ALL; CLOSE ALL; UNLISTEN *; ...` on every release:
    a round trip that keeps the connection out of the pool for as long again as a short
    query. The engine never changes session state (no SET, LISTEN, cursors outside a
    transaction or session-level advisory locks), and asyncpg still rolls back a
    transaction left open before calling this hook.
    """


class Database:
    """The pool, plus the start-up work: wait for the server, migrate, seed if empty."""

    def __init__(
        self,
        dsn: str,
        pool_size: int,
        acquire_timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._acquire_timeout_s = acquire_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            # asyncpg's connect timeout: a new connection through a stalled proxy fails fast.
            timeout=self._connect_timeout_s,
            init=_init_connection,
            reset=_keep_session,
            # Connections that a fault left idle are replaced rather than kept forever.
            max_inactive_connection_lifetime=60.0,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except TimeoutError:
                pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waiting at most the policy's pool-acquire timeout."""
        async with self.pool.acquire(timeout=self._acquire_timeout_s) as connection:
            yield connection

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as connection:
            row: asyncpg.Record | None = await connection.fetchrow(query, *args)
            return row

    # --- start-up --------------------------------------------------------------------------

    async def wait_until_ready(self, deadline_s: float) -> None:
        """Open the pool, retrying while the server is still starting."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + deadline_s
        while True:
            try:
                await self.open()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                if loop.time() >= give_up_at:
                    raise
                log.info("PostgreSQL not ready yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)

    async def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; returns the versions applied now."""
        applied_now: list[int] = []
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await connection.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer     PRIMARY KEY,
                       name       text        NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row["version"]
                for row in await connection.fetch("SELECT version FROM schema_migrations")
            }
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied_now.append(migration.version)
        return applied_now

    async def seed_if_empty(self, skus: int) -> bool:
        """Seed an empty catalogue; returns whether it seeded."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            if await connection.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
                return False
            anchor = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            for statement, args in seed_statements(skus, anchor):
                await connection.execute(statement, *args)
        return True
