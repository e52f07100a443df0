"""The LLM stub speaks the OpenAI chat-completions API: the official client against it."""

from __future__ import annotations

import json
import math
import statistics

import openai
import pytest
from openai import OpenAI

from engine.service.llm_stub import StubConfig, StubDraws, stub_answer
from tests.fixtures_staging import RunningServer, StubFactory

pytestmark = pytest.mark.integration


def client_for(server: RunningServer, api_key: str = "stub") -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=10.0)


def ask(client: OpenAI, prompt: str) -> str:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    content = completion.choices[0].message.content
    assert content is not None
    return content


def test_chat_completion_is_deterministic(llm_stub_server: RunningServer) -> None:
    client = client_for(llm_stub_server)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a retail assistant."},
            {"role": "user", "content": "Which products sell best on weekends?"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0

    again = ask(client, "Which products sell best on weekends?")
    assert again == ask(client, "Which products sell best on weekends?")
    assert again != ask(client, "Which products sell best on Mondays?")


def test_pricing_prompt_gets_a_suggested_price(llm_stub_server: RunningServer) -> None:
    content = ask(client_for(llm_stub_server), "Suggest a price for SKU-1042. Unit cost: $10.00.")
    suggestion = json.loads(content)
    assert suggestion["sku"] == "SKU-1042"
    assert 11.5 <= suggestion["suggested_price"] <= 16.0
    assert suggestion["currency"] == "USD"
    assert suggestion["confidence"] == "high"


def test_models_are_listed(llm_stub_server: RunningServer) -> None:
    models = [model.id for model in client_for(llm_stub_server).models.list()]
    assert models == ["reslab-stub-1"]


def test_streaming_yields_the_same_answer(llm_stub_server: RunningServer) -> None:
    client = client_for(llm_stub_server)
    prompt = "Summarise today's stock levels."
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == ask(client, prompt)


def test_error_rate_answers_server_errors(llm_stub_factory: StubFactory) -> None:
    failing = llm_stub_factory("--latency-median-ms", "0", "--error-rate", "1", "--seed", "3")
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client_for(failing), "hello")
    assert caught.value.status_code == 500


def test_configured_api_key_is_required(
    llm_stub_factory: StubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is read from the environment so that it does not appear in `ps`.
    monkeypatch.setenv("RESLAB_LLM_STUB_API_KEY", "right-key")
    guarded = llm_stub_factory("--latency-median-ms", "0")
    with pytest.raises(openai.AuthenticationError):
        ask(client_for(guarded, api_key="wrong-key"), "hello")
    assert ask(client_for(guarded, api_key="right-key"), "hello") == stub_answer("user: hello")


def test_latency_draws_are_seeded_lognormal() -> None:
    config = StubConfig(latency_median_ms=40.0, latency_sigma=0.3, seed=7)
    first = StubDraws(config).latency_s()
    draws = StubDraws(config)
    samples = [draws.latency_s() for _ in range(4001)]
    assert samples[0] == first
    assert statistics.median(samples) == pytest.approx(0.040, rel=0.05)
    # For a lognormal, sigma is the standard deviation of the log.
    logs = [math.log(s) for s in samples]
    assert statistics.stdev(logs) == pytest.approx(0.3, rel=0.05)


def test_error_draws_do_not_shift_the_latency_sequence() -> None:
    quiet = StubDraws(StubConfig(seed=5))
    noisy = StubDraws(StubConfig(seed=5, error_rate=0.3))
    for _ in range(50):
        noisy.fails()
    assert [quiet.latency_s() for _ in range(20)] == [noisy.latency_s() for _ in range(20)]


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        StubConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        StubConfig(latency_sigma=-1)
