"""Rollback always runs: after a normal end, an exception, SIGINT or SIGTERM in the middle of a
fault, no toxic is left and every proxy is enabled — as Toxiproxy itself reports it. A run
killed with SIGKILL cannot roll back; the next run clears what its lock file lists first.

Signals go to a real scheduled run in a subprocess (``python -m chaos.faults``), against
the staging stack's Toxiproxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.faults import FaultScheduler
from chaos.rollback import (
    ChaosLockHeld,
    RollbackError,
    RollbackGuard,
    RunTerminated,
    SignalsAsExceptions,
    ToxiproxyNotClean,
    chaos_main,
    clear_faults,
    list_faults,
)
from chaos.staging import REPO_ROOT, StagingState
from chaos.toxiproxy import ToxiproxyClient
from scenarios.loader import parse_scenario

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0

# Two faults from t = 0.3 s for 50 s: a run is always "in the middle of a fault" when the
# test signals it.
LONG_FAULTS = """\
name: rollback-test
load: {model: open, rate: 1, duration: 60s}
faults:
  - {at: 0.3s, duration: 50s, target: redis, toxic: latency, attributes: {latency: 200}}
  - {at: 0.3s, duration: 50s, target: s3, toxic: down}
"""

SHORT_FAULTS = """\
name: rollback-test-short
load: {model: open, rate: 1, duration: 5s}
faults:
  - {at: 0.2s, duration: 0.5s, target: redis, toxic: latency, attributes: {latency: 200}}
  - {at: 0.3s, duration: 0.5s, target: s3, toxic: down}
"""


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_clean(client: ToxiproxyClient) -> None:
    """Asked of Toxiproxy itself: no toxic anywhere, every proxy enabled."""
    proxies = client.proxies()
    assert proxies, "the stack's proxies are gone"
    leftovers = {name: p.toxics for name, p in proxies.items() if p.toxics}
    disabled = [name for name, p in proxies.items() if not p.enabled]
    assert leftovers == {} and disabled == []


def both_applied(client: ToxiproxyClient) -> bool:
    proxies = client.proxies()
    return bool(proxies["redis"].toxics) and not proxies["s3"].enabled


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "chaos.lock.json"


class FaultsProcess:
    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the run did not end:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_run(
    engine_stack: StagingState, tmp_path: Path, lock_path: Path
) -> Iterator[Callable[[str], FaultsProcess]]:
    """Starts ``python -m chaos.faults`` on a scenario text against the stack's Toxiproxy."""
    runs: list[FaultsProcess] = []

    def start(scenario_text: str) -> FaultsProcess:
        scenario = tmp_path / f"scenario-{len(runs)}.yaml"
        scenario.write_text(scenario_text)
        log = tmp_path / f"run-{len(runs)}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        argv = [
            sys.executable, "-m", "chaos.faults", str(scenario),
            "--toxiproxy", engine_stack.toxiproxy_url,
            "--lock", str(lock_path),
            "--out", str(tmp_path / f"faults-{len(runs)}.parquet"),
        ]  # fmt: skip
        with log.open("w") as handle:
            process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
            )
        run = FaultsProcess(process, log)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


# --------------------------------------------------------------------------- in a subprocess


def test_a_normal_end_leaves_nothing_behind(
    toxiproxy: ToxiproxyClient, start_run: Callable[[str], FaultsProcess], lock_path: Path
) -> None:
    run = start_run(SHORT_FAULTS)
    assert run.wait() == 0, run.output()
    assert_clean(toxiproxy)
    assert not lock_path.exists()
    assert "applied faults[0] latency on redis" in run.output()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_a_fault_rolls_back(
    signum: signal.Signals,
    engine_stack: StagingState,
    toxiproxy: ToxiproxyClient,
    start_run: Callable[[str], FaultsProcess],
    lock_path: Path,
) -> None:
    run = start_run(LONG_FAULTS)
    wait_until(lambda: both_applied(toxiproxy), "both faults applied")
    # While it runs, the lock is its own: a second run must not start against it.
    with pytest.raises(ChaosLockHeld, match=f"pid {run.process.pid}"):
        RollbackGuard(engine_stack.toxiproxy_url, lock_path=lock_path).__enter__()
    run.process.send_signal(signum)
    assert run.wait() == 128 + signum, run.output()
    assert_clean(toxiproxy)
    assert not lock_path.exists()
    assert "interrupted" in run.output()


