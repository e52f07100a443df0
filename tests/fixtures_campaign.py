"""A staging stack with the engine on a fast policy, for campaign and nightly tests.

The engine runs with 2 s open times and a 1 s dwell, so that a whole trip and recovery fits
in well under a minute of load.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.staging import StagingStack, StagingState
from chaos.toxiproxy import ToxiproxyClient
from tests.fixtures_engine import write_fast_policy


@pytest.fixture(scope="session")
def campaign_stack() -> Iterator[tuple[StagingState, Path]]:
    # Not pytest's tmp_path: PostgreSQL runs as an unprivileged user who must reach it.
    state_dir = Path(tempfile.mkdtemp(prefix="reslab-campaign-"))
    policy = write_fast_policy(state_dir / "fast-policy.yaml")
    stack = StagingStack(state_dir, policy_path=policy, llm_latency_median_ms=5.0)
    try:
        yield stack.up(timeout=90.0, engine_timeout=120.0), policy
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def assert_toxiproxy_clean(state: StagingState) -> None:
    """Asked of Toxiproxy itself: no toxic on any proxy, every proxy enabled."""
    with ToxiproxyClient(state.toxiproxy_url) as client:
        for name, proxy in client.proxies().items():
            assert proxy.enabled, f"proxy {name} left disabled"
            assert client.toxics(name) == [], f"toxics left on {name}"
