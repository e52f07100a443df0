"""The Locust side of a load run: the users, the load shapes and the event listeners.

Import this module from a locustfile only. Importing Locust patches the whole process with
gevent, which is why the logic lives in modules that do not import it (`loadtests.openloop`,
`loadtests.shapes`, `loadtests.requests_mix`, `loadtests.recording`, `loadtests.plan`) and
only the glue is here.

- `OpenLoopUser` — the open-loop generator: one per load-generating process; sends its share
  of the seeded Poisson schedule (`loadtests.openloop`) at the scheduled times, each request
  in a greenlet of its own, through a geventhttpclient connection pool sized for the rate
  (the client under Locust's `FastHttpUser`, used directly; every request still reaches
  Locust's statistics and web UI through its ``request`` event).
- `ClosedRetailUser` — a closed-model user (`FastHttpUser`): send, wait the scenario's wait
  time, repeat.
- `ScenarioShape` — the `LoadTestShape` of the scenario named by ``RESLAB_SCENARIO``; the
  preset shapes (`RampShape`, `SustainedShape`, `BurstShape`, `StepsShape`, `Users100Shape`,
  `Users500Shape`, `Users1000Shape`) carry the seed's profiles for locustfiles of one's own.
  A locustfile should expose exactly one shape: Locust runs the first it finds.

Every request is recorded raw (`loadtests.recording`); Locust's own statistics are for
watching a run, not for measuring it.

Lifecycle. On the master (or the single local process) the test start makes the plan
(`loadtests.plan.LoadPlan`), writes ``load.json`` and sends the plan to the workers; each
generating process then records into its own part files and, at the test's stop, closes
them. A local process merges its parts at once; with workers, `loadtests.runner` (or
``python -m loadtests.recording merge``) merges when every process has exited.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import random
import resource
import socket
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, cast

# gevent ships no type information; Locust (which does) is the typed surface used here.
import gevent  # type: ignore[import-untyped]
import gevent.event  # type: ignore[import-untyped]
from gevent.pool import Group  # type: ignore[import-untyped]
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import FastHttpUser, LoadTestShape, User, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, Runner, WorkerRunner

from loadtests.config import (
    DISTRIBUTED_START_LEAD_S,
    LOCAL_START_LEAD_S,
    LoadSettings,
)
from loadtests.openloop import (
    LatenessTracker,
    arrival_rng,
    connection_pool_size,
    drive,
    schedule,
)
from loadtests.plan import GENERATOR_DONE_MESSAGE, PLAN_MESSAGE, LoadPlan, make_plan
from loadtests.recording import (
    LOAD_FILE,
    AckedWritesLog,
    RequestRecorder,
    classify_outcome,
    merge_parts,
    part_paths,
    write_json,
)
from loadtests.requests_mix import (
    ACKED_WRITE_IDS,
    InvoicePool,
    RequestFactory,
    RequestSpec,
    SeedCatalog,
)
from loadtests.shapes import Shape, profile_scenario, shape_for
from reports.runfolder import FEATURE_CODES, OUTCOME_CODES

log = logging.getLogger("reslab.load")

PLAN_WAIT_S = 60.0
# Invoices a generator uploads before t = 0 when enhancement is in the mix: something of its
# own to enhance from the first arrival on.
PRIMING_INVOICES = 3
_ERROR = OUTCOME_CODES["error"]
_INVOICE_UPLOAD = FEATURE_CODES["invoice_upload"]
_ENHANCEMENT = FEATURE_CODES["ai_invoice_enhancement"]


class _HttpClient(Protocol):
    """What `_Recording.send` uses of a client: `FastHttpSession` (closed-model users) or
    `_PooledClient` (the open-loop generator). `FastHttpSession` sends a bytes body as it is,
    which its own annotation (str or dict) does not say."""

    def request(
        self, method: str, url: str, *, name: str, data: bytes | None, headers: dict[str, str]
    ) -> Any: ...


def _client(session: FastHttpSession | _PooledClient) -> _HttpClient:
    return cast(_HttpClient, session)


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    headers: Any
    content: bytes | None


class _HttpStatusError(Exception):
    """A non-2xx answer, as Locust's statistics count failures."""


