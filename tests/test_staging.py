"""The local staging stack: real PostgreSQL, Redis, moto S3, the LLM stub and Toxiproxy,
reached through their proxies. The tests share one stack and run in file order: the
last one takes it down."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from pathlib import Path

import asyncpg
import boto3
import pytest
import redis
from openai import OpenAI

from chaos.staging import (
    COMPONENTS,
    DEPENDENCIES,
    ENGINE_ENV_VARS,
    PROXY_UPSTREAMS,
    REPO_ROOT,
    ComponentStatus,
    StagingError,
    StagingStack,
    StagingState,
    staging_main,
)
from chaos.toxiproxy import ToxiproxyClient

pytestmark = pytest.mark.integration

RUNNING = (*DEPENDENCIES, "toxiproxy")


def state_of(stack: StagingStack) -> StagingState:
    state = stack.load_state()
    assert state is not None
    return state


def statuses(stack: StagingStack) -> dict[str, ComponentStatus]:
    return {s.name: s for s in stack.status()}


def pids(stack: StagingStack) -> dict[str, int | None]:
    return {name: s.pid for name, s in statuses(stack).items()}


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def process_group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


def test_status_before_up_reports_everything_stopped(tmp_path: Path) -> None:
    stack = StagingStack(tmp_path / "never-started")
    assert {s.state for s in stack.status()} == {"stopped"}
    assert stack.healthy() is False
    assert staging_main(["--state-dir", str(stack.state_dir), "status"]) == 3
    assert staging_main(["sideways"]) == 2


def test_every_component_is_alive(staging_stack: StagingStack) -> None:
    by_name = statuses(staging_stack)
    assert set(by_name) == set(COMPONENTS)
    for name in RUNNING:
        assert by_name[name].state == "alive", name
        port = by_name[name].port
        assert port is not None and listening(port)
    assert by_name["engine"].state == "stopped"
    assert staging_stack.healthy()


def test_state_file_records_ports_pids_urls_keys_and_logs(staging_stack: StagingStack) -> None:
    path = staging_stack.state_file
    assert path.name == "staging.json"
    # It holds the API keys: readable by its owner only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    for name in RUNNING:
        component = data["components"][name]
        assert component["pid"] > 0
        assert component["port"] > 0
        assert f"127.0.0.1:{component['port']}" in component["url"]
        assert Path(component["log"]).is_file()
    assert set(data["proxies"]) == set(PROXY_UPSTREAMS)
    assert data["keys"]["api_keys"] and data["keys"]["admin_key"]
    assert tuple(data["engine_env"]) == ENGINE_ENV_VARS
    assert data["engine_env"]["RESLAB_POLICY"] == str(REPO_ROOT / "policies/default.yaml")


def test_engine_is_configured_through_the_proxies(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    env = state.engine_env()
    proxy = state.proxy_ports
    assert (
        env["RESLAB_PG_DSN"] == f"postgresql://reslab:reslab@127.0.0.1:{proxy['postgres']}/reslab"
    )
    assert env["RESLAB_REDIS_URL"] == f"redis://127.0.0.1:{proxy['redis']}/0"
    assert env["RESLAB_S3_ENDPOINT"] == f"http://127.0.0.1:{proxy['s3']}"
    assert env["RESLAB_LLM_BASE_URL"] == f"http://127.0.0.1:{proxy['openai']}/v1"
    assert env["RESLAB_API_KEYS"].split(",") == state.api_keys
    direct_ports = {state.components[name].port for name in COMPONENTS}
    assert direct_ports.isdisjoint(proxy.values())


def test_the_proxies_exist(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    with ToxiproxyClient(state.toxiproxy_url) as client:
        proxies = client.proxies()
    assert set(proxies) == set(PROXY_UPSTREAMS)
    for name, target in PROXY_UPSTREAMS.items():
        assert proxies[name].listen == state.proxy_address(name)
        assert proxies[name].upstream == f"127.0.0.1:{state.components[target].port}"
        assert proxies[name].enabled


async def test_postgres_through_its_proxy(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    connection = await asyncpg.connect(state.proxy_url("postgres"), timeout=10)
    try:
        row = await connection.fetchrow("SELECT current_user, inet_server_port()")
        await connection.execute("CREATE TABLE IF NOT EXISTS staging_probe (id int)")
    finally:
        await connection.close()
    assert row is not None
    # The session ran on the real server, reached through the proxy's port.
    assert (row[0], row[1]) == ("reslab", state.components["postgres"].port)


async def test_disabled_postgres_proxy_cuts_the_engine_path(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    with ToxiproxyClient(state.toxiproxy_url) as client:
        client.disable_proxy("postgres")
        try:
            with pytest.raises((OSError, asyncpg.PostgresError)):
                await asyncpg.connect(state.proxy_url("postgres"), timeout=5)
        finally:
            client.enable_proxy("postgres")
    connection = await asyncpg.connect(state.proxy_url("postgres"), timeout=10)
    await connection.close()


def test_redis_through_its_proxy(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    client = redis.Redis.from_url(state.proxy_url("redis"), socket_timeout=5)
    try:
        assert client.ping() is True
        client.set("staging:probe", "1")
        assert client.get("staging:probe") == b"1"
    finally:
        client.close()


def test_s3_through_its_proxy(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    env = state.engine_env()
    s3 = boto3.client(
        "s3",
        endpoint_url=state.proxy_url("s3"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    bucket = env["RESLAB_S3_BUCKET"]
    s3.put_object(Bucket=bucket, Key="probe/hello.txt", Body=b"hello through toxiproxy")
    body = s3.get_object(Bucket=bucket, Key="probe/hello.txt")["Body"].read()
    assert body == b"hello through toxiproxy"


def test_llm_stub_through_its_proxy(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    client = OpenAI(
        base_url=state.proxy_url("openai"), api_key=state.llm_api_key, max_retries=0, timeout=10
    )
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Price SKU-7, cost 4.00"}]
    )
    assert "suggested_price" in (completion.choices[0].message.content or "")


def test_up_twice_reuses_the_live_stack(staging_stack: StagingStack) -> None:
    before = pids(staging_stack)
    ports_before = state_of(staging_stack).proxy_ports
    staging_stack.up(engine=False)
    assert pids(staging_stack) == before
    assert state_of(staging_stack).proxy_ports == ports_before


def test_a_killed_component_is_reported_dead_and_restarted_alone(
    staging_stack: StagingStack,
) -> None:
    before = pids(staging_stack)
    redis_pid = before["redis"]
    assert redis_pid is not None
    os.kill(redis_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while statuses(staging_stack)["redis"].state != "dead":
        assert time.monotonic() < deadline, "redis still reported alive after SIGKILL"
        time.sleep(0.05)
    assert staging_stack.healthy() is False
    assert staging_main(["status", "--state-dir", str(staging_stack.state_dir)]) == 3

    staging_stack.up(engine=False)
    after = pids(staging_stack)
    assert after["redis"] != redis_pid
    assert {k: v for k, v in after.items() if k != "redis"} == {
        k: v for k, v in before.items() if k != "redis"
    }
    client = redis.Redis.from_url(state_of(staging_stack).proxy_url("redis"), socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_engine_that_fails_to_start_is_reported_with_its_log(
    staging_stack: StagingStack, tmp_path: Path
) -> None:
    # A stand-in interpreter that fails the way a broken engine would; the running
    # dependencies are reused, so only the engine is started with it.
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'engine: cannot load policy' >&2\nexit 3\n")
    broken.chmod(0o755)
    before = pids(staging_stack)
    failing = StagingStack(staging_stack.state_dir, python=str(broken))
    with pytest.raises(StagingError, match="cannot load policy"):
        failing.up(engine=True, engine_timeout=10)
    after = statuses(staging_stack)
    assert after["engine"].state == "dead"
    assert {name: after[name].pid for name in RUNNING} == {name: before[name] for name in RUNNING}


@pytest.mark.skipif(
    not (REPO_ROOT / "engine/service/__main__.py").is_file(),
    reason="the engine has no `python -m engine.service` entry point yet",
)
def test_engine_starts_and_answers_health(
    staging_stack: StagingStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    # The engine inherits our environment; a small catalogue keeps its seeding short.
    monkeypatch.setenv("RESLAB_SEED_SKUS", "200")
    state = staging_stack.up(engine=True, engine_timeout=60)
    assert statuses(staging_stack)["engine"].state == "alive"
    assert httpx.get(f"{state.engine_url}/health", timeout=5).status_code == 200


def test_cli_prints_a_table(
    staging_stack: StagingStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = staging_main(["--state-dir", str(staging_stack.state_dir), "status"])
    out = capsys.readouterr().out
    for name in (*RUNNING, *PROXY_UPSTREAMS):
        assert name in out
    # Healthy (0) unless the engine was asked for and failed (an earlier test): 3.
    assert code in (0, 3)


def test_down_leaves_no_process_behind(staging_stack: StagingStack) -> None:
    state = state_of(staging_stack)
    started = {name: s.pid for name, s in statuses(staging_stack).items() if s.state == "alive"}
    assert set(RUNNING) <= set(started)
    ports = [state.components[name].port for name in RUNNING] + list(state.proxy_ports.values())

    report = staging_stack.down()

    assert set(report.proxies_removed) == set(PROXY_UPSTREAMS)
    assert set(report.stopped) == set(started)
    for name, pid in started.items():
        assert pid is not None
        assert not process_group_alive(pid), f"{name} left processes in group {pid}"
    for port in ports:
        assert not listening(port), f"port {port} still accepts connections"
    assert {s.state for s in staging_stack.status()} == {"stopped"}
    # Nothing left to stop the second time.
    assert staging_stack.down().stopped == ()
