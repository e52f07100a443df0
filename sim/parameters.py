"""The model's parameters: `defaults.json` merged with an optional calibration file.

A calibration file has the shape of `defaults.json` and may give only part of it (what
`sim.calibrate` measured); whatever it leaves out keeps its default. The merged raw mapping
is hashed, so that a run folder says exactly which parameters produced it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.policy import DEPENDENCIES
from sim.sampling import Distribution, distribution_from_dict

DEFAULTS_PATH = Path(__file__).with_name("defaults.json")

POOL_ORDERS = ("lifo", "fifo")


@dataclass(frozen=True, slots=True)
class ServerParameters:
    # Concurrent slots for the engine's own work (one uvicorn worker: one event loop).
    workers: int
    overhead: Distribution


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
    # Per feature and dependency: the multiple of the dependency's service time a call takes.
    scales: Mapping[str, Mapping[str, float]]
    raw: Mapping[str, Any]

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


def parameters_from_mapping(raw: Mapping[str, Any]) -> ModelParameters:
    server_raw = raw["server"]
    workers = server_raw.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"server.workers: must be a whole number >= 1 (got {workers!r})")
    server = ServerParameters(
        workers=workers,
        overhead=distribution_from_dict(server_raw["overhead"], "server.overhead"),
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
    ratios: dict[str, float] = {}
    for key, value in raw.get("cache_hit_ratios", {}).items():
        ratio = float(value)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"cache_hit_ratios.{key}: must be in [0, 1] (got {value!r})")
        ratios[key] = ratio
    scales = {
        str(feature): {str(dep): float(x) for dep, x in per_dep.items()}
        for feature, per_dep in raw.get("scales", {}).items()
    }
    return ModelParameters(server, dependencies, ratios, scales, raw)


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
