"""A circuit breaker with resilience4j's semantics, driven by the caller's clock.

- A time-based sliding window of 1 s buckets counts calls, failures and slow calls, so a
  50 % error rate trips it (a count of consecutive failures never would).
- `acquire(now)` returns a `Permit` or a `Rejected` value; `record(permit, ...)` returns the
  transitions it caused. No lock is held around the protected call: the breaker only
  decides before it and counts after it.
- Half-open permits are leases stamped with the breaker's epoch. The epoch changes at every
  transition, so the late result of a call admitted under an older state changes nothing;
  a lease not returned within the call timeout is given back.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from engine.policy.config import BreakerConfig
from engine.policy.events import BreakerState, BreakerTransition

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED
_METRICS_ONLY = BreakerState.METRICS_ONLY

_NEVER = float("-inf")

# Weight of the newest successful call in the moving average of call durations.
_SMOOTHING = 0.2

FORCED_STATES = frozenset({_FORCED_OPEN, _DISABLED, _METRICS_ONLY})


class Outcome(Enum):
    """How a call ended, as far as the breaker cares."""

    SUCCESS = "success"
    FAILURE = "failure"
    # The caller's own error (a constraint violation, a 4xx other than 429): not a failure,
    # and not counted at all.
    IGNORED = "ignored"


# Reading an Enum member off its class costs ~70 ns on Python 3.11; the hot path uses these.
_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_IGNORED = Outcome.IGNORED


class Permit(NamedTuple):
    """Leave to make one call. `lease` is 0 outside HALF_OPEN."""

    dependency: str
    epoch: int
    lease: int


class Rejected(NamedTuple):
    """The breaker refused the call; `retry_after_s` is when it may admit again."""

    dependency: str
    state: BreakerState
    retry_after_s: float


class BreakerSnapshot(NamedTuple):
    dependency: str
    state: BreakerState
    failure_rate: float
    slow_rate: float
    calls: int
    epoch: int
    open_until: float
    open_multiplier: float
    half_open_in_flight: int

    def to_dict(self) -> dict[str, object]:
        row = self._asdict()
        row["state"] = self.state.value
        return row


_NO_EVENTS: tuple[BreakerTransition, ...] = ()


class CircuitBreaker:
    __slots__ = (
        "_buckets_calls",
        "_buckets_failures",
        "_buckets_slow",
        "_calls",
        "_closed_permit",
        "_failures",
        "_head_end",
        "_head_index",
        "_head_second",
        "_head_start",
        "_leases",
        "_next_lease",
        "_outbox",
        "_permits_left",
        "_quiet_until",
        "_slow",
        "_slow_call_s",
        "_trial_successes",
        "_unsettled",
        "config",
        "epoch",
        "mean_success_s",
        "name",
        "open_multiplier",
        "open_until",
        "state",
    )

    def __init__(self, name: str, config: BreakerConfig, now: float = 0.0) -> None:
        self.name = name
        self.config = config
        self.state = _CLOSED
        self.epoch = 0
        self.open_until = 0.0
        self.open_multiplier = 1.0
        # A moving average of successful call durations: the expected time of a trial call.
        self.mean_success_s = 0.0
        size = config.window_s
        self._buckets_calls = [0] * size
        self._buckets_failures = [0] * size
        self._buckets_slow = [0] * size
        self._calls = 0
        self._failures = 0
        self._slow = 0
        # False once a rate check passed and since then only successes that were not slow
        # were counted: the rates cannot have risen, so the next such success skips the check.
        self._unsettled = True
        # CLOSED and settled: the state in which a fast success only needs counting.
        # The end of the head second while CLOSED and settled (the rates cannot rise from a
        # fast success), else -inf: the one bound a fast success is checked against.
        self._quiet_until = _NEVER
        self._slow_call_s = config.slow_call_s
        self._set_head(int(now))
        self._leases: dict[int, float] = {}
        self._next_lease = 1
        self._permits_left = 0
        self._trial_successes = 0
        self._outbox: list[BreakerTransition] = []
        # CLOSED admits without allocating: one permit per epoch serves every call.
        self._closed_permit = Permit(name, 0, 0)

    # --- the primitive ---------------------------------------------------------------------

    def acquire(self, now: float) -> Permit | Rejected:
        state = self.state
        if state is _CLOSED or state is _METRICS_ONLY or state is _DISABLED:
            return self._closed_permit
        if state is _OPEN:
            if now < self.open_until:
                return Rejected(self.name, _OPEN, self.open_until - now)
            self._enter_half_open(now, "open time elapsed")
        if self.state is _HALF_OPEN:
            self._expire_leases(now)
            if self._permits_left > 0:
                self._permits_left -= 1
                lease = self._next_lease
                self._next_lease = lease + 1
                self._leases[lease] = now + self.config.call_timeout_s
                return Permit(self.name, self.epoch, lease)
            return Rejected(self.name, _HALF_OPEN, self._earliest_lease_end(now))
        return Rejected(self.name, state, self.config.open_s)

    def record_success(
        self, permit: Permit, duration: float, now: float
    ) -> tuple[BreakerTransition, ...]:
        """`record(permit, Outcome.SUCCESS, duration, now)`, cheaper on the common path.

        A fast call admitted under the current CLOSED state, within the window's current
        second, when the last rate check passed: it only counts, since it cannot raise a rate.
        Anything else takes the general path.
        """
        if (
            permit is self._closed_permit
            and self._head_start <= now < self._quiet_until
            and duration < self._slow_call_s
        ):
            # The moving average of durations is fed by the general path: the first success
            # of each second, and every other outcome, take it.
            self._buckets_calls[self._head_index] += 1
            self._calls += 1
            return _NO_EVENTS
        return self.record(permit, _SUCCESS, duration, now)

    def record(
        self, permit: Permit, outcome: Outcome, duration: float, now: float
    ) -> tuple[BreakerTransition, ...]:
        """Count a finished call; returns the transitions it (or an earlier acquire) caused."""
        # The CLOSED permit always carries the current epoch: identity is the cheap test.
        if permit is not self._closed_permit and permit.epoch != self.epoch:
            return self.take_events()  # admitted under an older state: changes nothing
        state = self.state
        if state is _CLOSED or state is _METRICS_ONLY:
            if outcome is _IGNORED:
                return self.take_events() if self._outbox else _NO_EVENTS
            config = self.config
            failed = outcome is _FAILURE
            if not failed:
                self.mean_success_s += _SMOOTHING * (duration - self.mean_success_s)
            slow = duration >= config.slow_call_s
            # _count(), inlined: this runs on every call.
            if self._head_start <= now < self._head_end:  # int(now) is the head second
                index = self._head_index
            else:
                second = int(now)
                if second == self._head_second:
                    index = self._head_index
                elif self._move_head(second):
                    index = second % config.window_s
                else:
                    index = -1  # older than the whole window: not counted
            if index >= 0:
                self._buckets_calls[index] += 1
                self._calls += 1
                if failed:
                    self._buckets_failures[index] += 1
                    self._failures += 1
                if slow:
                    self._buckets_slow[index] += 1
                    self._slow += 1
            if state is _CLOSED and (failed or slow or self._unsettled):
                calls = self._calls
                if calls >= config.minimum_calls:
                    if (
                        self._failures / calls >= config.failure_rate_threshold
                        or self._slow / calls >= config.slow_call_rate_threshold
                    ):
                        self._open(now, "failure or slow-call rate reached its threshold")
                    else:
                        self._unsettled = False
                        self._quiet_until = self._head_end
            return self.take_events() if self._outbox else _NO_EVENTS
        if state is _HALF_OPEN:
            if self._leases.pop(permit.lease, None) is None:
                return self.take_events()  # its lease was given back already
            if outcome is _IGNORED:
                self._permits_left += 1
            elif outcome is _FAILURE or duration >= self.config.slow_call_s:
                # A slow trial is as good as a failed one: the dependency is not back.
                self.open_multiplier = min(
                    self.open_multiplier * 2.0, self.config.max_open_multiplier
                )
                self._open(
                    now,
                    "a trial call failed" if outcome is _FAILURE else "a trial call was slow",
                )
            else:
                self.mean_success_s += _SMOOTHING * (duration - self.mean_success_s)
                self._trial_successes += 1
                if self._trial_successes >= self.config.half_open_permits:
                    self._close(now, "every trial call succeeded")
        return self.take_events()

    def release(self, permit: Permit, now: float) -> tuple[BreakerTransition, ...]:
        """A call that was cancelled before it ended gives its half-open permit back."""
        if permit.epoch == self.epoch and self._leases.pop(permit.lease, None) is not None:
            self._permits_left += 1
        return self.take_events()

    def tick(self, now: float) -> tuple[BreakerTransition, ...]:
        """The 1 s tick: leaves OPEN once its time is up, gives back overdue leases."""
        if self.state is _OPEN and now >= self.open_until:
            self._enter_half_open(now, "open time elapsed")
        elif self.state is _HALF_OPEN:
            self._expire_leases(now)
        return self.take_events()

    def force(self, state: BreakerState | None, now: float) -> tuple[BreakerTransition, ...]:
        """An operator's override; `None` returns to normal operation (CLOSED, empty window)."""
        if state is not None and state not in FORCED_STATES:
            raise ValueError(f"{state} is not a state an operator can force")
        target = state if state is not None else _CLOSED
        if target is not self.state:
            self._reset_window(now)
            self.open_multiplier = 1.0
            self._transition(target, now, "forced by operator" if state else "force cleared")
        return self.take_events()

    # --- readings --------------------------------------------------------------------------

    def snapshot(self, now: float) -> BreakerSnapshot:
        self._slide(int(now))
        calls = self._calls
        return BreakerSnapshot(
            dependency=self.name,
            state=self.state,
            failure_rate=self._failures / calls if calls else 0.0,
            slow_rate=self._slow / calls if calls else 0.0,
            calls=calls,
            epoch=self.epoch,
            open_until=self.open_until,
            open_multiplier=self.open_multiplier,
            half_open_in_flight=len(self._leases),
        )

    def take_events(self) -> tuple[BreakerTransition, ...]:
        if not self._outbox:
            return _NO_EVENTS
        events = tuple(self._outbox)
        self._outbox.clear()
        return events

    @property
    def has_pending_events(self) -> bool:
        return bool(self._outbox)

    # --- internals -------------------------------------------------------------------------

    def _set_head(self, second: int) -> None:
        self._head_second = second
        self._head_index = second % self.config.window_s
        # For now >= 0, int(now) == second exactly when second <= now < second + 1.
        self._head_start, self._head_end = (
            (float(second), second + 1.0) if second >= 0 else (0.0, 0.0)
        )
        self._unsettled = True
        self._quiet_until = _NEVER

    def _move_head(self, second: int) -> bool:
        """Slide the window to a new second; False if `second` is older than the whole window."""
        if second < self._head_second - self.config.window_s + 1:
            return False
        self._slide(second)
        return True

    def _slide(self, second: int) -> None:
        """Move the window's head forward to `second`, emptying the buckets it leaves behind."""
        head = self._head_second
        if second <= head:
            return
        size = self.config.window_s
        for stale in range(max(head + 1, second - size + 1), second + 1):
            index = stale % size
            self._calls -= self._buckets_calls[index]
            self._failures -= self._buckets_failures[index]
            self._slow -= self._buckets_slow[index]
            self._buckets_calls[index] = 0
            self._buckets_failures[index] = 0
            self._buckets_slow[index] = 0
        self._set_head(second)

    def _reset_window(self, now: float) -> None:
        size = self.config.window_s
        self._buckets_calls = [0] * size
        self._buckets_failures = [0] * size
        self._buckets_slow = [0] * size
        self._calls = self._failures = self._slow = 0
        self._set_head(int(now))

    def _expire_leases(self, now: float) -> None:
        if not self._leases:
            return
        overdue = [lease for lease, deadline in self._leases.items() if deadline <= now]
        for lease in overdue:
            del self._leases[lease]
            self._permits_left += 1

    def _earliest_lease_end(self, now: float) -> float:
        if not self._leases:
            return 0.0
        return max(0.0, min(self._leases.values()) - now)

    def _open(self, now: float, reason: str) -> None:
        self.open_until = now + self.config.open_s * self.open_multiplier
        self._transition(_OPEN, now, reason)

    def _enter_half_open(self, now: float, reason: str) -> None:
        self._permits_left = self.config.half_open_permits
        self._trial_successes = 0
        self._leases.clear()
        self._transition(_HALF_OPEN, now, reason)

    def _close(self, now: float, reason: str) -> None:
        self.open_multiplier = 1.0
        self._reset_window(now)
        self._transition(_CLOSED, now, reason)

    def _transition(self, target: BreakerState, now: float, reason: str) -> None:
        self._quiet_until = _NEVER  # a new state earns its fast path with a rate check of its own
        calls = self._calls
        event = BreakerTransition(
            at=now,
            dependency=self.name,
            from_state=self.state,
            to_state=target,
            epoch=self.epoch + 1,
            reason=reason,
            failure_rate=self._failures / calls if calls else 0.0,
            slow_rate=self._slow / calls if calls else 0.0,
            calls=calls,
        )
        self.state = target
        self.epoch += 1
        if target is not _HALF_OPEN:
            self._leases.clear()
        self._closed_permit = Permit(self.name, self.epoch, 0)
        self._outbox.append(event)
