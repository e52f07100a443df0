"""The OpenAI-compatible LLM API, through the official `openai` async client.

(The client is built on `httpx2`, so its pool limits and timeouts are `httpx2`'s types.)

The client never retries (`max_retries=0`) and its timeouts are the policy's: the breaker
must see every failure, and a hidden retry would spend the call timeout twice.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai

from engine.policy import Outcome
from engine.service.guard import CallerError


class EmptyCompletion(Exception):
    """The model answered without any content: as useless as no answer."""


def classify_error(exc: BaseException) -> Outcome:
    """A 4xx other than 429 is the request's fault; 429, 5xx, timeouts and resets failed."""
    if isinstance(exc, CallerError):
        return Outcome.IGNORED
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if 400 <= status < 500 and status not in (408, 429):
            return Outcome.IGNORED
    return Outcome.FAILURE


class LanguageModel:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        call_timeout_s: float,
        pool_size: int,
        acquire_timeout_s: float,
    ) -> None:
        self.model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=call_timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=pool_size, max_keepalive_connections=pool_size
                ),
                timeout=httpx2.Timeout(call_timeout_s, pool=acquire_timeout_s),
            ),
        )

    async def complete(self, system: str, user: str, max_tokens: int = 300) -> str:
        response = await self._client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            max_tokens=max_tokens,
            temperature=0.2,
        )
        if not response.choices or not response.choices[0].message.content:
            raise EmptyCompletion("the model returned no content")
        return response.choices[0].message.content

    async def close(self) -> None:
        await self._client.close()


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's answer, if it gave one (models wrap JSON in prose)."""
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        parsed = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
