"""What the engine said during a run, and whether it kept every write it acknowledged.

:class:`EngineObserver` records, into rows of ``states.parquet``
(:func:`reports.runfolder.states_table`, the simulator's row conventions):

- every event of ``GET /resilience/events?since=N`` — breaker transitions, level, feature
  and flag changes, observed recoveries — polled about every 0.5 s, following ``since`` so
  that none is missed or read twice; each at the run time the *engine* stamped on it, not
  when it was polled (MEASURING.md);
- a sample of ``GET /resilience/status`` each second of run time: score, level and recovery
  ETA (kind ``sample``).

Run times. The engine stamps each event with its monotonic reading and the wall time. The
wall time converts to run time through the wall clock at t = 0 (:class:`RunClock`), which
works wherever the engine runs. On the same machine, both processes read the same monotonic
clock — which, unlike the wall clock, never steps — and the engine's status carries its
monotonic reading (``at``): the observer compares it with its own once at the start and
uses the monotonic stamps when they agree (``clock_basis="auto"``).

:func:`verify_acknowledged_writes` checks afterwards that every write the load side saw
acknowledged (2xx) is in PostgreSQL, reading it directly rather than through Toxiproxy, so
that the check is not the fault's victim (POLICY.md: nothing acknowledged is lost).

The acknowledged-writes file is JSON Lines, one object per 2xx write, written by the load
side as each acknowledgement arrives (flushed per line, so that a crash keeps them)::

    {"kind": "order", "id": 1234, "idempotency_key": "run7-order-000017"}
    {"kind": "adjustment", "id": 5678, "idempotency_key": null}

- ``kind``: ``order`` (``POST /api/orders``) or ``adjustment``
  (``POST /api/inventory/{sku}/adjustments``);
- ``id``: the response's ``order_id`` (a row of ``orders``) or ``movement_id`` (a row of
  ``stock_movements``);
- ``idempotency_key``: the ``Idempotency-Key`` the request sent, if any (a row of
  ``idempotency_keys`` with scope ``order_processing`` or ``inventory_write`` and a stored
  status);
- at least one of ``id`` and ``idempotency_key``; other fields (e.g. ``t``) are ignored.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pyarrow as pa

from chaos.background import BackgroundLoop
from chaos.faults import RunClock
from reports.runfolder import event_row, states_table

__all__ = [
    "ACKED_WRITE_KINDS",
    "AckedWrite",
    "ClockBasis",
    "EngineObserver",
    "LostWrite",
    "LostWrites",
    "event_row",
    "read_acked_writes",
    "verify_acknowledged_writes",
]

ClockBasis = Literal["auto", "wall", "monotonic"]
T = TypeVar("T")

ACKED_WRITE_KINDS = ("order", "adjustment")

# Where each kind of write lands: its id's table, and its Idempotency-Key's scope.
_ID_TABLES: Mapping[str, str] = {"order": "orders", "adjustment": "stock_movements"}
_IDEMPOTENCY_SCOPES: Mapping[str, str] = {
    "order": "order_processing",
    "adjustment": "inventory_write",
}

# The engine's monotonic clock is ours when its status' reading falls inside our request's
# round trip, give or take this much.
_SAME_CLOCK_SLACK_S = 0.05
_EVENTS_PAGE = 1000


# --------------------------------------------------------------------------- events as rows


# --------------------------------------------------------------------------- the observer


class EngineObserver(BackgroundLoop):
    """Polls the engine's events and status into states rows, in a thread.

    `since`: the event sequence number to follow from; None (the default) starts after the
    engine's latest event when the observer starts, so that a long-lived staging engine's
    earlier runs are left out. Events that happen before t = 0 (during a warm-up) get
    negative run times.

    Failures to poll are kept in :attr:`poll_errors` and never stop the run; a gap in the
    event sequence (the engine's log of 10 000 events wrapped) is noted there too.
    """

    thread_name = "engine observer"
    join_timeout_s = 10.0

    def __init__(
        self,
        engine_url: str,
        api_key: str,
        run_clock: RunClock,
        *,
        replication: int = 0,
        events_every_s: float = 0.5,
        status_every_s: float = 1.0,
        since: int | None = None,
        clock_basis: ClockBasis = "auto",
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.run_clock = run_clock
        self.replication = replication
        self.events_every_s = events_every_s
        self.status_every_s = status_every_s
        self.since = since
        self.requested_basis: ClockBasis = clock_basis
        self.clock_basis: Literal["wall", "monotonic"] | None = (
            None if clock_basis == "auto" else clock_basis
        )
        self._http = httpx.Client(
            base_url=engine_url.rstrip("/"),
            headers={"X-API-Key": api_key},
            timeout=timeout,
            transport=transport,
        )
        self._mutex = threading.Lock()
        self._event_rows: list[dict[str, Any]] = []
        self._sample_rows: list[dict[str, Any]] = []
        self._level: str | None = None
        super().__init__()
        self._started = False
        self.events: list[dict[str, Any]] = []  # as the engine sent them, in order
        self.poll_errors: list[str] = []

    # ---- rows

    def rows(self) -> list[dict[str, Any]]:
        """Events (in the engine's order) and samples, merged by run time."""
        with self._mutex:
            merged = self._event_rows + self._sample_rows
        # A stable sort keeps the engine's order among events stamped alike.
        return sorted(merged, key=lambda row: row["t"])

    def table(self) -> pa.Table:
        return states_table(self.rows())

    # ---- time

    def _event_t(self, event: Mapping[str, Any]) -> float:
        if self.clock_basis == "monotonic" and event.get("at_monotonic") is not None:
            return self.run_clock.of_monotonic(float(event["at_monotonic"]))
        return self.run_clock.of_wall(float(event["at_wall"]))

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params=params or None)
        response.raise_for_status()
        return response.json()

    # ---- polling

    def _begin(self) -> None:
        """Read the status once: the starting sequence number, the starting level, and
        whether the engine's monotonic clock is ours."""
        before = time.monotonic()
        status = self._get("/resilience/status")
        after = time.monotonic()
        if self.since is None:
            self.since = int(status.get("last_event_seq", 0))
            self._level = status.get("level")
        if self.clock_basis is None:
            engine_at = float(status.get("at", float("nan")))
            same = before - _SAME_CLOCK_SLACK_S <= engine_at <= after + _SAME_CLOCK_SLACK_S
            self.clock_basis = "monotonic" if same else "wall"
        self._started = True

    def poll_events(self) -> int:
        """Fetch and record every event after :attr:`since`; returns how many."""
        if not self._started:
            self._begin()
        count = 0
        while True:
            assert self.since is not None
            answer = self._get("/resilience/events", since=self.since, limit=_EVENTS_PAGE)
            events: list[dict[str, Any]] = list(answer.get("events") or ())
            if not events:
                return count
            first = int(events[0]["seq"])
            if first > self.since + 1:
                self.poll_errors.append(
                    f"events {self.since + 1}..{first - 1} were no longer in the engine's log"
                )
            rows = self._rows_of(events)
            with self._mutex:
                self.events.extend(events)
                self._event_rows.extend(rows)
            self.since = int(events[-1]["seq"])
            count += len(events)
            if len(events) < _EVENTS_PAGE:
                return count

    def _rows_of(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rows for events in the engine's order. The engine emits one change's events
        together — breaker transitions, then the level change, then feature changes — with
        one timestamp, and the simulator's recorder stamps each of them with the level and
        score *after* the whole change; so does this, per group of events stamped alike."""
        rows: list[dict[str, Any]] = []
        start = 0
        while start < len(events):
            stamp = events[start].get("at_monotonic")
            end = start + 1
            while end < len(events) and events[end].get("at_monotonic") == stamp:
                end += 1
            group = events[start:end]
            score: float | None = None
            for event in group:
                if event.get("kind") == "level_change":
                    self._level = event.get("to_level")
                    score = event.get("score")
            for event in group:
                row = event_row(event, self._event_t(event), self.replication, self._level)
                if row["score"] is None:
                    row["score"] = score
                rows.append(row)
            start = end
        return rows

    def sample_status(self) -> dict[str, Any]:
        """Record one status sample; returns its row."""
        if not self._started:
            self._begin()
        before = time.monotonic()
        status = self._get("/resilience/status")
        after = time.monotonic()
        if self.clock_basis == "monotonic" and status.get("at") is not None:
            t = self.run_clock.of_monotonic(float(status["at"]))
        else:
            t = self.run_clock.of_monotonic((before + after) / 2.0)
        eta = status.get("recovery_eta") or {}
        row: dict[str, Any] = {
            "replication": self.replication,
            "t": t,
            "kind": "sample",
            "subject": None,
            "from_state": None,
            "to_state": None,
            "level": status.get("level"),
            "score": None if status.get("score") is None else float(status["score"]),
            "eta_s": None if eta.get("seconds") is None else float(eta["seconds"]),
            "reason": None,
        }
        with self._mutex:
            self._sample_rows.append(row)
        return row

    def _attempt(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self.poll_errors.append(
                f"t={self.run_clock.now():.1f} {what}: {type(exc).__name__}: {exc}"
            )

    def run(self) -> None:
        """Poll until stopped: events every `events_every_s`, a status sample at each whole
        multiple of `status_every_s` of run time (as the simulator samples)."""
        self._attempt("start", self._begin)
        next_events = time.monotonic()
        now_t = self.run_clock.now()
        next_sample_t = (int(now_t // self.status_every_s) + 1) * self.status_every_s
        if now_t <= 0.0:
            next_sample_t = max(next_sample_t, 0.0)
        while True:
            next_sample = self.run_clock.t0_monotonic + next_sample_t
            due = min(next_events, next_sample)
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            now = time.monotonic()
            if now >= next_sample:
                self._attempt("status", self.sample_status)
                next_sample_t += self.status_every_s
                while self.run_clock.t0_monotonic + next_sample_t <= time.monotonic():
                    next_sample_t += self.status_every_s  # a slow poll skips, not bunches
            if now >= next_events:
                self._attempt("events", self.poll_events)
                next_events = time.monotonic() + self.events_every_s
        # Transitions in the last half second before the stop belong to the run too.
        self._attempt("final events", self.poll_events)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, after one last fetch of the events."""
        super().stop()
        self.join(timeout)

    def close(self) -> None:
        self._http.close()

    def _after_stop(self) -> None:
        self.close()


# --------------------------------------------------------------------------- acknowledged writes


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """One acknowledged write, as a line of the acknowledged-writes file."""

    kind: str
    id: int | None
    idempotency_key: str | None
    line: int = 0

    def to_json_line(self) -> str:
        return json.dumps(
            {"kind": self.kind, "id": self.id, "idempotency_key": self.idempotency_key}
        )

    def describe(self) -> str:
        parts = [self.kind]
        if self.id is not None:
            parts.append(f"id {self.id}")
        if self.idempotency_key is not None:
            parts.append(f"Idempotency-Key {self.idempotency_key!r}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class LostWrite:
    write: AckedWrite
    missing: tuple[str, ...]  # what was looked for and not found

    def describe(self) -> str:
        return (
            f"line {self.write.line}: {self.write.describe()} not found ({', '.join(self.missing)})"
        )


@dataclass(frozen=True, slots=True)
class LostWrites:
    """The verdict of :func:`verify_acknowledged_writes`: any lost write fails the run."""

    checked: int
    lost: tuple[LostWrite, ...]
    by_kind: Mapping[str, int]

    @property
    def ok(self) -> bool:
        return not self.lost

    @property
    def failed(self) -> bool:
        return bool(self.lost)

    def describe(self, limit: int = 20) -> str:
        if self.ok:
            return f"all {self.checked} acknowledged writes are in PostgreSQL"
        shown = "; ".join(lost.describe() for lost in self.lost[:limit])
        more = f"; and {len(self.lost) - limit} more" if len(self.lost) > limit else ""
        return f"{len(self.lost)} of {self.checked} acknowledged writes LOST: {shown}{more}"


_KIND_OF_FEATURE = {"order_processing": "order", "inventory_write": "adjustment"}


def _parse_acked(line_number: int, text: str, source: str) -> AckedWrite:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}:{line_number}: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{source}:{line_number}: expected an object")
    # The load side names the feature; "kind" is the short form of the same thing.
    kind = data.get("kind") or _KIND_OF_FEATURE.get(str(data.get("feature")))
    if kind not in ACKED_WRITE_KINDS:
        raise ValueError(
            f"{source}:{line_number}: kind must be one of {ACKED_WRITE_KINDS}, got {kind!r}"
        )
    write_id = data.get("id")
    key = data.get("idempotency_key")
    if write_id is not None and (isinstance(write_id, bool) or not isinstance(write_id, int)):
        raise ValueError(f"{source}:{line_number}: id must be an integer, got {write_id!r}")
    if key is not None and not isinstance(key, str):
        raise ValueError(f"{source}:{line_number}: idempotency_key must be a string, got {key!r}")
    if write_id is None and key is None:
        raise ValueError(f"{source}:{line_number}: neither id nor idempotency_key")
    return AckedWrite(kind, write_id, key, line_number)


def read_acked_writes(path: str | os.PathLike[str]) -> list[AckedWrite]:
    """Every acknowledged write in the file; a line that cannot be read is an error (an
    acknowledgement we cannot check is not one we can vouch for). Blank lines and a last
    line cut short by a crash mid-write are skipped."""
    source = str(path)
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    writes: list[AckedWrite] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if number == len(lines) and not text.endswith("}"):
            continue  # the writer died mid-line; that write was never fully recorded
        writes.append(_parse_acked(number, text, source))
    return writes


async def _find_lost(pg_dsn: str, writes: Sequence[AckedWrite], timeout: float) -> list[LostWrite]:
    import asyncpg

    connection = await asyncpg.connect(pg_dsn, timeout=timeout)
    try:
        found_ids: dict[str, set[int]] = {}
        found_keys: dict[str, set[str]] = {}
        for kind in ACKED_WRITE_KINDS:
            ids = sorted({w.id for w in writes if w.kind == kind and w.id is not None})
            keys = sorted(
                {
                    w.idempotency_key
                    for w in writes
                    if w.kind == kind and w.idempotency_key is not None
                }
            )
            rows = await connection.fetch(
                f"SELECT id FROM {_ID_TABLES[kind]} WHERE id = ANY($1::bigint[])", ids
            )
            found_ids[kind] = {int(row["id"]) for row in rows}
            # A key row without a stored status is a write still in flight, or rolled back
            # on the way (idempotency.py): not a committed write.
            rows = await connection.fetch(
                # The engine scopes keys per feature and caller ("order_processing:<key id>").
                """SELECT key FROM idempotency_keys
                   WHERE (scope = $1 OR scope LIKE $1 || ':%')
                     AND key = ANY($2::text[]) AND status_code IS NOT NULL""",
                _IDEMPOTENCY_SCOPES[kind],
                keys,
            )
            found_keys[kind] = {str(row["key"]) for row in rows}
    finally:
        await connection.close()
    lost: list[LostWrite] = []
    for write in writes:
        missing: list[str] = []
        if write.id is not None and write.id not in found_ids[write.kind]:
            missing.append(f"{_ID_TABLES[write.kind]}.id = {write.id}")
        if (
            write.idempotency_key is not None
            and write.idempotency_key not in found_keys[write.kind]
        ):
            missing.append(f"idempotency_keys[{_IDEMPOTENCY_SCOPES[write.kind]}]")
        if missing:
            lost.append(LostWrite(write, tuple(missing)))
    return lost


def verify_acknowledged_writes(
    pg_dsn: str,
    acked_writes_jsonl: str | os.PathLike[str] | Iterable[AckedWrite],
    *,
    timeout: float = 10.0,
) -> LostWrites:
    """Check that every acknowledged write is in PostgreSQL. `pg_dsn` must be PostgreSQL's
    own address (``StagingState.url("postgres")``), not the proxy's. Raises
    :class:`ValueError` on an unreadable line, and asyncpg's errors when the database
    cannot be reached — the verdict needs the database."""
    if isinstance(acked_writes_jsonl, str | os.PathLike):
        writes = read_acked_writes(acked_writes_jsonl)
    else:
        writes = list(acked_writes_jsonl)
    by_kind = {kind: sum(1 for w in writes if w.kind == kind) for kind in ACKED_WRITE_KINDS}
    if not writes:
        return LostWrites(0, (), by_kind)
    lost = _run_coroutine(lambda: _find_lost(pg_dsn, writes, timeout))
    return LostWrites(len(writes), tuple(lost), by_kind)


def _run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code — in a thread of its own when the
    caller already runs an event loop (asyncio.run refuses to nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(make()))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=target, name="verify-writes")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return results[0]