class _PooledClient:
    """A geventhttpclient connection pool to one host, used the way `FastHttpSession` uses it
    minus what an API load does not need and a thousand requests a second pay for (a cookie
    jar, redirects, re-parsing the URL of every request). Each request is still reported to
    Locust's ``request`` event, so its statistics and web UI see the open-loop load."""

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int,
        network_timeout: float,
        connection_timeout: float,
        request_event: Any,
    ) -> None:
        url = URL(base_url)
        self._prefix = url.path.rstrip("/")
        self._client = HTTPClient.from_url(
            url,
            concurrency=concurrency,
            network_timeout=network_timeout,
            connection_timeout=connection_timeout,
        )
        self._event = request_event

    def request(
        self, method: str, url: str, *, name: str, data: bytes | None, headers: dict[str, str]
    ) -> _Answer:
        started_at = time.time()
        started = time.perf_counter()
        content = b""
        status = 0
        response_headers: Any = None
        error: Exception | None = None
        try:
            response = self._client.request(method, self._prefix + url, body=data, headers=headers)
            try:
                content = response.read()
            finally:
                response.release()
            status = response.status_code
            response_headers = response
            if not 200 <= status < 300:
                error = _HttpStatusError(f"HTTP {status}")
        except Exception as exc:  # refused, reset, timed out: no answer
            error = exc
        self._event.fire(
            request_type=method,
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(content),
            response=None,
            context={},
            exception=error,
            start_time=started_at,
            url=url,
        )
        return _Answer(status, response_headers, content if status else None)

    def close(self) -> None:
        self._client.close()


def _listen(hook: Any, handler: Any) -> None:
    """Add a listener to a Locust event hook (`EventHook.add_listener` is unannotated)."""
    hook.add_listener(handler)


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        return None
    return ", ".join(value) if isinstance(value, list) else str(value)


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# --------------------------------------------------------------------------- one process's run


