"""The async adapter around the policy core: every dependency call goes through `Guard.call`.

acquire → run the call bounded by the dependency's call timeout → classify how it ended →
record. A rejection or a failure becomes `DependencyUnavailable`, which handlers turn into
their fallback or a 503; a caller's own error (`Outcome.IGNORED`) is re-raised unchanged
so the handler can answer 4xx.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from engine.policy import Outcome, Rejected, ResiliencePolicy
from engine.service.trace import add_spent

T = TypeVar("T")

log = logging.getLogger(__name__)

Classifier = Callable[[BaseException], Outcome]


class CallerError(Exception):
    """An error of the request itself (not found, out of stock, bad row), raised inside a
    guarded call: the dependency answered correctly, so it counts as `Outcome.IGNORED`.
    The API answers it with `status_code` and `detail`."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(CallerError):
    status_code = 404


class Conflict(CallerError):
    status_code = 409


class Unprocessable(CallerError):
    status_code = 422


class DependencyUnavailable(Exception):
    """A dependency refused by its breaker, failed, or timed out."""

    def __init__(self, dependency: str, reason: str, retry_after_s: float) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return str(retry_after_seconds(self.retry_after_s))


def retry_after_seconds(seconds: float) -> int:
    """`Retry-After` is whole seconds, and never 0: a client told 0 would retry at once."""
    if not math.isfinite(seconds):
        return 1
    return max(1, math.ceil(seconds))


class CallObserver(Protocol):
    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None: ...

    def on_rejected(self, dependency: str) -> None: ...


def caller_errors_ignored(exc: BaseException) -> Outcome:
    """The default classifier: the request's own errors are ignored, anything else failed."""
    return Outcome.IGNORED if isinstance(exc, CallerError) else Outcome.FAILURE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "call timed out"
    # The class name only: a message may carry a DSN, a URL with a key, or row data.
    return f"call failed ({type(exc).__name__})"


def _consume_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieve it so asyncio does not log "never retrieved"


async def _bounded(call: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Await `call` for at most `timeout_s`.

    Unlike `asyncio.wait_for`, a timed-out call is cancelled but not waited for: a client
    whose cleanup blocks (asyncpg sending a cancel request through a stalled proxy) must not
    stretch the caller's wait past the call timeout. The cleanup finishes in the background.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume_result)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume_result)
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    return task.result()


class Guard:
    def __init__(
        self,
        policy: ResiliencePolicy,
        call_timeouts_s: Mapping[str, float],
        classifiers: Mapping[str, Classifier],
        observer: CallObserver,
        recovery_eta_s: Callable[[], float],
    ) -> None:
        self._policy = policy
        self._recovery_eta_s = recovery_eta_s
        self._timeouts = dict(call_timeouts_s)
        self._classifiers = dict(classifiers)
        self._observer = observer

    async def call(
        self,
        dependency: str,
        operation: Callable[[], Awaitable[T]],
        timeout_s: float | None = None,
    ) -> T:
        """Run `operation()` against `dependency` under its breaker and call timeout."""
        permit = self._policy.acquire(dependency)
        if isinstance(permit, Rejected):
            self._observer.on_rejected(dependency)
            # Retry-After is the recovery ETA; never sooner than the breaker admits again.
            raise DependencyUnavailable(
                dependency,
                f"{dependency} breaker is {permit.state.value}",
                max(permit.retry_after_s, self._recovery_eta_s()),
            )
        limit = self._timeouts[dependency] if timeout_s is None else timeout_s
        started = time.perf_counter()
        try:
            result = await _bounded(_as_coroutine(operation), limit)
        except asyncio.CancelledError:
            # The request went away: not the dependency's fault, but a half-open trial
            # permit must come back or the breaker would wait for its lease to expire.
            self._policy.release(permit)
            add_spent(dependency, time.perf_counter() - started)
            raise
        except Exception as exc:
            elapsed = time.perf_counter() - started
            add_spent(dependency, elapsed)
            outcome = self._classifiers.get(dependency, caller_errors_ignored)(exc)
            self._policy.record(permit, outcome, elapsed)
            self._observer.on_call(dependency, outcome, elapsed)
            if outcome is Outcome.IGNORED:
                raise
            log.debug("%s call failed after %.3f s: %s", dependency, elapsed, _describe(exc))
            raise DependencyUnavailable(dependency, _describe(exc), self._recovery_eta_s()) from exc
        elapsed = time.perf_counter() - started
        add_spent(dependency, elapsed)
        self._policy.record_success(permit, elapsed)
        self._observer.on_call(dependency, Outcome.SUCCESS, elapsed)
        return result


async def _as_coroutine(operation: Callable[[], Awaitable[T]]) -> T:
    return await operation()
