"""The run folder: one schema for predicted (simulated) and measured (Locust) runs.

A run folder holds four files (ARCHITECTURE.md, "One result schema"):

- ``requests.parquet``: a row per request (`REQUESTS_SCHEMA`);
- ``states.parquet``: breaker transitions, level and feature changes, and a sample of the
  health score, level and recovery ETA each second (`STATES_SCHEMA`);
- ``faults.parquet``: the faults as actually applied (`FAULTS_SCHEMA`);
- ``summary.json``: the metrics of `reports.summary`, with provenance.

All times are seconds from the start of the load (t = 0), on the run's own clock; latencies
are milliseconds measured from the request's *scheduled* time (MEASURING.md). Both sides
write through this module and reports read through it, so the schema lives here only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.policy import FEATURE_NAMES

REQUESTS_FILE = "requests.parquet"
STATES_FILE = "states.parquet"
FAULTS_FILE = "faults.parquet"
SUMMARY_FILE = "summary.json"

SOURCES = ("predicted", "measured")

# How a request ended. ok: served by the primary path; fallback / stale: served, by a
# fallback or from a stale copy (X-Served-By); shed: 503 because the policy had the feature
# off; rejected: 503 because a breaker refused a call the path needed; error: a failure
# (a dependency call failed and nothing could serve instead, or any other non-2xx).
OUTCOMES: tuple[str, ...] = ("ok", "fallback", "stale", "shed", "rejected", "error")
OUTCOME_CODES: Mapping[str, int] = {name: code for code, name in enumerate(OUTCOMES)}
SERVED_OUTCOMES = frozenset({"ok", "fallback", "stale"})
UNSERVED_OUTCOMES = frozenset({"shed", "rejected", "error"})

FEATURE_CODES: Mapping[str, int] = {name: code for code, name in enumerate(FEATURE_NAMES)}

_FEATURE_TYPE = pa.dictionary(pa.int8(), pa.string())
_OUTCOME_TYPE = pa.dictionary(pa.int8(), pa.string())
_SOURCE_TYPE = pa.dictionary(pa.int8(), pa.string())

REQUESTS_SCHEMA = pa.schema(
    [
        pa.field("replication", pa.int32(), nullable=False),
        pa.field("scheduled", pa.float64(), nullable=False),  # when it was due to be sent
        pa.field("start", pa.float64(), nullable=False),  # when it was sent
        pa.field("end", pa.float64(), nullable=False),  # when its response was complete
        pa.field("latency_ms", pa.float64(), nullable=False),  # end − scheduled
        pa.field("feature", _FEATURE_TYPE, nullable=False),
        pa.field("status", pa.int16(), nullable=False),  # HTTP status (0: no response)
        pa.field("outcome", _OUTCOME_TYPE, nullable=False),
        pa.field("source", _SOURCE_TYPE, nullable=False),
        # The engine's Server-Timing header ("postgres;dur=3.2, redis;dur=0.4"); measured
        # runs only.
        pa.field("server_timing", pa.string(), nullable=True),
    ]
)

STATE_KINDS = (
    "breaker_transition",
    "level_change",
    "feature_change",
    "flag_change",
    "recovery_observed",
    "sample",
)

STATES_SCHEMA = pa.schema(
    [
        pa.field("replication", pa.int32(), nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # one of STATE_KINDS
        # The dependency (breaker transition) or feature (feature or flag change) concerned.
        pa.field("subject", pa.string(), nullable=True),
        pa.field("from_state", pa.string(), nullable=True),  # breaker state, level, or mode
        pa.field("to_state", pa.string(), nullable=True),
        pa.field("level", pa.string(), nullable=True),  # the level after the event
        pa.field("score", pa.float64(), nullable=True),  # the health score after it
        pa.field("eta_s", pa.float64(), nullable=True),  # the recovery ETA after it
        pa.field("reason", pa.string(), nullable=True),
    ]
)

FAULTS_SCHEMA = pa.schema(
    [
        pa.field("replication", pa.int32(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),  # position in the scenario's faults
        pa.field("target", pa.string(), nullable=False),
        pa.field("toxic", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("toxicity", pa.float64(), nullable=False),
        pa.field("attributes", pa.string(), nullable=False),  # JSON, as Toxiproxy took them
        pa.field("scheduled_at", pa.float64(), nullable=False),
        pa.field("scheduled_end", pa.float64(), nullable=False),
        pa.field("applied_at", pa.float64(), nullable=True),  # when the change was accepted
        pa.field("removed_at", pa.float64(), nullable=True),
    ]
)


# --- states rows ---------------------------------------------------------------------------


def _forced_label(value: Any) -> str:
    return {True: "on", False: "off", None: "cleared"}.get(value, str(value))


def event_row(
    event: Mapping[str, Any], t: float, replication: int, level: str | None
) -> dict[str, Any]:
    """A `STATES_SCHEMA` row for one policy event in its `to_dict()` form (the engine's
    `/resilience/events` serves the same form): both sides write transitions alike.
    `level` is the level after the event; score and ETA are left to the caller."""
    kind = str(event.get("kind"))
    row: dict[str, Any] = {
        "replication": replication,
        "t": t,
        "kind": kind,
        "subject": None,
        "from_state": None,
        "to_state": None,
        "level": level,
        "score": None,
        "eta_s": None,
        "reason": None,
    }
    if kind == "breaker_transition":
        row.update(
            subject=event.get("dependency"),
            from_state=event.get("from_state"),
            to_state=event.get("to_state"),
            reason=event.get("reason"),
        )
    elif kind == "level_change":
        row.update(
            from_state=event.get("from_level"),
            to_state=event.get("to_level"),
            level=event.get("to_level"),
            score=event.get("score"),
        )
    elif kind == "feature_change":
        row.update(
            subject=event.get("feature"),
            from_state=event.get("from_mode"),
            to_state=event.get("to_mode"),
            reason=event.get("reason"),
        )
    elif kind == "flag_change":
        row.update(subject=event.get("feature"), to_state=_forced_label(event.get("forced")))
    elif kind == "recovery_observed":
        row.update(
            reason=(
                f"predicted {float(event.get('predicted_s', 0.0)):g} s, took "
                f"{float(event.get('actual_s', 0.0)):g} s "
                f"({event.get('confidence')} confidence)"
            )
        )
    return row


# --- writing -------------------------------------------------------------------------------


def new_run_dir(root: str | Path, scenario_name: str, now: datetime | None = None) -> Path:
    """A fresh `<root>/<scenario>-<UTC timestamp>/`, never one that exists already."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = Path(root) / f"{scenario_name}-{stamp}"
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = Path(f"{base}-{suffix}")
    candidate.mkdir(parents=True)
    return candidate