class _Recording:
    """This process's part of one test: the plan, its slot, and where its requests go."""

    def __init__(self, plan: LoadPlan, role: str, slot: int | None) -> None:
        self.plan = plan
        self.role = role
        self.slot = slot
        self.part = f"{role}{'' if slot is None else slot}-{socket.gethostname()}-{os.getpid()}-r{plan.replication}"
        requests_path, acked_path, self.stats_path = part_paths(plan.run_dir, self.part)
        self.recorder = (
            RequestRecorder(requests_path, plan.replication) if slot is not None else None
        )
        self.acked = AckedWritesLog(acked_path)
        self.lateness = LatenessTracker(plan.late_threshold_s)
        self.invoices = InvoicePool()
        self.t0 = plan.t0_monotonic()
        self.scheduled = 0
        self.sent = 0
        self.answered = 0
        self.send_failures = 0
        self.closed = False
        self._cpu_at_start = _cpu_seconds()
        self._wall_at_start = time.monotonic()

    def now(self) -> float:
        """Load time: seconds from t = 0."""
        return time.monotonic() - self.t0

    def wait_for_t0(self) -> None:
        delay = self.t0 - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)

    def send(
        self,
        client: FastHttpSession | _PooledClient,
        spec: RequestSpec,
        feature_code: int,
        scheduled: float,
    ) -> None:
        """Send one request and record it; never raises (a sender greenlet must not die
        with a traceback per request)."""
        api_key = self.plan.api_key
        start = self.now()
        self.sent += 1
        self.lateness.observe(scheduled, start)
        try:
            response = _client(client).request(
                spec.method, spec.url, name=spec.name, data=spec.body, headers=spec.headers(api_key)
            )
            end = self.now()
            status = int(response.status_code or 0)
            headers = response.headers
            content = response.content if status in (503, 200, 201) else None
            outcome = classify_outcome(
                status, _header(headers, "x-served-by"), content if status == 503 else None
            )
            timing = _header(headers, "server-timing")
        except Exception as exc:  # a bug here must cost one record, not the generator
            end = self.now()
            status, outcome, timing, headers, content = 0, _ERROR, None, None, None
            self.send_failures += 1
            if self.send_failures == 1:
                log.exception("sending %s %s failed: %s", spec.method, spec.name, exc)
        self.answered += 1
        if self.recorder is not None:
            self.recorder.add(feature_code, scheduled, start, end, status, outcome, timing)
        if 200 <= status < 300 and content:
            self._note_write(spec, feature_code, status, headers, content, scheduled, end)

    def _note_write(
        self,
        spec: RequestSpec,
        feature_code: int,
        status: int,
        headers: Any,
        content: bytes,
        scheduled: float,
        end: float,
    ) -> None:
        id_field = ACKED_WRITE_IDS.get(spec.feature)
        if id_field is None and feature_code != _INVOICE_UPLOAD:
            return
        try:
            document = json.loads(content)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        if feature_code == _INVOICE_UPLOAD:
            invoice_id = document.get("invoice_id")
            if isinstance(invoice_id, int):
                self.invoices.add(invoice_id)
            return
        assert id_field is not None
        self.acked.add(
            {
                "feature": spec.feature,
                "idempotency_key": spec.idempotency_key,
                "id_field": id_field,
                "id": document.get(id_field),
                "status": status,
                "replayed": _header(headers, "idempotent-replayed") == "true",
                **spec.subject,
                "replication": self.plan.replication,
                "scheduled": scheduled,
                "end": end,
                "generator": self.slot,
            }
        )

    def close(self) -> None:
        """Close the part files and write this process's account of the test."""
        if self.closed:
            return
        self.closed = True
        if self.recorder is not None:
            self.recorder.close()
        self.acked.close()
        user, system = _cpu_seconds()
        start_user, start_system = self._cpu_at_start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lateness = self.lateness.summary()
        stats: dict[str, Any] = {
            "part": self.part,
            "role": self.role,
            "slot": self.slot,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "replication": self.plan.replication,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "answered": self.answered,
            "unanswered": self.sent - self.answered,
            "rows": self.recorder.rows if self.recorder is not None else 0,
            "dropped": self.recorder.dropped if self.recorder is not None else 0,
            "acked_writes": self.acked.count,
            "send_failures": self.send_failures,
            **lateness.to_dict(),
            # CPU from the plan (just before t = 0) to the stop: the generator's own cost,
            # without Locust's start-up.
            "cpu_user_s": user - start_user,
            "cpu_system_s": system - start_system,
            "wall_s": time.monotonic() - self._wall_at_start,
            "cpu_process_total_s": user + system,
            "max_rss_kb": usage.ru_maxrss,
        }
        write_json(self.stats_path, stats)
        if self.slot is not None:
            log.info(
                "generator %s: %d sent, %d late (> %g ms), max lateness %.1f ms, %d unanswered",
                self.part, self.sent, lateness.late, lateness.threshold_s * 1000,
                lateness.max_s * 1000, self.sent - self.answered,
            )  # fmt: skip


class _ProcessState:
    """What this Locust process knows about the run in progress."""

    def __init__(self) -> None:
        self.settings = LoadSettings.from_env()
        self.plan: LoadPlan | None = None
        self.recording: _Recording | None = None
        self.plan_ready = gevent.event.Event()
        self.tests_started = 0
        self.generators_finished = 0
        self.stopping = False
        self.generator_claimed = False
        self.user_numbers = itertools.count()

    def activate(self, plan: LoadPlan, role: str, slot: int | None) -> None:
        if self.recording is not None:
            self.recording.close()
        self.plan = plan
        self.recording = _Recording(plan, role, slot)
        self.stopping = False
        self.generators_finished = 0
        self.generator_claimed = False
        self.plan_ready.set()

    def wait_for_plan(self) -> _Recording | None:
        if not self.plan_ready.wait(PLAN_WAIT_S):
            log.error("no load plan after %g s; this user sends nothing", PLAN_WAIT_S)
            return None
        return self.recording

    def claim_generator(self) -> bool:
        """The first open-loop user of a process generates; any other idles (the dispatcher
        gives each process one, but a process must never send its share twice)."""
        if self.generator_claimed:
            return False
        self.generator_claimed = True
        return True

    def finish(self) -> None:
        if self.recording is not None:
            self.recording.close()
        self.plan_ready.clear()


