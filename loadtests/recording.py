"""Raw recording of every request a load run sends, into the run-folder schema.

Each load-generating Locust process records into part files of its own under
``<run>/parts/``; `merge_parts` joins them into the run folder at the end (`run_load` calls it;
``python -m loadtests.recording merge RUN_DIR`` does it by hand, e.g. after copying the parts
of workers on other machines). Nothing here imports Locust.

Files of a run folder written by a load run:

- ``requests.parquet`` — a row per request (`reports.runfolder.REQUESTS_SCHEMA`, source
  ``measured``): scheduled, start and end times in seconds from t = 0; latency in ms from the
  *scheduled* time; status (0 when no answer came); outcome; the engine's ``Server-Timing``.
  In the closed model a request is scheduled when its user sends it, so scheduled = start.
- ``acked_writes.jsonl`` — one JSON object per acknowledged write (a 2xx answer to
  ``POST /api/orders`` or ``POST /api/inventory/{sku}/adjustments``): feature, idempotency
  key, the committed row's id (``order_id`` or ``movement_id``), status, whether the engine
  replayed an earlier answer, times. A campaign checks that each one is in PostgreSQL.
- ``load.json`` — the load's t = 0 as wall-clock (``t0_epoch``, Unix seconds) and, for
  processes on the same machine, as ``time.monotonic()`` (``t0_monotonic``: Linux's monotonic
  clock is shared by all processes), so the fault side can put its times on the load's clock;
  the scenario, seed, generators and, after the merge, the run's counts (``result``).
- ``parts/`` — the part files (``requests-<part>.parquet``, ``acked_writes-<part>.jsonl``) and
  each Locust process's own account (``stats-<part>.json``: sends, lateness, CPU time).

Outcomes (`classify_outcome`), from the status, ``X-Served-By`` and a 503's JSON body:

- 2xx: ``ok``, or ``fallback`` / ``stale`` as ``X-Served-By`` says;
- 503 from the engine (``{"error": "feature_unavailable", "reason": ...}``): ``shed`` when the
  policy had the feature off (its level, a flag, or a dependency it needs open — the
  `FeatureMatrix` decision), ``rejected`` when a breaker refused a call the handler needed
  (the guard's ``"<dependency> breaker is OPEN"``, state in capitals), ``error`` when a
  dependency call failed or timed out (``"call failed (...)"``, ``"call timed out"``). A body
  that states ``"outcome"`` itself is taken at its word;
- anything else — another status, no answer — ``error``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadtests.openloop import LatenessSummary, lateness_summary
from reports.runfolder import (
    OUTCOME_CODES,
    OUTCOMES,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
    RequestsWriter,
    requests_table,
)

LOAD_FILE = "load.json"
ACKED_WRITES_FILE = "acked_writes.jsonl"
PARTS_DIR = "parts"

_OK = OUTCOME_CODES["ok"]
_FALLBACK = OUTCOME_CODES["fallback"]
_STALE = OUTCOME_CODES["stale"]
_SHED = OUTCOME_CODES["shed"]
_REJECTED = OUTCOME_CODES["rejected"]
_ERROR = OUTCOME_CODES["error"]

# The guard's rejection names the breaker's state as the enum value (capitals); the feature
# matrix's "<dependency> breaker is open" (lower case) is a policy decision: shed.
_BREAKER_REJECTION = re.compile(r"\bbreaker is (?:OPEN|HALF_OPEN|FORCED_OPEN)\b")
_CALL_FAILURE = re.compile(r"^call (?:failed|timed out)")


def classify_outcome(status: int, served_by: str | None, body: bytes | None = None) -> int:
    """The outcome code (`reports.runfolder.OUTCOME_CODES`) of an answer; see the module
    docstring. `body` is only read for a 503."""
    if 200 <= status < 300:
        if served_by == "fallback":
            return _FALLBACK
        if served_by == "stale":
            return _STALE
        return _OK
    if status != 503 or not body:
        return _ERROR
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _ERROR
    if not isinstance(document, dict):
        return _ERROR
    stated = document.get("outcome")
    if isinstance(stated, str) and stated in OUTCOME_CODES:
        return OUTCOME_CODES[stated]
    reason = document.get("reason")
    if not isinstance(reason, str):
        return _ERROR
    if _CALL_FAILURE.match(reason):
        return _ERROR
    if _BREAKER_REJECTION.search(reason):
        return _REJECTED
    return _SHED


# --------------------------------------------------------------------------- recording


class RequestRecorder:
    """Buffers request rows in typed columns and writes them to one part file.

    Writing a batch takes tens of milliseconds, during which a gevent process sends nothing:
    the buffer is therefore large (`batch_rows`, 14 bytes a row plus the Server-Timing text),
    so that a run of ordinary length writes once, at its end, and only a very long or very
    fast one pays a stall mid-run (which then shows up as late sends, not as lost ones)."""

    def __init__(self, path: Path, replication: int, batch_rows: int = 250_000) -> None:
        self.path = path
        self.replication = replication
        self.batch_rows = batch_rows
        self.rows = 0
        self.dropped = 0
        self._writer: pq.ParquetWriter | None = None
        self._closed = False
        self._clear()

    def _clear(self) -> None:
        self._scheduled = array("d")
        self._start = array("d")
        self._end = array("d")
        self._feature = array("b")
        self._status = array("h")
        self._outcome = array("b")
        self._timing: list[str | None] = []

    def add(
        self,
        feature_code: int,
        scheduled: float,
        start: float,
        end: float,
        status: int,
        outcome_code: int,
        server_timing: str | None,
    ) -> None:
        if self._closed:
            # An answer that arrived after the test stopped: not part of the run.
            self.dropped += 1
            return
        self._scheduled.append(scheduled)
        self._start.append(start)
        self._end.append(end)
        self._feature.append(feature_code)
        self._status.append(status)
        self._outcome.append(outcome_code)
        self._timing.append(server_timing)
        self.rows += 1
        if len(self._timing) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self._timing:
            return
        table = requests_table(
            replication=self.replication,
            scheduled=np.frombuffer(self._scheduled, dtype=np.float64),
            start=np.frombuffer(self._start, dtype=np.float64),
            end=np.frombuffer(self._end, dtype=np.float64),
            feature_codes=np.frombuffer(self._feature, dtype=np.int8),
            status=np.frombuffer(self._status, dtype=np.int16),
            outcome_codes=np.frombuffer(self._outcome, dtype=np.int8),
            source="measured",
            server_timing=self._timing,
        )
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, REQUESTS_SCHEMA)
        self._writer.write_table(table)
        self._clear()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        if self._writer is None:
            # A part with no request still says "this process recorded nothing".
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(REQUESTS_SCHEMA.empty_table(), self.path)
        else:
            self._writer.close()
        self._closed = True


class AckedWritesLog:
    """Appends acknowledged writes to a JSON-lines part file, a line as each one arrives, so
    that what was acknowledged survives even a process that is killed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8", buffering=1)
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def part_paths(run_dir: Path, part: str) -> tuple[Path, Path, Path]:
    """A part's requests, acked-writes and stats files."""
    parts = run_dir / PARTS_DIR
    return (
        parts / f"requests-{part}.parquet",
        parts / f"acked_writes-{part}.jsonl",
        parts / f"stats-{part}.json",
    )


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write a JSON file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_load_json(run_dir: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((run_dir / LOAD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return document


# --------------------------------------------------------------------------- merging


@dataclass(frozen=True, slots=True)
class MergeSummary:
    """What the parts of a run add up to."""

    requests_path: Path
    acked_writes_path: Path
    rows: int
    parts: int
    acked_writes: int
    lateness: LatenessSummary
    outcomes: Mapping[str, int]
    process_stats: Sequence[Mapping[str, Any]]

    def counter(self, name: str) -> int:
        """The sum of a counter over the processes' stats (0 where a process has none)."""
        return sum(int(stats.get(name, 0)) for stats in self.process_stats)

    def total(self, name: str) -> float:
        return sum(float(stats.get(name, 0.0)) for stats in self.process_stats)


def _read_parts(paths: Iterable[Path]) -> pa.Table:
    tables = [pq.read_table(path).cast(REQUESTS_SCHEMA) for path in paths]
    if not tables:
        return REQUESTS_SCHEMA.empty_table()
    # Dictionary columns of separate files carry their own dictionaries; unify before sorting.
    return pa.concat_tables(tables).unify_dictionaries().combine_chunks()


def merge_parts(run_dir: Path, late_threshold_s: float | None = None) -> MergeSummary:
    """Join the part files of `run_dir` into ``requests.parquet`` (sorted by replication and
    scheduled time) and ``acked_writes.jsonl``, and record the totals in ``load.json``.
    Idempotent: the parts stay, and merging again gives the same files."""
    parts_dir = run_dir / PARTS_DIR
    request_parts = sorted(parts_dir.glob("requests-*.parquet"))
    table = _read_parts(request_parts)
    if table.num_rows:
        order = pc.sort_indices(
            table, sort_keys=[("replication", "ascending"), ("scheduled", "ascending")]
        )
        table = table.take(order)
    requests_path = run_dir / REQUESTS_FILE
    with RequestsWriter(run_dir) as writer:
        writer.write(table)

    acked_path = run_dir / ACKED_WRITES_FILE
    acked: list[dict[str, Any]] = []
    for part in sorted(parts_dir.glob("acked_writes-*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                acked.append(json.loads(line))
    acked.sort(key=lambda record: (record.get("replication", 0), record.get("end", 0.0)))
    temporary = acked_path.with_name(f".{acked_path.name}.tmp")
    temporary.write_text(
        "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in acked),
        encoding="utf-8",
    )
    os.replace(temporary, acked_path)

    stats: list[dict[str, Any]] = []
    for part in sorted(parts_dir.glob("stats-*.json")):
        with contextlib.suppress(ValueError, OSError):
            stats.append(json.loads(part.read_text(encoding="utf-8")))

    load = read_load_json(run_dir) or {}
    threshold = (
        late_threshold_s
        if late_threshold_s is not None
        else float(load.get("late_threshold_s", 0.005))
    )
    scheduled = table.column("scheduled").to_numpy()
    start = table.column("start").to_numpy()
    lateness = lateness_summary(start - scheduled, threshold)
    outcome_column = table.column("outcome").combine_chunks()
    outcomes = {name: 0 for name in OUTCOMES}
    if table.num_rows:
        codes = outcome_column.indices.to_numpy(zero_copy_only=False)
        names = outcome_column.dictionary.to_pylist()
        for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
            outcomes[names[int(code)]] += int(count)

    summary = MergeSummary(
        requests_path=requests_path,
        acked_writes_path=acked_path,
        rows=table.num_rows,
        parts=len(request_parts),
        acked_writes=len(acked),
        lateness=lateness,
        outcomes=outcomes,
        process_stats=stats,
    )
    if load:
        load["result"] = {
            "rows": summary.rows,
            "parts": summary.parts,
            "scheduled": summary.counter("scheduled"),
            "sent": summary.counter("sent"),
            "unanswered": summary.counter("unanswered"),
            **lateness.to_dict(),
            "outcomes": outcomes,
            "acked_writes": summary.acked_writes,
            "cpu_s": summary.total("cpu_user_s") + summary.total("cpu_system_s"),
        }
        write_json(run_dir / LOAD_FILE, load)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.recording",
        description="Merge the part files of a load run into its run folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="join parts/ into requests.parquet")
    merge.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if not (args.run_dir / PARTS_DIR).is_dir():
        print(f"{args.run_dir}: no {PARTS_DIR}/ folder to merge", file=sys.stderr)
        return 2
    summary = merge_parts(args.run_dir)
    late = summary.lateness
    print(
        f"{summary.rows} requests from {summary.parts} parts; {late.late} sent more than "
        f"{late.threshold_s * 1000:g} ms late (max {late.max_s * 1000:.1f} ms, "
        f"p99 {late.p99_s * 1000:.2f} ms); {summary.acked_writes} acknowledged writes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
