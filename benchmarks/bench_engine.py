"""Throughput and latency of the engine with healthy dependencies, under open-loop load.

Two runs, each at a target arrival rate from a load generator in a separate process:

- ``cached_inventory_read``: ``GET /api/inventory/{sku}`` over SKUs whose entries are in
  Redis (warmed first): the engine's fastest real path (one Redis round trip).
- ``default_mix``: the scenarios' default retail mix (``scenarios.schema.DEFAULT_MIX``) over
  all 16 features, writes included.

The generator is open-loop: arrivals are scheduled in advance (Poisson, seeded), each
request is sent at its scheduled time on an idle keep-alive connection (a new one is opened
when none is idle), and latency is measured from the *scheduled* time to the last byte of
the answer, so a stalled engine is not under-sampled (coordinated omission). Requests sent
later than scheduled are counted with their lateness. HTTP/1.1 is spoken over raw asyncio
streams: an HTTP client library would cost more CPU than the engine on a 2-core machine.
Percentiles are computed with numpy from the raw samples.

By default the benchmark starts its own staging stack without Docker (PostgreSQL, Redis,
moto S3, the LLM stub, Toxiproxy; see ``chaos/staging.py``) and an engine reaching every
dependency through Toxiproxy, exactly as staging runs it. ``--url``/``--api-key`` measure
an engine that is already running instead.

Usage::

    .venv/bin/python benchmarks/bench_engine.py                      # 500 req/s, 30 s each
    .venv/bin/python benchmarks/bench_engine.py --rate 300 --duration 20 --llm-latency-ms 40

Figures go to ``benchmarks/results/engine.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks/results/engine.json"
SKUS = 10_000
HOT_SKUS = 2_000
SEARCH_WORDS = ("coffee", "tea", "lamp", "soap", "organic", "eco", "juice", "blocks", "socks")
SERVED_BY = {"primary": 0, "fallback": 1, "stale": 2}

# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    content_type: str = ""


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _sku(draw: random.Random, population: int = SKUS) -> str:
    return f"SKU-{1 + draw.randrange(population):06d}"


def request_builders(invoice_ids: list[int]) -> dict[str, Callable[[random.Random], Request]]:
    """One builder per feature: the request a client of that feature sends."""

    def invoice_text(draw: random.Random) -> bytes:
        lines = [f"Item {n} x{draw.randint(1, 9)} {draw.uniform(1, 90):.2f}" for n in range(12)]
        return ("Supplier invoice\n" + "\n".join(lines) + "\n").encode()

    def batch_csv(draw: random.Random) -> bytes:
        rows = [f"{_sku(draw)},{draw.randint(1, 20)},bench" for _ in range(20)]
        return ("sku,quantity,reference\n" + "\n".join(rows) + "\n").encode()

    return {
        "inventory_read": lambda d: Request("GET", f"/api/inventory/{_sku(d)}"),
        "dashboard_summary": lambda d: Request("GET", "/api/summary"),
        "health_status": lambda d: Request("GET", "/health"),
        "metrics_export": lambda d: Request("GET", "/metrics"),
        "order_processing": lambda d: Request(
            "POST",
            "/api/orders",
            _json({"customer_ref": "bench", "lines": [{"sku": _sku(d), "quantity": 1}]}),
            "application/json",
        ),
        "inventory_write": lambda d: Request(
            "POST",
            f"/api/inventory/{_sku(d)}/adjustments",
            _json({"delta": d.randint(1, 5), "reason": "count"}),
            "application/json",
        ),
        "product_search": lambda d: Request("GET", f"/api/products?q={d.choice(SEARCH_WORDS)}"),
        "pricing_update": lambda d: Request(
            "PUT",
            f"/api/pricing/{_sku(d)}",
            _json({"price": round(d.uniform(5, 200), 2)}),
            "application/json",
        ),
        "invoice_upload": lambda d: Request(
            "POST", f"/api/invoices?supplier_id={d.randint(1, 200)}", invoice_text(d), "text/plain"
        ),
        "stock_timeline": lambda d: Request("GET", f"/api/stock-timeline?sku={_sku(d)}&days=30"),
        "ai_pricing_suggestion": lambda d: Request("GET", f"/api/pricing/{_sku(d)}/suggestion"),
        "report_export": lambda d: Request("GET", "/api/reports/sales.csv?days=7"),
        "complex_analytics": lambda d: Request("GET", "/api/analytics/trends"),
        "ai_recommendations": lambda d: Request("GET", "/api/recommendations"),
        "ai_invoice_enhancement": lambda d: Request(
            "POST", f"/api/invoices/{d.choice(invoice_ids)}/enhance"
        ),
        "batch_import": lambda d: Request("POST", "/api/batch/import", batch_csv(d), "text/csv"),
    }


def encode(request: Request, host: str, api_key: str) -> bytes:
    head = [
        f"{request.method} {request.path} HTTP/1.1",
        f"Host: {host}",
        f"X-API-Key: {api_key}",
        "Connection: keep-alive",
    ]
    if request.body or request.method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(request.body)}")
    if request.content_type:
        head.append(f"Content-Type: {request.content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body


# --------------------------------------------------------------------------------------------
# The open-loop generator (runs in its own process)
# --------------------------------------------------------------------------------------------


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """(status, served-by code, keep-alive) of one HTTP/1.1 answer, body consumed."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    keep_alive = True
    served = -1
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.strip().lower() == "close":
            keep_alive = False
        elif name == "x-served-by":
            served = SERVED_BY.get(value.strip(), -1)
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, served, keep_alive


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, _, port_text = args.url.removeprefix("http://").partition(":")
    port = int(port_text)
    mix: dict[str, float] = json.loads(args.mix)
    invoice_ids: list[int] = json.loads(args.invoice_ids)
    builders = request_builders(invoice_ids or [1])
    features = list(mix)
    weights = np.array([mix[name] for name in features], dtype=float)
    draw = random.Random(args.seed)
    rng = np.random.default_rng(args.seed)
    count = int(args.rate * args.duration)
    gaps = rng.exponential(1.0 / args.rate, size=count)
    offsets = np.cumsum(gaps) - gaps[0]
    chosen = rng.choice(len(features), size=count, p=weights / weights.sum())
    population = HOT_SKUS if args.hot_skus else SKUS
    payloads: list[bytes] = []
    for index in chosen:
        feature = features[index]
        if feature == "inventory_read":
            request = Request("GET", f"/api/inventory/{_sku(draw, population)}")
        else:
            request = builders[feature](draw)
        payloads.append(encode(request, f"{host}:{port}", args.api_key))

    sent_at = np.full(count, np.nan)
    ended_at = np.full(count, np.nan)
    statuses = np.zeros(count, dtype=np.int32)
    served = np.full(count, -1, dtype=np.int8)
    idle: list[_Connection] = []
    opened = 0
    error_kinds: dict[str, int] = {}

    async def exchange(index: int, connection: _Connection) -> tuple[int, int, bool]:
        connection.writer.write(payloads[index])
        return await asyncio.wait_for(_read_response(connection.reader), timeout=args.timeout)

    async def fresh_connection() -> _Connection:
        nonlocal opened
        reader, writer = await asyncio.open_connection(host, port)
        opened += 1
        return _Connection(reader, writer)

    async def one(index: int) -> None:
        connection = idle.pop() if idle else None
        try:
            sent_at[index] = loop.time() - start
            if connection is None:
                connection = await fresh_connection()
                status, served_by, keep_alive = await exchange(index, connection)
            else:
                try:
                    status, served_by, keep_alive = await exchange(index, connection)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise
                    # The server closed this idle keep-alive connection as we reused it:
                    # not an answer, so send again on a new connection.
                    connection.writer.close()
                    connection = await fresh_connection()
                    status, served_by, keep_alive = await exchange(index, connection)
            ended_at[index] = loop.time() - start
            statuses[index] = status
            served[index] = served_by
            if keep_alive:
                idle.append(connection)
            else:
                connection.writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            ended_at[index] = loop.time() - start
            statuses[index] = 0
            error_kinds[type(exc).__name__] = error_kinds.get(type(exc).__name__, 0) + 1
            if connection is not None:
                connection.writer.close()

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.2
    for index in range(count):
        delay = start + offsets[index] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 5)
    for connection in idle:
        connection.writer.close()
    return {
        "features": features,
        "feature_index": chosen.tolist(),
        "scheduled": offsets.tolist(),
        "sent": sent_at.tolist(),
        "ended": ended_at.tolist(),
        "status": statuses.tolist(),
        "served_by": served.tolist(),
        "connections_opened": opened,
        "error_kinds": error_kinds,
    }


