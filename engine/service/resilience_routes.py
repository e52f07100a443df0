"""health_status and metrics_export, the resilience status and events, and the operator's
flags and forced breaker states (admin key)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from engine.policy import BreakerState
from engine.service.container import Services, ServicesDep
from engine.service.features import enter
from engine.service.metrics import METRICS_CONTENT_TYPE
from engine.service.security import require_admin_key, require_api_key

public = APIRouter(tags=["health"])
resilience = APIRouter(
    prefix="/resilience", dependencies=[Depends(require_api_key)], tags=["resilience"]
)
admin = APIRouter(prefix="/resilience", dependencies=[Depends(require_admin_key)], tags=["admin"])


def _health(services: Services) -> dict[str, Any]:
    policy = services.policy
    return {
        "status": "ok",
        "level": policy.level.name,
        "score": policy.score,
        "policy": services.config.name,
    }


@public.get("/health", summary="Liveness and the current level (health_status)")
async def health(services: ServicesDep) -> JSONResponse:
    enter(services.policy, "health_status")
    return JSONResponse(_health(services))


@public.get("/ready", summary="Readiness: pools open, schema migrated (health_status)")
async def ready(services: ServicesDep) -> JSONResponse:
    enter(services.policy, "health_status")
    body = {**_health(services), "ready": services.ready}
    return JSONResponse(body, status_code=200 if services.ready else 503)


@public.get("/metrics", summary="Prometheus metrics (metrics_export)", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    enter(services.policy, "metrics_export")
    services.metrics.update(services.policy.status())
    return Response(services.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@resilience.get("/status", summary="Breakers, score, level, features, ETA (health_status)")
async def status(services: ServicesDep) -> JSONResponse:
    enter(services.policy, "health_status")
    body = services.policy.status().to_dict()
    body["last_event_seq"] = services.events.last_seq
    return JSONResponse(body)


@resilience.get("/events", summary="The policy's events, in order, after sequence number `since`")
async def events(
    services: ServicesDep,
    since: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> JSONResponse:
    rows = services.events.since(since, limit)
    return JSONResponse({"events": rows, "last_seq": services.events.last_seq})


class FlagRequest(BaseModel):
    # True forces the feature on (an OPEN breaker still wins), False off, null clears.
    forced: bool | None


class BreakerRequest(BaseModel):
    # null returns the breaker to normal operation.
    state: Literal["FORCED_OPEN", "DISABLED", "METRICS_ONLY"] | None


@admin.put("/flags/{feature}", summary="Force a feature on or off, or clear the flag")
async def set_flag(feature: str, request: FlagRequest, services: ServicesDep) -> JSONResponse:
    if feature not in services.config.features:
        raise HTTPException(status_code=404, detail=f"unknown feature {feature!r}")
    services.policy.set_flag(feature, request.forced)
    return JSONResponse(
        {"feature": feature, "forced": request.forced,
         "decision": services.policy.decide(feature).to_dict()}
    )  # fmt: skip


@admin.put("/breakers/{dependency}", summary="Force a breaker's state, or return it to normal")
async def force_breaker(
    dependency: str, request: BreakerRequest, services: ServicesDep
) -> JSONResponse:
    if dependency not in services.config.breakers:
        raise HTTPException(status_code=404, detail=f"unknown dependency {dependency!r}")
    state = BreakerState(request.state) if request.state is not None else None
    services.policy.force_breaker(dependency, state)
    snapshot = services.policy.status().breakers[dependency]
    return JSONResponse({"dependency": dependency, "breaker": snapshot.to_dict()})