_state = _ProcessState()


def _default_host() -> str | None:
    """The engine's URL from ``RESLAB_STAGING`` when Locust is not given ``--host``."""
    return _state.settings.staging_host


def _settings_for(shape: object) -> LoadSettings:
    """The settings of the test: the environment's, with the preset's scenario when the shape
    is a preset."""
    settings = _state.settings
    profile = getattr(shape, "profile", None)
    if isinstance(profile, str):
        return dataclasses.replace(
            settings, scenario=profile_scenario(profile), scenario_source=f"profile {profile}"
        )
    return settings


def _generating_processes(runner: Runner | None) -> list[str]:
    """The client ids of the processes that generate load, in a stable order."""
    if isinstance(runner, MasterRunner):
        workers = runner.clients.ready + runner.clients.spawning + runner.clients.running
        return sorted(worker.id for worker in workers)
    if isinstance(runner, LocalRunner):
        return [runner.client_id]
    return []


# --------------------------------------------------------------------------- event listeners


def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(PLAN_MESSAGE, _on_plan_message)
    elif isinstance(runner, MasterRunner):
        runner.register_message(GENERATOR_DONE_MESSAGE, _on_generator_done)


def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or runner is None:
        return  # a worker's plan comes from the master, before its users are spawned
    settings = _settings_for(environment.shape_class)
    processes = _generating_processes(runner)
    distributed = isinstance(runner, MasterRunner)
    lead = settings.start_lead_s
    if lead is None:
        lead = DISTRIBUTED_START_LEAD_S if distributed else LOCAL_START_LEAD_S
    # A fixed run folder keeps every test of this process, as replications; without one,
    # each test gets a fresh folder.
    replication = _state.tests_started if settings.run_dir is not None else 0
    _state.tests_started += 1
    plan = make_plan(
        settings,
        generators=max(1, len(processes)),
        slots={process: slot for slot, process in enumerate(processes)},
        replication=replication,
        run_dir=settings.run_dir,
        host=environment.host,
        start_lead_s=lead,
    )
    write_json(plan.run_dir / LOAD_FILE, plan.load_document())
    if not plan.api_key:
        log.warning("no API key (RESLAB_API_KEY or RESLAB_STAGING): /api requests will get 401")
    log.info(
        "load %s (%s): t0 in %.2f s, %g s, %d generator(s), recording into %s",
        plan.scenario.name, plan.scenario_source, plan.t0_epoch - time.time(),
        plan.duration_s, plan.generators, plan.run_dir,
    )  # fmt: skip
    if distributed:
        runner.send_message(PLAN_MESSAGE, plan.to_message())
        _state.activate(plan, "master", None)
    else:
        _state.activate(plan, "local", 0)


def _on_plan_message(environment: Environment, msg: Any, **_: Any) -> None:
    plan = LoadPlan.from_message(msg.data)
    runner = environment.runner
    client_id = runner.client_id if isinstance(runner, WorkerRunner) else ""
    slot = plan.slot_of(client_id)
    if slot is None:
        log.warning("this worker joined after the plan was made: it sends nothing this test")
    _state.activate(plan, "worker", slot)


def _on_generator_done(environment: Environment, msg: Any, **_: Any) -> None:
    _state.generators_finished += 1


def _on_test_stopping(environment: Environment, **_: Any) -> None:
    _state.stopping = True


def _on_test_stop(environment: Environment, **_: Any) -> None:
    recording = _state.recording
    _state.finish()
    if recording is not None and isinstance(environment.runner, LocalRunner):
        summary = merge_parts(recording.plan.run_dir)
        log.info("recorded %d requests into %s", summary.rows, summary.requests_path)


_listen(events.init, _on_init)
_listen(events.test_start, _on_test_start)
_listen(events.test_stopping, _on_test_stopping)
_listen(events.test_stop, _on_test_stop)