def generator_main(args: argparse.Namespace) -> int:
    samples = asyncio.run(_generate(args))
    Path(args.samples).write_text(json.dumps(samples))
    return 0


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def _percentiles(latency_ms: np.ndarray) -> dict[str, float | None]:
    if latency_ms.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(latency_ms, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(latency_ms.max()), 2),
    }


def analyse(samples: dict[str, Any], rate: float, duration: float, warmup: float) -> dict[str, Any]:
    scheduled = np.asarray(samples["scheduled"])
    sent = np.asarray(samples["sent"], dtype=float)
    ended = np.asarray(samples["ended"], dtype=float)
    status = np.asarray(samples["status"])
    served = np.asarray(samples["served_by"])
    feature_index = np.asarray(samples["feature_index"])
    measured = scheduled >= warmup
    answered = measured & ~np.isnan(ended) & (status > 0)
    latency_ms = (ended - scheduled) * 1000.0
    lateness_ms = (sent - scheduled) * 1000.0
    late = measured & ~np.isnan(sent) & (lateness_ms > 1.0)
    ok = answered & (status >= 200) & (status < 300)
    window = max(1e-9, duration - warmup)
    codes, counts = np.unique(status[measured], return_counts=True)
    result: dict[str, Any] = {
        "target_rate": rate,
        "measured_s": round(window, 2),
        "requests": int(measured.sum()),
        "completed_rate": round(float(answered.sum()) / window, 1),
        "ok_rate": round(float(ok.sum()) / window, 1),
        "statuses": {str(int(code)): int(n) for code, n in zip(codes, counts, strict=True)},
        "non_2xx": int((answered & ~ok).sum()),
        "transport_errors": int((measured & (status == 0) & ~np.isnan(ended)).sum()),
        "transport_error_kinds": samples["error_kinds"],
        "unfinished": int((measured & np.isnan(ended)).sum()),
        "served_by": {
            name: int((answered & (served == code)).sum()) for name, code in SERVED_BY.items()
        },
        "late_sends": int(late.sum()),
        "late_by_max_ms": round(float(np.nanmax(lateness_ms[measured])), 2)
        if measured.any()
        else 0.0,
        "connections_opened": samples["connections_opened"],
        **_percentiles(latency_ms[answered]),
    }
    per_feature: dict[str, Any] = {}
    for index, feature in enumerate(samples["features"]):
        mask = answered & (feature_index == index)
        if mask.any():
            per_feature[feature] = {"requests": int(mask.sum()), **_percentiles(latency_ms[mask])}
    if len(per_feature) > 1:
        result["per_feature"] = per_feature
    return result


