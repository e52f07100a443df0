"""The fault scheduler: a scenario's faults applied to Toxiproxy at their times.

Times are seconds from the load's t = 0, a monotonic instant the caller chooses (the
campaign's load starts then). Each fault becomes a toxic named ``reslab-<index>-<toxic>``
on the target's proxy — or, for ``down``, a disabled proxy — from ``at`` to ``end``.

MEASURING.md: fault times come from the scheduler's own record of when Toxiproxy *accepted*
each change — the moment just after its 2xx answer, on the same monotonic clock as t = 0 —
never from the schedule, nor from a polling interval. Those are the ``applied_at`` and
``removed_at`` columns of ``faults.parquet`` (:func:`reports.runfolder.faults_table`).

Every change goes through a :class:`chaos.rollback.ChangeLedger`, so a run that ends in any
way other than on schedule is rolled back by its :class:`chaos.rollback.RollbackGuard`; the
scheduler itself also undoes its faults when stopped early, so that their removal times are
recorded either way.

``python -m chaos.faults SCENARIO --toxiproxy URL`` runs a scenario's fault schedule alone
(no load): useful to rehearse a schedule against staging, and how the tests exercise the
rollback on SIGINT, SIGTERM and ``kill -9``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from chaos.background import BackgroundLoop
from chaos.rollback import (
    INFRASTRUCTURE_EXIT_CODE,
    AppliedChange,
    ChangeLedger,
    ChaosLockError,
    RollbackError,
    RollbackGuard,
    ToxiproxyNotClean,
    ToxiproxyOperations,
    exit_code_for,
    resolve_target,
)
from chaos.toxiproxy import DEFAULT_TIMEOUT_S, ToxiproxyClient, ToxiproxyError
from reports.runfolder import FAULTS_FILE, faults_table, write_table
from scenarios.schema import FaultBase

__all__ = [
    "DOWN",
    "FaultInjectionError",
    "FaultRecord",
    "FaultScheduler",
    "RunClock",
    "faults_main",
    "toxic_name",
]

DOWN = "down"
TOXIC_PREFIX = "reslab"

Clock = Callable[[], float]
Wait = Callable[[float], bool]


def toxic_name(index: int, toxic: str) -> str:
    """``reslab-<index>-<toxic>``: unique within a scenario (two faults of one kind may
    overlap on a proxy in different streams) and recognisable as ours in ``chaos list``."""
    return f"{TOXIC_PREFIX}-{index}-{toxic}"


@dataclass(frozen=True, slots=True)
class RunClock:
    """The load's t = 0 on both clocks. The monotonic reading measures (it never jumps);
    the wall reading lines up timestamps taken in another process — the engine's events
    carry both — with run time."""

    t0_monotonic: float
    t0_wall: float

    @classmethod
    def start_now(cls) -> RunClock:
        return cls(time.monotonic(), time.time())

    @classmethod
    def from_monotonic(cls, t0_monotonic: float) -> RunClock:
        """The clock of a t = 0 given on the monotonic clock; its wall reading is derived
        through the current offset between the two clocks."""
        return cls(t0_monotonic, time.time() - (time.monotonic() - t0_monotonic))

    def now(self) -> float:
        """Run time now."""
        return time.monotonic() - self.t0_monotonic

    def of_monotonic(self, monotonic: float) -> float:
        return monotonic - self.t0_monotonic

    def of_wall(self, wall: float) -> float:
        return wall - self.t0_wall


class FaultInjectionError(RuntimeError):
    """Toxiproxy refused a fault or did not answer: the campaign's infrastructure failed
    (exit code 3), which is raised only after the rollback."""

    exit_code = INFRASTRUCTURE_EXIT_CODE

    def __init__(
        self, index: int, fault: FaultBase, cause: BaseException, *, removing: bool = False
    ) -> None:
        self.index = index
        self.fault = fault
        self.removing = removing
        what = "removed" if removing else "applied"
        super().__init__(
            f"faults[{index}] ({fault.toxic} on {fault.target}) could not be {what}: {cause}"
        )


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One scheduled fault and what became of it; times are run times (seconds from t = 0).
    ``applied_at`` / ``removed_at`` are None for a fault never applied (the run ended
    first) or whose change Toxiproxy did not accept."""

    replication: int
    index: int
    target: str
    toxic: str
    stream: str
    toxicity: float
    attributes: dict[str, Any]
    scheduled_at: float
    scheduled_end: float
    applied_at: float | None
    removed_at: float | None

    def to_row(self) -> dict[str, Any]:
        """A row of ``faults.parquet`` (`reports.runfolder.FAULTS_SCHEMA`)."""
        return {
            "replication": self.replication,
            "index": self.index,
            "target": self.target,
            "toxic": self.toxic,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": json.dumps(self.attributes, sort_keys=True),
            "scheduled_at": self.scheduled_at,
            "scheduled_end": self.scheduled_end,
            "applied_at": self.applied_at,
            "removed_at": self.removed_at,
        }


