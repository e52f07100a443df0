"""Service-time distributions and buffered random streams.

A distribution is a small frozen record (what a calibration file stores); a `Stream` draws
from one in numpy batches and hands the values out one at a time, because a numpy call per
draw would cost more than the rest of a simulated dependency call.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Values per numpy call: large enough to amortise the call, small enough to stay in cache.
_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Lognormal:
    """exp(N(ln median, sigma²)): the default shape of a dependency's service time."""

    median_s: float
    sigma: float

    kind = "lognormal"

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2.0)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.median_s * np.exp(self.sigma * rng.standard_normal(size))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "median_ms": self.median_s * 1e3, "sigma": self.sigma}


@dataclass(frozen=True, slots=True)
class Exponential:
    mean_s: float

    kind = "exponential"

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(self.mean_s, size)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean_ms": self.mean_s * 1e3}


@dataclass(frozen=True, slots=True)
class Constant:
    value_s: float

    kind = "constant"

    @property
    def mean_s(self) -> float:
        return self.value_s

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.value_s)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value_ms": self.value_s * 1e3}


@dataclass(frozen=True, slots=True)
class Empirical:
    """An inverse CDF given by quantiles at equally spaced probabilities from 0 to 1."""

    quantiles_s: tuple[float, ...]

    kind = "empirical"

    @property
    def mean_s(self) -> float:
        q = np.asarray(self.quantiles_s)
        return float(np.mean((q[1:] + q[:-1]) / 2.0))

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        q = np.asarray(self.quantiles_s)
        grid = np.linspace(0.0, 1.0, len(q))
        return np.asarray(np.interp(rng.random(size), grid, q), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "quantiles_ms": [round(v * 1e3, 6) for v in self.quantiles_s]}


Distribution = Lognormal | Exponential | Constant | Empirical


def distribution_from_dict(raw: Mapping[str, Any], where: str) -> Distribution:
    """Parse a calibration file's distribution; `where` names it in error messages."""
    kind = raw.get("kind")
    try:
        if kind == "lognormal":
            return Lognormal(float(raw["median_ms"]) / 1e3, float(raw["sigma"]))
        if kind == "exponential":
            return Exponential(float(raw["mean_ms"]) / 1e3)
        if kind == "constant":
            return Constant(float(raw["value_ms"]) / 1e3)
        if kind == "empirical":
            values = tuple(float(v) / 1e3 for v in raw["quantiles_ms"])
            if len(values) < 2 or any(b < a for a, b in itertools.pairwise(values)):
                raise ValueError("quantiles_ms must be at least two non-decreasing values")
            return Empirical(values)
    except KeyError as missing:
        raise ValueError(f"{where}: a {kind} distribution needs {missing.args[0]!r}") from None
    raise ValueError(
        f"{where}.kind: unknown distribution {kind!r} (lognormal, exponential, constant, empirical)"
    )


class Stream:
    """Values of one distribution, drawn a batch at a time from a generator of its own."""

    __slots__ = ("_buffer", "_distribution", "_rng")

    def __init__(self, distribution: Distribution, rng: np.random.Generator) -> None:
        self._distribution = distribution
        self._rng = rng
        self._buffer: list[float] = []

    def next(self) -> float:
        buffer = self._buffer
        if not buffer:
            buffer.extend(self._distribution.draw(self._rng, _BATCH).tolist())
        return buffer.pop()


class UniformStream:
    """Uniform [0, 1) values, for hit-or-miss and toxic-or-not draws."""

    __slots__ = ("_buffer", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buffer: list[float] = []

    def next(self) -> float:
        buffer = self._buffer
        if not buffer:
            buffer.extend(self._rng.random(_BATCH).tolist())
        return buffer.pop()