def test_after_kill_9_the_next_run_clears_the_leftovers_first(
    engine_stack: StagingState,
    toxiproxy: ToxiproxyClient,
    start_run: Callable[[str], FaultsProcess],
    lock_path: Path,
) -> None:
    run = start_run(LONG_FAULTS)
    wait_until(lambda: both_applied(toxiproxy), "both faults applied")
    run.process.kill()  # SIGKILL: no handler, no finally, no rollback
    run.process.wait(timeout=DEADLINE_S)
    assert both_applied(toxiproxy), "the killed run's faults should still be in place"
    lock = json.loads(lock_path.read_text())
    assert lock["pid"] == run.process.pid
    assert lock["toxiproxy_url"] == engine_stack.toxiproxy_url
    assert {(c["proxy"], c["toxic"]) for c in lock["changes"]} == {
        ("redis", "reslab-0-latency"),
        ("s3", None),
    }

    with RollbackGuard(engine_stack.toxiproxy_url, lock_path=lock_path, label="next") as guard:
        assert guard.leftovers is not None
        assert guard.leftovers.pid == run.process.pid
        assert guard.leftovers.toxics_removed == (("redis", "reslab-0-latency"),)
        assert guard.leftovers.proxies_enabled == ("s3",)
        assert "cleared what a dead chaos run" in guard.leftovers.describe()
        assert_clean(toxiproxy)
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert not lock_path.exists()


# --------------------------------------------------------------------------- in this process


FAULTS = parse_scenario(
    {
        "name": "rollback-in-process",
        "load": {"model": "open", "rate": 1, "duration": "60s"},
        "faults": [
            {"at": 0, "duration": "50s", "target": "postgres", "toxic": "down"},
            {"at": 0, "duration": "50s", "target": "openai", "toxic": "timeout"},
        ],
    }
).faults


def test_an_exception_in_the_middle_of_a_fault_rolls_back(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, lock_path: Path
) -> None:
    url = engine_stack.toxiproxy_url
    with (
        pytest.raises(RuntimeError, match="the load generator crashed"),
        RollbackGuard(url, lock_path=lock_path) as guard,
        ToxiproxyClient(url) as client,
    ):
        # Applied through the ledger only, without a scheduler to undo them: the guard's
        # own rollback must.
        guard.ledger.disable_proxy(client, index=0, proxy="postgres")
        guard.ledger.add_toxic(
            client, index=1, proxy="openai", name="reslab-1-timeout", type="timeout",
            stream="downstream", toxicity=1.0, attributes={"timeout": 0},
        )  # fmt: skip
        assert not toxiproxy.get_proxy("postgres").enabled
        raise RuntimeError("the load generator crashed")
    assert_clean(toxiproxy)
    assert guard.report is not None and guard.report.complete
    assert [c.describe() for c in guard.report.undone] == [
        "toxic reslab-1-timeout on openai",  # newest first
        "proxy postgres disabled",
    ]
    assert not lock_path.exists()


def test_an_exception_with_a_running_schedule_rolls_back(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, lock_path: Path
) -> None:
    url = engine_stack.toxiproxy_url
    with (
        pytest.raises(RuntimeError, match="boom"),
        RollbackGuard(url, lock_path=lock_path) as guard,
        ToxiproxyClient(url) as client,
    ):
        scheduler = FaultScheduler(FAULTS, client, guard.ledger, time.monotonic())
        with scheduler.running():
            wait_until(lambda: not toxiproxy.get_proxy("postgres").enabled, "postgres down")
            raise RuntimeError("boom")
    assert_clean(toxiproxy)
    assert all(r.removed_at is not None for r in scheduler.records())
    assert not lock_path.exists()


def test_a_signal_during_the_rollback_waits_for_it_to_finish() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    signals = SignalsAsExceptions()
    with signals:
        assert signals.installed
        with signals.deferred():
            signal.raise_signal(signal.SIGTERM)  # noted, not raised
        assert signals.pending == signal.SIGTERM
        with pytest.raises(RunTerminated) as raised:
            signal.raise_signal(signal.SIGTERM)
        assert raised.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_toxiproxy_with_faults_nobody_listed_is_refused(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, lock_path: Path
) -> None:
    toxiproxy.add_toxic("redis", "latency", attributes={"latency": 5}, name="someone-elses")
    with pytest.raises(ToxiproxyNotClean, match="someone-elses"):
        RollbackGuard(engine_stack.toxiproxy_url, lock_path=lock_path).__enter__()
    assert not lock_path.exists()
    assert [t.name for t in toxiproxy.toxics("redis")] == ["someone-elses"]  # left alone


