"""The plan of one load run, decided once and shared by every Locust process.

The master (or the single local process) makes the plan when the test starts: the scenario,
the load's t = 0 on the wall clock, the seed, the run folder, and which share of the schedule
each generating process takes. It writes the plan to ``load.json`` (without the API key) and,
in distributed mode, sends it to every worker as a Locust message, so that workers on other
machines need neither the scenario file nor the same environment.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.config import LoadSettings
from loadtests.shapes import LoadProfile, Shape, shape_for
from reports.runfolder import new_run_dir
from scenarios import OpenLoad, Scenario, parse_scenario, scenario_hash

PLAN_MESSAGE = "reslab_plan"
GENERATOR_DONE_MESSAGE = "reslab_generator_done"
PLAN_FORMAT = 1


@dataclass(frozen=True, slots=True)
class LoadPlan:
    scenario: Scenario
    scenario_source: str
    run_dir: Path
    run_id: str
    replication: int
    seed: int
    t0_epoch: float
    duration_s: float
    drain_s: float
    late_threshold_s: float
    request_timeout_s: float
    catalog_skus: int
    generators: int
    # Locust client id of each generating process → its slot in [0, generators).
    slots: Mapping[str, int] = field(default_factory=dict)
    host: str | None = None
    api_key: str | None = None

    @property
    def is_open(self) -> bool:
        return isinstance(self.scenario.load, OpenLoad)

    @property
    def profile(self) -> LoadProfile:
        """The target rate over time (open loads only)."""
        load = self.scenario.load
        if not isinstance(load, OpenLoad):
            raise TypeError(f"{self.scenario.name}: a closed load has no target rate")
        return LoadProfile.from_load(load, self.duration_s)

    def shape(self) -> Shape:
        return shape_for(self.scenario, self.duration_s, self.drain_s)

    def slot_of(self, process_id: str) -> int | None:
        return self.slots.get(process_id)

    def t0_monotonic(self) -> float:
        """t = 0 on this process's `time.monotonic()` clock."""
        return time.monotonic() + (self.t0_epoch - time.time())

    def key_prefix(self, slot: int) -> str:
        """The start of the idempotency keys of one generator: unique to the run."""
        return f"{self.run_id}-r{self.replication}-g{slot}"

    def request_seed(self, slot: int, user: int = 0) -> str:
        """The seed of a generator's (or closed-model user's) request draws."""
        return f"{self.seed}/{self.replication}/{slot}/{user}"

    # ---- the message to workers

    def to_message(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "scenario": self.scenario.model_dump(mode="json", by_alias=True),
            "scenario_source": self.scenario_source,
            "run_dir": str(self.run_dir),
            "run_id": self.run_id,
            "replication": self.replication,
            "seed": self.seed,
            "t0_epoch": self.t0_epoch,
            "duration_s": self.duration_s,
            "drain_s": self.drain_s,
            "late_threshold_s": self.late_threshold_s,
            "request_timeout_s": self.request_timeout_s,
            "catalog_skus": self.catalog_skus,
            "generators": self.generators,
            "slots": dict(self.slots),
            "host": self.host,
            "api_key": self.api_key,
        }

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> LoadPlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unknown load plan format {data.get('format')!r}")
        return cls(
            scenario=parse_scenario(data["scenario"], source="the master's plan"),
            scenario_source=str(data["scenario_source"]),
            run_dir=Path(data["run_dir"]),
            run_id=str(data["run_id"]),
            replication=int(data["replication"]),
            seed=int(data["seed"]),
            t0_epoch=float(data["t0_epoch"]),
            duration_s=float(data["duration_s"]),
            drain_s=float(data["drain_s"]),
            late_threshold_s=float(data["late_threshold_s"]),
            request_timeout_s=float(data["request_timeout_s"]),
            catalog_skus=int(data["catalog_skus"]),
            generators=int(data["generators"]),
            slots={str(k): int(v) for k, v in (data.get("slots") or {}).items()},
            host=data.get("host"),
            api_key=data.get("api_key"),
        )

    # ---- load.json

    def load_document(self) -> dict[str, Any]:
        """What ``load.json`` records (never the API key)."""
        model = "open" if self.is_open else "closed"
        document: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "scenario": self.scenario.name,
            "scenario_source": self.scenario_source,
            "scenario_hash": scenario_hash(self.scenario),
            "model": model,
            "run_id": self.run_id,
            "replication": self.replication,
            "seed": self.seed,
            "t0_epoch": self.t0_epoch,
            "t0_utc": datetime.fromtimestamp(self.t0_epoch, UTC).isoformat(timespec="milliseconds"),
            "t0_monotonic": self.t0_monotonic(),
            "duration_s": self.duration_s,
            "drain_s": self.drain_s,
            "late_threshold_s": self.late_threshold_s,
            "request_timeout_s": self.request_timeout_s,
            "generators": self.generators,
            "host": self.host,
            "catalog_skus": self.catalog_skus,
        }
        if self.is_open:
            profile = self.profile
            document["target"] = {
                "expected_requests": profile.expected_requests,
                "mean_rate": profile.mean_rate,
                "max_rate": profile.max_rate,
            }
        return document


def choose_seed(settings: LoadSettings) -> int:
    if settings.seed_override is not None:
        return settings.seed_override
    if settings.scenario.seed is not None:
        return settings.scenario.seed
    return secrets.randbelow(2**31)


def make_plan(
    settings: LoadSettings,
    *,
    generators: int,
    slots: Mapping[str, int],
    replication: int,
    run_dir: Path | None,
    host: str | None,
    start_lead_s: float,
    drain_s: float | None = None,
) -> LoadPlan:
    """The plan for a test that starts now. `run_dir` None: a fresh folder under the runs
    root; t = 0 is `settings.t0_epoch` when given, else now plus `start_lead_s`."""
    folder = (
        run_dir if run_dir is not None else new_run_dir(settings.runs_root, settings.scenario.name)
    )
    folder.mkdir(parents=True, exist_ok=True)
    t0 = settings.t0_epoch if settings.t0_epoch is not None else time.time() + start_lead_s
    return LoadPlan(
        scenario=settings.scenario,
        scenario_source=settings.scenario_source,
        run_dir=folder.resolve(),
        run_id=secrets.token_hex(6),
        replication=replication,
        seed=choose_seed(settings),
        t0_epoch=t0,
        duration_s=settings.duration_s,
        # Every answer is in within the client's timeout; a second more for the last ones.
        drain_s=drain_s if drain_s is not None else settings.request_timeout_s + 1.0,
        late_threshold_s=settings.late_threshold_s,
        request_timeout_s=settings.request_timeout_s,
        catalog_skus=settings.catalog_skus,
        generators=generators,
        slots=dict(slots),
        host=host,
        api_key=settings.api_key,
    )