def _dictionary(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(codes, dtype=np.int8)), pa.array(list(names), pa.string())
    )


def requests_table(
    *,
    replication: np.ndarray | int,
    scheduled: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    feature_codes: np.ndarray,
    status: np.ndarray,
    outcome_codes: np.ndarray,
    source: str,
    server_timing: Sequence[str | None] | None = None,
) -> pa.Table:
    """Build a requests table from columns; features and outcomes as codes of
    `FEATURE_CODES` and `OUTCOME_CODES`."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} (got {source!r})")
    rows = len(scheduled)
    replications = (
        np.full(rows, replication, dtype=np.int32)
        if isinstance(replication, int)
        else np.asarray(replication, dtype=np.int32)
    )
    scheduled = np.asarray(scheduled, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    columns = [
        pa.array(replications),
        pa.array(scheduled),
        pa.array(np.asarray(start, dtype=np.float64)),
        pa.array(end),
        pa.array((end - scheduled) * 1000.0),
        _dictionary(feature_codes, FEATURE_NAMES),
        pa.array(np.asarray(status, dtype=np.int16)),
        _dictionary(outcome_codes, OUTCOMES),
        _dictionary(np.zeros(rows, dtype=np.int8), (source,)),
        pa.array(list(server_timing) if server_timing is not None else [None] * rows, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=REQUESTS_SCHEMA)


def _rows_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    listed = list(rows)
    columns = {name: [row.get(name) for row in listed] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def states_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return _rows_table(rows, STATES_SCHEMA)


def faults_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return _rows_table(rows, FAULTS_SCHEMA)


class RequestsWriter:
    """Appends requests tables (a replication at a time) to one `requests.parquet`."""

    def __init__(self, run_dir: Path) -> None:
        self._writer = pq.ParquetWriter(run_dir / REQUESTS_FILE, REQUESTS_SCHEMA)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.cast(REQUESTS_SCHEMA))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> RequestsWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_table(run_dir: Path, name: str, table: pa.Table) -> None:
    pq.write_table(table, run_dir / name)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFolder:
    path: Path
    requests: pd.DataFrame
    states: pd.DataFrame
    faults: pd.DataFrame
    summary: dict[str, Any]


def read_requests(run_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(Path(run_dir) / REQUESTS_FILE, columns=columns).to_pandas()
    return frame


def read_run(run_dir: str | Path) -> RunFolder:
    path = Path(run_dir)
    missing = [
        name for name in (REQUESTS_FILE, STATES_FILE, FAULTS_FILE) if not (path / name).exists()
    ]
    if missing:
        raise FileNotFoundError(f"{path}: not a run folder (missing {', '.join(missing)})")
    summary_path = path / SUMMARY_FILE
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    return RunFolder(
        path=path,
        requests=read_requests(path),
        states=pq.read_table(path / STATES_FILE).to_pandas(),
        faults=pq.read_table(path / FAULTS_FILE).to_pandas(),
        summary=summary,
    )


_TIMING_ENTRY = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*;\s*dur=([0-9.eE+-]+)")


def parse_server_timing(header: str | float | None) -> dict[str, float]:
    """``"postgres;dur=3.2, redis;dur=0.4"`` → ``{"postgres": 3.2, "redis": 0.4}`` (ms).

    A missing header reads as nothing spent (pandas gives a missing string as NaN)."""
    if not isinstance(header, str) or not header:
        return {}
    spent: dict[str, float] = {}
    for entry in header.split(","):
        match = _TIMING_ENTRY.match(entry)
        if match:
            spent[match[1]] = spent.get(match[1], 0.0) + float(match[2])
    return spent