# --------------------------------------------------------------------------------------------
# The engine under test
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    api_key: str


@contextmanager
def own_stack(llm_latency_ms: float) -> Iterator[Target]:
    """A staging stack (dependencies behind Toxiproxy) and an engine, both ours."""
    from chaos.staging import StagingStack, free_ports

    state_dir = Path(tempfile.mkdtemp(prefix="reslab-bench-"))
    stack = StagingStack(state_dir, llm_latency_median_ms=llm_latency_ms)
    engine: subprocess.Popen[bytes] | None = None
    try:
        state = stack.up(engine=False, timeout=120.0)
        (port,) = free_ports(1)
        env = {**os.environ, **state.engine_env()}
        env.update(
            RESLAB_PORT=str(port),
            # One key sends the whole load here; the per-key limit is not what is measured.
            RESLAB_RATE_LIMIT_RPS="1000000",
            RESLAB_RATE_LIMIT_BURST="1000000",
            PYTHONPATH=str(REPO_ROOT),
        )
        log = (state_dir / "engine.log").open("ab")
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.service"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if engine.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine did not start; see {state_dir / 'engine.log'}")
            time.sleep(0.2)
        yield Target(url, state.api_key)
    finally:
        if engine is not None and engine.poll() is None:
            os.killpg(engine.pid, signal.SIGTERM)
            engine.wait(timeout=20)
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def running_engine(url: str, api_key: str) -> Iterator[Target]:
    yield Target(url.rstrip("/"), api_key)


