"""How a handler asks the policy whether its feature is served, and how it says no.

`enter` tells the request trace which feature is being served (so that a
`DependencyUnavailable` escaping the handler becomes a 503 naming it) and returns the
policy's decision. A feature that is OFF raises `FeatureUnavailable`: 503 with `Retry-After`.
A handler marks its response `fallback` or `stale` where it actually takes such a path, so
that `X-Served-By` says how this response was produced, not what the policy expected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.responses import JSONResponse

from engine.policy import FeatureDecision, ResiliencePolicy, ServeMode
from engine.service.guard import DependencyUnavailable, Guard, retry_after_seconds
from engine.service.trace import ServedBy, current_trace, mark_served

T = TypeVar("T")


class FeatureUnavailable(Exception):
    def __init__(self, feature: str, reason: str, retry_after_s: float) -> None:
        super().__init__(f"{feature}: {reason}")
        self.feature = feature
        self.reason = reason
        self.retry_after_s = retry_after_s


def enter(policy: ResiliencePolicy, feature: str) -> FeatureDecision:
    """The policy's decision for `feature`; raises `FeatureUnavailable` when it is OFF."""
    trace = current_trace.get()
    if trace is not None:
        trace.feature = feature
    decision = policy.decide(feature)
    if decision.mode is ServeMode.OFF:
        raise FeatureUnavailable(feature, decision.reason, decision.retry_after_s)
    return decision


def current_feature() -> str:
    trace = current_trace.get()
    return trace.feature if trace is not None and trace.feature else "unknown"


def unavailable_response(feature: str, reason: str, retry_after_s: float) -> JSONResponse:
    """The 503 of a feature that neither its primary path nor its fallback can serve."""
    seconds = retry_after_seconds(retry_after_s)
    mark_served(ServedBy.FALLBACK)
    return JSONResponse(
        {
            "error": "feature_unavailable",
            "feature": feature,
            "reason": reason,
            "retry_after_s": seconds,
        },
        status_code=503,
        headers={"Retry-After": str(seconds)},
    )


async def best_effort(
    guard: Guard, dependency: str, operation: Callable[[], Awaitable[Any]]
) -> bool:
    """A call whose failure must not fail the request (filling or invalidating a cache)."""
    try:
        await guard.call(dependency, operation)
    except DependencyUnavailable:
        return False
    return True


async def attempt(
    guard: Guard, dependency: str, operation: Callable[[], Awaitable[T]]
) -> tuple[T | None, DependencyUnavailable | None]:
    """A call whose failure sends the handler to its next option rather than out."""
    try:
        return await guard.call(dependency, operation), None
    except DependencyUnavailable as exc:
        return None, exc
