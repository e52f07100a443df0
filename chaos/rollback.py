"""Rollback that always runs: every toxic a run added is removed and every proxy it disabled
is enabled again — on a normal end, an exception, SIGINT or SIGTERM — and a run killed
outright (``kill -9``) is cleaned up by the next one.

Following chaostoolkit-lib, an experiment's rollbacks are part of the experiment, not an
afterthought; here they are derived from what was actually applied rather than declared:

- :class:`ChangeLedger` applies each change to Toxiproxy and remembers it, with the time
  Toxiproxy accepted it (the monotonic clock just after the 2xx answer) and, later, removed
  it. It writes every change to the lock file *before* sending it (write-ahead), so that a
  process killed between the request and its answer still leaves a record of it.
- :class:`ChaosLock` is that lock file (``.staging/chaos.lock.json`` by default), written
  atomically: the run's pid, its Toxiproxy URL and the changes not yet undone. It is removed
  at a clean end. A lock left by a dead process means its changes may still be in place: the
  next run clears them first and reports it (:class:`Leftovers`).
- :class:`RollbackGuard` puts it together as a context manager: it takes the lock (clearing
  a dead run's leftovers), checks that Toxiproxy starts clean, turns SIGINT and SIGTERM into
  exceptions for the run's duration so that ``finally`` blocks run, and on the way out undoes
  everything in the ledger — with further signals deferred, so that a second Ctrl-C cannot
  cut the rollback short.

For operators, :func:`list_faults` and :func:`clear_faults` show and remove every fault on a
Toxiproxy server — deliberately all of them, not only one run's — behind
``reslab chaos list|clear`` (:func:`chaos_main`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol, Self

from chaos.staging import REPO_ROOT, STATE_FILE, process_start_ticks
from chaos.toxiproxy import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    Proxy,
    Stream,
    Toxic,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnreachable,
)

__all__ = [
    "INFRASTRUCTURE_EXIT_CODE",
    "LOCK_FILE",
    "AppliedChange",
    "ChangeLedger",
    "ChaosLock",
    "ChaosLockError",
    "ChaosLockHeld",
    "ClearedFaults",
    "Leftovers",
    "ProxyFaults",
    "RollbackError",
    "RollbackGuard",
    "RollbackReport",
    "RunInterrupted",
    "RunTerminated",
    "SignalsAsExceptions",
    "ToxiproxyNotClean",
    "ToxiproxyOperations",
    "chaos_main",
    "clear_faults",
    "default_lock_path",
    "exit_code_for",
    "list_faults",
    "resolve_target",
]

LOCK_FILE = "chaos.lock.json"
LOCK_SCHEMA = 1

# A campaign that cannot talk to Toxiproxy, or cannot undo its faults, failed as
# infrastructure — not as an experiment whose hypothesis was refuted.
INFRASTRUCTURE_EXIT_CODE = 3

# Undoing a change is retried a little: a Toxiproxy that hiccups once must not leave a
# fault in staging. Each attempt is bounded by the client's own timeout.
_UNDO_ATTEMPTS = 3
_UNDO_RETRY_S = 0.2

Clock = Callable[[], float]


class ToxiproxyOperations(Protocol):
    """The part of :class:`chaos.toxiproxy.ToxiproxyClient` that applying and undoing
    faults uses (a test may hand in a fake)."""

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: Stream = ...,
        toxicity: float = ...,
        attributes: Mapping[str, Any] | None = ...,
        name: str | None = ...,
    ) -> Toxic: ...

    def remove_toxic(self, proxy: str, name: str) -> None: ...

    def disable_proxy(self, name: str) -> Proxy: ...

    def enable_proxy(self, name: str) -> Proxy: ...


# --------------------------------------------------------------------------- errors


class ChaosLockError(RuntimeError):
    """The lock file cannot be read, written or taken."""


class ChaosLockHeld(ChaosLockError):
    """Another live process holds the lock: a run is already applying faults."""

    def __init__(self, path: Path, pid: int, toxiproxy_url: str) -> None:
        self.path = path
        self.pid = pid
        self.toxiproxy_url = toxiproxy_url
        super().__init__(
            f"{path}: a chaos run (pid {pid}) against {toxiproxy_url} is in progress; "
            "wait for it, or stop it (it rolls back on SIGINT or SIGTERM)"
        )


class ToxiproxyNotClean(RuntimeError):
    """Toxiproxy has toxics or disabled proxies that no run's lock lists: a run would
    measure someone else's fault."""

    def __init__(self, url: str, faults: Sequence[ProxyFaults]) -> None:
        self.url = url
        self.faults = tuple(faults)
        described = "; ".join(f.describe() for f in faults if f.faulty)
        super().__init__(
            f"Toxiproxy at {url} is not clean ({described}); "
            "run `reslab chaos clear` first, or wait for whoever applied them"
        )


