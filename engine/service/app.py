"""`create_app(settings)`: the composition root of the retail API.

Clients are built here (none connects yet); the lifespan then waits for PostgreSQL,
migrates, seeds an empty catalogue, makes sure the bucket exists, applies the flags file
and starts the policy's 1 s tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from engine.policy import PolicyConfig, ResiliencePolicy
from engine.policyfile import load_policy
from engine.service import cache, db, llm, storage
from engine.service.cache import Cache
from engine.service.container import Services
from engine.service.db import Database
from engine.service.event_log import EventLog, log_event
from engine.service.features import FeatureUnavailable, current_feature, unavailable_response
from engine.service.flags_file import apply_flags_file
from engine.service.guard import CallerError, DependencyUnavailable, Guard
from engine.service.llm import LanguageModel
from engine.service.metrics import EngineMetrics
from engine.service.middleware import RequestTracing
from engine.service.resilience_routes import admin, public, resilience
from engine.service.routes_documents import router as documents_router
from engine.service.routes_inventory import router as inventory_router
from engine.service.routes_pricing import router as pricing_router
from engine.service.routes_sales import router as sales_router
from engine.service.security import ApiKeys, BodySizeLimit, RateLimiter
from engine.service.settings import Settings
from engine.service.storage import ObjectStore
from engine.system_clock import SystemClock

log = logging.getLogger("engine.service")

# How long the start waits for PostgreSQL (staging may start it moments before us).
STARTUP_WAIT_S = 60.0


def build_services(settings: Settings, config: PolicyConfig) -> Services:
    policy = ResiliencePolicy(config, SystemClock())
    metrics = EngineMetrics()
    events = EventLog()
    policy.subscribe(events.on_event)
    policy.subscribe(metrics.on_event)
    policy.subscribe(log_event)
    breakers = config.breakers
    guard = Guard(
        policy,
        {name: breaker.call_timeout_s for name, breaker in breakers.items()},
        {
            "postgres": db.classify_error,
            "redis": cache.classify_error,
            "s3": storage.classify_error,
            "openai": llm.classify_error,
        },
        metrics,
        lambda: policy.eta.seconds,
    )
    postgres, redis, s3, openai = (
        breakers["postgres"], breakers["redis"], breakers["s3"], breakers["openai"]
    )  # fmt: skip
    return Services(
        settings=settings,
        config=config,
        policy=policy,
        guard=guard,
        db=Database(
            settings.pg_dsn,
            pool_size=postgres.pool_size,
            acquire_timeout_s=postgres.pool_acquire_timeout_s,
            connect_timeout_s=postgres.call_timeout_s,
        ),
        cache=Cache(
            settings.redis_url,
            pool_size=redis.pool_size,
            acquire_timeout_s=redis.pool_acquire_timeout_s,
            call_timeout_s=redis.call_timeout_s,
        ),
        store=ObjectStore(
            settings.s3_endpoint,
            settings.s3_bucket,
            settings.s3_region,
            settings.aws_access_key_id,
            settings.aws_secret_access_key,
            pool_size=s3.pool_size,
            call_timeout_s=s3.call_timeout_s,
        ),
        llm=LanguageModel(
            settings.llm_base_url,
            settings.llm_api_key,
            settings.llm_model,
            call_timeout_s=openai.call_timeout_s,
            pool_size=openai.pool_size,
            acquire_timeout_s=openai.pool_acquire_timeout_s,
        ),
        metrics=metrics,
        events=events,
    )


async def _tick_forever(services: Services) -> None:
    """The policy's periodic evaluation, on a fixed schedule that does not drift."""
    loop = asyncio.get_running_loop()
    interval = services.config.levels.tick_s
    next_at = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at += interval
        try:
            services.policy.tick()
            services.metrics.update(services.policy.status())
        except Exception:
            log.exception("policy tick failed")


async def _start(services: Services) -> None:
    settings = services.settings
    await services.db.wait_until_ready(STARTUP_WAIT_S)
    applied = await services.db.migrate()
    if applied:
        log.info("applied migrations %s", applied)
    if await services.db.seed_if_empty(settings.seed_skus):
        log.info("seeded %d SKUs", settings.seed_skus)
    try:
        await services.store.ensure_bucket()
    except Exception as exc:
        # S3 is not needed to serve most features: start, and let its breaker judge it.
        log.warning("could not make sure bucket %r exists (%s)", settings.s3_bucket,
                    type(exc).__name__)  # fmt: skip
    if settings.flags_file is not None:
        apply_flags_file(services.policy, settings.flags_file)


async def _stop(services: Services) -> None:
    for close in (services.llm.close, services.cache.close, services.db.close):
        try:
            await close()
        except Exception as exc:
            log.warning("error while closing (%s)", type(exc).__name__)
    services.store.close()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DependencyUnavailable)
    async def dependency_unavailable(request: Request, exc: DependencyUnavailable) -> JSONResponse:
        return unavailable_response(current_feature(), exc.reason, exc.retry_after_s)

    @app.exception_handler(FeatureUnavailable)
    async def feature_unavailable(request: Request, exc: FeatureUnavailable) -> JSONResponse:
        return unavailable_response(exc.feature, exc.reason, exc.retry_after_s)

    @app.exception_handler(CallerError)
    async def caller_error(request: Request, exc: CallerError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(asyncpg.IntegrityConstraintViolationError)
    async def constraint_violated(
        request: Request, exc: asyncpg.IntegrityConstraintViolationError
    ) -> JSONResponse:
        # The constraint's name, not the server's message: that may quote row data.
        name = getattr(exc, "constraint_name", None) or "a constraint"
        return JSONResponse({"detail": f"the change violates {name}"}, status_code=409)

    @app.exception_handler(asyncpg.DataError)
    async def bad_data(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        return JSONResponse({"detail": "a value is out of range or malformed"}, status_code=422)


def create_app(settings: Settings, config: PolicyConfig | None = None) -> FastAPI:
    policy_config = config if config is not None else load_policy(settings.policy_path)
    services = build_services(settings, policy_config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(services)
        # What the start built (modules, routes, pools, clients) lives as long as the
        # process: moved out of the collector's sight, it no longer makes every full
        # collection under load a pause of tens of milliseconds.
        gc.collect()
        gc.freeze()
        ticker = asyncio.create_task(_tick_forever(services), name="policy-tick")
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await _stop(services)

    app = FastAPI(
        title="Retail Resilience Lab — retail dashboard API",
        version="0.1.0",
        lifespan=lifespan,
        # Swagger UI and ReDoc load scripts from a CDN, which the CSP forbids; the schema
        # itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.api_keys = ApiKeys(settings.api_keys, settings.admin_key)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
    for router in (
        public, resilience, admin,
        inventory_router, sales_router, pricing_router, documents_router,
    ):  # fmt: skip
        app.include_router(router)
    _install_error_handlers(app)
    # Added innermost first: RequestTracing wraps everything, so even a 413 or a CORS
    # answer carries the security headers.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT"],
        allow_headers=["X-API-Key", "Content-Type", "Idempotency-Key"],
        expose_headers=["X-Served-By", "Server-Timing", "Retry-After", "Idempotent-Replayed"],
        max_age=600,
    )
    app.add_middleware(RequestTracing, observe=services.metrics.on_request)
    return app