@dataclass(frozen=True, slots=True)
class _Action:
    at: float
    removes: bool
    index: int

    def sort_key(self) -> tuple[float, int, int]:
        # At the same instant a removal goes first: a `down` ending at 40 s and another
        # starting at 40 s must leave the proxy disabled, not enabled.
        return (self.at, 0 if self.removes else 1, self.index)


class FaultScheduler(BackgroundLoop):
    """Applies `faults` at ``t0_monotonic + fault.at`` and removes each at ``+ fault.end``.

    Run it with :meth:`run` (blocking, e.g. in the main thread of ``python -m chaos.faults``)
    or :meth:`start` (a daemon thread; :meth:`running` wraps start, stop and join). It ends
    after the last removal, or early on :meth:`stop` or on a Toxiproxy error — undoing the
    faults it applied in each case. An error is kept in :attr:`error` (and reported to
    `on_failure`, so that a campaign can stop its load at once); :meth:`raise_if_failed`
    raises it once the rollback is done. In :meth:`run`, it is raised directly.

    `clock` and `wait` exist for tests that do not sleep: `wait(seconds)` returns True when
    the schedule should stop (by default, a wait on the stop event).
    """

    thread_name = "fault scheduler"
    join_timeout_s = 4 * DEFAULT_TIMEOUT_S

    def __init__(
        self,
        faults: Sequence[FaultBase],
        client: ToxiproxyOperations,
        ledger: ChangeLedger,
        t0_monotonic: float,
        *,
        replication: int = 0,
        clock: Clock = time.monotonic,
        wait: Wait | None = None,
        on_change: Callable[[FaultRecord], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.faults = tuple(faults)
        self.client = client
        self.ledger = ledger
        self.t0 = t0_monotonic
        self.replication = replication
        self._clock = clock
        super().__init__()
        self._wait: Wait = wait if wait is not None else self._stop.wait
        self._on_change = on_change
        self._on_failure = on_failure
        self._changes: dict[int, AppliedChange] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None
        actions = [_Action(f.at, False, i) for i, f in enumerate(self.faults)]
        actions += [_Action(f.end, True, i) for i, f in enumerate(self.faults)]
        self._actions = sorted(actions, key=_Action.sort_key)

    # ---- records

    def _t(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else monotonic - self.t0

    def record(self, index: int) -> FaultRecord:
        fault = self.faults[index]
        change = self._changes.get(index)
        attributes: dict[str, Any]
        if change is not None and change.accepted is not None:
            attributes = dict(change.accepted.attributes)  # as Toxiproxy took them
        else:
            attributes = {} if fault.toxic == DOWN else fault.toxiproxy_attributes()
        applied = self._t(change.applied_at) if change is not None else None
        return FaultRecord(
            replication=self.replication,
            index=index,
            target=fault.target,
            toxic=fault.toxic,
            stream=fault.stream,
            toxicity=float(fault.toxicity),
            attributes=attributes,
            scheduled_at=float(fault.at),
            scheduled_end=float(fault.end),
            applied_at=applied,
            # A removal only means something for a change that was accepted.
            removed_at=self._t(change.removed_at)
            if change is not None and applied is not None
            else None,
        )

    def records(self) -> list[FaultRecord]:
        """Every scheduled fault, applied or not, in the scenario's order."""
        return [self.record(index) for index in range(len(self.faults))]

    def rows(self) -> list[dict[str, Any]]:
        return [record.to_row() for record in self.records()]

    def table(self) -> pa.Table:
        return faults_table(self.rows())

    # ---- applying

    def _apply(self, index: int) -> None:
        fault = self.faults[index]
        if fault.toxic == DOWN:
            change = self.ledger.disable_proxy(self.client, index=index, proxy=fault.target)
        else:
            change = self.ledger.add_toxic(
                self.client,
                index=index,
                proxy=fault.target,
                name=toxic_name(index, fault.toxic),
                type=fault.toxic,
                stream=fault.stream,
                toxicity=float(fault.toxicity),
                attributes=fault.toxiproxy_attributes(),
            )
        self._changes[index] = change

    def _remove(self, index: int) -> None:
        change = self._changes.get(index)
        if change is not None:
            self.ledger.undo(self.client, change, by="schedule")

    def _notify(self, index: int) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):  # an observer must not break the schedule
                self._on_change(self.record(index))

    def _run_schedule(self) -> None:
        for action in self._actions:
            remaining = self.t0 + action.at - self._clock()
            if remaining > 0 and self._wait(remaining):
                return
            if self._stop.is_set():
                return
            try:
                if action.removes:
                    self._remove(action.index)
                else:
                    self._apply(action.index)
            except ToxiproxyError as exc:
                if not action.removes:
                    # Keep the ledger's partial change (it may be in place) for the cleanup.
                    change = next(
                        (c for c in reversed(self.ledger.changes()) if c.index == action.index),
                        None,
                    )
                    if change is not None:
                        self._changes[action.index] = change
                fault = self.faults[action.index]
                raise FaultInjectionError(
                    action.index, fault, exc, removing=action.removes
                ) from exc
            self._notify(action.index)

    def _clean_up(self) -> None:
        # Undo what is still applied, newest first, recording the removal times; whatever
        # fails here is left to the guard's rollback, which retries and reports.
        for index in sorted(
            self._changes, key=lambda i: self._changes[i].requested_at, reverse=True
        ):
            change = self._changes[index]
            if change.outstanding:
                with contextlib.suppress(ToxiproxyError):
                    self.ledger.undo(self.client, change, by="schedule")
                    self._notify(index)

    def run(self) -> None:
        """Apply and remove the faults on schedule; returns after the last removal or after
        :meth:`stop`. Raises :class:`FaultInjectionError` (after undoing what it applied)
        when Toxiproxy refuses a change or does not answer, and
        :class:`chaos.rollback.ChaosLockError` when the lock file cannot list a change
        before it is made."""
        try:
            self._run_schedule()
        except Exception as exc:  # Toxiproxy, or the lock file that must list each change
            self.error = exc
            if self._on_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_failure(exc)
            raise
        finally:
            try:
                self._clean_up()
            finally:
                self.done.set()

    # ---- threads

    def _thread_main(self) -> None:
        with contextlib.suppress(Exception):  # kept in self.error, raised by the caller
            self.run()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the schedule's thread; True when it has ended."""
        if self._thread is None:
            return self.done.is_set()
        return super().join(timeout)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.faults",
        description="Run a scenario's fault schedule against Toxiproxy, without load; "
        "every fault is rolled back at the end, on SIGINT and on SIGTERM.",
    )
    parser.add_argument("scenario", help="a scenario file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--staging", metavar="FILE", help="a staging.json (or its folder)")
    where.add_argument("--toxiproxy", metavar="URL", help="the Toxiproxy API's URL")
    parser.add_argument("--lock", metavar="PATH", help="the chaos lock file")
    parser.add_argument("--out", metavar="PATH", help=f"write the {FAULTS_FILE} here")
    parser.add_argument("--replication", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument(
        "--allow-dirty", action="store_true", help="start even if Toxiproxy already has faults"
    )
    return parser


def _say(message: str) -> None:
    print(message, flush=True)


def _describe_change(record: FaultRecord) -> str:
    if record.removed_at is not None:
        return f"t={record.removed_at:7.3f}  removed faults[{record.index}] {record.toxic} on {record.target}"
    if record.applied_at is not None:
        return f"t={record.applied_at:7.3f}  applied faults[{record.index}] {record.toxic} on {record.target}"
    return f"faults[{record.index}] {record.toxic} on {record.target}: not applied"


def faults_main(argv: Sequence[str]) -> int:
    """Exit codes: 0 the schedule ran to its end, 2 a bad scenario or usage, 3 Toxiproxy,
    the lock or the rollback failed, 130 / 143 interrupted by SIGINT / SIGTERM (after the
    rollback)."""
    from scenarios.loader import ScenarioError, load_scenario

    args = _parser().parse_args(list(argv))
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    scheduler: FaultScheduler | None = None
    code = 0
    try:
        url, lock_path = resolve_target(args.staging, args.toxiproxy, args.lock)
        with (
            RollbackGuard(
                url,
                lock_path=lock_path,
                label=scenario.name,
                timeout=args.timeout,
                require_clean=not args.allow_dirty,
            ) as guard,
            ToxiproxyClient(url, timeout=args.timeout) as client,
        ):
            if guard.leftovers is not None:
                _say(guard.leftovers.describe())
            t0 = time.monotonic()
            scheduler = FaultScheduler(
                scenario.faults,
                client,
                guard.ledger,
                t0,
                replication=args.replication,
                on_change=lambda record: _say(_describe_change(record)),
            )
            _say(f"running {len(scenario.faults)} fault(s) of {scenario.name}; lock {lock_path}")
            scheduler.run()
        if guard.report is not None:
            _say(f"rollback: {guard.report.describe()}")
    except (
        FaultInjectionError,
        RollbackError,
        ChaosLockError,
        ToxiproxyNotClean,
        ToxiproxyError,
    ) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        code = exit_code_for(exc)
    except (KeyboardInterrupt, SystemExit) as exc:
        _say(f"interrupted ({exc}); rolled back")
        code = exit_code_for(exc)
    finally:
        if args.out and scheduler is not None:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix:
                write_table(out.parent, out.name, scheduler.table())
            else:
                out.mkdir(exist_ok=True)
                write_table(out, FAULTS_FILE, scheduler.table())
    return code


if __name__ == "__main__":
    raise SystemExit(faults_main(sys.argv[1:]))
