"""An OpenAI-compatible LLM stub for staging: ``POST /v1/chat/completions`` and
``GET /v1/models``, answered deterministically.

- The answer is derived from a SHA-256 of the prompt, so the same prompt always gets the
  same text. A prompt about pricing gets a JSON object as its message content::

      {"sku": "SKU-1", "suggested_price": 12.99, "currency": "USD",
       "confidence": "high", "rationale": "..."}

  where the price is the cost found in the prompt ("cost 9.99", "cost: $9.99") times a
  margin between 1.15 and 1.60 chosen by the hash (or a hash-derived price when the
  prompt names no cost).
- Latency is lognormal with the given median and sigma, drawn from a seeded generator,
  so a run's sequence of delays is reproducible.
- An optional error rate answers 500 (or another status) with an OpenAI-style error
  body, drawn from a second seeded generator so that changing it leaves the latency
  sequence alone.

Run it with ``python -m engine.service.llm_stub --host 127.0.0.1 --port 8081``;
every flag also reads an environment variable (``RESLAB_LLM_STUB_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatCompletionRequest",
    "StubConfig",
    "StubDraws",
    "create_app",
    "main",
    "stub_answer",
]

DEFAULT_MODEL = "reslab-stub-1"
_ENV_PREFIX = "RESLAB_LLM_STUB_"


@dataclass(frozen=True, slots=True)
class StubConfig:
    latency_median_ms: float = 40.0
    latency_sigma: float = 0.3
    seed: int = 1
    error_rate: float = 0.0
    error_status: int = 500
    model: str = DEFAULT_MODEL
    # When set, requests must carry "Authorization: Bearer <api_key>" (else 401).
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.latency_median_ms < 0:
            raise ValueError("latency_median_ms must be >= 0")
        if self.latency_sigma < 0:
            raise ValueError("latency_sigma must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must lie in [0, 1]")
        if not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be an HTTP error status")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    # A string, or a list of content parts such as {"type": "text", "text": "..."}.
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


# --------------------------------------------------------------------------- answers


def prompt_text(messages: Sequence[ChatMessage]) -> str:
    parts: list[str] = []
    for message in messages:
        if isinstance(message.content, str):
            parts.append(f"{message.role}: {message.content}")
        elif message.content:
            text = " ".join(
                str(p.get("text", "")) for p in message.content if p.get("type") == "text"
            )
            parts.append(f"{message.role}: {text}")
    return "\n".join(parts)


_PRICING_WORDS = re.compile(r"\b(price|pricing|priced|reprice)\b", re.IGNORECASE)
_COST = re.compile(r"\bcost\b\s*(?:is|of|=|:)?\s*\$?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_SKU = re.compile(r"\bSKU[-_ ]?[A-Za-z0-9][A-Za-z0-9_-]*", re.IGNORECASE)

_WORDS = (
    "demand", "stock", "season", "margin", "trend", "supplier", "basket", "region",
    "promotion", "weekend", "category", "inventory", "forecast", "shelf", "store", "order",
)  # fmt: skip


def _digest(prompt: str) -> bytes:
    return hashlib.sha256(prompt.encode("utf-8")).digest()


def _unit(digest: bytes, offset: int) -> float:
    """A number in [0, 1) read from 4 bytes of the digest."""
    return int.from_bytes(digest[offset : offset + 4], "big") / 2**32


def pricing_answer(prompt: str) -> str:
    digest = _digest(prompt)
    margin = 1.15 + 0.45 * _unit(digest, 0)
    cost_match = _COST.search(prompt)
    if cost_match:
        cost = float(cost_match.group(1))
        price = cost * margin
        rationale = f"cost {cost:.2f} with a {100 * (margin - 1):.0f}% margin for current demand"
    else:
        price = 5.0 + 95.0 * _unit(digest, 4)
        rationale = "no cost given; price from comparable items"
    sku_match = _SKU.search(prompt)
    answer = {
        "sku": sku_match.group(0) if sku_match else None,
        "suggested_price": round(price, 2),
        "currency": "USD",
        "confidence": "high" if cost_match else "medium",
        "rationale": rationale,
    }
    return json.dumps(answer)


def general_answer(prompt: str) -> str:
    digest = _digest(prompt)
    words = [_WORDS[b % len(_WORDS)] for b in digest[:12]]
    return f"Stub answer {digest[:4].hex()}: " + " ".join(words) + "."


def stub_answer(prompt: str) -> str:
    """The deterministic answer to a prompt."""
    if _PRICING_WORDS.search(prompt):
        return pricing_answer(prompt)
    return general_answer(prompt)


def _token_count(text: str) -> int:
    # Roughly four characters a token, as OpenAI's own rule of thumb.
    return max(1, math.ceil(len(text) / 4))


# --------------------------------------------------------------------------- app


class StubDraws:
    """Seeded generators for latency and errors, one stream each."""

    def __init__(self, config: StubConfig) -> None:
        self._config = config
        self._latency = random.Random(config.seed)
        self._errors = random.Random(config.seed + 0x9E3779B9)

    def latency_s(self) -> float:
        if self._config.latency_median_ms <= 0:
            return 0.0
        mu = math.log(self._config.latency_median_ms / 1000.0)
        return self._latency.lognormvariate(mu, self._config.latency_sigma)

    def fails(self) -> bool:
        if self._config.error_rate <= 0:
            return False
        return self._errors.random() < self._config.error_rate


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def create_app(config: StubConfig | None = None) -> FastAPI:
    config = config or StubConfig()
    draws = StubDraws(config)
    app = FastAPI(title="reslab LLM stub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config

    def unauthorized(request: Request) -> JSONResponse | None:
        if config.api_key is None:
            return None
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {config.api_key}".encode()):
            return None
        return _error(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> JSONResponse | dict[str, Any]:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        entry = {"id": config.model, "object": "model", "created": 0, "owned_by": "reslab"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse | dict[str, Any]:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        # Draw both before waiting so that the sequence follows arrival order.
        delay = draws.latency_s()
        failing = draws.fails()
        await asyncio.sleep(delay)
        if failing:
            return _error(
                config.error_status, "The stub was told to fail this request.", "server_error"
            )

        prompt = prompt_text(body.messages)
        content = stub_answer(prompt)
        completion_id = "chatcmpl-" + _digest(prompt).hex()[:24]
        created = int(time.time())
        if body.stream:
            return StreamingResponse(
                _stream_chunks(completion_id, created, body.model, content),
                media_type="text/event-stream",
            )
        prompt_tokens = _token_count(prompt)
        completion_tokens = _token_count(content)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "system_fingerprint": "reslab-stub",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


async def _stream_chunks(
    completion_id: str, created: int, model: str, content: str
) -> AsyncIterator[bytes]:
    def event(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event({"role": "assistant", "content": ""}, None)
    for word in re.findall(r"\S+\s*", content):
        yield event({"content": word}, None)
    yield event({}, "stop")
    yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- CLI


def _env(name: str, default: str) -> str:
    return os.environ.get(_ENV_PREFIX + name, default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engine.service.llm_stub",
        description="OpenAI-compatible LLM stub with deterministic answers.",
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env("PORT", "8081")))
    parser.add_argument(
        "--latency-median-ms", type=float, default=float(_env("LATENCY_MEDIAN_MS", "40"))
    )
    parser.add_argument("--latency-sigma", type=float, default=float(_env("LATENCY_SIGMA", "0.3")))
    parser.add_argument("--seed", type=int, default=int(_env("SEED", "1")))
    parser.add_argument("--error-rate", type=float, default=float(_env("ERROR_RATE", "0")))
    parser.add_argument("--error-status", type=int, default=int(_env("ERROR_STATUS", "500")))
    parser.add_argument("--model", default=_env("MODEL", DEFAULT_MODEL))
    parser.add_argument(
        "--api-key",
        default=os.environ.get(_ENV_PREFIX + "API_KEY") or None,
        help="require this bearer key (default: accept any)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "warning"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    try:
        config = StubConfig(
            latency_median_ms=args.latency_median_ms,
            latency_sigma=args.latency_sigma,
            seed=args.seed,
            error_rate=args.error_rate,
            error_status=args.error_status,
            model=args.model,
            api_key=args.api_key,
        )
    except ValueError as exc:
        print(f"llm_stub: {exc}")
        return 2
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