def test_list_and_clear_cover_every_fault_not_only_ours(
    engine_stack: StagingState,
    toxiproxy: ToxiproxyClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = engine_stack.toxiproxy_url
    lock = str(tmp_path / "chaos.lock.json")
    toxiproxy.add_toxic("redis", "latency", attributes={"latency": 5}, name="someone-elses")
    toxiproxy.add_toxic("s3", "bandwidth", stream="upstream", attributes={"rate": 10})
    toxiproxy.disable_proxy("postgres")

    listed = {row.proxy: row for row in list_faults(url)}
    assert set(listed) == {"postgres", "redis", "s3", "openai"}
    assert not listed["postgres"].enabled and listed["openai"].faulty is False
    assert [t.name for t in listed["redis"].toxics] == ["someone-elses"]
    assert chaos_main(["list", "--toxiproxy", url, "--lock", lock]) == 1
    assert "DISABLED" in capsys.readouterr().out
    assert chaos_main(["list", "--toxiproxy", url, "--lock", lock, "--json"]) == 1
    assert len(json.loads(capsys.readouterr().out)) == 4

    cleared = clear_faults(url)
    assert set(cleared.toxics_removed) == {
        ("redis", "someone-elses"),
        ("s3", "bandwidth_upstream"),
    }
    assert cleared.proxies_enabled == ("postgres",)
    assert_clean(toxiproxy)
    assert clear_faults(url).nothing

    toxiproxy.disable_proxy("redis")
    staging_file = engine_stack.state_dir / "staging.json"
    assert chaos_main(["clear", "--staging", str(staging_file), "--lock", lock]) == 0
    assert "enabled redis" in capsys.readouterr().out
    assert chaos_main(["list", "--staging", str(staging_file), "--lock", lock]) == 0
    assert_clean(toxiproxy)


def test_chaos_commands_report_an_unreachable_toxiproxy(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # discard: nothing answers there
    lock = str(tmp_path / "chaos.lock.json")
    assert chaos_main(["list", "--toxiproxy", url, "--lock", lock, "--timeout", "1"]) == 3
    assert chaos_main(["clear", "--toxiproxy", url, "--lock", lock, "--timeout", "1"]) == 3


def test_a_rollback_that_cannot_finish_keeps_the_lock_and_fails_as_infrastructure(
    toxiproxy_server: Any, lock_path: Path
) -> None:
    url = toxiproxy_server.url
    with ToxiproxyClient(url) as client:
        client.create_proxy("redis", "127.0.0.1:9")
    with (
        pytest.raises(RollbackError, match="rollback incomplete") as raised,
        RollbackGuard(url, lock_path=lock_path, timeout=1.0) as guard,
        ToxiproxyClient(url) as client,
    ):
        guard.ledger.add_toxic(
            client, index=0, proxy="redis", name="reslab-0-latency", type="latency",
            stream="downstream", toxicity=1.0, attributes={"latency": 10},
        )  # fmt: skip
        toxiproxy_server.stop()  # Toxiproxy is gone before the rollback
    assert raised.value.exit_code == 3
    lock = json.loads(lock_path.read_text())  # kept, for the next run or `chaos clear`
    assert lock["changes"] == [{"index": 0, "proxy": "redis", "toxic": "reslab-0-latency"}]


def test_a_dead_runs_lock_on_a_toxiproxy_that_is_gone_is_reported_and_replaced(
    engine_stack: StagingState, toxiproxy: ToxiproxyClient, lock_path: Path
) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now names no process (or, reused, one with another start time)
    dead_pid = finished.pid
    lock_path.write_text(
        json.dumps(
            {"schema": 1, "pid": dead_pid, "start_ticks": 1, "hostname": "",
             "toxiproxy_url": "http://127.0.0.1:9", "label": "old",
             "changes": [{"index": 0, "proxy": "redis", "toxic": "reslab-0-latency"}]}
        )
    )  # fmt: skip
    with RollbackGuard(engine_stack.toxiproxy_url, lock_path=lock_path, timeout=1.0) as guard:
        assert guard.leftovers is not None and guard.leftovers.unreachable
        assert "does not answer" in guard.leftovers.describe()
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert not lock_path.exists()
