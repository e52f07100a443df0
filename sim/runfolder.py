"""The predicted side of a run folder: provenance for summary.json, and writing the tables
that the replications produced (the schema itself is `reports.runfolder`'s)."""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from reports.runfolder import FAULTS_FILE, STATES_FILE, write_summary, write_table

_PACKAGES = ("reslab", "simpy", "numpy", "scipy", "pyarrow", "pandas")


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def file_hash(path: str | Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tables(run_dir: Path, states: Sequence[pa.Table], faults: Sequence[pa.Table]) -> None:
    write_table(run_dir, STATES_FILE, pa.concat_tables(states))
    write_table(run_dir, FAULTS_FILE, pa.concat_tables(faults))


def predicted_summary(
    *,
    scenario: Any,
    scenario_path: Path | None,
    scenario_hash: str,
    policy_name: str,
    policy_path: Path,
    calibration_path: Path | None,
    calibration_hash: str,
    seed: int,
    replications: int,
    metrics: Mapping[str, Any],
    per_replication: Sequence[Mapping[str, Any]],
    wall_s: float,
) -> dict[str, Any]:
    return {
        "source": "predicted",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": {
            "name": scenario.name,
            "path": str(scenario_path) if scenario_path else None,
            "hash": scenario_hash,
            "duration_s": float(scenario.duration_s),
            "warmup_s": float(scenario.warmup),
            "slo": scenario.slo.model_dump(),
            "tolerance": scenario.tolerance.model_dump(),
        },
        "policy": {"name": policy_name, "path": str(policy_path), "hash": file_hash(policy_path)},
        "calibration": {
            "path": str(calibration_path) if calibration_path else None,
            "hash": calibration_hash,
        },
        "software": software_versions(),
        "command": " ".join(sys.argv),
        "seed": seed,
        "replications": replications,
        "wall_s": round(wall_s, 3),
        "metrics": dict(metrics),
        # The one-second level samples are in states.parquet; the summary keeps the rest.
        "per_replication": [
            {key: value for key, value in row.items() if key != "levels"} for row in per_replication
        ],
    }


def write_predicted_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    return write_summary(run_dir, summary)
