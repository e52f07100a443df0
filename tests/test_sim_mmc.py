"""With faults off, exponential service times and one pool of c connections, the model is
an M/M/c queue: its mean and 95th-percentile response times match Erlang C's."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from engine.policyfile import load_policy
from scenarios.schema import Scenario
from sim.model import simulate_replication
from sim.parameters import load_parameters

SERVERS = 4
MEAN_SERVICE_S = 0.010
UTILISATION = 0.7
ARRIVAL_RATE = UTILISATION * SERVERS / MEAN_SERVICE_S  # 280 req/s
DURATION_S = 400.0
WARMUP_S = 10.0
REPLICATIONS = 4


def erlang_c(servers: int, offered: float) -> float:
    """The probability that an arrival waits, for `offered` = λ/μ erlangs."""
    rho = offered / servers
    top = offered**servers / math.factorial(servers) / (1.0 - rho)
    bottom = sum(offered**k / math.factorial(k) for k in range(servers)) + top
    return top / bottom


def mmc_response(servers: int, arrival_rate: float, service_rate: float) -> tuple[float, float]:
    """Mean and exact p95 of the M/M/c response time (wait + service)."""
    waits = erlang_c(servers, arrival_rate / service_rate)
    theta = servers * service_rate - arrival_rate  # the rate of a non-zero wait
    mean = waits / theta + 1.0 / service_rate

    def beyond(t: float) -> float:
        # P(W + S > t): no wait w.p. 1 − C; else W ~ Exp(θ) plus S ~ Exp(μ) (hypoexponential).
        mu = service_rate
        delayed = (theta * math.exp(-mu * t) - mu * math.exp(-theta * t)) / (theta - mu)
        return (1.0 - waits) * math.exp(-mu * t) + waits * delayed

    p95 = optimize.brentq(lambda t: beyond(t) - 0.05, 0.0, 10.0, xtol=1e-12)
    return mean, p95


def _mmc_model() -> tuple[Scenario, object, object]:
    scenario = Scenario.model_validate(
        {
            "name": "mmc",
            "load": {"model": "open", "rate": ARRIVAL_RATE, "duration": DURATION_S},
            "mix": {"product_search": 1},
            "seed": 7,
        }
    )
    policy = load_policy()
    # Timeouts out of reach and no slow calls: the pool is a plain FIFO queue.
    postgres = dataclasses.replace(
        policy.breakers["postgres"],
        pool_size=SERVERS,
        pool_acquire_timeout_s=1e6,
        call_timeout_s=1e6,
        slow_call_s=1e6,
    )
    policy = dataclasses.replace(policy, breakers={**policy.breakers, "postgres": postgres})
    parameters = load_parameters(
        {
            "server": {"overhead": {"kind": "constant", "value_ms": 0}},
            "dependencies": {
                "postgres": {
                    "service": {"kind": "exponential", "mean_ms": MEAN_SERVICE_S * 1e3},
                    "pool_order": "fifo",
                }
            },
            "scales": {"product_search": {"postgres": 1.0}},
        }
    )
    return scenario, policy, parameters


def test_erlang_c_known_value() -> None:
    # A textbook value: 2 servers at 1 erlang wait with probability 1/3.
    assert math.isclose(erlang_c(2, 1.0), 1.0 / 3.0)


def test_mean_and_p95_response_match_erlang_c() -> None:
    scenario, policy, parameters = _mmc_model()
    latencies = []
    for replication in range(REPLICATIONS):
        result = simulate_replication(scenario, policy, parameters, replication, 7)  # type: ignore[arg-type]
        table = result.requests.to_pandas()
        assert set(table["outcome"].astype(str)) == {"ok"}
        latencies.append(table.loc[table["scheduled"] >= WARMUP_S, "latency_ms"].to_numpy())
    mean_s = float(np.mean([np.mean(x) for x in latencies])) / 1e3
    p95_s = float(np.mean([np.percentile(x, 95) for x in latencies])) / 1e3
    expected_mean, expected_p95 = mmc_response(SERVERS, ARRIVAL_RATE, 1.0 / MEAN_SERVICE_S)
    assert abs(mean_s - expected_mean) / expected_mean < 0.02, (mean_s, expected_mean)
    assert abs(p95_s - expected_p95) / expected_p95 < 0.02, (p95_s, expected_p95)
