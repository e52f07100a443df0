"""Recording a replication: requests into preallocated numpy arrays, states as rows.

A simulated hour at 500 req/s is 1.8 million requests: one Python object per row would cost
gigabytes, so a request is a row index into fixed arrays that grow (by doubling) only if the
load sends more than expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from engine.policy import (
    PolicyEvent,
    ResiliencePolicy,
)
from reports.runfolder import event_row, requests_table, states_table


class RequestRecorder:
    __slots__ = ("count", "end", "feature", "outcome", "scheduled", "start", "status")

    def __init__(self, capacity: int) -> None:
        capacity = max(16, capacity)
        self.scheduled = np.empty(capacity, dtype=np.float64)
        self.start = np.empty(capacity, dtype=np.float64)
        self.end = np.full(capacity, np.nan, dtype=np.float64)
        self.feature = np.zeros(capacity, dtype=np.int8)
        self.status = np.zeros(capacity, dtype=np.int16)
        self.outcome = np.zeros(capacity, dtype=np.int8)
        self.count = 0

    def _grow(self, needed: int) -> None:
        capacity = len(self.scheduled)
        while capacity < needed:
            capacity *= 2
        for name in ("scheduled", "start", "end", "feature", "status", "outcome"):
            old: np.ndarray = getattr(self, name)
            new = np.full(capacity, np.nan) if name == "end" else np.zeros(capacity, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def open_batch(self, scheduled: np.ndarray, features: np.ndarray) -> int:
        """Rows for requests sent on schedule; returns the first row's index."""
        first = self.count
        last = first + len(scheduled)
        if last > len(self.scheduled):
            self._grow(last)
        self.scheduled[first:last] = scheduled
        self.start[first:last] = scheduled
        self.feature[first:last] = features
        self.count = last
        return first

    def open(self, scheduled: float, start: float, feature: int) -> int:
        index = self.count
        if index >= len(self.scheduled):
            self._grow(index + 1)
        self.scheduled[index] = scheduled
        self.start[index] = start
        self.feature[index] = feature
        self.count = index + 1
        return index

    def close(self, index: int, end: float, status: int, outcome: int) -> None:
        self.end[index] = end
        self.status[index] = status
        self.outcome[index] = outcome

    def table(self, replication: int) -> pa.Table:
        """The finished requests (a request still in flight when the run stopped has none)."""
        rows = slice(0, self.count)
        done = ~np.isnan(self.end[rows])
        return requests_table(
            replication=replication,
            scheduled=self.scheduled[rows][done],
            start=self.start[rows][done],
            end=self.end[rows][done],
            feature_codes=self.feature[rows][done],
            status=self.status[rows][done],
            outcome_codes=self.outcome[rows][done],
            source="predicted",
        )

    @property
    def nbytes(self) -> int:
        return sum(
            array.nbytes
            for array in (
                self.scheduled,
                self.start,
                self.end,
                self.feature,
                self.status,
                self.outcome,
            )
        )


class StateRecorder:
    """Listens to the policy's events and samples its score, level and ETA each second."""

    __slots__ = ("_policy", "replication", "rows")

    def __init__(self, policy: ResiliencePolicy, replication: int) -> None:
        self._policy = policy
        self.replication = replication
        self.rows: list[dict[str, Any]] = []
        policy.subscribe(self.on_event)

    def _with_policy_readings(self, row: dict[str, Any]) -> dict[str, Any]:
        policy = self._policy
        if row["score"] is None:
            row["score"] = policy.score
        row["eta_s"] = policy.eta.seconds
        return row

    def on_event(self, event: PolicyEvent) -> None:
        row = event_row(event.to_dict(), event.at, self.replication, self._policy.level.name)
        self.rows.append(self._with_policy_readings(row))

    def sample(self, t: float) -> None:
        row = event_row({"kind": "sample"}, t, self.replication, self._policy.level.name)
        self.rows.append(self._with_policy_readings(row))

    def table(self) -> pa.Table:
        return states_table(self.rows)
