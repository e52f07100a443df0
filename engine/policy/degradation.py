"""Degradation levels: worsen at once, improve one level at a time after a dwell."""

from __future__ import annotations

from engine.policy.config import Level, LevelsConfig
from engine.policy.events import LevelChange


class DegradationController:
    """Turns a stream of health scores into a level (POLICY.md, "Degradation levels").

    Worsening is immediate and may skip levels. Improving moves one level at a time, and only
    after the score has stayed at or above the next level's threshold plus the hysteresis for
    the whole dwell; each further step needs a dwell of its own, counted from the previous step.
    """

    __slots__ = ("_improving_since", "config", "level")

    def __init__(self, config: LevelsConfig, level: Level = Level.OPTIMAL) -> None:
        self.config = config
        self.level = level
        self._improving_since: float | None = None

    def update(self, score: float, now: float) -> LevelChange | None:
        target = self.config.level_for(score)
        current = self.level
        if target > current:
            self._improving_since = None
            return self._move(target, score, now)
        if target == current:
            self._improving_since = None
            return None
        better = Level(current - 1)
        if score < self.config.threshold(better) + self.config.hysteresis:
            self._improving_since = None
            return None
        if self._improving_since is None:
            self._improving_since = now
        if now - self._improving_since < self.config.dwell_s:
            return None
        # The next step's dwell starts now, if the score still holds then.
        self._improving_since = now
        return self._move(better, score, now)

    @property
    def improving_since(self) -> float | None:
        return self._improving_since

    def _move(self, target: Level, score: float, now: float) -> LevelChange:
        event = LevelChange(at=now, from_level=self.level, to_level=target, score=score)
        self.level = target
        return event
