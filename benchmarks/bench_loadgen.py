"""The open-loop load generator against its target: achieved rate, late sends and its own
CPU per request, at 1,000 req/s for 60 s against the engine on this machine.

What is measured (MEASURING.md): the generator is `loadtests.runner.run_load` — Locust,
headless, in subprocesses — sending a seeded Poisson schedule at a constant target rate to a
healthy local staging stack (PostgreSQL, Redis, moto S3, the LLM stub, Toxiproxy and the
engine). From the raw recording (``requests.parquet``) and each Locust process's own account:

- *achieved rate*: requests sent ÷ the load's duration, against the target rate (the issue's
  bar: within 1 %), and against the seeded schedule's own count (a Poisson draw: its count
  differs from rate × duration by about √n);
- *late sends*: sends more than the threshold (5 ms) after their scheduled time, and the
  maximum and p99 of the lateness over every send;
- *generator CPU per request*: user + system CPU time (``getrusage`` of each Locust process,
  from its plan to its stop, so without Locust's start-up) ÷ requests sent;
- for context: the engine's answers (outcomes, latency p50/p95/p99 from the scheduled time,
  computed with numpy from the raw samples) and its CPU, the load average and CPU count.

The mix defaults to a light read mix (``--mix light``: cached inventory reads, health checks,
the dashboard summary), the cheapest the engine serves, so that the engine takes as little of
the two cores as it can; the default retail mix (``--mix default``) costs the engine far
more (analytics and reports take tens of milliseconds of PostgreSQL each). Either way the
engine and the generator compete for the same CPUs: the engine's outcomes and CPU time are
recorded beside the generator's figures, to tell a generator that kept its schedule from an
engine that kept up.

Usage: ``.venv/bin/python benchmarks/bench_loadgen.py [--rate 1000] [--duration 60]
[--workers 0] [--mix light|default] [--staging DIR] [--output PATH]``. Without
``--staging`` it starts a staging stack of its own in a temporary folder (with the engine's
per-key rate limit raised, or most requests would be answered 429) and stops it afterwards.
The figures go to ``benchmarks/results/loadgen.json``.

The machine has two cores, shared by the generator, the engine, its dependencies and any
other work running at the time: read the figures with the load average recorded beside them,
and run it more than once before drawing a conclusion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chaos.staging import StagingStack  # noqa: E402
from loadtests.config import read_staging  # noqa: E402
from loadtests.runner import run_load  # noqa: E402
from reports.runfolder import read_requests  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "loadgen.json"
TARGET_TOLERANCE = 0.01
PROCESS_FIELDS = (
    "role", "sent", "cpu_user_s", "cpu_system_s", "cpu_process_total_s", "max_rss_kb", "late",
    "max_lateness_s",
)  # fmt: skip
MIXES: dict[str, dict[str, float] | None] = {
    "light": {"inventory_read": 70, "health_status": 20, "dashboard_summary": 10},
    "default": None,  # the scenario schema's DEFAULT_MIX
}


def _cpu_ticks(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scenario_text(rate: float, duration: float, mix: dict[str, float] | None, seed: int) -> str:
    lines = [
        "name: bench-loadgen",
        f"load: {{model: open, rate: {rate:g}, duration: {duration:g}s}}",
        f"seed: {seed}",
    ]
    if mix is not None:
        lines.append("mix: " + json.dumps(mix))
    return "\n".join(lines) + "\n"


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0, help="target req/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=0, help="Locust worker processes")
    parser.add_argument("--mix", choices=sorted(MIXES), default="light")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--staging", help="use this running staging stack (folder)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reslab-bench-loadgen-"))
    # PostgreSQL runs as an unprivileged user that must pass through every parent of its
    # state folder: a folder of its own in /tmp, not one inside the private `work`.
    staging_home = Path(tempfile.mkdtemp(prefix="reslab-bench-staging-"))
    stack: StagingStack | None = None
    try:
        if args.staging:
            staging_dir = Path(args.staging)
        else:
            # The engine inherits this environment: lift its per-key rate limit (default
            # 200 req/s), which would otherwise answer most of the load with 429.
            os.environ["RESLAB_RATE_LIMIT_RPS"] = str(max(100_000.0, args.rate * 10))
            os.environ["RESLAB_RATE_LIMIT_BURST"] = str(int(max(100_000.0, args.rate * 10)))
            staging_dir = staging_home
            stack = StagingStack(staging_dir, llm_latency_median_ms=5.0)
            print("starting a staging stack ...", flush=True)
            stack.up(timeout=120.0, engine_timeout=180.0)
        info = read_staging(staging_dir)
        state = json.loads((staging_dir / "staging.json").read_text())
        engine_pid = (state.get("components", {}).get("engine") or {}).get("pid")
        if not info.engine_url or not info.api_key:
            print(f"no engine URL or API key in {staging_dir}", file=sys.stderr)
            return 2

        scenario = work / "bench-loadgen.yaml"
        scenario.write_text(_scenario_text(args.rate, args.duration, MIXES[args.mix], args.seed))
        load_before = os.getloadavg()
        engine_cpu_before = _cpu_ticks(engine_pid) if engine_pid else None
        print(
            f"{args.rate:g} req/s for {args.duration:g} s, {args.workers} workers, "
            f"{args.mix} mix ...",
            flush=True,
        )
        started = time.monotonic()
        result = run_load(
            scenario, info.engine_url, info.api_key, work / "run", workers=args.workers
        )
        wall = time.monotonic() - started
        engine_cpu_after = _cpu_ticks(engine_pid) if engine_pid else None
        load_after = os.getloadavg()

        frame = read_requests(result.run_dir)
        lateness = (frame["start"] - frame["scheduled"]).to_numpy()
        starts = frame["start"].to_numpy()
        in_window = int(np.count_nonzero((starts >= 0) & (starts < args.duration)))
        achieved = result.sent / args.duration
        deviation = achieved / args.rate - 1.0
        statuses = frame["status"].value_counts().to_dict()
        figures: dict[str, Any] = {
            "benchmark": "loadgen",
            "command": "python benchmarks/bench_loadgen.py " + " ".join(sys.argv[1:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "target_rate": args.rate,
            "duration_s": args.duration,
            "workers": args.workers,
            "generators": result.generators,
            "mix": args.mix,
            "seed": args.seed,
            "scheduled": result.scheduled,
            "sent": result.sent,
            "answered": result.answered,
            "unanswered": result.unanswered,
            "achieved_rate": achieved,
            "achieved_vs_target": deviation,
            "within_tolerance": abs(deviation) <= TARGET_TOLERANCE,
            "tolerance": TARGET_TOLERANCE,
            "sent_vs_schedule": result.sent / result.scheduled - 1.0 if result.scheduled else None,
            "rate_of_sends_in_window": in_window / args.duration,
            "late": result.late,
            "late_threshold_s": result.late_threshold_s,
            "late_share": result.late / result.sent if result.sent else 0.0,
            "lateness_ms": {key: value * 1000 for key, value in _percentiles(lateness).items()},
            "max_lateness_ms": result.max_lateness_s * 1000,
            "p99_lateness_ms": result.p99_lateness_s * 1000,
            "generator_cpu_s": result.cpu_s,
            "generator_cpu_per_request_us": result.cpu_per_request_s * 1e6,
            "generator_cpu_share_of_one_core": result.cpu_s / args.duration,
            "processes": [
                {key: entry.get(key) for key in PROCESS_FIELDS} for entry in result.process_stats
            ],
            "engine": {
                "outcomes": dict(result.outcomes),
                "statuses": {str(status): int(count) for status, count in statuses.items()},
                "latency_ms_from_scheduled": _percentiles(frame["latency_ms"].to_numpy()),
                "cpu_s": (
                    engine_cpu_after - engine_cpu_before
                    if engine_cpu_before is not None and engine_cpu_after is not None
                    else None
                ),
            },
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "python": platform.python_version(),
                "locust": metadata.version("locust"),
                "gevent": metadata.version("gevent"),
                "geventhttpclient": metadata.version("geventhttpclient"),
            },
            "wall_s": wall,
            "exit_codes": dict(result.exit_codes),
            "timed_out": result.timed_out,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

        latency = figures["engine"]["latency_ms_from_scheduled"]
        print(
            f"target {args.rate:g} req/s; sent {result.sent} of {result.scheduled} scheduled in "
            f"{args.duration:g} s = {achieved:.1f} req/s ({deviation:+.2%} vs target, "
            f"{'within' if figures['within_tolerance'] else 'OUTSIDE'} ±1 %)\n"
            f"late (> {result.late_threshold_s * 1000:g} ms): {result.late} "
            f"({figures['late_share']:.2%}); lateness p99 {result.p99_lateness_s * 1000:.2f} ms, "
            f"max {result.max_lateness_s * 1000:.1f} ms\n"
            f"generator CPU {result.cpu_s:.1f} s = "
            f"{figures['generator_cpu_per_request_us']:.0f} µs per request "
            f"({figures['generator_cpu_share_of_one_core']:.0%} of a core)\n"
            f"engine: outcomes {dict(result.outcomes)}, latency p50/p95/p99 "
            f"{latency.get('p50', 0):.1f}/{latency.get('p95', 0):.1f}/{latency.get('p99', 0):.1f} "
            f"ms; load average {load_before[0]:.2f} → {load_after[0]:.2f} on {os.cpu_count()} CPUs\n"
            f"figures in {args.output}"
        )
        return 0 if result.ok else 1
    finally:
        if stack is not None:
            stack.down()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging_home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
