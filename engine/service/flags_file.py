"""The operator's flags file, applied at start (RESLAB_FLAGS_FILE).

    features:                  # true forces on, false forces off, null follows the policy
      ai_recommendations: false
    breakers:                  # FORCED_OPEN | DISABLED | METRICS_ONLY | null
      s3: METRICS_ONLY

A bad file stops the start, naming the entry; a half-applied set of flags would be worse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engine.policy import BreakerState, ResiliencePolicy
from engine.policy.breaker import FORCED_STATES


class FlagsFileError(ValueError):
    pass


def _section(raw: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    section = raw.get(name) or {}
    if not isinstance(section, Mapping):
        raise FlagsFileError(f"{path}: {name}: must be a mapping")
    return section


def apply_flags_file(policy: ResiliencePolicy, path: Path) -> None:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise FlagsFileError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FlagsFileError(f"{path}: is not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise FlagsFileError(f"{path}: must be a mapping with 'features' and 'breakers'")
    unknown = set(raw) - {"features", "breakers"}
    if unknown:
        raise FlagsFileError(f"{path}: {sorted(unknown)[0]}: unknown section")
    features = _section(raw, "features", path)
    breakers = _section(raw, "breakers", path)
    for feature, forced in features.items():
        if feature not in policy.config.features:
            raise FlagsFileError(f"{path}: features.{feature}: unknown feature")
        if forced is not None and not isinstance(forced, bool):
            raise FlagsFileError(f"{path}: features.{feature}: must be true, false or null")
    states: dict[str, BreakerState | None] = {}
    for dependency, state in breakers.items():
        if dependency not in policy.config.breakers:
            raise FlagsFileError(f"{path}: breakers.{dependency}: unknown dependency")
        if state is None:
            states[dependency] = None
            continue
        try:
            states[dependency] = BreakerState(str(state).upper())
        except ValueError:
            states[dependency] = None
        if states[dependency] not in FORCED_STATES:
            names = ", ".join(sorted(forced.value for forced in FORCED_STATES))
            raise FlagsFileError(f"{path}: breakers.{dependency}: must be one of {names} or null")
    for feature, forced in features.items():
        policy.set_flag(feature, forced)
    for dependency, target in states.items():
        policy.force_breaker(dependency, target)