def warm_up(target: Target) -> list[int]:
    """Fill the cache for the hot SKUs, make invoices to enhance; returns their ids."""
    headers = {"X-API-Key": target.api_key}
    with httpx.Client(base_url=target.url, headers=headers, timeout=30) as client:
        for number in range(1, HOT_SKUS + 1):
            client.get(f"/api/inventory/SKU-{number:06d}").raise_for_status()
        invoice_ids = []
        for supplier in range(1, 21):
            response = client.post(
                "/api/invoices",
                params={"supplier_id": supplier},
                content=f"Invoice from supplier {supplier}\nTotal 100.00\n".encode(),
                headers={"Content-Type": "text/plain"},
            )
            response.raise_for_status()
            invoice_ids.append(int(response.json()["invoice_id"]))
        client.get("/api/summary").raise_for_status()
        client.get("/api/recommendations").raise_for_status()
    return invoice_ids


def run_load(
    target: Target,
    mix: dict[str, float],
    *,
    rate: float,
    duration: float,
    warmup: float,
    seed: int,
    hot_skus: bool,
    invoice_ids: list[int],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="reslab-bench-samples-") as folder:
        samples_path = Path(folder) / "samples.json"
        command = [
            sys.executable, __file__, "generate",
            "--url", target.url, "--api-key", target.api_key,
            "--rate", str(rate), "--duration", str(duration), "--seed", str(seed),
            "--mix", json.dumps(mix), "--invoice-ids", json.dumps(invoice_ids),
            "--samples", str(samples_path),
        ]  # fmt: skip
        if hot_skus:
            command.append("--hot-skus")
        subprocess.run(command, check=True, timeout=duration + 120)
        samples = json.loads(samples_path.read_text())
    return analyse(samples, rate, duration, warmup)


def _print_header() -> None:
    print(f"{'run':<24}{'target':>8}{'done/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}"
          f"{'non-2xx':>9}{'late':>6}")  # fmt: skip


