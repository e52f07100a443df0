"""The composition root's product: everything a handler needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from engine.policy import PolicyConfig, ResiliencePolicy
from engine.service.cache import Cache
from engine.service.db import Database
from engine.service.event_log import EventLog
from engine.service.guard import Guard
from engine.service.llm import LanguageModel
from engine.service.memo import SingleFlight
from engine.service.metrics import EngineMetrics
from engine.service.settings import Settings
from engine.service.storage import ObjectStore


@dataclass(slots=True)
class Services:
    settings: Settings
    config: PolicyConfig
    policy: ResiliencePolicy
    guard: Guard
    db: Database
    cache: Cache
    store: ObjectStore
    llm: LanguageModel
    metrics: EngineMetrics
    events: EventLog
    ready: bool = False
    # The last summary computed from PostgreSQL, for when neither PostgreSQL nor the stale
    # copy in Redis can answer.
    last_good_summary: dict[str, Any] | None = field(default=None)
    # One computation at a time of each heavy aggregate, shared by the requests that miss.
    summary_flight: SingleFlight[dict[str, Any]] = field(default_factory=SingleFlight)
    top_sellers_flight: SingleFlight[list[dict[str, Any]]] = field(default_factory=SingleFlight)
    # Weekly trends move slowly: 30 s of memory spares PostgreSQL the API's heaviest query.
    trends_memo: SingleFlight[dict[str, Any]] = field(
        default_factory=lambda: SingleFlight(ttl_s=30.0)
    )


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency on a worker thread.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
