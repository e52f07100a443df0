"""`reslab policy explain`: what every combination of open breakers leads to."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from engine.policy.breaker import BreakerSnapshot
from engine.policy.config import Level, PolicyConfig
from engine.policy.events import BreakerState, ServeMode
from engine.policy.features import FeatureDecision, FeatureMatrix
from engine.policy.health import health_score


@dataclass(frozen=True, slots=True)
class ExplainRow:
    open_breakers: tuple[str, ...]
    score: float
    level: Level
    served: tuple[str, ...]
    fallback: tuple[str, ...]
    off: tuple[str, ...]

    @property
    def label(self) -> str:
        if not self.open_breakers:
            return "none"
        if len(self.open_breakers) == 4:
            return "all four"
        return " + ".join(self.open_breakers)

    def to_dict(self) -> dict[str, object]:
        return {
            "open": list(self.open_breakers),
            "label": self.label,
            "score": self.score,
            "level": self.level.name,
            "served": list(self.served),
            "fallback": list(self.fallback),
            "off": list(self.off),
        }


def _snapshot(dependency: str, state: BreakerState) -> BreakerSnapshot:
    return BreakerSnapshot(dependency, state, 0.0, 0.0, 0, 0, 0.0, 1.0, 0)


def explain(config: PolicyConfig) -> list[ExplainRow]:
    """Every combination of open breakers, the others CLOSED and healthy, best first.

    The level is the one the controller reaches from OPTIMAL, since worsening is immediate.
    """
    dependencies = config.dependencies
    matrix = FeatureMatrix(config.features)
    rows: list[ExplainRow] = []
    for count in range(len(dependencies) + 1):
        for open_breakers in combinations(dependencies, count):
            snapshots = [
                _snapshot(name, BreakerState.OPEN if name in open_breakers else BreakerState.CLOSED)
                for name in dependencies
            ]
            score = health_score(snapshots, config.breakers)
            level = config.levels.level_for(score)
            decisions = matrix.decide_all(level, frozenset(open_breakers))
            rows.append(
                ExplainRow(
                    open_breakers=open_breakers,
                    score=score,
                    level=level,
                    served=_names(decisions, ServeMode.PRIMARY),
                    fallback=_names(decisions, ServeMode.FALLBACK),
                    off=_names(decisions, ServeMode.OFF),
                )
            )
    rows.sort(key=lambda row: (-row.score, len(row.open_breakers)))
    return rows


def _names(decisions: dict[str, FeatureDecision], mode: ServeMode) -> tuple[str, ...]:
    return tuple(name for name, decision in decisions.items() if decision.mode is mode)
