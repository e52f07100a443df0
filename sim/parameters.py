"""The model's parameters: `defaults.json` merged with an optional calibration file.

A calibration file has the shape of `defaults.json` and may give only part of it (what
`sim.calibrate` measured); whatever it leaves out keeps its default. The merged raw mapping
is hashed, so that a run folder says exactly which parameters produced it.

Caches (`cache_hit_ratios`, `stale_ratios`):

- a cache's *hit ratio* is the share of its lookups that find a fresh entry;
- its *stale ratio* is the probability that a read which needs the stale copy (its primary
  path unavailable: PostgreSQL open or failing, no fresh entry) finds one. The engine writes
  a day-long stale copy beside every fresh entry, so only what was read before has one.
  A cache without a stated stale ratio takes its hit ratio. Every SKU whose fresh entry is
  alive also has a stale copy, and once PostgreSQL cannot refill them the fresh entries
  lapse within their lifetime; in an outage longer than that, the reads that need a stale
  copy find one about as often as reads found a fresh entry before (more often on a stack
  warm for longer, as stale copies last a day). A short outage on a freshly started stack
  finds fewer, its misses being mostly SKUs never read, which is why `sim.calibrate`
  measures the ratio from a run with a PostgreSQL fault. The dashboard summary and the top
  sellers are single keys rewritten on every success, so defaults.json gives them 1.

`fresh_ttl_s` is how long the engine keeps a fresh entry of each cache at OPTIMAL
(engine/service/cache.py), which is how fast the fresh entries lapse when nothing refills
them (`sim.model`; a cache without one keeps its hit ratio). `memo_ttl_s` is how long each
in-process memo of the engine keeps a result (a memo without one is not modelled: its path
always calls through).

Per feature (`sim.calibrate` fits them where a feature has enough samples):

- `server.feature_overhead` gives a feature its own overhead distribution (the engine's work
  differs widely: building a CSV or the metrics text takes ten times a health check); the
  others draw from `server.overhead`;
- `feature_services` gives a feature's calls to a dependency their own service-time
  distribution, which replaces the dependency's service times times the feature's scale.
  A scale stretches the whole distribution, its tail too, while the tail of a measured
  service time is mostly waiting that does not grow with the query's own cost.

Overheads are the engine's *service demand* per request: the model queues them for the
engine's workers, so they must not contain that queueing already (`sim.calibrate` takes it
out of the measured overheads).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.policy import DEPENDENCIES, FEATURE_NAMES
from sim.sampling import Distribution, distribution_from_dict

DEFAULTS_PATH = Path(__file__).with_name("defaults.json")

POOL_ORDERS = ("lifo", "fifo")


@dataclass(frozen=True, slots=True)
class ServerParameters:
    # Concurrent slots for the engine's own work (one uvicorn worker: one event loop).
    workers: int
    overhead: Distribution
    # Features whose overhead is their own, not `overhead`.
    feature_overhead: Mapping[str, Distribution] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DependencyParameters:
    service: Distribution
    connect_s: float  # opening a new connection (after one was dropped)
    refused_s: float  # how long a refused connection takes to fail
    request_bytes: int  # bytes sent per call (what upstream toxics act on)
    response_bytes: int  # bytes received per call (what downstream toxics act on)
    pool_order: str  # which idle connection the pool hands out next: "lifo" or "fifo"


@dataclass(frozen=True, slots=True)
class ModelParameters:
    server: ServerParameters
    dependencies: Mapping[str, DependencyParameters]
    cache_hit_ratios: Mapping[str, float]
    # Every cache with a hit ratio or a stated stale ratio: the probability that a stale
    # copy exists when the path needs one (stated, else the hit ratio).
    stale_ratios: Mapping[str, float]
    # How long the engine keeps a fresh entry of each cache (at OPTIMAL).
    fresh_ttl_s: Mapping[str, float]
    memo_ttl_s: Mapping[str, float]
    # Per feature and dependency: the multiple of the dependency's service time a call takes.
    scales: Mapping[str, Mapping[str, float]]
    raw: Mapping[str, Any]
    # Per feature and dependency: the service time of the feature's own calls, when measured
    # (it replaces the dependency's service time times the scale).
    feature_services: Mapping[str, Mapping[str, Distribution]] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return parameters_hash(self.raw)

    def scale(self, feature: str, dependency: str) -> float:
        return self.scales.get(feature, {}).get(dependency, 1.0)


def parameters_hash(raw: Mapping[str, Any]) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        # A distribution (it has a "kind") is replaced whole: its fields depend on its kind.
        if isinstance(value, Mapping) and "kind" not in value and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _positive(raw: Mapping[str, Any], key: str, where: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{where}.{key}: must be a number >= 0 (got {value!r})")
    return float(value)


def _fractions(raw: Mapping[str, Any], section: str) -> dict[str, float]:
    fractions: dict[str, float] = {}
    for key, value in raw.get(section, {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{section}.{key}: must be a number in [0, 1] (got {value!r})")
        fractions[str(key)] = float(value)
    return fractions


def _lifetimes(raw: Mapping[str, Any], section: str) -> dict[str, float]:
    lifetimes: dict[str, float] = {}
    for key, value in raw.get(section, {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{section}.{key}: must be a number of seconds > 0 (got {value!r})")
        lifetimes[str(key)] = float(value)
    return lifetimes


def parameters_from_mapping(raw: Mapping[str, Any]) -> ModelParameters:
    server_raw = raw["server"]
    workers = server_raw.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"server.workers: must be a whole number >= 1 (got {workers!r})")
    feature_overhead = {
        str(feature): distribution_from_dict(entry, f"server.feature_overhead.{feature}")
        for feature, entry in server_raw.get("feature_overhead", {}).items()
    }
    unknown = sorted(set(feature_overhead) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"server.feature_overhead: unknown features {unknown}")
    server = ServerParameters(
        workers=workers,
        overhead=distribution_from_dict(server_raw["overhead"], "server.overhead"),
        feature_overhead=feature_overhead,
    )
    dependencies: dict[str, DependencyParameters] = {}
    for name in DEPENDENCIES:
        where = f"dependencies.{name}"
        entry = raw["dependencies"].get(name)
        if entry is None:
            raise ValueError(f"{where}: is required")
        order = entry.get("pool_order", "lifo")
        if order not in POOL_ORDERS:
            raise ValueError(f"{where}.pool_order: must be one of {POOL_ORDERS} (got {order!r})")
        dependencies[name] = DependencyParameters(
            service=distribution_from_dict(entry["service"], f"{where}.service"),
            connect_s=_positive(entry, "connect_ms", where) / 1e3,
            refused_s=_positive(entry, "refused_ms", where) / 1e3,
            request_bytes=int(_positive(entry, "request_bytes", where)),
            response_bytes=int(_positive(entry, "response_bytes", where)),
            pool_order=order,
        )
    ratios = _fractions(raw, "cache_hit_ratios")
    stale_ratios = {**ratios, **_fractions(raw, "stale_ratios")}
    fresh_ttl_s = _lifetimes(raw, "fresh_ttl_s")
    memo_ttl_s = _lifetimes(raw, "memo_ttl_s")
    scales = {
        str(feature): {str(dep): float(x) for dep, x in per_dep.items()}
        for feature, per_dep in raw.get("scales", {}).items()
    }
    feature_services: dict[str, dict[str, Distribution]] = {}
    for feature, per_dep in raw.get("feature_services", {}).items():
        if feature not in FEATURE_NAMES:
            raise ValueError(f"feature_services.{feature}: unknown feature")
        for dep, entry in per_dep.items():
            if dep not in DEPENDENCIES:
                raise ValueError(f"feature_services.{feature}.{dep}: unknown dependency")
            feature_services.setdefault(str(feature), {})[str(dep)] = distribution_from_dict(
                entry, f"feature_services.{feature}.{dep}"
            )
    return ModelParameters(
        server,
        dependencies,
        ratios,
        stale_ratios,
        fresh_ttl_s,
        memo_ttl_s,
        scales,
        raw,
        feature_services,
    )


def load_parameters(
    calibration: str | Path | Mapping[str, Any] | None = None,
) -> ModelParameters:
    """The defaults, overridden by a calibration file (a path) or mapping, if given."""
    raw: dict[str, Any] = json.loads(DEFAULTS_PATH.read_text(encoding="utf-8"))
    if calibration is not None:
        if isinstance(calibration, Mapping):
            override: Mapping[str, Any] = calibration
        else:
            override = json.loads(Path(calibration).read_text(encoding="utf-8"))
        # The fit report describes how the parameters were found; it is not a parameter.
        raw = _merge(raw, {k: v for k, v in override.items() if k not in ("fit", "source")})
    return parameters_from_mapping(raw)
