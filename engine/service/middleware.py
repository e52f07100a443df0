"""The outermost request layer: a `RequestTrace` per request, and the headers and metrics
made from it.

Every response leaves with `X-Served-By`, `Server-Timing` (when a dependency was called)
and the security headers. Written as plain ASGI rather than `BaseHTTPMiddleware`, which
would add a task and a memory stream to every request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.security import HSTS_HEADER, SECURITY_HEADERS
from engine.service.trace import RequestTrace, current_trace

RequestObserver = Callable[[str, str, int, str, float], None]


def _route_template(scope: Scope) -> str:
    """The matched route's template (`/api/inventory/{sku}`), never the raw path, so that
    metrics have bounded cardinality."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestTracing:
    def __init__(self, app: ASGIApp, observe: RequestObserver) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = RequestTrace()
        token = current_trace.set(trace)
        started = time.perf_counter()
        status = 500
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-served-by", trace.served_by.header.encode()))
                timing = trace.server_timing()
                if timing:
                    headers.append((b"server-timing", timing.encode()))
                headers.extend(SECURITY_HEADERS)
                if over_tls:
                    headers.append(HSTS_HEADER)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_trace.reset(token)
            self.observe(
                scope["method"],
                _route_template(scope),
                status,
                trace.served_by.header,
                time.perf_counter() - started,
            )