def _generator_finished(environment: Environment, slot: int) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(GENERATOR_DONE_MESSAGE, {"slot": slot})
    else:
        _state.generators_finished += 1


# --------------------------------------------------------------------------- users


class _LoadClock:
    """`loadtests.openloop.ScheduleClock` on this process's monotonic clock, under gevent."""

    __slots__ = ("_t0",)

    def __init__(self, t0: float) -> None:
        self._t0 = t0

    def now(self) -> float:
        return time.monotonic() - self._t0

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)


def _idle_forever() -> None:
    while True:
        gevent.sleep(3600)


class OpenLoopUser(User):
    """One process's open-loop generator (see `loadtests.openloop`). The shape runs one per
    load-generating process; its single task sends the whole share and then idles."""

    host = _default_host()

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._senders = Group()
        self._client: _PooledClient | None = None

    @task
    def generate(self) -> None:
        recording = _state.wait_for_plan()
        if recording is None or recording.slot is None or not recording.plan.is_open:
            _idle_forever()
            return
        host = self.environment.host or self.host
        if not host:
            log.error("no host: give --host, or RESLAB_STAGING with the engine's URL")
            _idle_forever()
            return
        if not _state.claim_generator():
            _idle_forever()
            return
        plan, slot = recording.plan, recording.slot
        profile = plan.profile
        client = _PooledClient(
            host,
            concurrency=connection_pool_size(profile.max_rate / plan.generators),
            network_timeout=plan.request_timeout_s,
            connection_timeout=min(5.0, plan.request_timeout_s),
            request_event=self.environment.events.request,
        )
        self._client = client
        factory = RequestFactory(
            SeedCatalog(plan.catalog_skus),
            random.Random(plan.request_seed(slot)),
            plan.key_prefix(slot),
            recording.invoices,
        )
        fractions = plan.scenario.mix_fractions()
        if "ai_invoice_enhancement" in fractions:
            self._prime_invoices(client, factory, recording)
        senders = self._senders

        def dispatch(scheduled: float, feature_code: int) -> None:
            recording.scheduled += 1
            spec = factory.build_code(feature_code)
            senders.spawn(recording.send, client, spec, feature_code, scheduled)

        recording.wait_for_t0()
        result = drive(
            schedule(
                profile, fractions, arrival_rng(plan.seed, plan.replication), slot, plan.generators
            ),
            _LoadClock(recording.t0),
            dispatch,
            should_stop=lambda: _state.stopping,
        )
        if not result.abandoned:
            senders.join(timeout=plan.drain_s)
            _generator_finished(self.environment, slot)
        _idle_forever()

    def _prime_invoices(
        self, client: _PooledClient, factory: RequestFactory, recording: _Recording
    ) -> None:
        """Upload a few invoices before t = 0 (not recorded: they are set-up, not load)."""
        for _ in range(PRIMING_INVOICES):
            spec = factory.invoice_upload()
            try:
                response = _client(client).request(
                    spec.method, spec.url, name=f"{spec.name} (before t0)", data=spec.body,
                    headers=spec.headers(recording.plan.api_key),
                )  # fmt: skip
                if response.status_code == 201 and response.content:
                    invoice_id = json.loads(response.content).get("invoice_id")
                    if isinstance(invoice_id, int):
                        recording.invoices.add(invoice_id)
            except Exception as exc:
                log.warning("uploading an invoice before t0 failed: %s", exc)

    def on_stop(self) -> None:
        # Answers still out when the test stops are not part of it.
        self._senders.kill(block=False)
        if self._client is not None:
            self._client.close()
            self._client = None


