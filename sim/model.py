"""One replication of the engine under load and faults, on SimPy's clock.

Requests arrive (open model: Poisson at the scenario's `rate_at(t)`, by thinning; closed
model: N users who send, wait for the answer, wait as Locust's `between` does, and repeat),
queue for the engine's own worker (its per-request overhead, first come first served), then
ask the policy how to serve their feature and walk the flow's calls. Every dependency call
goes through the policy core exactly as in the engine: `acquire`, a pooled connection, the
service time and toxics, the call timeout, `record`.

Speed: a request is a small object driven by callbacks on SimPy events, never a generator
process: it costs one event to reach its handler (after the engine's overhead, computed on
arrival, see `sim.server`) and one per dependency call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import simpy

from engine.policy import (
    FEATURE_NAMES,
    BreakerState,
    Outcome,
    PolicyConfig,
    Rejected,
    ResiliencePolicy,
    ServeMode,
)
from reports.runfolder import OUTCOME_CODES, faults_table
from scenarios.schema import ClosedLoad, FaultBase, OpenLoad, Scenario
from sim.clock import SimClock
from sim.dependencies import Connection, Dependency
from sim.events import ArrivalQueue, Wake
from sim.flows import FLOWS, Call, Flow, Path, Served
from sim.parameters import ModelParameters
from sim.recorder import RequestRecorder, StateRecorder
from sim.sampling import Stream, UniformStream
from sim.server import EngineServer
from sim.toxics import CallFailure, Toxic

_OK = OUTCOME_CODES["ok"]
_SHED = OUTCOME_CODES["shed"]
_REJECTED = OUTCOME_CODES["rejected"]
_ERROR = OUTCOME_CODES["error"]
_SERVED_OUTCOME = {
    Served.PRIMARY: _OK,
    Served.FALLBACK: OUTCOME_CODES["fallback"],
    Served.STALE: OUTCOME_CODES["stale"],
}
_PRIMARY = ServeMode.PRIMARY
_FALLBACK = ServeMode.FALLBACK
_UNAVAILABLE = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_FAILURE = Outcome.FAILURE

# The open model draws its arrivals this many simulated seconds at a time.
_ARRIVAL_CHUNK_S = 1.0
# Requests still in flight this long after the load ends are left unfinished.
_DRAIN_LIMIT_S = 120.0


# --- the flow table, compiled for one replication -------------------------------------------
# Each call carries its dependency object, scale and hit ratio, and each fallback is a direct
# reference, so the hot path does no look-ups by name.


class _Cache:
    """A cache's fresh entries as a whole, for how they lapse when nothing refills them.

    While reads refill it, a lookup hits at the cache's hit ratio. Once a read has had to
    look for a stale copy (the fetch that would have refilled failed or was refused), the
    refills have stopped: each live entry lapses at the end of its lifetime, and with fills
    spread in time what is left of a lifetime is uniform over [0, ttl), so the share of
    entries still alive falls linearly to 0 over one ttl. The next successful fill restores
    the hit ratio at once: the popular keys, which carry most reads, refill on their first.
    """

    __slots__ = ("refills_stopped_at", "ttl_s")

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.refills_stopped_at: float | None = None

    def alive_share(self, now: float, stopped_at: float) -> float:
        share = 1.0 - (now - stopped_at) / self.ttl_s
        return share if share > 0.0 else 0.0


class _CallPlan:
    __slots__ = (
        "best_effort",
        "dependency",
        "fills",
        "hit_outcome",
        "hit_ratio",
        "hit_skips",
        "lapses",
        "miss_fails",
        "name",
        "on_failure",
        "scale",
        "service",
        "stale_of",
    )

    def __init__(
        self,
        call: Call,
        dependency: Dependency,
        scale: float,
        hit_ratio: float | None,
        hit_outcome: int,
        caches: dict[str, _Cache],
        service: Stream | None = None,
    ) -> None:
        self.name = call.dependency
        self.dependency = dependency
        # The feature's own service times for this dependency, if measured (then scale 1).
        self.service = service
        self.scale = scale
        self.hit_ratio = hit_ratio
        self.hit_skips = call.hit_skips
        self.hit_outcome = hit_outcome
        self.miss_fails = call.miss_fails
        self.best_effort = call.best_effort
        self.on_failure: _PathPlan | None = None
        cache = None if call.cache is None else caches.get(call.cache)
        # A fresh lookup's hits lapse with its cache; a stale lookup tells that the
        # refills have stopped; a fill restarts them.
        self.lapses = None if call.stale_copy else cache
        self.stale_of = cache if call.stale_copy else None
        self.fills = None if call.fills is None else caches.get(call.fills)


class _Memo:
    """An in-process memo of the engine (`engine.service.memo.SingleFlight` with a time to
    live): a result is kept `ttl_s`; while one computation is under way, the requests that
    miss wait for it and end as it ends; a failure is not kept."""

    __slots__ = ("computing", "fresh_until", "ttl_s", "waiting")

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.fresh_until = -math.inf
        self.computing: _Request | None = None
        self.waiting: list[_Request] = []


class _PathPlan:
    __slots__ = ("calls", "length", "outcome")

    def __init__(self, calls: tuple[_CallPlan, ...], served: Served) -> None:
        self.calls = calls
        self.length = len(calls)
        self.outcome = _SERVED_OUTCOME[served]


class _FlowPlan:
    __slots__ = ("fallback_when", "feature", "memo", "primary")

    def __init__(
        self,
        feature: str,
        primary: _PathPlan,
        fallback_when: tuple[tuple[str | None, _PathPlan], ...],
        memo: _Memo | None,
    ) -> None:
        self.feature = feature
        self.primary = primary
        self.fallback_when = fallback_when
        self.memo = memo  # in front of the primary path

    def choose_fallback(self, unavailable: frozenset[str]) -> _PathPlan | None:
        for dependency, path in self.fallback_when:
            if dependency is None or dependency in unavailable:
                return path
        return None


def _compile_flow(
    flow: Flow,
    dependencies: dict[str, Dependency],
    parameters: ModelParameters,
    caches: dict[str, _Cache],
    services: dict[tuple[str, str], Stream],
) -> _FlowPlan:
    def hit_ratio(call: Call) -> float | None:
        if call.cache is None:
            return None
        ratios = parameters.stale_ratios if call.stale_copy else parameters.cache_hit_ratios
        return ratios.get(call.cache, 0.0)

    def compile_path(path: Path) -> _PathPlan:
        calls = []
        for call in path.calls:
            service = services.get((flow.feature, call.dependency))
            calls.append(
                _CallPlan(
                    call,
                    dependencies[call.dependency],
                    1.0 if service is not None else parameters.scale(flow.feature, call.dependency),
                    hit_ratio(call),
                    _SERVED_OUTCOME[path.served if call.hit_served is None else call.hit_served],
                    caches,
                    service,
                )
            )
        return _PathPlan(tuple(calls), path.served)

    compiled = {name: compile_path(path) for name, path in flow.fallbacks.items()}
    primary = compile_path(flow.primary)
    for source, plan in [(flow.primary, primary)] + [
        (flow.fallbacks[name], compiled[name]) for name in flow.fallbacks
    ]:
        for call, call_plan in zip(source.calls, plan.calls, strict=True):
            if call.on_failure is not None:
                call_plan.on_failure = compiled[call.on_failure]
    when = tuple((dependency, compiled[name]) for dependency, name in flow.fallback_when)
    ttl_s = None if flow.primary.memo is None else parameters.memo_ttl_s.get(flow.primary.memo)
    return _FlowPlan(flow.feature, primary, when, None if ttl_s is None else _Memo(ttl_s))


class _Request:
    __slots__ = (
        "call",
        "call_started",
        "connection",
        "failed",
        "failure",
        "flow",
        "index",
        "path",
        "pending",
        "permit",
        "refused",
        "step",
        "user",
        "waiting_for",
    )

    # Only what a new request needs is set here (a million of them are made per simulated
    # hour); the rest is set by the call that first uses it:
    #   call: _CallPlan, the call under way; permit: the breaker's permit for it;
    #   call_started: when it was admitted; connection: the pooled connection it holds;
    #   failure: how it will end (a CallFailure); pending: the one event this request waits
    #   for (any other that fires for it is stale); waiting_for: the Dependency whose pool
    #   it is queued for.
    # failed: the Dependency whose call last failed in this request (its best-effort calls
    # are skipped then). refused: whether what sent the request to its fallback was a
    # breaker's refusal (a FALLBACK decision counts as one: the engine's handler meets the
    # open breaker); a stale lookup that finds nothing then ends as the engine's does, with
    # that refusal (outcome rejected) rather than an error.
    call: _CallPlan
    permit: Any
    call_started: float
    connection: Connection | None
    failure: int
    pending: Any
    waiting_for: Dependency | None

    def __init__(self, index: int, flow: _FlowPlan, user: _User | None) -> None:
        self.index = index
        self.flow = flow
        self.user = user
        self.path = flow.primary
        self.step = 0
        self.failed: Dependency | None = None
        self.refused = False


class _User:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


@dataclass(frozen=True, slots=True)
class ReplicationResult:
    replication: int
    seed: int
    requests: pa.Table
    states: pa.Table
    faults: pa.Table
    events: int  # simulated requests
    recorder_bytes: int


class Model:
    def __init__(
        self,
        scenario: Scenario,
        policy_config: PolicyConfig,
        parameters: ModelParameters,
        replication: int,
        seed: int,
    ) -> None:
        self.scenario = scenario
        load = scenario.load
        self._open_load = load if isinstance(load, OpenLoad) else None
        self._closed_load = load if isinstance(load, ClosedLoad) else None
        self.replication = replication
        self.seed = seed
        self.env = env = simpy.Environment()
        self.policy = ResiliencePolicy(policy_config, SimClock(env))
        self._duration = float(scenario.duration_s)
        streams = np.random.SeedSequence([seed, replication]).spawn(8)
        rngs = [np.random.default_rng(s) for s in streams]
        self._arrival_rng = rngs[0]
        self._mix_rng = rngs[1]
        self._uniform = UniformStream(rngs[2])
        self._wait_rng = rngs[3]
        server = parameters.server
        self._server = EngineServer(
            server.workers,
            server.overhead,
            rngs[4],
            {FEATURE_NAMES.index(name): d for name, d in server.feature_overhead.items()},
        )
        dependency_seeds = streams[5].spawn(len(policy_config.breakers))
        self.dependencies: dict[str, Dependency] = {}
        for (name, breaker), dep_seed in zip(
            policy_config.breakers.items(), dependency_seeds, strict=True
        ):
            service_rng, toxic_rng = (np.random.default_rng(s) for s in dep_seed.spawn(2))
            dep_parameters = parameters.dependencies[name]
            self.dependencies[name] = Dependency(
                name,
                breaker,
                dep_parameters,
                Stream(dep_parameters.service, service_rng),
                UniformStream(toxic_rng),
            )
        mix = scenario.mix_fractions()
        self._mix_codes = np.array([FEATURE_NAMES.index(name) for name in mix], dtype=np.int8)
        self._mix_p = np.array(list(mix.values()), dtype=np.float64)
        caches = {name: _Cache(ttl_s) for name, ttl_s in parameters.fresh_ttl_s.items()}
        # The features' own service times, each drawn from a generator of its own.
        own = [
            (feature, dependency, distribution)
            for feature, per_dependency in sorted(parameters.feature_services.items())
            for dependency, distribution in sorted(per_dependency.items())
        ]
        services = {
            (feature, dependency): Stream(distribution, np.random.default_rng(own_seed))
            for (feature, dependency, distribution), own_seed in zip(
                own, streams[6].spawn(len(own)), strict=True
            )
        }
        self._flows = [
            _compile_flow(FLOWS[name], self.dependencies, parameters, caches, services)
            for name in FEATURE_NAMES
        ]
        self.recorder = RequestRecorder(self._expected_requests())
        self.states = StateRecorder(self.policy, replication)
        self._fault_rows: list[dict[str, Any]] = []
        self._in_flight = 0
        self._arrivals_done = False
        self._finished = env.event()
        # Bound once: the hot path appends these to SimPy events.
        self._on_handler = self._handler_event
        self._on_call_done = self._call_done_event
        self._on_acquire_timeout = self._acquire_timeout_event
        self._on_send = self._send_event
        self._on_inject = self._inject_event
        self._arrivals = ArrivalQueue(env, self._handle)
        self._decide = self.policy.decide
        self._acquire = self.policy.acquire
        self._record = self.policy.record
        self._record_success = self.policy.record_success
        self._close = self.recorder.close

    # --- running ---------------------------------------------------------------------------

    def _expected_requests(self) -> int:
        if self._open_load is not None:
            expected = float(self._open_load.expected_requests)
        else:
            assert self._closed_load is not None
            users, wait = self._closed_load.users, self._closed_load.wait.mean
            expected = users * self._duration / max(wait, 1e-3)
        return int(expected * 1.1 + 10.0 * math.sqrt(expected) + 64)

    def run(self) -> ReplicationResult:
        env = self.env
        self._schedule_faults()
        self._at(0.0, self._tick)
        if self._open_load is not None:
            self._at(0.0, self._arrive_chunk)
        else:
            self._start_users()
        env.run(
            until=simpy.AnyOf(env, [self._finished, env.timeout(self._duration + _DRAIN_LIMIT_S)])
        )
        return ReplicationResult(
            replication=self.replication,
            seed=self.seed,
            requests=self.recorder.table(self.replication),
            states=self.states.table(),
            faults=faults_table(self._fault_rows),
            events=self.recorder.count,
            recorder_bytes=self.recorder.nbytes,
        )

    def _at(self, t: float, action: Callable[[], None]) -> None:
        delay = max(0.0, t - self.env.now)
        self.env.timeout(delay).callbacks.append(lambda _event: action())

    def _tick(self) -> None:
        now = self.env.now
        self.policy.tick()
        self.states.sample(now)
        if not self._finished.triggered:
            self._at(now + self.policy.config.levels.tick_s, self._tick)

    def _maybe_finish(self) -> None:
        if self._arrivals_done and self._in_flight == 0 and not self._finished.triggered:
            self._finished.succeed()

    # --- faults ----------------------------------------------------------------------------

    def _schedule_faults(self) -> None:
        for index, fault in enumerate(self.scenario.faults):
            toxic = Toxic.from_fault(index, fault)
            dependency = self.dependencies[fault.target]
            row: dict[str, Any] = {
                "replication": self.replication,
                "index": index,
                "target": fault.target,
                "toxic": fault.toxic,
                "stream": fault.stream,
                "toxicity": float(fault.toxicity),
                "attributes": _attributes_json(fault),
                "scheduled_at": float(fault.at),
                "scheduled_end": float(fault.end),
                "applied_at": None,
                "removed_at": None,
            }
            self._fault_rows.append(row)
            self._at(fault.at, _bind(self._apply_fault, dependency, toxic, row))
            self._at(fault.end, _bind(self._remove_fault, dependency, toxic, row))

    def _apply_fault(self, dependency: Dependency, toxic: Toxic, row: dict[str, Any]) -> None:
        now = self.env.now
        row["applied_at"] = now
        if toxic.kind == "down":
            for request in dependency.go_down():
                self._drop(request, dependency)
        else:
            dependency.add_toxic(toxic, now)

    def _remove_fault(self, dependency: Dependency, toxic: Toxic, row: dict[str, Any]) -> None:
        row["removed_at"] = self.env.now
        if toxic.kind == "down":
            dependency.come_up()
        else:
            dependency.remove_toxic(toxic.fault_id)

    # --- arrivals --------------------------------------------------------------------------

    def _draw_features(self, count: int) -> np.ndarray:
        if len(self._mix_codes) == 1:
            return np.full(count, self._mix_codes[0], dtype=np.int8)
        picks = np.searchsorted(np.cumsum(self._mix_p), self._mix_rng.random(count), side="right")
        return self._mix_codes[np.minimum(picks, len(self._mix_codes) - 1)]

    def _arrive_chunk(self) -> None:
        """Draw the next chunk of open-model arrivals (a Poisson process thinned to the
        scenario's rate) and schedule each one's handler after the engine's overhead."""
        env = self.env
        begin = env.now
        end = min(begin + _ARRIVAL_CHUNK_S, self._duration)
        load = self._open_load
        assert load is not None
        peak = float(load.max_rate)
        rng = self._arrival_rng
        times = np.sort(rng.uniform(begin, end, rng.poisson(peak * (end - begin))))
        rates = _rates_at(load, times)
        times = times[rng.random(len(times)) * peak < rates]
        if len(times):
            features = self._draw_features(len(times))
            first = self.recorder.open_batch(times, features)
            flows = self._flows
            done = self._server.done_at(times, features)
            requests = [
                _Request(index, flows[code], None)
                for index, code in enumerate(features.tolist(), first)
            ]
            if self._server.in_order:
                self._arrivals.extend(done.tolist(), requests)
            else:
                on_handler = self._on_handler
                for delay, request in zip((done - begin).tolist(), requests, strict=True):
                    Wake(env, delay, request, on_handler)
            self._in_flight += len(times)
        if end < self._duration:
            self._at(end, self._arrive_chunk)
        else:
            self._arrivals_done = True
            self._maybe_finish()

    def _start_users(self) -> None:
        load = self._closed_load
        assert load is not None
        spawn_rate = load.spawn_rate_per_s
        for index in range(load.users):
            Wake(self.env, index / spawn_rate, _User(index), self._on_send)
        self._at(self._duration, self._end_closed_load)

    def inject(self, feature: str, at: float) -> None:
        """Send one request of `feature` at `at`, besides the scenario's load: scripted
        experiments and tests. (With a non-zero overhead, injected and open-load arrivals
        in the same second may queue out of order for the engine's worker.)"""
        code = FEATURE_NAMES.index(feature)
        Wake(self.env, at - self.env.now, code, self._on_inject)

    def _inject_event(self, event: Any) -> None:
        now = self.env.now
        code: int = event._value
        request = _Request(self.recorder.open(now, now, code), self._flows[code], None)
        self._in_flight += 1
        done = float(self._server.done_at(np.array([now]), np.array([code]))[0])
        Wake(self.env, done - now, request, self._on_handler)

    def _end_closed_load(self) -> None:
        self._arrivals_done = True
        self._maybe_finish()

    def _send_event(self, event: Any) -> None:
        user: _User = event._value
        now = self.env.now
        if now >= self._duration:
            return
        code = int(self._draw_features(1)[0])
        index = self.recorder.open(now, now, code)
        request = _Request(index, self._flows[code], user)
        self._in_flight += 1
        done = float(self._server.done_at(np.array([now]), np.array([code]))[0])
        Wake(self.env, done - now, request, self._on_handler)

    # --- a request's life ------------------------------------------------------------------

    def _handler_event(self, event: Any) -> None:
        self._handle(event._value)

    def _handle(self, request: _Request) -> None:
        flow = request.flow
        mode = self._decide(flow.feature).mode
        if mode is _PRIMARY:
            if flow.memo is not None and self._answered_by_memo(request, flow.memo):
                return
            self._next_call(request)
            return
        if mode is _FALLBACK:
            path = flow.choose_fallback(self._unavailable())
            if path is not None:
                request.path = path
                request.refused = True
                self._next_call(request)
                return
        self._finish(request, 503, _SHED)

    def _answered_by_memo(self, request: _Request, memo: _Memo) -> bool:
        """Whether the memo answers (or will: the request waits for the computation under
        way); False: this request computes."""
        if self.env._now < memo.fresh_until:
            self._finish(request, 200, _OK)
            return True
        if memo.computing is not None:
            memo.waiting.append(request)
            return True
        memo.computing = request
        return False

    def _memo_done(self, memo: _Memo, status: int, outcome: int) -> None:
        """The memo's computation ended: keep a success, and end its waiters alike."""
        memo.computing = None
        if outcome == _OK:
            memo.fresh_until = self.env._now + memo.ttl_s
        waiting, memo.waiting = memo.waiting, []
        for waiter in waiting:
            self._finish(waiter, status, outcome)

    def _unavailable(self) -> frozenset[str]:
        return frozenset(
            name for name, breaker in self.policy.breakers.items() if breaker.state in _UNAVAILABLE
        )

    def _next_call(self, request: _Request) -> None:
        path = request.path
        if request.step >= path.length:
            self._finish(request, 200, path.outcome)
            return
        call = path.calls[request.step]
        if call.best_effort and call.dependency is request.failed:
            request.step += 1
            self._next_call(request)
            return
        request.call = call
        permit = self._acquire(call.name)
        if permit.__class__ is Rejected:
            self._call_failed(request, call, True)
            return
        request.permit = permit
        env = self.env
        now = env._now
        request.call_started = now
        dependency = call.dependency
        connection = dependency.checkout()
        if connection is None:
            dependency.waiting.append(request)
            request.waiting_for = dependency
            wait = min(dependency.acquire_timeout_s, dependency.call_timeout_s)
            request.pending = Wake(env, wait, request, self._on_acquire_timeout)
            return
        self._run_call(request, call, connection, now)

    def _run_call(
        self, request: _Request, call: _CallPlan, connection: Connection, now: float
    ) -> None:
        dependency = call.dependency
        service = call.service
        if service is None:
            duration, failure = dependency.plan_call(connection, now, call.scale)
        else:
            duration, failure = dependency.plan_call(connection, now, call.scale, service)
        time_left = request.call_started + dependency.call_timeout_s - now
        if duration >= time_left:
            duration = time_left if time_left > 0.0 else 0.0
            failure = CallFailure.TIMEOUT
        request.connection = connection
        request.failure = failure
        connection.caller = request
        request.pending = Wake(self.env, duration, request, self._on_call_done)

    def _call_done_event(self, event: Any) -> None:
        request: _Request = event._value
        if request.pending is not event:
            return  # the call was dropped earlier
        request.pending = None
        call = request.call
        assert call is not None
        dependency = call.dependency
        connection = request.connection
        assert connection is not None
        request.connection = None
        failure = request.failure
        if failure:
            # A timed-out, reset or closed connection is not reused: it is reopened.
            connection.alive = False
        if dependency.waiting:
            self._hand_over(dependency, connection)
        else:
            connection.caller = None
            dependency.idle.append(connection)
        # The same calls as the engine's guard: a success takes the breaker's cheap path.
        if failure:
            self._record(request.permit, _FAILURE, self.env._now - request.call_started)
        else:
            self._record_success(request.permit, self.env._now - request.call_started)
        if failure:
            self._call_failed(request, call, False)
            return
        fills = call.fills
        if fills is not None:
            fills.refills_stopped_at = None
        hit_ratio = call.hit_ratio
        if hit_ratio is not None:
            lapses = call.lapses
            if lapses is not None and lapses.refills_stopped_at is not None:
                hit_ratio *= lapses.alive_share(self.env._now, lapses.refills_stopped_at)
            stale_of = call.stale_of
            if stale_of is not None and stale_of.refills_stopped_at is None:
                stale_of.refills_stopped_at = self.env._now
            if self._uniform.next() < hit_ratio:
                if call.hit_skips is None:
                    self._finish(request, 200, call.hit_outcome)
                    return
                request.step += 1 + call.hit_skips
                self._next_call(request)
                return
            if call.miss_fails:
                self._finish(request, 503, _REJECTED if request.refused else _ERROR)
                return
        request.step += 1
        self._next_call(request)

    def _hand_over(self, dependency: Dependency, connection: Connection) -> None:
        """Give a returned connection to the longest-waiting caller, or back to the pool."""
        waiting = dependency.waiting
        while waiting:
            waiter: _Request = waiting.popleft()
            if waiter.waiting_for is dependency:
                waiter.waiting_for = None
                call = waiter.call
                assert call is not None
                self._run_call(waiter, call, connection, self.env._now)
                return
        dependency.checkin(connection)

    def _acquire_timeout_event(self, event: Any) -> None:
        request: _Request = event._value
        if request.pending is not event:
            return  # a connection came in time
        request.pending = None
        request.waiting_for = None
        call = request.call
        assert call is not None
        self._record(request.permit, _FAILURE, self.env._now - request.call_started)
        self._call_failed(request, call, False)

    def _drop(self, request: _Request, dependency: Dependency) -> None:
        """The proxy went down under an in-flight call: it fails now."""
        connection = request.connection
        assert connection is not None
        request.pending = None
        request.connection = None
        self._hand_over(dependency, connection)
        self._record(request.permit, _FAILURE, self.env._now - request.call_started)
        call = request.call
        assert call is not None
        self._call_failed(request, call, False)

    def _call_failed(self, request: _Request, call: _CallPlan, rejected: bool) -> None:
        request.failed = call.dependency
        if call.best_effort:
            request.step += 1
            self._next_call(request)
            return
        fallback = call.on_failure
        if fallback is not None:
            request.path = fallback
            request.step = 0
            request.refused = rejected
            self._next_call(request)
            return
        self._finish(request, 503, _REJECTED if rejected else _ERROR)

    def _finish(self, request: _Request, status: int, outcome: int) -> None:
        now = self.env._now
        self._close(request.index, now, status, outcome)
        self._in_flight -= 1
        memo = request.flow.memo
        if memo is not None and memo.computing is request:
            self._memo_done(memo, status, outcome)
        user = request.user
        if user is not None:
            assert self._closed_load is not None
            wait = self._closed_load.wait
            pause = (
                wait.low if wait.high <= wait.low else self._wait_rng.uniform(wait.low, wait.high)
            )
            if now + pause < self._duration:
                Wake(self.env, pause, user, self._on_send)
        if self._arrivals_done and self._in_flight == 0:
            self._maybe_finish()


def _bind(function: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: function(*args)


def _attributes_json(fault: FaultBase) -> str:
    return json.dumps(fault.toxiproxy_attributes(), sort_keys=True)


def _rates_at(load: OpenLoad, times: np.ndarray) -> np.ndarray:
    """The load's `rate_at` over many times at once (its linear pieces, vectorised)."""
    pieces = load.pieces
    if not pieces:
        return np.zeros(len(times))
    starts = np.array([p.start for p in pieces])
    ends = np.array([p.end for p in pieces])
    rate0 = np.array([p.start_rate for p in pieces])
    rate1 = np.array([p.end_rate for p in pieces])
    index = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(pieces) - 1)
    span = ends[index] - starts[index]
    fraction = np.where(span > 0, (times - starts[index]) / np.where(span > 0, span, 1.0), 0.0)
    rates = rate0[index] + (rate1[index] - rate0[index]) * fraction
    return np.asarray(np.maximum(rates, 0.0), dtype=np.float64)


def simulate_replication(
    scenario: Scenario,
    policy_config: PolicyConfig,
    parameters: ModelParameters,
    replication: int,
    seed: int,
) -> ReplicationResult:
    return Model(scenario, policy_config, parameters, replication, seed).run()
