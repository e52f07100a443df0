"""Simulator speed: simulated requests per wall-clock second, against a bare SimPy queue.

Both run the same arrival process (Poisson at 500 req/s for one simulated hour) in the same
command, one after the other, alternating, and each round's ratio is taken (MEASURING.md,
"Benchmarks"). Rates are given per wall-clock second and per CPU second of the process that
ran them: on a shared 2-core machine the wall-clock ratio also measures the neighbours,
the CPU-time ratio much less so.

- *bare*: a SimPy process per request and one `simpy.Resource` (10 servers, exponential
  service times of 2 ms): the textbook SimPy queue;
- *model*: the whole simulator — the engine's overhead queue, the 16-feature flow table,
  the policy core's breakers, health score, levels and features on every call, four pools
  with per-connection toxicity, and faults (a partial Redis latency toxic, a PostgreSQL
  outage) — recording every request into its arrays.

Peak memory per replication is the peak resident size of a fresh worker process that ran
one replication (`resource.getrusage`), so it counts everything a replication holds; it is
given after simulating and again after computing the replication's metrics, as each worker
of `reslab simulate` does.

    .venv/bin/python benchmarks/bench_sim.py                # one simulated hour
    .venv/bin/python benchmarks/bench_sim.py --duration 300 # a quicker look

Writes benchmarks/results/sim.json and prints a table. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import simpy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.policyfile import load_policy  # noqa: E402
from reports.summary import summarize_replication  # noqa: E402
from scenarios.schema import Scenario  # noqa: E402
from sim.model import simulate_replication  # noqa: E402
from sim.parameters import load_parameters  # noqa: E402

RATE = 500.0
RESULTS = ROOT / "benchmarks" / "results" / "sim.json"


def bench_scenario(duration_s: float) -> Scenario:
    third = duration_s / 3.0
    return Scenario.model_validate(
        {
            "name": "bench-sim",
            "load": {"model": "open", "rate": RATE, "duration": duration_s},
            "faults": [
                {
                    "at": third,
                    "duration": min(600.0, third / 2),
                    "target": "redis",
                    "toxic": "latency",
                    "attributes": {"latency": 20, "jitter": 5},
                    "toxicity": 0.3,
                },
                {
                    "at": 2 * third,
                    "duration": min(60.0, third / 4),
                    "target": "postgres",
                    "toxic": "down",
                },
            ],
            "seed": 1,
        }
    )


def run_bare(duration_s: float, seed: int = 1) -> tuple[int, float, float]:
    """A SimPy process per request and one resource; returns (requests, wall seconds,
    CPU seconds)."""
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=10)
    draw = random.Random(seed)
    finished = 0

    def request(env: simpy.Environment) -> Any:
        nonlocal finished
        with server.request() as slot:
            yield slot
            yield env.timeout(draw.expovariate(500.0))
        finished += 1

    def source(env: simpy.Environment) -> Any:
        while True:
            yield env.timeout(draw.expovariate(RATE))
            if env.now >= duration_s:
                return
            env.process(request(env))

    env.process(source(env))
    started, cpu_started = time.perf_counter(), time.process_time()
    env.run()
    return finished, time.perf_counter() - started, time.process_time() - cpu_started


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _model_in_fresh_process(duration_s: float) -> tuple[int, float, float, int, int, int]:
    """One replication of the whole model (timed), then its metrics as `reslab simulate`
    computes them in each worker (not timed): (requests, wall seconds, CPU seconds, recorder
    bytes, peak RSS after simulating, peak RSS after summarising)."""
    scenario = bench_scenario(duration_s)
    policy = load_policy()
    parameters = load_parameters()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = simulate_replication(scenario, policy, parameters, 0, 1)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    simulated_peak = _peak_rss()
    summarize_replication(
        result.requests.to_pandas(),
        result.states.to_pandas(),
        result.faults.to_pandas(),
        slo_p95_ms=scenario.slo.p95_ms,
        duration_s=duration_s,
    )
    return result.events, wall, cpu, result.recorder_bytes, simulated_peak, _peak_rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="simulated seconds")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each")
    args = parser.parse_args()
    wall_rates: dict[str, list[float]] = {"bare": [], "model": []}
    cpu_rates: dict[str, list[float]] = {"bare": [], "model": []}
    peaks, summary_peaks = [], []
    requests_model = requests_bare = 0
    recorder_bytes = 0
    for round_index in range(args.rounds):
        requests_bare, wall_bare, cpu_bare = run_bare(args.duration, seed=round_index + 1)
        wall_rates["bare"].append(requests_bare / wall_bare)
        cpu_rates["bare"].append(requests_bare / cpu_bare)
        # A fresh process per replication, so its peak resident size is its own.
        with ProcessPoolExecutor(max_workers=1) as pool:
            requests_model, wall_model, cpu_model, recorder_bytes, peak, summary_peak = pool.submit(
                _model_in_fresh_process, args.duration
            ).result()
        wall_rates["model"].append(requests_model / wall_model)
        cpu_rates["model"].append(requests_model / cpu_model)
        peaks.append(peak)
        summary_peaks.append(summary_peak)
        print(
            f"round {round_index + 1}: per wall second bare {wall_rates['bare'][-1]:,.0f}, "
            f"model {wall_rates['model'][-1]:,.0f}; per CPU second bare "
            f"{cpu_rates['bare'][-1]:,.0f}, model {cpu_rates['model'][-1]:,.0f}; "
            f"peak {peak / 2**20:,.0f} MiB ({summary_peak / 2**20:,.0f} MiB with its metrics)",
            flush=True,
        )

    def ratio(rates: dict[str, list[float]]) -> float:
        # Each round's two runs ran close together in time; the median round is the figure.
        return statistics.median(m / b for m, b in zip(rates["model"], rates["bare"], strict=True))

    results = {
        "benchmark": "sim",
        "command": "python benchmarks/bench_sim.py " + " ".join(sys.argv[1:]),
        "simulated_s": args.duration,
        "rate_req_s": RATE,
        "rounds": args.rounds,
        "requests": {"bare": requests_bare, "model": requests_model},
        "req_per_wall_s": wall_rates,
        "req_per_cpu_s": cpu_rates,
        "ratio_model_to_bare_wall": ratio(wall_rates),
        "ratio_model_to_bare_cpu": ratio(cpu_rates),
        "peak_rss_bytes": peaks,
        "peak_rss_with_metrics_bytes": summary_peaks,
        "recorder_bytes": recorder_bytes,
        "targets": {"ratio_at_least": 1.0, "peak_rss_at_most_bytes": 2**30},
        "python": platform.python_version(),
        "simpy": simpy.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(f"{'':30}{'bare SimPy queue':>18}{'whole model':>18}{'ratio':>8}")
    print(f"{'requests simulated':30}{requests_bare:>18,}{requests_model:>18,}")
    for label, rates in (
        ("requests / wall second", wall_rates),
        ("requests / CPU second", cpu_rates),
    ):
        bare, model = statistics.median(rates["bare"]), statistics.median(rates["model"])
        print(f"{label:30}{bare:>18,.0f}{model:>18,.0f}{ratio(rates):>8.2f}")
    print(f"{'peak RSS per replication':30}{'':>18}{max(peaks) / 2**20:>14,.0f} MiB")
    print(f"{'  ... with its metrics':30}{'':>18}{max(summary_peaks) / 2**20:>14,.0f} MiB")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