class RollbackError(RuntimeError):
    """Some change could not be undone; the lock file is kept so that the next run, or
    ``reslab chaos clear``, can finish the job."""

    exit_code = INFRASTRUCTURE_EXIT_CODE

    def __init__(self, report: RollbackReport, lock_path: Path | None) -> None:
        self.report = report
        self.lock_path = lock_path
        failures = "; ".join(report.problems())
        kept = f" (still listed in {lock_path})" if lock_path is not None else ""
        super().__init__(f"rollback incomplete{kept}: {failures}")


class RunInterrupted(KeyboardInterrupt):
    """SIGINT arrived during a run (a KeyboardInterrupt, as Python would raise anyway, but
    raised by our handler whatever handler was installed before)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class RunTerminated(SystemExit):
    """SIGTERM arrived during a run. Python's default would end the process at once without
    running any ``finally``; as an exception, the rollback runs first. Uncaught, it exits
    with the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def exit_code_for(exc: BaseException) -> int:
    """The process exit code that reports `exc`: 130 / 143 for SIGINT / SIGTERM, 3 for an
    infrastructure failure (Toxiproxy, rollback, lock), 1 otherwise."""
    if isinstance(exc, RunInterrupted):
        return 128 + exc.signum
    if isinstance(exc, RunTerminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, ToxiproxyError | ChaosLockError | ToxiproxyNotClean):
        return INFRASTRUCTURE_EXIT_CODE
    return 1


# --------------------------------------------------------------------------- processes


def _process_alive(pid: int, start_ticks: int | None) -> bool:
    if Path("/proc/self/stat").exists():
        ticks = process_start_ticks(pid)
        if ticks is None:
            return False
        return start_ticks is None or ticks == start_ticks
    try:  # without /proc: signal 0 tells whether the pid exists, not whose it is
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- the ledger


@dataclass
class AppliedChange:
    """One change a run made to Toxiproxy: a toxic added, or (``toxic`` None) a proxy
    disabled. Times are on the run's monotonic clock: ``applied_at`` just after Toxiproxy
    answered 2xx to the change, ``removed_at`` just after it answered 2xx (or 404: already
    gone) to its undoing. ``applied_at`` is None while the answer is outstanding or when the
    request failed — the change may or may not be in place, so it is undone all the same."""

    index: int
    proxy: str
    toxic: str | None
    requested_at: float
    applied_at: float | None = None
    removed_at: float | None = None
    accepted: Toxic | None = None
    removed_by: str | None = None  # "schedule", "rollback", or "absent" (already gone)

    @property
    def disables_proxy(self) -> bool:
        return self.toxic is None

    @property
    def outstanding(self) -> bool:
        return self.removed_at is None

    def describe(self) -> str:
        if self.toxic is None:
            return f"proxy {self.proxy} disabled"
        return f"toxic {self.toxic} on {self.proxy}"

    def to_lock_json(self) -> dict[str, Any]:
        return {"index": self.index, "proxy": self.proxy, "toxic": self.toxic}


