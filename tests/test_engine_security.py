"""The engine's security defaults: keys, the rate limit, headers, CORS, body limit, input
validation, the admin key, and no secrets in logs or reprs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chaos.staging import StagingState
from engine.service.app import create_app
from engine.service.security import ApiKeys, RateLimiter
from engine.service.settings import Settings, SettingsError
from tests.fixtures_engine import EngineServer, launch_engine

pytestmark = pytest.mark.integration

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture(scope="module")
def limited_engine(
    engine_stack: StagingState, engine_logs: Path, engine: EngineServer
) -> Iterator[EngineServer]:
    """An engine allowing 3 requests at once, then 1 a second, per key."""
    server = launch_engine(
        engine_stack,
        engine_logs / "limited-engine.log",
        RESLAB_RATE_LIMIT_RPS="1",
        RESLAB_RATE_LIMIT_BURST="3",
        RESLAB_MAX_BODY_BYTES="65536",
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    "path", ["/api/summary", "/api/inventory/SKU-000001", "/resilience/status"]
)
@pytest.mark.parametrize("key", ["", "wrong-key", "x" * 500])
def test_a_missing_or_wrong_key_is_401(engine: EngineServer, path: str, key: str) -> None:
    with engine.client(key) as client:
        response = client.get(path)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid API key"}


def test_health_ready_and_metrics_need_no_key(engine: EngineServer) -> None:
    with engine.client("") as client:
        for path in ("/health", "/ready", "/metrics"):
            assert client.get(path).status_code == 200, path


def test_security_headers_are_on_every_answer_and_hsts_only_over_tls(engine: EngineServer) -> None:
    with engine.client() as client, engine.client("") as anonymous:
        answers = [
            client.get("/api/summary"),
            client.get("/api/inventory/SKU-999998"),
            anonymous.get("/api/summary"),
            client.get("/no/such/route"),
        ]
    assert [answer.status_code for answer in answers] == [200, 404, 401, 404]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in answer.headers
        assert answer.headers["X-Served-By"] in ("primary", "fallback", "stale")


async def test_hsts_is_sent_over_tls() -> None:
    app = create_app(Settings(api_keys=("k",)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://engine.test") as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_cors_allows_only_the_configured_origins() -> None:
    app = create_app(Settings(api_keys=("k",), cors_origins=("https://dash.example",)))
    transport = httpx.ASGITransport(app=app)
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key",
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://engine.test") as client:
        allowed = await client.options(
            "/api/summary", headers={"Origin": "https://dash.example", **preflight}
        )
        refused = await client.options(
            "/api/summary", headers={"Origin": "https://evil.example", **preflight}
        )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_no_origin_is_allowed_by_default(engine: EngineServer) -> None:
    with engine.client() as client:
        response = client.get("/api/summary", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_rate_limit_answers_429_with_retry_after(limited_engine: EngineServer) -> None:
    adjustment = {"delta": 1, "reason": "count"}
    with limited_engine.client() as client:
        # A write declares the caller twice (router and handler): still one token each.
        statuses = [
            client.post("/api/inventory/SKU-000900/adjustments", json=adjustment) for _ in range(3)
        ] + [client.get("/api/products", params={"q": "tea"}) for _ in range(3)]
    codes = [response.status_code for response in statuses]
    assert codes[:3] == [201, 201, 201]
    limited = [response for response in statuses if response.status_code == 429]
    assert limited
    assert all(int(response.headers["Retry-After"]) >= 1 for response in limited)
    # Another key has a bucket of its own.
    with limited_engine.admin() as admin:
        assert admin.get("/resilience/status").status_code == 200


def test_a_body_over_the_limit_is_413(limited_engine: EngineServer) -> None:
    big = b"sku,quantity\n" + b"SKU-000001,1\n" * 10_000
    with limited_engine.admin() as client:
        declared = client.post(
            "/api/batch/import", content=big, headers={"Content-Type": "text/csv"}
        )

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = client.post(
            "/api/batch/import", content=chunks(), headers={"Content-Type": "text/csv"}
        )
        order = b'{"customer_ref":"' + b"x" * 70_000 + b'","lines":[]}'

        def json_chunks() -> Iterator[bytes]:
            for start in range(0, len(order), 8192):
                yield order[start : start + 8192]

        parsed = client.post(
            "/api/orders", content=json_chunks(), headers={"Content-Type": "application/json"}
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert parsed.status_code == 413  # not the 400 of a body FastAPI failed to parse
    assert declared.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/orders", {"customer_ref": "x", "lines": [{"sku": "SKU-000001", "quantity": 0}]},
         "quantity"),
        ("POST", "/api/orders", {"lines": [{"sku": "SKU-000001", "quantity": 1}]}, "customer_ref"),
        ("POST", "/api/inventory/SKU-000001/adjustments", {"delta": 0, "reason": "count"}, "delta"),
        ("POST", "/api/inventory/SKU-000001/adjustments", {"delta": 1, "reason": "theft?"},
         "reason"),
        ("PUT", "/api/pricing/SKU-000001", {"price": -3}, "price"),
        ("GET", "/api/products?q=a", None, "q"),
        ("GET", "/api/stock-timeline?sku=SKU-000001&days=0", None, "days"),
        ("GET", "/api/inventory/bad%20sku!", None, "sku"),
    ],
)  # fmt: skip
def test_invalid_input_is_422_naming_the_field(
    engine: EngineServer, method: str, path: str, body: object, field: str
) -> None:
    with engine.client() as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_admin_endpoints_need_the_admin_key(engine: EngineServer) -> None:
    body = {"forced": None}
    with engine.client("") as anonymous, engine.client() as user, engine.admin() as admin:
        assert anonymous.put("/resilience/flags/ai_recommendations", json=body).status_code == 401
        assert user.put("/resilience/flags/ai_recommendations", json=body).status_code == 403
        assert user.put("/resilience/breakers/redis", json={"state": None}).status_code == 403
        assert admin.put("/resilience/flags/ai_recommendations", json=body).status_code == 200
        assert admin.put("/resilience/flags/no_such_feature", json=body).status_code == 404
        assert (
            admin.put("/resilience/breakers/redis", json={"state": "HALF_OPEN"}).status_code == 422
        )
        assert admin.put("/resilience/breakers/redis", json={"state": None}).status_code == 200


def test_no_secret_reaches_the_logs(engine: EngineServer, limited_engine: EngineServer) -> None:
    with engine.client("not-the-key") as client:
        client.get("/api/summary")
    for server in (engine, limited_engine):
        log = server.log_text()
        for secret in (server.api_key, server.admin_key, server.env["RESLAB_LLM_API_KEY"]):
            assert secret not in log


def test_settings_keep_secrets_out_of_their_repr() -> None:
    settings = Settings.from_env(
        {
            "RESLAB_API_KEYS": "key-one, key-two",
            "RESLAB_ADMIN_KEY": "admin-secret",
            "RESLAB_PG_DSN": "postgresql://u:pg-secret@db/x",
            "RESLAB_LLM_API_KEY": "llm-secret",
            "RESLAB_CORS_ORIGINS": "https://a.example,https://b.example",
        }
    )
    assert settings.api_keys == ("key-one", "key-two")
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    text = repr(settings)
    for secret in ("key-one", "admin-secret", "pg-secret", "llm-secret"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "RESLAB_API_KEYS"),
        ({"RESLAB_API_KEYS": "k", "RESLAB_PORT": "eighty"}, "RESLAB_PORT"),
        ({"RESLAB_API_KEYS": "k", "RESLAB_RATE_LIMIT_RPS": "0"}, "RESLAB_RATE_LIMIT_RPS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        Settings.from_env(env)


def test_keys_are_matched_exactly() -> None:
    keys = ApiKeys(("alpha", "beta"), "admin")
    user = keys.authenticate("alpha")
    assert user is not None and not user.is_admin
    admin = keys.authenticate("admin")
    assert admin is not None and admin.is_admin
    assert keys.authenticate("alpha ") is None
    assert keys.authenticate("alph") is None
    assert keys.authenticate("") is None
    assert keys.authenticate(None) is None


def test_the_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.take("k", now=0.0) == 0.0
    assert limiter.take("k", now=0.0) == 0.0
    assert limiter.take("k", now=0.0) == pytest.approx(0.5)
    assert limiter.take("k", now=0.5) == 0.0
    assert limiter.take("other", now=0.5) == 0.0
