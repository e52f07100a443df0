"""Run a scenario's load with Locust, headless, in subprocesses, and collect the recording.

    result = run_load("baseline", "http://127.0.0.1:8000", api_key, run_dir, workers=2)
    result.requests_path, result.sent, result.late, result.max_lateness_s

`run_load` starts ``<venv>/bin/locust -f loadtests/locustfile.py --headless`` — one local
process, or with ``workers=N`` Locust's own master (``--master --expect-workers N``) and N
worker processes (``--worker``) on this machine — waits for them with a deadline, merges the
part files each generating process wrote (`loadtests.recording.merge_parts`) and returns a
`LoadResult`. Locust never runs in the calling process: importing it patches the whole process
with gevent. `start_load` does the same without waiting, for a campaign that applies faults
while the load runs (`LoadProcess.wait_for_start` gives t = 0 on the wall clock; or pass
``t0_epoch`` to fix it in advance).

Safety: the load stops by itself — the shape ends the test after the load and its drain, and
the processes are terminated at a deadline beyond that — and it is sent only to a loopback
address (127.0.0.1, ::1 or localhost); the master listens on 127.0.0.1 only.

Workers on other machines. One generator process sends 1,000 req/s on schedule with about a
third of a core (``benchmarks/bench_loadgen.py``); on a 2-core machine that also runs the
engine, the engine is the limit. For more load, run the master here and workers elsewhere:

1. here: ``RESLAB_SCENARIO=… RESLAB_API_KEY=… RESLAB_RUN_DIR=runs/x locust -f
   loadtests/locustfile.py --headless --host http://<engine> --master --master-bind-host
   0.0.0.0 --expect-workers 4`` (the master's port, 5557 by default, must be reachable from
   the workers);
2. on each worker machine, with this repository and its virtualenv:
   ``locust -f loadtests/locustfile.py --worker --master-host <master's address>``.
   Workers need no scenario or key of their own: the master sends them the plan (scenario,
   t = 0, seed, key, their share of the schedule) as a Locust message;
3. each worker records into ``<run dir>/parts/`` on its own disk: copy those files into the
   master's run folder and run ``python -m loadtests.recording merge <run dir>``.

t = 0 is a wall-clock time shared through the plan, so the machines' clocks must agree
(NTP); a worker whose clock is off shifts its requests by as much. `run_load` itself refuses
non-loopback hosts; the steps above are for a deliberate, supervised test.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from loadtests.config import (
    DEFAULT_REQUEST_TIMEOUT_S,
    DISTRIBUTED_START_LEAD_S,
    LOCAL_START_LEAD_S,
    LoadConfigError,
    read_staging,
)
from loadtests.recording import LOAD_FILE, PARTS_DIR, merge_parts, read_load_json
from loadtests.shapes import shape_for
from scenarios import OpenLoad, ScenarioError, load_scenario, resolve_scenario_path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
LOCUSTFILE = PACKAGE_DIR / "locustfile.py"
LOGS_DIR = "logs"

# The environment variables of `loadtests.config`: a run sets the ones it needs and clears
# the others, so that nothing of the caller's environment changes the run unseen.
LOAD_VARIABLES = (
    "RESLAB_SCENARIO", "RESLAB_API_KEY", "RESLAB_STAGING", "RESLAB_RUN_DIR", "RESLAB_RUNS_ROOT",
    "RESLAB_DURATION", "RESLAB_T0_EPOCH", "RESLAB_START_LEAD", "RESLAB_SEED", "RESLAB_LATE_MS",
    "RESLAB_REQUEST_TIMEOUT",
)  # fmt: skip

# Importing Locust and, with workers, their connecting to the master.
STARTUP_ALLOWANCE_S = 60.0
# After the master has gone, its workers have this long to close their files and exit.
WORKER_EXIT_GRACE_S = 20.0
STOP_GRACE_S = 10.0
_POLL_S = 0.1


class LoadRunError(RuntimeError):
    """The load could not be started; the message says why."""


def _venv_locust() -> str:
    candidate = Path(sys.executable).with_name("locust")
    if candidate.is_file():
        return str(candidate)
    raise LoadRunError(f"no locust next to {sys.executable}; install the project's dependencies")


def check_loopback(host: str) -> str:
    """`host` (a URL) if it names a loopback address; the load goes nowhere else."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadRunError(f"not an http(s) URL: {host!r}")
    name = parts.hostname
    if name != "localhost":
        try:
            loopback = ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadRunError(f"refusing to send load to {name}: only 127.0.0.1, ::1 or localhost")
    return host.rstrip("/")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The outcome of a load run. Counts are over all generating processes.

    - `scheduled`: arrivals that came due (open model) or requests begun (closed model);
    - `sent`: requests sent; `answered` of them are in ``requests.parquet`` (a response, or
      a client-side failure such as a timeout), `unanswered` were still out at the stop;
    - `late`: sends more than `late_threshold_s` after their scheduled time; `max_lateness_s`
      and `p99_lateness_s` over every send (0 in the closed model, which has no schedule);
    - `cpu_s`: CPU time (user + system, `getrusage`) of the Locust processes from the plan
      to the stop — the generator's own cost, without Locust's start-up.
    """

    run_dir: Path
    requests_path: Path
    acked_writes_path: Path
    load_json_path: Path
    scenario: str
    model: str
    workers: int
    generators: int
    duration_s: float
    expected_requests: float | None
    t0_epoch: float | None
    scheduled: int
    sent: int
    answered: int
    unanswered: int
    late: int
    late_threshold_s: float
    max_lateness_s: float
    p99_lateness_s: float
    outcomes: Mapping[str, int]
    acked_writes: int
    cpu_s: float
    exit_codes: Mapping[str, int | None]
    timed_out: bool
    # Stopped before its end: by `LoadProcess.stop` (a campaign's abort) or at the deadline.
    stopped: bool
    process_stats: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """The load ran to its end and every process exited 0."""
        return (
            not self.timed_out
            and not self.stopped
            and all(code == 0 for code in self.exit_codes.values())
        )

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second of load."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def cpu_per_request_s(self) -> float:
        return self.cpu_s / self.sent if self.sent else 0.0


@dataclass
class _Process:
    role: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


class LoadProcess:
    """A load run in progress (`start_load`); `wait` collects it."""

    def __init__(
        self,
        *,
        run_dir: Path,
        processes: list[_Process],
        deadline: float,
        workers: int,
        duration_s: float,
        late_threshold_s: float,
    ) -> None:
        self.run_dir = run_dir
        self._processes = processes
        self.deadline = deadline
        self.workers = workers
        self.duration_s = duration_s
        self.late_threshold_s = late_threshold_s
        self._result: LoadResult | None = None
        self._stopped = False

    @property
    def pids(self) -> dict[str, int]:
        return {process.role: process.popen.pid for process in self._processes}

    def wait_for_start(self, timeout: float = STARTUP_ALLOWANCE_S) -> float:
        """t = 0 of the load as Unix time, once the master has made its plan."""
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            document = read_load_json(self.run_dir)
            if document is not None and "t0_epoch" in document:
                return float(document["t0_epoch"])
            if all(process.popen.poll() is not None for process in self._processes):
                break
            time.sleep(_POLL_S)
        raise LoadRunError(
            f"the load did not start within {timeout:g} s; see {self.run_dir / LOGS_DIR}"
        )

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *_: object) -> None:
        # Leaving early (an exception in the caller) never leaves load running.
        if self._running():
            self.stop()

    def _running(self) -> list[_Process]:
        return [process for process in self._processes if process.popen.poll() is None]

    def stop(self) -> None:
        """Stop the load now: SIGINT first (a headless Locust stops its test on it and its
        part files are closed; Locust's own SIGTERM handler is not installed until a
        headless shape test has ended), then SIGTERM, then SIGKILL, each after a grace
        period."""
        self._stopped = True
        for signum, grace in (
            (signal.SIGINT, STOP_GRACE_S),
            (signal.SIGTERM, STOP_GRACE_S / 2),
            (signal.SIGKILL, STOP_GRACE_S / 2),
        ):
            running = self._running()
            if not running:
                return
            for process in running:
                _signal_group(process.popen, signum)
            limit = time.monotonic() + grace
            while self._running() and time.monotonic() < limit:
                time.sleep(_POLL_S)

    def wait(self) -> LoadResult:
        """Wait until every process has exited (or the deadline: then stop them), merge the
        recording and return the result."""
        if self._result is not None:
            return self._result
        timed_out = False
        leader = self._processes[0]
        leader_gone_at: float | None = None
        while self._running():
            now = time.monotonic()
            if now >= self.deadline:
                timed_out = True
                break
            if leader.popen.poll() is not None:
                leader_gone_at = leader_gone_at or now
                if now - leader_gone_at > WORKER_EXIT_GRACE_S:
                    timed_out = True
                    break
            time.sleep(_POLL_S)
        if timed_out:
            self.stop()
        for process in self._processes:
            process.log.close()
        self._result = self._collect(timed_out)
        return self._result

    def _collect(self, timed_out: bool) -> LoadResult:
        exit_codes = {process.role: process.popen.returncode for process in self._processes}
        if not (self.run_dir / PARTS_DIR).is_dir():
            raise LoadRunError(
                f"the load recorded nothing (exit codes {exit_codes}); see {self.run_dir / LOGS_DIR}"
            )
        merged = merge_parts(self.run_dir, self.late_threshold_s)
        load = read_load_json(self.run_dir) or {}
        target = load.get("target") or {}
        lateness = merged.lateness
        return LoadResult(
            run_dir=self.run_dir,
            requests_path=merged.requests_path,
            acked_writes_path=merged.acked_writes_path,
            load_json_path=self.run_dir / LOAD_FILE,
            scenario=str(load.get("scenario", "")),
            model=str(load.get("model", "")),
            workers=self.workers,
            generators=int(load.get("generators", 0)),
            duration_s=self.duration_s,
            expected_requests=target.get("expected_requests"),
            t0_epoch=load.get("t0_epoch"),
            scheduled=merged.counter("scheduled"),
            sent=max(merged.counter("sent"), lateness.sent),
            answered=merged.rows,
            unanswered=merged.counter("unanswered"),
            late=lateness.late,
            late_threshold_s=lateness.threshold_s,
            max_lateness_s=lateness.max_s,
            p99_lateness_s=lateness.p99_s,
            outcomes=dict(merged.outcomes),
            acked_writes=merged.acked_writes,
            cpu_s=merged.total("cpu_user_s") + merged.total("cpu_system_s"),
            exit_codes=exit_codes,
            timed_out=timed_out,
            stopped=self._stopped,
            process_stats=tuple(merged.process_stats),
        )


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    # Each Locust process leads its own process group (start_new_session): signal only it.
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signum)


def _environment(
    *,
    scenario_path: Path,
    api_key: str,
    run_dir: Path,
    duration_override: float | None,
    t0_epoch: float | None,
    seed: int | None,
    late_threshold_s: float | None,
    request_timeout_s: float | None,
    catalog_skus: int | None,
    start_lead_s: float | None,
) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in LOAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["RESLAB_SCENARIO"] = str(scenario_path)
    env["RESLAB_API_KEY"] = api_key
    env["RESLAB_RUN_DIR"] = str(run_dir)
    optional = {
        "RESLAB_DURATION": duration_override,
        "RESLAB_T0_EPOCH": t0_epoch,
        "RESLAB_SEED": seed,
        "RESLAB_LATE_MS": None if late_threshold_s is None else late_threshold_s * 1000.0,
        "RESLAB_REQUEST_TIMEOUT": request_timeout_s,
        "RESLAB_SEED_SKUS": catalog_skus,
        "RESLAB_START_LEAD": start_lead_s,
    }
    for name, value in optional.items():
        if value is not None:
            env[name] = repr(value) if isinstance(value, float) else str(value)
    return env


def start_load(
    scenario_path: str | Path,
    host: str,
    api_key: str,
    run_dir: str | Path,
    workers: int = 0,
    duration_override: float | None = None,
    *,
    t0_epoch: float | None = None,
    seed: int | None = None,
    late_threshold_s: float | None = None,
    request_timeout_s: float | None = None,
    catalog_skus: int | None = None,
    start_lead_s: float | None = None,
    locust: str | None = None,
) -> LoadProcess:
    """Start the load of a scenario (a path or a catalog name) against `host` and return
    at once; see `run_load` for the arguments."""
    if workers < 0:
        raise LoadRunError(f"workers must be 0 or more (got {workers})")
    try:
        path = resolve_scenario_path(scenario_path).resolve()
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise LoadRunError(str(exc)) from exc
    if duration_override is not None and duration_override <= 0:
        raise LoadRunError(f"duration_override must be longer than 0 (got {duration_override})")
    target = check_loopback(host)
    folder = Path(run_dir).resolve()
    if (folder / LOAD_FILE).exists() or (folder / PARTS_DIR).exists():
        raise LoadRunError(f"{folder} already holds a load run; give each run its own folder")
    logs = folder / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)

    env = _environment(
        scenario_path=path,
        api_key=api_key,
        run_dir=folder,
        duration_override=duration_override,
        t0_epoch=t0_epoch,
        seed=seed,
        late_threshold_s=late_threshold_s,
        request_timeout_s=request_timeout_s,
        catalog_skus=catalog_skus,
        start_lead_s=start_lead_s,
    )
    executable = locust or _venv_locust()
    common = [executable, "-f", str(LOCUSTFILE), "--loglevel", "INFO"]
    leader = [
        *common, "--headless", "--host", target, "--only-summary", "--exit-code-on-error", "0",
    ]  # fmt: skip
    commands: list[tuple[str, list[str]]]
    if workers == 0:
        commands = [("local", leader)]
    else:
        port = _free_port()
        master = [
            *leader, "--master", "--expect-workers", str(workers),
            "--expect-workers-max-wait", str(int(STARTUP_ALLOWANCE_S)),
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        ]  # fmt: skip
        commands = [("master", master)]
        for index in range(workers):
            commands.append(
                (
                    f"worker{index}",
                    [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                )
            )

    lead = start_lead_s
    if lead is None:
        lead = DISTRIBUTED_START_LEAD_S if workers else LOCAL_START_LEAD_S
    duration = duration_override if duration_override is not None else scenario.duration_s
    timeout = request_timeout_s if request_timeout_s is not None else DEFAULT_REQUEST_TIMEOUT_S
    drain = timeout + 1.0 if isinstance(scenario.load, OpenLoad) else 0.0
    shape_for(scenario, duration)  # a shape that cannot be built fails here, not in Locust
    wait_for_t0 = max(0.0, t0_epoch - time.time()) if t0_epoch is not None else lead
    deadline = time.monotonic() + STARTUP_ALLOWANCE_S + wait_for_t0 + duration + drain + 15.0

    processes: list[_Process] = []
    try:
        for role, argv in commands:
            log = (logs / f"locust-{role}.log").open("wb")
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
            processes.append(_Process(role, popen, log))
    except OSError as exc:
        for process in processes:
            _signal_group(process.popen, signal.SIGKILL)
            process.log.close()
        raise LoadRunError(f"cannot start locust: {exc}") from exc
    return LoadProcess(
        run_dir=folder,
        processes=processes,
        deadline=deadline,
        workers=workers,
        duration_s=duration,
        late_threshold_s=late_threshold_s if late_threshold_s is not None else 0.005,
    )


def run_load(
    scenario_path: str | Path,
    host: str,
    api_key: str,
    run_dir: str | Path,
    workers: int = 0,
    duration_override: float | None = None,
    **options: Any,
) -> LoadResult:
    """Run the load of a scenario against `host` with Locust and return what it recorded.

    - `scenario_path`: a scenario file or a catalog name; its load, mix and seed are used
      (its faults are the chaos side's business);
    - `host`: the engine's base URL, a loopback address only;
    - `api_key`: sent as ``X-API-Key``;
    - `run_dir`: the run folder to record into (created if missing; it must not hold an
      earlier load run);
    - `workers`: 0 for one Locust process; N for Locust's master and N worker processes;
    - `duration_override`: the load's length in seconds instead of the scenario's.

    Keyword options (all optional): `t0_epoch` (fix t = 0 in advance, Unix time),
    `seed`, `late_threshold_s`, `request_timeout_s`, `catalog_skus`, `start_lead_s`,
    `locust` (the executable). Blocks until the load is over; never longer than its
    deadline (start-up allowance + lead + duration + drain + 15 s).
    """
    with start_load(
        scenario_path, host, api_key, run_dir, workers, duration_override, **options
    ) as load:
        return load.wait()


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab load", description="Run a scenario's load (no faults) with Locust."
    )
    parser.add_argument("scenario", help="a scenario file or catalog name")
    parser.add_argument("--staging", help="a staging folder or staging.json: host and key")
    parser.add_argument("--host", help="the engine's URL (loopback only)")
    parser.add_argument("--api-key", help="the API key (default: from --staging)")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default: a fresh one)")
    parser.add_argument("--runs-root", type=Path, default=Path("runs"))
    parser.add_argument("--workers", type=int, default=0, help="Locust worker processes")
    parser.add_argument("--duration", type=float, help="seconds, instead of the scenario's")
    parser.add_argument("--seed", type=int)
    return parser


def load_main(argv: Sequence[str] | None = None) -> int:
    """`reslab load …`. Exit codes: 0 done, 2 bad input, 3 the load could not run."""
    from reports.runfolder import new_run_dir

    args = _parser().parse_args(argv)
    try:
        staging = read_staging(args.staging) if args.staging else None
        host = args.host or (staging.engine_url if staging else None)
        api_key = args.api_key or (staging.api_key if staging else None)
        if not host or not api_key:
            print("reslab load: give --host and --api-key, or --staging", file=sys.stderr)
            return 2
        scenario = load_scenario(resolve_scenario_path(args.scenario))
        run_dir = args.run_dir or new_run_dir(args.runs_root, scenario.name)
        result = run_load(
            args.scenario, host, api_key, run_dir, args.workers, args.duration, seed=args.seed
        )
    except (LoadConfigError, ScenarioError) as exc:
        print(f"reslab load: {exc}", file=sys.stderr)
        return 2
    except LoadRunError as exc:
        print(f"reslab load: {exc}", file=sys.stderr)
        return 3
    print(
        f"{result.scenario}: {result.sent} sent in {result.duration_s:g} s "
        f"({result.achieved_rate:.1f} req/s), {result.late} late "
        f"(max {result.max_lateness_s * 1000:.1f} ms), outcomes {dict(result.outcomes)}"
    )
    print(f"recorded into {result.requests_path}")
    return 0 if result.ok else 3


if __name__ == "__main__":
    raise SystemExit(load_main())
