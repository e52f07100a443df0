"""What a load run is told through its environment, resolved in one place.

Locust runs the locustfile in processes of its own (a master and workers, possibly on other
machines), so everything a run needs beyond Locust's own options comes from environment
variables. Every variable is optional:

=========================  ========================================================================
variable                   meaning
=========================  ========================================================================
``RESLAB_SCENARIO``        a scenario file, a catalog name (``postgres-outage``) or a profile name
                           of `loadtests.shapes.PROFILES` (``steps``); default ``baseline``, the
                           default retail mix at 200 req/s
``RESLAB_API_KEY``         the engine's API key (``X-API-Key``)
``RESLAB_STAGING``         a ``staging.json`` (or its folder): the API key and the engine's URL when
                           they are not given otherwise (``--host`` wins over the file)
``RESLAB_RUN_DIR``         the run folder to record into; default a fresh
                           ``<RESLAB_RUNS_ROOT>/<scenario>-<UTC stamp>/`` per test start
``RESLAB_RUNS_ROOT``       where fresh run folders go (default ``runs``)
``RESLAB_DURATION``        overrides the load's length, in seconds (or ``30s``, ``2m``)
``RESLAB_T0_EPOCH``        the wall-clock time (Unix seconds) of the load's t = 0, for a campaign
                           that schedules its faults first; default: the test start plus
                           ``RESLAB_START_LEAD``
``RESLAB_START_LEAD``      seconds between the test start and t = 0, so that every generator has
                           its schedule before the first arrival (default 0.25 s, 1 s with workers)
``RESLAB_SEED``            overrides the scenario's seed
``RESLAB_LATE_MS``         a send more than this many ms after its scheduled time is *late*
                           (default 5 ms)
``RESLAB_REQUEST_TIMEOUT`` the client's timeout per request in seconds (default 15 s, more than the
                           engine's longest dependency timeout)
``RESLAB_SEED_SKUS``       how many SKUs the engine seeded (default 10,000; the engine reads the
                           same variable)
=========================  ========================================================================
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenarios import Scenario, ScenarioError, load_scenario, parse_duration, resolve_scenario_path

DEFAULT_SCENARIO = "baseline"
DEFAULT_LATE_THRESHOLD_S = 0.005
# The engine answers within its longest call timeout (the LLM's 10 s) plus its own work.
DEFAULT_REQUEST_TIMEOUT_S = 15.0
DEFAULT_CATALOG_SKUS = 10_000
DEFAULT_RUNS_ROOT = "runs"
LOCAL_START_LEAD_S = 0.25
# A master sends the schedule to its workers before it spawns them; a second covers the
# messages and the spawning on a busy machine.
DISTRIBUTED_START_LEAD_S = 1.0

STAGING_FILE = "staging.json"


class LoadConfigError(ValueError):
    """An environment variable of the load run is unusable; the message names it."""


@dataclass(frozen=True, slots=True)
class StagingInfo:
    """What a load run needs from a staging stack's ``staging.json``."""

    engine_url: str | None
    api_key: str | None


def read_staging(path: str | Path) -> StagingInfo:
    """The engine URL and first API key recorded in a ``staging.json`` (or its folder)."""
    file = Path(path)
    if file.is_dir():
        file = file / STAGING_FILE
    try:
        data: Any = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LoadConfigError(f"RESLAB_STAGING: cannot read {file}: {exc}") from exc
    components = data.get("components") or {}
    engine = components.get("engine") or {}
    keys = (data.get("keys") or {}).get("api_keys") or []
    return StagingInfo(
        engine_url=str(engine["url"]) if engine.get("url") else None,
        api_key=str(keys[0]) if keys else None,
    )


def resolve_scenario(reference: str | None) -> tuple[Scenario, str]:
    """The scenario named by `reference` (a path, a catalog name or a profile name) and a
    description of where it came from; the default scenario when `reference` is empty."""
    from loadtests.shapes import PROFILES, profile_scenario

    name = reference or DEFAULT_SCENARIO
    if name in PROFILES and not Path(name).is_file():
        return profile_scenario(name), f"profile {name}"
    try:
        path = resolve_scenario_path(name)
    except ScenarioError as exc:
        raise LoadConfigError(f"RESLAB_SCENARIO: {exc}") from exc
    return load_scenario(path), str(path.resolve())


def _float(environ: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise LoadConfigError(f"{name}: not a number: {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise LoadConfigError(f"{name}: must be a number ≥ {minimum:g} (got {raw!r})")
    return value


def _duration(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise LoadConfigError(f"{name}: {exc}") from None
    if seconds <= 0:
        raise LoadConfigError(f"{name}: must be longer than 0 (got {raw!r})")
    return seconds


def _integer(environ: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise LoadConfigError(f"{name}: not a whole number: {raw!r}") from None
    if value < minimum:
        raise LoadConfigError(f"{name}: must be ≥ {minimum} (got {raw!r})")
    return value


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """A load run's settings, from the environment (see the module docstring)."""

    scenario: Scenario
    scenario_source: str
    api_key: str | None
    staging_host: str | None
    run_dir: Path | None
    runs_root: Path
    duration_override_s: float | None
    t0_epoch: float | None
    start_lead_s: float | None
    seed_override: int | None
    late_threshold_s: float
    request_timeout_s: float
    catalog_skus: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadSettings:
        env = os.environ if environ is None else environ
        scenario, source = resolve_scenario(env.get("RESLAB_SCENARIO", "").strip() or None)
        staging = (
            read_staging(env["RESLAB_STAGING"])
            if env.get("RESLAB_STAGING", "").strip()
            else StagingInfo(None, None)
        )
        api_key = env.get("RESLAB_API_KEY", "").strip() or staging.api_key
        run_dir = env.get("RESLAB_RUN_DIR", "").strip()
        t0 = env.get("RESLAB_T0_EPOCH", "").strip()
        lead = env.get("RESLAB_START_LEAD", "").strip()
        skus = _integer(env, "RESLAB_SEED_SKUS", minimum=1)
        return cls(
            scenario=scenario,
            scenario_source=source,
            api_key=api_key or None,
            staging_host=staging.engine_url,
            run_dir=Path(run_dir) if run_dir else None,
            runs_root=Path(env.get("RESLAB_RUNS_ROOT", "").strip() or DEFAULT_RUNS_ROOT),
            duration_override_s=_duration(env, "RESLAB_DURATION"),
            t0_epoch=_float(env, "RESLAB_T0_EPOCH", 0.0, minimum=0.0) if t0 else None,
            start_lead_s=_float(env, "RESLAB_START_LEAD", 0.0, minimum=0.0) if lead else None,
            seed_override=_integer(env, "RESLAB_SEED", minimum=0),
            late_threshold_s=_float(
                env, "RESLAB_LATE_MS", DEFAULT_LATE_THRESHOLD_S * 1000.0, minimum=0.0
            )
            / 1000.0,
            request_timeout_s=_float(
                env, "RESLAB_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT_S, minimum=0.1
            ),
            catalog_skus=skus if skus is not None else DEFAULT_CATALOG_SKUS,
        )

    @property
    def duration_s(self) -> float:
        """The length of the load: the override, else the scenario's."""
        if self.duration_override_s is not None:
            return self.duration_override_s
        return self.scenario.duration_s