@dataclass(frozen=True, slots=True)
class RollbackReport:
    """What a rollback undid, what was already gone, what it could not undo (`failed`),
    and what Toxiproxy still showed afterwards (`remaining`)."""

    undone: tuple[AppliedChange, ...] = ()
    already_gone: tuple[AppliedChange, ...] = ()
    failed: tuple[tuple[AppliedChange, str], ...] = ()
    remaining: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.failed and not self.remaining

    def problems(self) -> list[str]:
        return [f"{change.describe()}: {error}" for change, error in self.failed] + list(
            self.remaining
        )

    def describe(self) -> str:
        parts = [f"undid {len(self.undone)} change(s)"]
        if self.already_gone:
            parts.append(f"{len(self.already_gone)} already gone")
        parts += self.problems()
        return "; ".join(parts)


class ChangeLedger:
    """Applies changes to Toxiproxy and keeps the list of those not yet undone, mirrored
    into the lock file (when there is one) before each request is sent.

    Thread-safe: the fault scheduler applies from its thread while a rollback may start in
    the main thread; one re-entrant lock serialises them, so a rollback waits for a change
    in flight (bounded by the client's timeout) and then undoes it too.
    """

    def __init__(self, lock: ChaosLock | None = None, *, clock: Clock = time.monotonic) -> None:
        self._lock_file = lock
        self._clock = clock
        self._mutex = threading.RLock()
        self._changes: list[AppliedChange] = []

    # ---- reading

    def changes(self) -> list[AppliedChange]:
        with self._mutex:
            return list(self._changes)

    def outstanding(self) -> list[AppliedChange]:
        with self._mutex:
            return [change for change in self._changes if change.outstanding]

    def _mirror(self, *, strict: bool) -> None:
        """Rewrite the lock's list. Before applying a change the write must succeed (else the
        change is not made); after undoing one, a failed write only leaves the lock listing
        a change that is gone, which the next run finds absent (404) — harmless."""
        if self._lock_file is None:
            return
        try:
            self._lock_file.record([c.to_lock_json() for c in self._changes if c.outstanding])
        except ChaosLockError:
            if strict:
                raise

    # ---- applying

    def add_toxic(
        self,
        client: ToxiproxyOperations,
        *,
        index: int,
        proxy: str,
        name: str,
        type: str,
        stream: Stream,
        toxicity: float,
        attributes: Mapping[str, Any],
    ) -> AppliedChange:
        """Add a toxic; raises :class:`ToxiproxyError` when Toxiproxy refuses or does not
        answer (the change stays listed, to be undone, since it may have been applied)."""
        with self._mutex:
            change = AppliedChange(index, proxy, name, requested_at=self._clock())
            self._changes.append(change)
            self._mirror(strict=True)
            accepted = client.add_toxic(
                proxy, type, stream=stream, toxicity=toxicity, attributes=attributes, name=name
            )
            change.applied_at = self._clock()
            change.accepted = accepted
            return change

    def disable_proxy(
        self, client: ToxiproxyOperations, *, index: int, proxy: str
    ) -> AppliedChange:
        """Disable a proxy (new connections refused, open ones dropped); raises like
        :meth:`add_toxic`."""
        with self._mutex:
            change = AppliedChange(index, proxy, None, requested_at=self._clock())
            self._changes.append(change)
            self._mirror(strict=True)
            client.disable_proxy(proxy)
            change.applied_at = self._clock()
            return change

    # ---- undoing

    def undo(self, client: ToxiproxyOperations, change: AppliedChange, *, by: str) -> bool:
        """Undo one change unless already undone; True when Toxiproxy answered 2xx, False
        when the toxic or proxy was already gone (404). Other errors raise."""
        with self._mutex:
            if not change.outstanding:
                return True
            try:
                if change.toxic is None:
                    client.enable_proxy(change.proxy)
                else:
                    client.remove_toxic(change.proxy, change.toxic)
            except ToxiproxyError as exc:
                if exc.status != 404:
                    raise
                change.removed_at = self._clock()
                change.removed_by = "absent"
                self._mirror(strict=False)
                return False
            change.removed_at = self._clock()
            change.removed_by = by
            self._mirror(strict=False)
            return True

    def undo_all(self, client: ToxiproxyOperations, *, by: str = "rollback") -> RollbackReport:
        """Undo every outstanding change, newest first (the reverse of how they were
        applied, as rollbacks go), retrying each a little; never raises for one change's
        failure — the report lists it."""
        undone: list[AppliedChange] = []
        gone: list[AppliedChange] = []
        failed: list[tuple[AppliedChange, str]] = []
        with self._mutex:
            for change in reversed(self.outstanding()):
                error = ""
                for attempt in range(_UNDO_ATTEMPTS):
                    try:
                        (undone if self.undo(client, change, by=by) else gone).append(change)
                        error = ""
                        break
                    except ToxiproxyError as exc:
                        error = str(exc)
                        if attempt + 1 < _UNDO_ATTEMPTS:
                            time.sleep(_UNDO_RETRY_S)
                if error:
                    failed.append((change, error))
        return RollbackReport(tuple(undone), tuple(gone), tuple(failed))


