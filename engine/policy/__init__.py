"""The pure policy core: breakers, health score, levels, features, flags, recovery ETA.

No I/O, no asyncio, no clock or randomness of its own: every decision reads time from an
injected `Clock`, so the engine, the simulator and the tests run the very same objects.
"""

from engine.policy.breaker import (
    BreakerSnapshot,
    CircuitBreaker,
    Outcome,
    Permit,
    Rejected,
)
from engine.policy.clock import Clock, ManualClock
from engine.policy.config import (
    DEPENDENCIES,
    BreakerConfig,
    FallbackConfig,
    FeatureConfig,
    Level,
    LevelsConfig,
    PolicyConfig,
    PolicyError,
    RecoveryConfig,
    policy_from_mapping,
)
from engine.policy.degradation import DegradationController
from engine.policy.events import (
    BreakerState,
    BreakerTransition,
    FeatureChange,
    FlagChange,
    LevelChange,
    PolicyEvent,
    RecoveryObserved,
    ServeMode,
)
from engine.policy.explain import ExplainRow, explain
from engine.policy.features import FEATURE_NAMES, FeatureDecision, FeatureFlags, FeatureMatrix
from engine.policy.health import dependency_health, health_score
from engine.policy.recovery import RecoveryEstimator, RecoveryEta
from engine.policy.resilience import PolicyStatus, ResiliencePolicy

__all__ = [
    "DEPENDENCIES",
    "FEATURE_NAMES",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "Clock",
    "DegradationController",
    "ExplainRow",
    "FallbackConfig",
    "FeatureChange",
    "FeatureConfig",
    "FeatureDecision",
    "FeatureFlags",
    "FeatureMatrix",
    "FlagChange",
    "Level",
    "LevelChange",
    "LevelsConfig",
    "ManualClock",
    "Outcome",
    "Permit",
    "PolicyConfig",
    "PolicyError",
    "PolicyEvent",
    "PolicyStatus",
    "RecoveryConfig",
    "RecoveryEstimator",
    "RecoveryEta",
    "RecoveryObserved",
    "Rejected",
    "ResiliencePolicy",
    "ServeMode",
    "dependency_health",
    "explain",
    "health_score",
    "policy_from_mapping",
]
