"""Fixtures that start real servers for the staging, Toxiproxy and LLM stub tests:
a Toxiproxy server, the LLM stub, and a whole staging stack without the engine.

Each server runs on a free port on 127.0.0.1, logs to the test's temporary folder, and
is stopped at the end of its fixture. Waiting for a server uses a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chaos.staging import REPO_ROOT, StagingError, StagingStack, find_toxiproxy_server, free_ports

STARTUP_DEADLINE_S = 30.0


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=10.0)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def answers(url: str) -> bool:
    """Whether `url` answers 200 right now."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(
    argv: list[str], *, port: int, log: Path, ready_url: str, url: str
) -> RunningServer:
    """Start a server in its own process group and wait, with a deadline, until
    ``ready_url`` answers 200."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log.open("ab") as handle:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    server = RunningServer(url=url, port=port, process=process, log=log)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while not answers(ready_url):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"{argv[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return server


# --------------------------------------------------------------------------- Toxiproxy


@pytest.fixture(scope="session")
def toxiproxy_binary() -> str:
    try:
        return find_toxiproxy_server()
    except StagingError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def toxiproxy_server(toxiproxy_binary: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh Toxiproxy server; its URL is ``.url``."""
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    server = start_server(
        [toxiproxy_binary, "-host", "127.0.0.1", "-port", str(port)],
        port=port,
        log=tmp_path / "toxiproxy.log",
        ready_url=f"{url}/version",
        url=url,
    )
    yield server
    server.stop()


# --------------------------------------------------------------------------- LLM stub

StubFactory = Callable[..., RunningServer]


@pytest.fixture
def llm_stub_factory(tmp_path: Path) -> Iterator[StubFactory]:
    """Starts LLM stubs with extra CLI flags; ``.url`` is the base URL (without /v1)."""
    servers: list[RunningServer] = []

    def start(*flags: str) -> RunningServer:
        (port,) = free_ports(1)
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "engine.service.llm_stub", "--host", "127.0.0.1"]
        server = start_server(
            [*argv, "--port", str(port), *flags],
            port=port,
            log=tmp_path / f"llm-stub-{port}.log",
            ready_url=f"{url}/health",
            url=url,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def llm_stub_server(llm_stub_factory: StubFactory) -> RunningServer:
    return llm_stub_factory("--latency-median-ms", "5", "--latency-sigma", "0.3", "--seed", "1")


# --------------------------------------------------------------------------- staging


@pytest.fixture(scope="module")
def staging_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private to root, and PostgreSQL runs as an
    # unprivileged user that must pass through them.
    path = Path(tempfile.mkdtemp(prefix="reslab-staging-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def staging_stack(staging_dir: Path) -> Iterator[StagingStack]:
    """A staging stack with every dependency and Toxiproxy, without the engine."""
    stack = StagingStack(staging_dir, llm_latency_median_ms=5.0)
    try:
        stack.up(engine=False, timeout=60.0)
        yield stack
    finally:
        stack.down()
