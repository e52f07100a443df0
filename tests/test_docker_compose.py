"""docker-compose.toxiproxy.yml has the same topology as the local staging stack: a static
check (no Docker needed) against the environment `StagingStack` gives the engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.staging import ENGINE_ENV_VARS, PROXY_UPSTREAMS, REPO_ROOT, engine_environment

COMPOSE_FILE = REPO_ROOT / "docker-compose.toxiproxy.yml"
TOXIPROXY_CONFIG = REPO_ROOT / "toxiproxy.json"
DOCKERFILE = REPO_ROOT / "Dockerfile"

# Variables the user supplies (secrets); compose must interpolate them, not hard-code them.
SUPPLIED = {"RESLAB_API_KEYS", "RESLAB_ADMIN_KEY", "RESLAB_LLM_API_KEY"}
# Ports the dependencies listen on inside their containers.
CONTAINER_PORTS = {"postgres": 5432, "redis": 6379, "s3": 5000, "llm-stub": 8081}
# Compose service for each staging component behind a proxy.
SERVICE_OF = {"postgres": "postgres", "redis": "redis", "s3": "s3", "llm": "llm-stub"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def proxies() -> dict[str, dict[str, Any]]:
    return {proxy["name"]: proxy for proxy in json.loads(TOXIPROXY_CONFIG.read_text())}


def engine_env_of(services: dict[str, Any]) -> dict[str, str]:
    env = services["engine"]["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_services_are_the_staging_topology(services: dict[str, Any]) -> None:
    assert {"toxiproxy", "postgres", "redis", "s3", "llm-stub", "engine"} <= set(services)
    assert services["toxiproxy"]["image"].startswith("ghcr.io/shopify/toxiproxy:")
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["s3"]["image"].startswith("motoserver/moto")
    assert services["engine"]["build"]["context"] == "."
    assert services["engine"]["command"] == ["python", "-m", "engine.service"]
    assert services["llm-stub"]["command"][:3] == ["python", "-m", "engine.service.llm_stub"]


def test_toxiproxy_config_has_one_proxy_per_dependency(
    services: dict[str, Any], proxies: dict[str, dict[str, Any]]
) -> None:
    assert set(proxies) == set(PROXY_UPSTREAMS)
    for name, component in PROXY_UPSTREAMS.items():
        host, port = proxies[name]["upstream"].rsplit(":", 1)
        service = SERVICE_OF[component]
        assert host == service
        assert int(port) == CONTAINER_PORTS[service]
    volumes = services["toxiproxy"]["volumes"]
    assert any(v.startswith("./toxiproxy.json:") for v in volumes)
    command = services["toxiproxy"]["command"]
    assert command[command.index("-config") + 1] == "/config/toxiproxy.json"


def test_llm_stub_listens_where_the_openai_proxy_points(services: dict[str, Any]) -> None:
    command = services["llm-stub"]["command"]
    assert int(command[command.index("--port") + 1]) == CONTAINER_PORTS["llm-stub"]


def test_engine_environment_matches_the_local_stack(
    services: dict[str, Any], proxies: dict[str, dict[str, Any]]
) -> None:
    env = engine_env_of(services)
    assert set(env) == set(ENGINE_ENV_VARS)

    listen = {name: int(proxy["listen"].rsplit(":", 1)[1]) for name, proxy in proxies.items()}
    expected = engine_environment(
        engine_host="0.0.0.0",
        engine_port=int(env["RESLAB_PORT"]),
        proxies={name: f"toxiproxy:{port}" for name, port in listen.items()},
        api_keys=["supplied"],
        admin_key="supplied",
        llm_api_key="supplied",
        policy_path="/app/policies/default.yaml",
    )
    assert tuple(expected) == ENGINE_ENV_VARS
    for key in set(ENGINE_ENV_VARS) - SUPPLIED:
        assert env[key] == expected[key], key
    for key in SUPPLIED:
        assert re.fullmatch(r"\$\{" + key + r"(:[-?].*)?\}", env[key]), key


def test_engine_reaches_dependencies_only_through_toxiproxy(services: dict[str, Any]) -> None:
    env = engine_env_of(services)
    for key in ("RESLAB_PG_DSN", "RESLAB_REDIS_URL", "RESLAB_S3_ENDPOINT", "RESLAB_LLM_BASE_URL"):
        assert "@toxiproxy:" in env[key] or "//toxiproxy:" in env[key], key


def test_published_ports_bind_localhost_only(services: dict[str, Any]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
            published += 1
    assert published >= 2  # the engine and the Toxiproxy API


def test_dockerfile_ships_the_engine_and_its_policy() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11", text, re.MULTILINE)
    assert "COPY engine/" in text
    assert "COPY policies/" in text
    assert Path(REPO_ROOT / "policies/default.yaml").is_file()