# --------------------------------------------------------------------------- the lock file


def default_lock_path(staging_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<staging state folder>/chaos.lock.json``: beside the stack it protects."""
    folder = staging_dir or os.environ.get("RESLAB_STAGING_DIR") or REPO_ROOT / ".staging"
    return Path(folder) / LOCK_FILE


@dataclass(frozen=True, slots=True)
class LockRecord:
    """What a lock file says."""

    pid: int
    start_ticks: int | None
    hostname: str
    toxiproxy_url: str
    label: str
    started_at: str
    changes: tuple[tuple[str, str | None], ...]  # (proxy, toxic name or None: disabled)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockRecord:
        if data.get("schema") != LOCK_SCHEMA:
            raise ValueError(f"unknown schema {data.get('schema')!r}")
        return cls(
            pid=int(data["pid"]),
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
            hostname=str(data.get("hostname", "")),
            toxiproxy_url=str(data["toxiproxy_url"]),
            label=str(data.get("label", "")),
            started_at=str(data.get("started_at", "")),
            changes=tuple(
                (str(entry["proxy"]), None if entry.get("toxic") is None else str(entry["toxic"]))
                for entry in data.get("changes") or ()
            ),
        )

    def owner_alive(self) -> bool:
        if self.hostname and self.hostname != socket.gethostname():
            return True  # another machine's process: we cannot tell, so we must not steal it
        return _process_alive(self.pid, self.start_ticks)


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What a dead run's lock listed, and what clearing it found."""

    lock_path: Path
    pid: int
    label: str
    toxiproxy_url: str
    toxics_removed: tuple[tuple[str, str], ...]
    proxies_enabled: tuple[str, ...]
    already_gone: tuple[str, ...]
    unreachable: bool = False

    def describe(self) -> str:
        who = f"pid {self.pid}" + (f", {self.label}" if self.label else "")
        if self.unreachable:
            return (
                f"a dead chaos run ({who}) left {self.lock_path}; Toxiproxy at "
                f"{self.toxiproxy_url} does not answer, and keeps no state across restarts"
            )
        parts = [f"{name} on {proxy}" for proxy, name in self.toxics_removed]
        parts += [f"proxy {proxy} re-enabled" for proxy in self.proxies_enabled]
        done = ", ".join(parts) if parts else "nothing was still applied"
        return f"cleared what a dead chaos run ({who}) left at {self.toxiproxy_url}: {done}"


class ChaosLock:
    """The lock file of one run. Written atomically (a temporary file renamed over it), and
    taken with a hard link, which fails when the file exists — two runs starting together
    cannot both believe they hold it."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_lock_path()
        self._held = False
        self._base: dict[str, Any] = {}

    @property
    def held(self) -> bool:
        return self._held

    def read(self) -> LockRecord | None:
        """The lock's record, or None when there is no lock file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ChaosLockError(f"{self.path}: cannot read the lock file: {exc}") from exc
        try:
            return LockRecord.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChaosLockError(
                f"{self.path}: unreadable lock file ({exc}); check Toxiproxy with "
                "`reslab chaos list`, then remove it with `reslab chaos clear`"
            ) from exc

    def _write(self, data: Mapping[str, Any], *, exclusive: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            if exclusive:
                os.link(temporary, self.path)
            else:
                os.replace(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def acquire(
        self, toxiproxy_url: str, *, label: str = "", timeout: float = DEFAULT_TIMEOUT_S
    ) -> Leftovers | None:
        """Take the lock for a run against `toxiproxy_url`. A lock left by a dead process is
        cleared first — its changes undone on the Toxiproxy it names — and returned; a lock
        held by a live process raises :class:`ChaosLockHeld`."""
        leftovers: Leftovers | None = None
        record = self.read()
        if record is not None:
            if record.owner_alive():
                raise ChaosLockHeld(self.path, record.pid, record.toxiproxy_url)
            leftovers = _clear_leftovers(self.path, record, timeout)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._base = {
            "schema": LOCK_SCHEMA,
            "pid": os.getpid(),
            "start_ticks": process_start_ticks(os.getpid()),
            "hostname": socket.gethostname(),
            "toxiproxy_url": toxiproxy_url,
            "label": label,
            "started_at": _utc_now(),
        }
        try:
            self._write({**self._base, "changes": []}, exclusive=True)
        except FileExistsError:
            # Another run took it between our read and our link.
            other = self.read()
            raise ChaosLockHeld(
                self.path, other.pid if other else -1, other.toxiproxy_url if other else "?"
            ) from None
        except OSError as exc:
            raise ChaosLockError(f"{self.path}: cannot write the lock file: {exc}") from exc
        self._held = True
        return leftovers

    def record(self, changes: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite the list of changes not yet undone."""
        if not self._held:
            return
        try:
            self._write({**self._base, "changes": list(changes)}, exclusive=False)
        except OSError as exc:
            raise ChaosLockError(f"{self.path}: cannot write the lock file: {exc}") from exc

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False


def _clear_leftovers(path: Path, record: LockRecord, timeout: float) -> Leftovers:
    toxics: list[tuple[str, str]] = []
    enabled: list[str] = []
    gone: list[str] = []
    try:
        with ToxiproxyClient(record.toxiproxy_url, timeout=timeout) as client:
            for proxy, toxic in record.changes:
                try:
                    if toxic is None:
                        client.enable_proxy(proxy)
                        enabled.append(proxy)
                    else:
                        client.remove_toxic(proxy, toxic)
                        toxics.append((proxy, toxic))
                except ToxiproxyUnreachable:
                    raise
                except ToxiproxyError as exc:
                    if exc.status != 404:
                        raise ChaosLockError(
                            f"{path}: clearing what a dead run (pid {record.pid}) left failed: "
                            f"{exc}"
                        ) from exc
                    gone.append(f"{toxic} on {proxy}" if toxic else f"proxy {proxy}")
    except ToxiproxyUnreachable:
        # Toxiproxy keeps proxies and toxics in memory only: a server that is not running
        # holds none of the dead run's faults.
        return Leftovers(path, record.pid, record.label, record.toxiproxy_url, (), (), (), True)
    return Leftovers(
        path, record.pid, record.label, record.toxiproxy_url,
        tuple(toxics), tuple(enabled), tuple(gone),
    )  # fmt: skip


# --------------------------------------------------------------------------- signals


class SignalsAsExceptions:
    """For the run's duration, SIGINT raises :class:`RunInterrupted` and SIGTERM raises
    :class:`RunTerminated` in the main thread, so that every ``finally`` runs; the handlers
    that were installed before are restored at the end.

    Inside :meth:`deferred` (the rollback), a signal is only noted: the rollback finishes
    first, and :meth:`pending` tells which signal arrived. Python only lets the main thread
    install handlers; elsewhere this does nothing (``installed`` stays False)."""

    SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}
        self._deferring = False
        self._pending: int | None = None
        self.installed = False
        self.received: list[int] = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._deferring:
            if self._pending is None:
                self._pending = signum
            return
        raise _interruption(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        self.installed = True

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self.installed = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    @property
    def pending(self) -> int | None:
        return self._pending

    def __enter__(self) -> Self:
        self.install()
        return self

    def __exit__(self, *_: object) -> None:
        self.restore()


def _interruption(signum: int) -> BaseException:
    return RunInterrupted(signum) if signum == signal.SIGINT else RunTerminated(signum)


# --------------------------------------------------------------------------- the guard


class RollbackGuard:
    """The scope of one run's faults; everything applied through :attr:`ledger` inside it is
    undone on the way out, however the way out comes.

    ::

        with RollbackGuard(state.toxiproxy_url, label=scenario.name) as guard:
            if guard.leftovers: print(guard.leftovers.describe())
            scheduler = FaultScheduler(scenario.faults, client, guard.ledger, t0)
            ...
        # here: guard.report says what the rollback undid

    On entry: take the lock (clearing a dead run's leftovers), check that Toxiproxy holds
    no other fault (``require_clean``), install the signal handlers (``handle_signals``).
    On exit: undo every outstanding change with signals deferred, check with Toxiproxy that
    none of them remains, release the lock and restore the handlers. A rollback that could
    not finish raises :class:`RollbackError` (keeping the lock for the next run); a signal
    that arrived during the rollback is raised afterwards, when nothing else is in flight.
    """

    def __init__(
        self,
        toxiproxy_url: str,
        *,
        lock_path: str | os.PathLike[str] | None = None,
        label: str = "",
        timeout: float = DEFAULT_TIMEOUT_S,
        require_clean: bool = True,
        handle_signals: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        self.toxiproxy_url = toxiproxy_url.rstrip("/")
        self.label = label
        self.timeout = timeout
        self.require_clean = require_clean
        self.lock = ChaosLock(lock_path)
        self.ledger = ChangeLedger(self.lock, clock=clock)
        self.signals = SignalsAsExceptions()
        self._handle_signals = handle_signals
        self.leftovers: Leftovers | None = None
        self.report: RollbackReport | None = None

    def __enter__(self) -> Self:
        self.leftovers = self.lock.acquire(
            self.toxiproxy_url, label=self.label, timeout=self.timeout
        )
        try:
            if self.require_clean:
                faults = list_faults(self.toxiproxy_url, timeout=self.timeout)
                if any(proxy.faulty for proxy in faults):
                    raise ToxiproxyNotClean(self.toxiproxy_url, faults)
            if self._handle_signals:
                self.signals.install()
        except BaseException:
            self.lock.release()
            raise
        return self

    def rollback(self) -> RollbackReport:
        """Undo every outstanding change now (idempotent; also run on exit)."""
        with ToxiproxyClient(self.toxiproxy_url, timeout=self.timeout) as client:
            report = self.ledger.undo_all(client)
            if report.complete:
                report = self._verify(client, report)
        self.report = report
        return report

    def _verify(self, client: ToxiproxyClient, report: RollbackReport) -> RollbackReport:
        # Ask Toxiproxy itself: an accepted DELETE is not proof enough for a guard whose
        # whole purpose is that nothing stays behind.
        try:
            proxies = client.proxies()
        except ToxiproxyError as exc:
            return RollbackReport(
                report.undone, report.already_gone, report.failed, (f"verification: {exc}",)
            )
        remaining: list[str] = []
        for change in self.ledger.changes():
            proxy = proxies.get(change.proxy)
            if proxy is None:
                continue
            if change.toxic is None and not proxy.enabled:
                remaining.append(f"proxy {change.proxy} still disabled after rollback")
            elif change.toxic is not None and any(t.name == change.toxic for t in proxy.toxics):
                remaining.append(f"{change.describe()} still present after rollback")
        return RollbackReport(report.undone, report.already_gone, report.failed, tuple(remaining))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        report: RollbackReport | None = None
        try:
            with self.signals.deferred():
                try:
                    report = self.rollback()
                except (ToxiproxyError, OSError) as error:  # no client could be used at all
                    report = RollbackReport(
                        failed=tuple((c, str(error)) for c in self.ledger.outstanding())
                    )
                    self.report = report
        finally:
            if report is not None and report.complete:
                self.lock.release()
            self.signals.restore()
        if not report.complete:
            raise RollbackError(report, self.lock.path) from exc
        pending = self.signals.pending
        if pending is not None and exc is None:
            raise _interruption(pending)


# --------------------------------------------------------------------------- operators


@dataclass(frozen=True, slots=True)
class ProxyFaults:
    """One proxy as Toxiproxy reports it: enabled or not, and its toxics."""

    proxy: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = field(default_factory=tuple)

    @property
    def faulty(self) -> bool:
        return not self.enabled or bool(self.toxics)

    def describe(self) -> str:
        parts = [] if self.enabled else ["disabled"]
        parts += [f"toxic {t.name} ({t.type}, {t.stream})" for t in self.toxics]
        return f"{self.proxy}: {', '.join(parts) or 'clean'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [
                {
                    "name": t.name,
                    "type": t.type,
                    "stream": t.stream,
                    "toxicity": t.toxicity,
                    "attributes": dict(t.attributes),
                }
                for t in self.toxics
            ],
        }


@dataclass(frozen=True, slots=True)
class ClearedFaults:
    toxics_removed: tuple[tuple[str, str], ...]  # (proxy, toxic name)
    proxies_enabled: tuple[str, ...]

    @property
    def nothing(self) -> bool:
        return not self.toxics_removed and not self.proxies_enabled

    def describe(self) -> str:
        if self.nothing:
            return "nothing to clear: every proxy enabled, no toxic"
        parts = [f"removed {name} from {proxy}" for proxy, name in self.toxics_removed]
        parts += [f"enabled {proxy}" for proxy in self.proxies_enabled]
        return "; ".join(parts)


def list_faults(toxiproxy_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[ProxyFaults]:
    """Every proxy, enabled or not, with its toxics, sorted by name."""
    with ToxiproxyClient(toxiproxy_url, timeout=timeout) as client:
        proxies = client.proxies()
    return [
        ProxyFaults(p.name, p.listen, p.upstream, p.enabled, p.toxics)
        for p in sorted(proxies.values(), key=lambda p: p.name)
    ]


def clear_faults(toxiproxy_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> ClearedFaults:
    """Remove every toxic and enable every proxy — everything, not only one run's (an
    operator's reset). Done one change at a time rather than with ``POST /reset`` so that
    the answer says what was removed."""
    removed: list[tuple[str, str]] = []
    enabled: list[str] = []
    with ToxiproxyClient(toxiproxy_url, timeout=timeout) as client:
        for proxy in sorted(client.proxies().values(), key=lambda p: p.name):
            for toxic in proxy.toxics:
                try:
                    client.remove_toxic(proxy.name, toxic.name)
                except ToxiproxyError as exc:
                    if exc.status != 404:
                        raise
                    continue
                removed.append((proxy.name, toxic.name))
            if not proxy.enabled:
                client.enable_proxy(proxy.name)
                enabled.append(proxy.name)
    return ClearedFaults(tuple(removed), tuple(enabled))


def _staging_toxiproxy_url(path: Path) -> str:
    state_file = path / STATE_FILE if path.is_dir() else path
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
        return str(data["components"]["toxiproxy"]["url"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChaosLockError(f"{state_file}: no Toxiproxy URL in it ({exc})") from exc


def resolve_target(
    staging: str | None, toxiproxy: str | None, lock: str | None
) -> tuple[str, Path]:
    """(Toxiproxy URL, lock path) from ``--staging FILE``, ``--toxiproxy URL`` and
    ``--lock PATH``; without either of the first two, the default staging stack's Toxiproxy
    if it has one, else Toxiproxy's default address."""
    if staging is not None:
        staging_path = Path(staging)
        url = _staging_toxiproxy_url(staging_path)
        folder = staging_path if staging_path.is_dir() else staging_path.parent
        return url, Path(lock) if lock else default_lock_path(folder)
    if toxiproxy is not None:
        return toxiproxy, Path(lock) if lock else default_lock_path()
    default_state = default_lock_path().parent / STATE_FILE
    url = _staging_toxiproxy_url(default_state) if default_state.exists() else DEFAULT_URL
    return url, Path(lock) if lock else default_lock_path()


def _format_list(faults: Sequence[ProxyFaults]) -> str:
    rows = [["PROXY", "STATE", "LISTEN", "UPSTREAM", "TOXICS"]]
    for proxy in faults:
        toxics = ", ".join(
            f"{t.name} ({t.type} {t.stream} {t.toxicity:g} "
            f"{json.dumps(dict(t.attributes), sort_keys=True)})"
            for t in proxy.toxics
        )
        state = "enabled" if proxy.enabled else "DISABLED"
        rows.append([proxy.proxy, state, proxy.listen, proxy.upstream, toxics or "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab chaos", description="Show or remove faults on a Toxiproxy server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("list", "every proxy, enabled or not, and its toxics (exit 1 when any fault is on)"),
        ("clear", "remove every toxic and enable every proxy - not only one run's"),
    ):
        command = commands.add_parser(name, help=text)
        where = command.add_mutually_exclusive_group()
        where.add_argument("--staging", metavar="FILE", help="a staging.json (or its folder)")
        where.add_argument("--toxiproxy", metavar="URL", help="the Toxiproxy API's URL")
        command.add_argument("--lock", metavar="PATH", help="the chaos lock file")
        command.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
        if name == "list":
            command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def chaos_main(argv: Sequence[str]) -> int:
    """``reslab chaos list|clear [--staging FILE | --toxiproxy URL] [--lock PATH]``.

    Exit codes: 0 done (``list``: no fault on), 1 ``list`` found a fault or a run's lock,
    2 usage, 3 Toxiproxy or the lock file could not be used."""
    args = _parser().parse_args(list(argv))
    try:
        url, lock_path = resolve_target(args.staging, args.toxiproxy, args.lock)
        lock = ChaosLock(lock_path)
        record = lock.read()
        if args.command == "list":
            faults = list_faults(url, timeout=args.timeout)
            if args.json:
                print(json.dumps([f.to_json() for f in faults], indent=2))
            else:
                print(f"Toxiproxy {url}")
                print(_format_list(faults) if faults else "no proxies")
                if record is not None:
                    state = "running" if record.owner_alive() else "DEAD (run `clear`)"
                    print(
                        f"\nlock {lock_path}: pid {record.pid} {state}, {len(record.changes)} change(s)"
                    )
            return 1 if any(f.faulty for f in faults) or record is not None else 0
        if record is not None and record.owner_alive():
            print(
                f"warning: a chaos run (pid {record.pid}) holds {lock_path}; it will roll back "
                "its own faults, but may apply further ones",
                file=sys.stderr,
            )
        cleared = clear_faults(url, timeout=args.timeout)
        print(f"Toxiproxy {url}: {cleared.describe()}")
        if record is not None and not record.owner_alive():
            lock_path.unlink(missing_ok=True)
            print(f"removed the lock a dead run (pid {record.pid}) left: {lock_path}")
        return 0
    except (ToxiproxyError, ChaosLockError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return INFRASTRUCTURE_EXIT_CODE


if __name__ == "__main__":
    raise SystemExit(chaos_main(sys.argv[1:]))
