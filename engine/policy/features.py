"""The 16 features: which level and dependencies each needs, and what serves instead."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from engine.policy.config import FeatureConfig, Level
from engine.policy.events import ServeMode

# The names of POLICY.md's 16 features, in its table's order; scenarios and the simulator
# refer to features by these names.
FEATURE_NAMES: tuple[str, ...] = (
    "inventory_read",
    "dashboard_summary",
    "health_status",
    "metrics_export",
    "order_processing",
    "inventory_write",
    "product_search",
    "pricing_update",
    "invoice_upload",
    "stock_timeline",
    "ai_pricing_suggestion",
    "report_export",
    "complex_analytics",
    "ai_recommendations",
    "ai_invoice_enhancement",
    "batch_import",
)


@dataclass(frozen=True, slots=True)
class FeatureDecision:
    feature: str
    mode: ServeMode
    reason: str
    # Seconds until the feature is expected back, for a `Retry-After`; 0 when served.
    retry_after_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "mode": self.mode.value,
            "on": self.mode is ServeMode.PRIMARY,
            "reason": self.reason,
            "retry_after_s": self.retry_after_s,
        }


class FeatureFlags:
    """Operators' overrides: True forces a feature on (it still obeys an OPEN breaker),
    False forces it off; a feature without an entry follows the policy."""

    __slots__ = ("_forced", "_known")

    def __init__(self, known: Collection[str]) -> None:
        self._known = frozenset(known)
        self._forced: dict[str, bool] = {}

    def get(self, feature: str) -> bool | None:
        return self._forced.get(feature)

    def set(self, feature: str, forced: bool | None) -> bool:
        """Returns whether anything changed."""
        if feature not in self._known:
            raise KeyError(f"unknown feature {feature!r}")
        if forced is None:
            return self._forced.pop(feature, None) is not None
        if self._forced.get(feature) is forced:
            return False
        self._forced[feature] = forced
        return True

    def as_dict(self) -> dict[str, bool]:
        return dict(self._forced)


class FeatureMatrix:
    """Decides how each feature is served from the level, the flags and the open breakers."""

    __slots__ = ("features",)

    def __init__(self, features: Mapping[str, FeatureConfig]) -> None:
        self.features = features

    def decide(
        self,
        feature: str,
        level: Level,
        unavailable: Collection[str],
        forced: bool | None = None,
        retry_after_s: float = 0.0,
    ) -> FeatureDecision:
        spec = self.features[feature]
        blocked = self._blocked_by(spec, level, unavailable, forced)
        if blocked is None:
            return FeatureDecision(feature, ServeMode.PRIMARY, "served")
        fallback = spec.fallback
        if fallback is not None and _fallback_available(
            fallback.needs, fallback.needs_any, unavailable
        ):
            return FeatureDecision(
                feature, ServeMode.FALLBACK, f"{blocked}; {fallback.description}", retry_after_s
            )
        return FeatureDecision(feature, ServeMode.OFF, blocked, retry_after_s)

    def decide_all(
        self,
        level: Level,
        unavailable: Collection[str],
        flags: FeatureFlags | None = None,
        retry_after_s: float = 0.0,
    ) -> dict[str, FeatureDecision]:
        return {
            name: self.decide(
                name, level, unavailable, flags.get(name) if flags else None, retry_after_s
            )
            for name in self.features
        }

    @staticmethod
    def _blocked_by(
        spec: FeatureConfig, level: Level, unavailable: Collection[str], forced: bool | None
    ) -> str | None:
        if forced is False:
            return "forced off by a flag"
        if forced is not True and level > spec.worst_level:
            return f"level {level.name} is worse than {spec.worst_level.name}"
        for dependency in spec.needs:
            if dependency in unavailable:
                return f"{dependency} breaker is open"
        return None


def _fallback_available(
    needs: tuple[str, ...], needs_any: tuple[str, ...], unavailable: Collection[str]
) -> bool:
    if any(dependency in unavailable for dependency in needs):
        return False
    return not needs_any or any(dependency not in unavailable for dependency in needs_any)