class ClosedRetailUser(FastHttpUser):
    """A closed-model user: send one request of the mix, wait the scenario's wait, repeat."""

    host = _default_host()
    network_timeout = _state.settings.request_timeout_s
    connection_timeout = min(5.0, _state.settings.request_timeout_s)
    max_retries = 0
    concurrency = 1

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._recording: _Recording | None = None
        self._factory: RequestFactory | None = None
        self._rng = random.Random()
        self._codes: list[int] = []
        self._weights: list[float] = []
        self._wait = (0.5, 1.5)

    def wait_time(self) -> float:
        return self._rng.uniform(*self._wait)

    def on_start(self) -> None:
        recording = _state.wait_for_plan()
        if recording is None or recording.slot is None:
            _idle_forever()
            return
        plan, slot = recording.plan, recording.slot
        number = next(_state.user_numbers)
        self._rng = random.Random(plan.request_seed(slot, number + 1))
        self._factory = RequestFactory(
            SeedCatalog(plan.catalog_skus),
            self._rng,
            f"{plan.key_prefix(slot)}-u{number}",
            recording.invoices,
        )
        fractions = plan.scenario.mix_fractions()
        self._codes = [FEATURE_CODES[name] for name in fractions]
        self._weights = list(fractions.values())
        shape = plan.shape()
        wait = getattr(getattr(shape, "load", None), "wait", None)
        if wait is not None:
            self._wait = (wait.low, wait.high)
        self._recording = recording
        recording.wait_for_t0()

    @task
    def send_one(self) -> None:
        recording, factory = self._recording, self._factory
        if recording is None or factory is None or recording.closed:
            _idle_forever()
            return
        code = self._rng.choices(self._codes, weights=self._weights)[0]
        if code == _ENHANCEMENT and not len(recording.invoices):
            code = _INVOICE_UPLOAD  # nothing to enhance yet: upload one first
        spec = factory.build_code(code)
        recording.scheduled += 1
        # Closed model: a request is due when its user sends it.
        recording.send(self.client, spec, code, recording.now())


# --------------------------------------------------------------------------- shapes


class ScenarioShape(LoadTestShape):
    """The load shape of the run's scenario (``RESLAB_SCENARIO``; see `loadtests.shapes`)."""

    profile: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        settings = _settings_for(self)
        self._shape: Shape = shape_for(settings.scenario, settings.duration_override_s)

    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        recording = _state.recording
        shape = self._shape
        t: float | None = None
        if recording is not None and not recording.closed:
            shape = recording.plan.shape()
            t = recording.now()
        generators = max(1, len(_generating_processes(self.runner)))
        step = shape.tick(t, generators, _state.generators_finished)
        if step is None:
            return None
        user_class: type[User] = OpenLoopUser if step.user_kind == "open" else ClosedRetailUser
        return step.users, step.spawn_rate, [user_class]


class RampShape(ScenarioShape):
    """100 → 500 req/s over 90 s, then 30 s at 500 (``ramp-100-500``)."""

    profile = "ramp"


class SustainedShape(ScenarioShape):
    """500 req/s for 150 s (``sustained-500``)."""

    profile = "sustained"


class BurstShape(ScenarioShape):
    """200 req/s with a 5 s burst of 5,000 req/s (``burst-5000``)."""

    profile = "burst"


class StepsShape(ScenarioShape):
    """100, 200, 300, 400, 500 req/s for 30 s each (``steps-100-500``)."""

    profile = "steps"


class Users100Shape(ScenarioShape):
    """100 closed-model users (``closed-100-users``)."""

    profile = "users-100"


class Users500Shape(ScenarioShape):
    """500 closed-model users (``closed-500-users``)."""

    profile = "users-500"


class Users1000Shape(ScenarioShape):
    """1,000 closed-model users (``closed-1000-users``)."""

    profile = "users-1000"


PRESET_SHAPES: Mapping[str, type[ScenarioShape]] = {
    shape.profile: shape
    for shape in (
        RampShape, SustainedShape, BurstShape, StepsShape,
        Users100Shape, Users500Shape, Users1000Shape,
    )
    if shape.profile is not None
}  # fmt: skip

__all__ = [
    "PRESET_SHAPES",
    "BurstShape",
    "ClosedRetailUser",
    "OpenLoopUser",
    "RampShape",
    "ScenarioShape",
    "StepsShape",
    "SustainedShape",
    "Users100Shape",
    "Users500Shape",
    "Users1000Shape",
]