def _print_row(run: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(
        f"{run['run']:<24}{run['target_rate']:>8.0f}{run['completed_rate']:>8.1f}"
        f"{ms(run['p50_ms']):>8}{ms(run['p95_ms']):>8}{ms(run['p99_ms']):>8}"
        f"{ms(run['max_ms']):>9}{run['non_2xx']:>9}{run['late_sends']:>6}",
        flush=True,
    )


def _print_features(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        per_feature = run.get("per_feature") or {}
        if not per_feature:
            continue
        print(f"\n{run['run']} at {run['target_rate']:.0f} req/s, by feature (ms):")
        for feature, row in sorted(per_feature.items(), key=lambda item: -item[1]["p95_ms"]):
            print(f"  {feature:<24}{row['requests']:>7}  p50 {row['p50_ms']:>8.2f}"
                  f"  p95 {row['p95_ms']:>8.2f}  p99 {row['p99_ms']:>8.2f}")  # fmt: skip


def wait_healthy(target: Target, timeout_s: float = 120.0) -> float:
    """Wait until every breaker is CLOSED and the level OPTIMAL, with light traffic so that
    a half-open breaker gets its trial calls; returns the seconds it took."""
    headers = {"X-API-Key": target.api_key}
    started = time.monotonic()
    with httpx.Client(base_url=target.url, headers=headers, timeout=30) as client:
        while True:
            status = client.get("/resilience/status").json()
            closed = all(b["state"] == "CLOSED" for b in status["breakers"].values())
            if closed and status["level"] == "OPTIMAL":
                return round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the engine did not recover within {timeout_s:g} s")
            client.get("/api/products", params={"q": "tea", "limit": 1})
            client.get("/api/inventory/SKU-000001")
            client.get("/api/pricing/SKU-000001/suggestion")
            client.get("/api/reports/sales.csv", params={"days": 1})
            time.sleep(0.5)


def bench_main(args: argparse.Namespace) -> int:
    from scenarios.schema import DEFAULT_MIX

    args.rate = args.rate or [500.0]
    started = datetime.now(UTC)
    context = running_engine(args.url, args.api_key) if args.url else own_stack(args.llm_latency_ms)
    runs: list[dict[str, Any]] = []
    _print_header()
    with context as target:
        invoice_ids = warm_up(target)
        for rate in args.rate:
            for name, mix, hot in (
                ("cached_inventory_read", {"inventory_read": 1.0}, True),
                ("default_mix", dict(DEFAULT_MIX), False),
            ):
                healthy_after_s = wait_healthy(target)
                result = run_load(
                    target, mix, rate=rate, duration=args.duration, warmup=args.warmup,
                    seed=args.seed, hot_skus=hot, invoice_ids=invoice_ids,
                )  # fmt: skip
                runs.append({"run": name, "waited_for_healthy_s": healthy_after_s, **result})
                _print_row(runs[-1])
    _print_features(runs)
    at_500 = [run for run in runs if run["run"] == "default_mix" and run["target_rate"] >= 500]
    report = {
        "benchmark": "engine",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "target": {"default_mix_p95_ms": 25.0, "rate": 500.0},
        "default_mix_p95_within_target_at_500": bool(at_500)
        and all(run["p95_ms"] is not None and run["p95_ms"] <= 25.0 for run in at_500),
        "setup": {
            "rates": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "arrivals": "poisson",
            "seed": args.seed,
            "engine": args.url or "own staging stack, every dependency through Toxiproxy",
            "llm_stub_latency_median_ms": None if args.url else args.llm_latency_ms,
            "default_mix": dict(DEFAULT_MIX),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    bench = parser
    bench.add_argument(
        "--rate",
        type=float,
        action="append",
        help="arrivals per second; repeat for several (default 500)",
    )
    bench.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    bench.add_argument("--warmup", type=float, default=5.0, help="seconds left out per run")
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--llm-latency-ms", type=float, default=5.0,
                       help="the LLM stub's median latency (own stack only)")  # fmt: skip
    bench.add_argument("--url", help="measure this running engine instead of starting one")
    bench.add_argument("--api-key", default="", help="its API key (with --url)")
    bench.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    generate = sub.add_parser("generate", help="(internal) the load generator process")
    generate.add_argument("--url", required=True)
    generate.add_argument("--api-key", required=True)
    generate.add_argument("--rate", type=float, required=True)
    generate.add_argument("--duration", type=float, required=True)
    generate.add_argument("--seed", type=int, required=True)
    generate.add_argument("--mix", required=True)
    generate.add_argument("--invoice-ids", default="[]")
    generate.add_argument("--hot-skus", action="store_true")
    generate.add_argument("--timeout", type=float, default=30.0)
    generate.add_argument("--samples", required=True)
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.command == "generate":
        return generator_main(args)
    return bench_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
