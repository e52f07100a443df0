"""The retail API with healthy dependencies: each of the 16 features answers, on its
primary path, with the headers that say how it was served and what it spent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from chaos.staging import AWS_REGION, AWS_TEST_CREDENTIAL, S3_BUCKET, StagingState
from engine.policy import FEATURE_NAMES
from engine.policyfile import load_policy
from tests.fixtures_engine import EngineServer

pytestmark = pytest.mark.integration

INVOICE_TEXT = "ACME Trading invoice 2024-117\nWidget blue x3 at 9.99\nTotal 29.97 USD\n"


@pytest.fixture(scope="module")
def api(engine: EngineServer) -> Iterator[httpx.Client]:
    with engine.client() as client:
        yield client


@pytest.fixture(scope="module")
def invoice_id(api: httpx.Client) -> int:
    response = api.post(
        "/api/invoices",
        params={"supplier_id": 3, "filename": "acme-117.txt"},
        content=INVOICE_TEXT.encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["invoice_id"])


def feature_requests(invoice: int) -> dict[str, tuple[str, str, dict[str, Any], set[str]]]:
    """Feature → (method, URL, request arguments, dependencies its Server-Timing names)."""
    return {
        "inventory_read": ("GET", "/api/inventory/SKU-000042", {}, {"redis"}),
        "dashboard_summary": ("GET", "/api/summary", {}, {"redis"}),
        "health_status": ("GET", "/health", {}, set()),
        "metrics_export": ("GET", "/metrics", {}, set()),
        "order_processing": (
            "POST",
            "/api/orders",
            {"json": {"customer_ref": "api-test", "lines": [{"sku": "SKU-000010", "quantity": 1}]}},
            {"postgres"},
        ),
        "inventory_write": (
            "POST",
            "/api/inventory/SKU-000100/adjustments",
            {"json": {"delta": 5, "reason": "receipt", "note": "api test"}},
            {"postgres"},
        ),
        "product_search": ("GET", "/api/products?q=coffee&limit=5", {}, {"postgres"}),
        "pricing_update": (
            "PUT",
            "/api/pricing/SKU-000200",
            {"json": {"price": 19.99}},
            {"postgres"},
        ),
        "invoice_upload": (
            "POST",
            "/api/invoices?supplier_id=4",
            {"content": INVOICE_TEXT.encode(), "headers": {"Content-Type": "text/plain"}},
            {"postgres", "s3"},
        ),
        "stock_timeline": ("GET", "/api/stock-timeline?sku=SKU-000001&days=30", {}, {"postgres"}),
        "ai_pricing_suggestion": (
            "GET",
            "/api/pricing/SKU-000042/suggestion",
            {},
            {"postgres", "openai"},
        ),
        "report_export": ("GET", "/api/reports/sales.csv?days=7", {}, {"postgres", "s3"}),
        "complex_analytics": ("GET", "/api/analytics/trends?weeks=4", {}, {"postgres"}),
        "ai_recommendations": ("GET", "/api/recommendations?limit=5", {}, {"openai"}),
        "ai_invoice_enhancement": (
            "POST",
            f"/api/invoices/{invoice}/enhance",
            {},
            {"s3", "openai"},
        ),
        "batch_import": (
            "POST",
            "/api/batch/import",
            {
                "content": b"sku,quantity,reference\nSKU-000300,7,PO-1\nSKU-000301,3,PO-1\n",
                "headers": {"Content-Type": "text/csv"},
            },
            {"s3", "postgres"},
        ),
    }


def server_timing(response: httpx.Response) -> dict[str, float]:
    header = response.headers.get("Server-Timing", "")
    timings: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in header.split(","))):
        name, _, duration = entry.partition(";dur=")
        timings[name] = float(duration)
    return timings


def test_the_request_table_covers_all_sixteen_features() -> None:
    assert set(feature_requests(1)) == set(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == 16


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_each_feature_answers_on_its_primary_path(
    api: httpx.Client, invoice_id: int, feature: str
) -> None:
    method, url, arguments, spent_on = feature_requests(invoice_id)[feature]
    response = api.request(method, url, **arguments)
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["X-Served-By"] == "primary"
    assert spent_on <= set(server_timing(response))
    assert all(duration >= 0 for duration in server_timing(response).values())
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_every_policy_route_is_served(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for feature in load_policy().features.values():
        method, path = feature.route.split(" ", 1)
        assert path in paths, feature.name
        assert method.lower() in paths[path], feature.name


def test_inventory_read_fills_the_cache_then_hits_it(api: httpx.Client) -> None:
    sku = "SKU-004321"
    first = api.get(f"/api/inventory/{sku}")
    second = api.get(f"/api/inventory/{sku}")
    assert first.status_code == second.status_code == 200
    assert first.json()["sku"] == sku
    assert {"redis", "postgres"} <= set(server_timing(first)) or set(server_timing(first)) == {
        "redis"
    }  # another test may have cached it already
    assert set(server_timing(second)) == {"redis"}
    assert second.json() == first.json() or second.json()["sku"] == sku


def test_an_unknown_sku_is_404_not_a_fault(api: httpx.Client) -> None:
    response = api.get("/api/inventory/SKU-999999")
    assert response.status_code == 404
    assert response.headers["X-Served-By"] == "primary"


def test_queries_work_on_the_seeded_year(api: httpx.Client) -> None:
    summary = api.get("/api/summary").json()
    assert summary["skus"] >= 10_000
    assert summary["sales_lines_30d"] > 1_000
    trends = api.get("/api/analytics/trends", params={"weeks": 8}).json()
    assert len(trends["categories"]) == 10
    timeline = api.get("/api/stock-timeline", params={"sku": "SKU-000001", "days": 60}).json()
    assert len(timeline["timeline"]) == 60
    assert all(day["on_hand"] >= 0 for day in timeline["timeline"])
    search = api.get("/api/products", params={"q": "Organic Tea"}).json()
    assert search["items"] and all("Organic Tea" in item["name"] for item in search["items"])


def test_the_ai_price_comes_from_the_model(api: httpx.Client) -> None:
    body = api.get("/api/pricing/SKU-000042/suggestion").json()
    assert body["source"] == "ai"
    assert body["unit_cost"] <= body["suggested_price"] <= 5 * body["unit_cost"]


def test_the_report_streams_csv_and_archives_a_copy(
    api: httpx.Client, engine_stack: StagingState
) -> None:
    with api.stream("GET", "/api/reports/sales.csv", params={"days": 30}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        text = b"".join(response.iter_bytes()).decode()
        archive = response.headers["X-Report-Archive"]
    lines = text.splitlines()
    assert lines[0] == "sku,name,category,units,revenue,sales_lines"
    assert len(lines) > 1_000
    s3 = boto3.client(
        "s3",
        endpoint_url=engine_stack.url("s3"),
        region_name=AWS_REGION,
        aws_access_key_id=AWS_TEST_CREDENTIAL,
        aws_secret_access_key=AWS_TEST_CREDENTIAL,
    )
    stored = s3.get_object(Bucket=S3_BUCKET, Key=archive)["Body"].read().decode()
    assert stored == text


def test_an_invoice_is_enhanced_by_the_model(api: httpx.Client, invoice_id: int) -> None:
    body = api.post(f"/api/invoices/{invoice_id}/enhance").json()
    assert body["processed_with_ai"] is True
    assert body["answer"]
    missing = api.post("/api/invoices/987654321/enhance")
    assert missing.status_code == 404


def test_status_and_metrics_describe_the_policy(api: httpx.Client) -> None:
    status = api.get("/resilience/status").json()
    assert set(status["breakers"]) == {"openai", "postgres", "redis", "s3"}
    assert status["level"] == "OPTIMAL"
    assert len(status["features"]) == 16
    metrics = api.get("/metrics").text
    for series in (
        'reslab_circuitbreaker_state{dependency="postgres",state="CLOSED"} 1.0',
        'reslab_circuitbreaker_state{dependency="postgres",state="OPEN"} 0.0',
        "reslab_circuitbreaker_calls_total{",
        "reslab_circuitbreaker_failure_rate{",
        "reslab_circuitbreaker_slow_call_rate{",
        "reslab_health_score 100.0",
        "reslab_degradation_level 0.0",
        'reslab_feature_available{feature="ai_recommendations"} 1.0',
        "reslab_dependency_call_duration_seconds_bucket{",
        'reslab_http_request_duration_seconds_bucket{le="0.005",method="GET",'
        'route="/api/inventory/{sku}",status="200"}',
    ):
        assert series in metrics, series


def test_flags_and_forced_breakers_change_service_and_are_events(engine: EngineServer) -> None:
    with engine.client() as api, engine.admin() as admin:
        since = api.get("/resilience/events").json()["last_seq"]
        try:
            assert (
                admin.put(
                    "/resilience/flags/ai_recommendations", json={"forced": False}
                ).status_code
                == 200
            )
            off = api.get("/api/recommendations")
            assert off.status_code == 200
            assert off.headers["X-Served-By"] == "fallback"
            assert off.json()["source"] == "top_sellers"

            assert api.get("/api/summary").status_code == 200  # a good summary exists
            admin.put("/resilience/flags/dashboard_summary", json={"forced": False})
            summary = api.get("/api/summary")
            assert summary.status_code == 200
            assert summary.headers["X-Served-By"] == "stale"
            assert summary.json()["stale"] is True

            api.get("/api/inventory/SKU-000778")  # now in the cache
            admin.put("/resilience/flags/inventory_read", json={"forced": False})
            direct = api.get("/api/inventory/SKU-000778")
            assert direct.status_code == 200
            assert direct.headers["X-Served-By"] == "fallback"
            assert set(server_timing(direct)) == {"postgres"}  # not the fresh cache entry
            admin.put("/resilience/flags/inventory_read", json={"forced": None})

            forcing = admin.put("/resilience/breakers/redis", json={"state": "FORCED_OPEN"})
            assert forcing.json()["breaker"]["state"] == "FORCED_OPEN"
            read = api.get("/api/inventory/SKU-000777")
            assert read.status_code == 200
            assert read.headers["X-Served-By"] == "fallback"
            assert set(server_timing(read)) == {"postgres"}
            assert api.get("/health").json()["level"] == "DEGRADED"
        finally:
            admin.put("/resilience/flags/ai_recommendations", json={"forced": None})
            admin.put("/resilience/flags/dashboard_summary", json={"forced": None})
            admin.put("/resilience/flags/inventory_read", json={"forced": None})
            admin.put("/resilience/breakers/redis", json={"state": None})
        events = api.get("/resilience/events", params={"since": since}).json()["events"]
    kinds = [event["kind"] for event in events]
    assert "flag_change" in kinds
    assert "breaker_transition" in kinds
    assert "level_change" in kinds
    assert [event["seq"] for event in events] == sorted(event["seq"] for event in events)
    assert all(event["seq"] > since for event in events)
    assert all({"at_monotonic", "at_wall", "at_iso"} <= set(event) for event in events)
    forced = [e for e in events if e["kind"] == "breaker_transition" and e["dependency"] == "redis"]
    assert [e["to_state"] for e in forced] == ["FORCED_OPEN", "CLOSED"]
