"""The simulator's flow table against the running engine: with healthy dependencies, the
dependencies each feature's answer names in its `Server-Timing` header are those of one of
the primary branches `sim.flows` gives that feature (one per outcome of its caches and
memo). A mismatch means the model and the engine have drifted apart."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import httpx
import pytest

from engine.policy import DEPENDENCIES, FEATURE_NAMES
from loadtests.requests_mix import DEFAULT_SKUS, RequestFactory, RequestSpec, SeedCatalog
from reports.runfolder import parse_server_timing
from sim.flows import calls_by_dependency, primary_touches
from tests.fixtures_engine import EngineServer, wait_until_optimal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(engine: EngineServer) -> Iterator[httpx.Client]:
    wait_until_optimal(engine)  # primary paths only: no degradation left by earlier tests
    with engine.client() as client:
        yield client


@pytest.fixture(scope="module")
def requests_for(engine: EngineServer, api: httpx.Client) -> RequestFactory:
    """Valid requests for the seeded catalogue, with an invoice of our own uploaded so that
    enhancement has something to enhance."""
    catalog = SeedCatalog(skus=int(engine.env.get("RESLAB_SEED_SKUS", DEFAULT_SKUS)))
    # Idempotency keys unique to this run: an earlier run's answers are never replayed.
    factory = RequestFactory(catalog, random.Random(20), f"flows-{uuid.uuid4().hex[:12]}")
    response = send(api, factory.invoice_upload())
    assert response.status_code == 201, response.text
    factory.invoices.add(int(response.json()["invoice_id"]))
    return factory


def send(api: httpx.Client, spec: RequestSpec) -> httpx.Response:
    return api.request(spec.method, spec.url, content=spec.body, headers=spec.headers(None))


def touched(response: httpx.Response) -> frozenset[str]:
    """The dependencies the engine says it spent time on while answering."""
    spent = parse_server_timing(response.headers.get("Server-Timing"))
    return frozenset(name for name in spent if name in DEPENDENCIES)


def check_primary_branch(feature: str, response: httpx.Response) -> frozenset[str]:
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["X-Served-By"] == "primary"
    engine_touched = touched(response)
    flow_branches = sorted(sorted(branch) for branch in primary_touches(feature))
    assert engine_touched in primary_touches(feature), (
        f"{feature}: the engine called {sorted(engine_touched)}, the flow table's primary "
        f"branches call {flow_branches}"
    )
    assert calls_by_dependency(feature, engine_touched) is not None
    return engine_touched


@pytest.mark.parametrize("feature", FEATURE_NAMES)
def test_primary_path_calls_what_the_flow_table_says(
    api: httpx.Client, requests_for: RequestFactory, feature: str
) -> None:
    spec = requests_for.build(feature)
    check_primary_branch(feature, send(api, spec))
    # Once more: a cache or memo the first read filled now answers (a hit is a branch of
    # its own). A write is built anew: its idempotency key would replay the first answer.
    again = spec if spec.method == "GET" else requests_for.build(feature)
    check_primary_branch(feature, send(api, again))


def test_inventory_read_miss_then_hit(api: httpx.Client, requests_for: RequestFactory) -> None:
    # A stock adjustment drops the SKU's fresh cache entry, so the next read is a miss.
    write = requests_for.inventory_write()
    assert send(api, write).status_code == 201
    sku = write.subject["sku"]
    read = RequestSpec("inventory_read", "GET", f"/api/inventory/{sku}", "/api/inventory/{sku}")
    miss = check_primary_branch("inventory_read", send(api, read))
    hit = check_primary_branch("inventory_read", send(api, read))
    assert miss == {"redis", "postgres"}
    assert hit == {"redis"}
    assert primary_touches("inventory_read") == {miss, hit}


def test_memoised_analytics_call_nothing_the_second_time(
    api: httpx.Client, requests_for: RequestFactory
) -> None:
    spec = requests_for.complex_analytics()
    check_primary_branch("complex_analytics", send(api, spec))
    assert check_primary_branch("complex_analytics", send(api, spec)) == frozenset()
