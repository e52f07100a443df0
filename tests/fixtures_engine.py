"""Fixtures for the engine's tests: real PostgreSQL, Redis, moto S3 and the LLM stub, each
behind Toxiproxy (the staging stack without its engine), and engines started exactly as
staging starts them: ``python -m engine.service`` with the environment it reads.

One dependency stack serves the whole session (PostgreSQL is seeded once); each engine
is its own process, so a test can start one with another policy or other limits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chaos.staging import REPO_ROOT, StagingStack, StagingState, free_ports
from chaos.toxiproxy import ToxiproxyClient
from tests.fixtures_staging import answers, stop_process_group

ENGINE_START_DEADLINE_S = 120.0  # the first engine seeds the catalogue


@dataclass
class EngineServer:
    url: str
    api_key: str
    admin_key: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client of the API that sends `key` (the API key by default; "" for none)."""
        chosen = self.api_key if key is None else key
        headers = {"X-API-Key": chosen} if chosen else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=15.0)


def _ready(url: str) -> bool:
    return answers(f"{url}/ready")


def launch_engine(
    state: StagingState, log: Path, *, policy: Path | None = None, **env_overrides: str
) -> EngineServer:
    """Start `python -m engine.service` against the stack's proxies and wait until ready."""
    (port,) = free_ports(1)
    engine_env = state.engine_env()
    engine_env["RESLAB_PORT"] = str(port)
    # Tests send far more requests per key than a client would; security tests that
    # exercise the limit start an engine of their own with a small one.
    engine_env["RESLAB_RATE_LIMIT_RPS"] = "100000"
    engine_env["RESLAB_RATE_LIMIT_BURST"] = "100000"
    if policy is not None:
        engine_env["RESLAB_POLICY"] = str(policy)
    engine_env.update(env_overrides)
    env = {**os.environ, **engine_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.service"],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = EngineServer(
        url=url,
        api_key=engine_env["RESLAB_API_KEYS"].split(",")[0],
        admin_key=engine_env["RESLAB_ADMIN_KEY"],
        process=process,
        log=log,
        env=engine_env,
    )
    deadline = time.monotonic() + ENGINE_START_DEADLINE_S
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"the engine did not start:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    return server


def write_fast_policy(path: Path) -> Path:
    """The default policy with short open times, small minimum calls, a 1 s dwell and
    short LLM/S3 timeouts: a fault test sees a whole trip and recovery in seconds."""
    raw = yaml.safe_load((REPO_ROOT / "policies/default.yaml").read_text())
    raw["name"] = "engine-tests-fast"
    changes = {
        "openai": {"open_s": 2, "minimum_calls": 4, "call_timeout_s": 1.0, "window_s": 10},
        "postgres": {"open_s": 2, "minimum_calls": 4},
        "redis": {"open_s": 2, "minimum_calls": 5},
        "s3": {"open_s": 2, "minimum_calls": 4, "call_timeout_s": 1.0, "window_s": 10},
    }
    for dependency, fields in changes.items():
        raw["breakers"][dependency].update(fields)
    raw["levels"]["dwell_s"] = 1
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def engine_stack() -> Iterator[StagingState]:
    """PostgreSQL, Redis, moto S3, the LLM stub and Toxiproxy with one proxy each."""
    # Not pytest's tmp_path: PostgreSQL runs as an unprivileged user that must be able
    # to pass through every parent folder.
    state_dir = Path(tempfile.mkdtemp(prefix="reslab-engine-"))
    stack = StagingStack(state_dir, llm_latency_median_ms=5.0)
    try:
        yield stack.up(engine=False, timeout=90.0)
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def engine_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-logs")


@pytest.fixture(scope="session")
def engine(engine_stack: StagingState, engine_logs: Path) -> Iterator[EngineServer]:
    """An engine with the default policy, shared by the tests that keep it healthy."""
    server = launch_engine(engine_stack, engine_logs / "engine.log")
    yield server
    server.stop()


def wait_until_optimal(server: EngineServer, deadline_s: float = 60.0) -> None:
    """Wait, with a deadline, until the engine is back at OPTIMAL: an earlier test that
    forced a breaker leaves the shared engine degraded for the dwell."""
    limit = time.monotonic() + deadline_s
    with server.client() as api:
        while time.monotonic() < limit:
            if api.get("/health").json().get("level") == "OPTIMAL":
                return
            time.sleep(0.5)
    pytest.fail(f"the engine did not return to OPTIMAL within {deadline_s:g} s")


@pytest.fixture(scope="session")
def fast_policy(engine_logs: Path) -> Path:
    return write_fast_policy(engine_logs / "fast-policy.yaml")


@pytest.fixture
def toxiproxy(engine_stack: StagingState) -> Iterator[ToxiproxyClient]:
    """The stack's Toxiproxy; every proxy is enabled and clean again after the test."""
    client = ToxiproxyClient(engine_stack.toxiproxy_url)
    client.reset()
    try:
        yield client
    finally:
        client.reset()
        client.close()


def postgres_direct_dsn(state: StagingState) -> str:
    """PostgreSQL's own address, not the proxy: a test's check must not be the fault's
    victim."""
    return state.url("postgres")
