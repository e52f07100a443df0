"""Small builders shared by the policy core's tests."""

from __future__ import annotations

from dataclasses import replace

from engine.policy import BreakerConfig, PolicyConfig
from engine.policyfile import load_policy

DEFAULT = load_policy()


def breaker_config(**changes: object) -> BreakerConfig:
    """The default policy's postgres breaker, with the given fields changed."""
    return replace(DEFAULT.breakers["postgres"], **changes)  # type: ignore[arg-type]


def policy_with(dependency: str, **changes: object) -> PolicyConfig:
    breakers = dict(DEFAULT.breakers)
    breakers[dependency] = replace(breakers[dependency], **changes)  # type: ignore[arg-type]
    return replace(DEFAULT, breakers=breakers)
