"""The policy as immutable configuration, with documented defaults and checked rules.

`policy_from_mapping` turns the parsed YAML of a policy file into a `PolicyConfig`; every
rule it enforces names the field it found broken (``breakers.redis.weight: must be > 0``),
so that a bad file is refused before anything starts. Reading the file is the caller's
business (`engine.policyfile`), which keeps this module free of I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

DEPENDENCIES: tuple[str, ...] = ("openai", "postgres", "redis", "s3")


class Level(IntEnum):
    """Degradation levels; a larger value is a worse level."""

    OPTIMAL = 0
    DEGRADED = 1
    LIMITED = 2
    MINIMAL = 3
    EMERGENCY = 4


class PolicyError(ValueError):
    """A policy that breaks a rule; `field` is the dotted path of the offending entry."""

    def __init__(self, field_path: str, rule: str) -> None:
        super().__init__(f"{field_path}: {rule}")
        self.field = field_path
        self.rule = rule


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """One dependency's breaker, pool and timeouts (POLICY.md, "Circuit breakers")."""

    weight: float
    failure_rate_threshold: float
    window_s: int
    minimum_calls: int
    slow_call_s: float
    slow_call_rate_threshold: float
    open_s: float
    half_open_permits: int
    call_timeout_s: float
    pool_size: int
    pool_acquire_timeout_s: float
    # Each reopening from HALF_OPEN doubles the open time, up to this multiple of open_s.
    max_open_multiplier: float = 4.0


@dataclass(frozen=True, slots=True)
class LevelsConfig:
    """Score thresholds of the levels, hysteresis and dwell (POLICY.md, "Degradation levels")."""

    # Lowest score of each level but EMERGENCY, which takes everything below MINIMAL's.
    thresholds: tuple[tuple[Level, float], ...] = (
        (Level.OPTIMAL, 90.0),
        (Level.DEGRADED, 70.0),
        (Level.LIMITED, 50.0),
        (Level.MINIMAL, 30.0),
    )
    hysteresis: float = 2.0
    dwell_s: float = 10.0
    tick_s: float = 1.0

    def threshold(self, level: Level) -> float:
        for each_level, score in self.thresholds:
            if each_level is level:
                return score
        return 0.0

    def level_for(self, score: float) -> Level:
        for level, lowest in self.thresholds:
            if score >= lowest:
                return level
        return Level.EMERGENCY


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """What serves when a feature cannot: a description and the dependencies it still needs."""

    description: str
    needs: tuple[str, ...] = ()
    # At least one of these must be available (e.g. a stale cache entry *or* the database).
    needs_any: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """One of the 16 features (POLICY.md, "The 16 features")."""

    name: str
    route: str
    needs: tuple[str, ...]
    worst_level: Level
    fallback: FallbackConfig | None = None


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """The online recovery-ETA estimator (POLICY.md, "Recovery ETA")."""

    # Past outage durations kept per dependency for the median.
    history: int = 20
    # Outages of history needed for a "high" confidence; fewer (but some) give "low".
    high_confidence_outages: int = 3


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: str
    breakers: Mapping[str, BreakerConfig]
    features: Mapping[str, FeatureConfig]
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(self.breakers)


# --- parsing -------------------------------------------------------------------------------


def _number(raw: Mapping[str, Any], key: str, path: str, default: float | None = None) -> float:
    if key not in raw:
        if default is None:
            raise PolicyError(f"{path}.{key}", "is required")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{path}.{key}", f"must be a number (got {value!r})")
    return float(value)


def _positive(raw: Mapping[str, Any], key: str, path: str, default: float | None = None) -> float:
    value = _number(raw, key, path, default)
    if not value > 0:
        raise PolicyError(f"{path}.{key}", f"must be > 0 (got {value:g})")
    return value


def _fraction(raw: Mapping[str, Any], key: str, path: str) -> float:
    value = _number(raw, key, path)
    if not 0 < value <= 1:
        raise PolicyError(f"{path}.{key}", f"must be in (0, 1] (got {value:g})")
    return value


