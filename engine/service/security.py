"""API keys, the per-key rate limit, the request-body limit and the security headers.

Keys are compared with `hmac.compare_digest` against every configured key, without
stopping at the first match, so the time taken says nothing about which key was close.
A key is never logged: the rate limiter and the logs know it only by a short digest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"

# No scripts, frames, forms or embedding: the API serves JSON and CSV only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
)
HSTS_HEADER = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, safe for logs and metrics."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    is_admin: bool


class ApiKeys:
    def __init__(self, api_keys: tuple[str, ...], admin_key: str) -> None:
        self._keys = [(key.encode(), False) for key in api_keys]
        if admin_key:
            self._keys.append((admin_key.encode(), True))

    def authenticate(self, given: str | None) -> Principal | None:
        if not given:
            return None
        candidate = given.encode()
        match: tuple[bytes, bool] | None = None
        for key, is_admin in self._keys:
            # No early exit: every key is compared whatever matched before.
            if hmac.compare_digest(candidate, key):
                match = (key, is_admin)
        if match is None:
            return None
        return Principal(key_id(given), match[1])


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, holding at most `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, bucket: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds until a token is due."""
        at = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(bucket, (self._burst, at))
        tokens = min(self._burst, tokens + (at - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[bucket] = (tokens - 1.0, at)
            return 0.0
        self._buckets[bucket] = (tokens, at)
        return (1.0 - tokens) / self._rate


_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def _authenticate(request: Request, given: str | None) -> Principal:
    keys: ApiKeys = request.app.state.api_keys
    principal = keys.authenticate(given)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    limiter: RateLimiter = request.app.state.rate_limiter
    wait_s = limiter.take(principal.key_id)
    if wait_s > 0:
        raise HTTPException(
            status_code=429,
            detail="rate limit exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
    return principal


async def require_api_key(
    request: Request, given: str | None = Security(_api_key_header)
) -> Principal:
    return _authenticate(request, given)


# The authenticated caller, for handlers that need it: FastAPI runs `require_api_key` once
# per request however many times it is declared (the router's and the handler's).
Caller = Annotated[Principal, Depends(require_api_key)]


async def require_admin_key(
    request: Request, given: str | None = Security(_api_key_header)
) -> Principal:
    principal = _authenticate(request, given)
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="this endpoint needs the admin key")
    return principal


class BodySizeLimit:
    """Refuses request bodies larger than `max_bytes` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException so that FastAPI's body parsing passes it on
    (it turns other errors into a 400) and its handler answers 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")