def _count(raw: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int:
    value = _number(raw, key, path, None if default is None else float(default))
    if value != int(value) or value < 1:
        raise PolicyError(f"{path}.{key}", f"must be a whole number >= 1 (got {value:g})")
    return int(value)


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(path, f"must be a mapping (got {type(raw).__name__})")
    return raw


def _no_unknown(raw: Mapping[str, Any], known: set[str], path: str) -> None:
    for key in raw:
        if key not in known:
            raise PolicyError(f"{path}.{key}", f"unknown field (known: {', '.join(sorted(known))})")


def _dependency_list(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise PolicyError(path, "must be a list of dependencies")
    for index, name in enumerate(raw):
        if name not in DEPENDENCIES:
            raise PolicyError(
                f"{path}[{index}]",
                f"unknown dependency {name!r} (one of {', '.join(DEPENDENCIES)})",
            )
    return tuple(raw)


def _level(raw: Any, path: str) -> Level:
    try:
        return Level[str(raw).upper()]
    except KeyError:
        names = ", ".join(level.name for level in Level)
        raise PolicyError(path, f"unknown level {raw!r} (one of {names})") from None


_BREAKER_FIELDS = {
    "weight", "failure_rate_threshold", "window_s", "minimum_calls", "slow_call_s",
    "slow_call_rate_threshold", "open_s", "half_open_permits", "call_timeout_s", "pool_size",
    "pool_acquire_timeout_s", "max_open_multiplier",
}  # fmt: skip


def _breaker(raw: Any, path: str) -> BreakerConfig:
    raw = _mapping(raw, path)
    _no_unknown(raw, _BREAKER_FIELDS, path)
    multiplier = _number(raw, "max_open_multiplier", path, 4.0)
    if multiplier < 1:
        raise PolicyError(f"{path}.max_open_multiplier", f"must be >= 1 (got {multiplier:g})")
    return BreakerConfig(
        weight=_positive(raw, "weight", path),
        failure_rate_threshold=_fraction(raw, "failure_rate_threshold", path),
        window_s=_count(raw, "window_s", path),
        minimum_calls=_count(raw, "minimum_calls", path),
        slow_call_s=_positive(raw, "slow_call_s", path),
        slow_call_rate_threshold=_fraction(raw, "slow_call_rate_threshold", path),
        open_s=_positive(raw, "open_s", path),
        half_open_permits=_count(raw, "half_open_permits", path),
        call_timeout_s=_positive(raw, "call_timeout_s", path),
        pool_size=_count(raw, "pool_size", path),
        pool_acquire_timeout_s=_positive(raw, "pool_acquire_timeout_s", path),
        max_open_multiplier=multiplier,
    )


def _levels(raw: Any, path: str) -> LevelsConfig:
    raw = _mapping(raw, path)
    _no_unknown(raw, {"thresholds", "hysteresis", "dwell_s", "tick_s"}, path)
    defaults = LevelsConfig()
    thresholds = defaults.thresholds
    if "thresholds" in raw:
        table = _mapping(raw["thresholds"], f"{path}.thresholds")
        parsed: list[tuple[Level, float]] = []
        for name, _value in table.items():
            entry = f"{path}.thresholds.{name}"
            level = _level(name, entry)
            if level is Level.EMERGENCY:
                raise PolicyError(
                    entry, "EMERGENCY has no threshold: it is every score below MINIMAL"
                )
            score = _number(table, name, f"{path}.thresholds")
            if not 0 < score <= 100:
                raise PolicyError(entry, f"must be in (0, 100] (got {score:g})")
            parsed.append((level, score))
        parsed.sort(key=lambda pair: pair[0])
        if [level for level, _ in parsed] != [lvl for lvl in Level if lvl is not Level.EMERGENCY]:
            raise PolicyError(
                f"{path}.thresholds", "must give OPTIMAL, DEGRADED, LIMITED and MINIMAL"
            )
        for (better, high), (worse, low) in itertools.pairwise(parsed):
            if not high > low:
                raise PolicyError(
                    f"{path}.thresholds.{better.name}",
                    f"must be above {worse.name}'s ({high:g} <= {low:g})",
                )
        thresholds = tuple(parsed)
    hysteresis = _number(raw, "hysteresis", path, defaults.hysteresis)
    if hysteresis < 0:
        raise PolicyError(f"{path}.hysteresis", f"must be >= 0 (got {hysteresis:g})")
    dwell = _number(raw, "dwell_s", path, defaults.dwell_s)
    if dwell < 0:
        raise PolicyError(f"{path}.dwell_s", f"must be >= 0 (got {dwell:g})")
    return LevelsConfig(
        thresholds=thresholds,
        hysteresis=hysteresis,
        dwell_s=dwell,
        tick_s=_positive(raw, "tick_s", path, defaults.tick_s),
    )


def _fallback(raw: Any, path: str) -> FallbackConfig | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return FallbackConfig(description=raw)
    raw = _mapping(raw, path)
    _no_unknown(raw, {"description", "needs", "needs_any"}, path)
    description = raw.get("description")
    if not isinstance(description, str) or not description:
        raise PolicyError(f"{path}.description", "is required (a non-empty text)")
    return FallbackConfig(
        description=description,
        needs=_dependency_list(raw.get("needs"), f"{path}.needs"),
        needs_any=_dependency_list(raw.get("needs_any"), f"{path}.needs_any"),
    )


def _feature(name: str, raw: Any, path: str) -> FeatureConfig:
    raw = _mapping(raw, path)
    _no_unknown(raw, {"route", "needs", "worst_level", "fallback"}, path)
    route = raw.get("route")
    if not isinstance(route, str) or not route:
        raise PolicyError(f"{path}.route", "is required (e.g. 'GET /api/summary')")
    if "worst_level" not in raw:
        raise PolicyError(f"{path}.worst_level", "is required")
    return FeatureConfig(
        name=name,
        route=route,
        needs=_dependency_list(raw.get("needs"), f"{path}.needs"),
        worst_level=_level(raw["worst_level"], f"{path}.worst_level"),
        fallback=_fallback(raw.get("fallback"), f"{path}.fallback"),
    )


def _recovery(raw: Any, path: str) -> RecoveryConfig:
    raw = _mapping(raw, path)
    _no_unknown(raw, {"history", "high_confidence_outages"}, path)
    defaults = RecoveryConfig()
    return RecoveryConfig(
        history=_count(raw, "history", path, defaults.history),
        high_confidence_outages=_count(
            raw, "high_confidence_outages", path, defaults.high_confidence_outages
        ),
    )


def policy_from_mapping(raw: Any, name: str = "policy") -> PolicyConfig:
    """Build a checked `PolicyConfig` from a policy file's parsed content."""
    raw = _mapping(raw, "(policy)")
    _no_unknown(raw, {"name", "breakers", "levels", "recovery", "features"}, "(policy)")
    breakers_raw = _mapping(raw.get("breakers"), "breakers")
    breakers: dict[str, BreakerConfig] = {}
    for dependency in DEPENDENCIES:
        if dependency not in breakers_raw:
            raise PolicyError(f"breakers.{dependency}", "is required (one breaker per dependency)")
        breakers[dependency] = _breaker(breakers_raw[dependency], f"breakers.{dependency}")
    for dependency in breakers_raw:
        if dependency not in DEPENDENCIES:
            raise PolicyError(
                f"breakers.{dependency}",
                f"unknown dependency (one of {', '.join(DEPENDENCIES)})",
            )
    features_raw = _mapping(raw.get("features"), "features")
    features = {
        str(feature): _feature(str(feature), spec, f"features.{feature}")
        for feature, spec in features_raw.items()
    }
    if not features:
        raise PolicyError("features", "must list the features")
    return PolicyConfig(
        name=str(raw.get("name", name)),
        breakers=breakers,
        features=features,
        levels=_levels(raw.get("levels", {}), "levels"),
        recovery=_recovery(raw.get("recovery", {}), "recovery"),
    )
