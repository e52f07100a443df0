"""Prometheus metrics on the engine's own registry (never the process-global one).

Names follow resilience4j's (`state`, `calls{kind}`, `not_permitted_calls`, `failure_rate`,
`slow_call_rate`) under a `reslab_` prefix. Gauges of state are one series per possible
state, 1 for the current one, so that a dashboard can stack or sum them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from engine.policy import BreakerState, Level, Outcome, ServeMode
from engine.policy.events import PolicyEvent
from engine.policy.resilience import PolicyStatus

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

_CALL_KIND = {
    Outcome.SUCCESS: "successful",
    Outcome.FAILURE: "failed",
    Outcome.IGNORED: "ignored",
}

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# prometheus_client's own value formatting (Go's float syntax), which it leaves untyped.
_format_value: Callable[[float], str] = floatToGoString
# Suffixes of the OpenMetrics-only samples that the text format moves into gauges of their own.
_OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")
# More distinct series than this means label values are not bounded: start the memory over.
_MAX_REMEMBERED_SERIES = 20_000


class TextExposition:
    """The Prometheus text format of a registry, byte for byte what `generate_latest` writes.

    `generate_latest` escapes, sorts and validates every label set of every sample on every
    scrape, which made a scrape cost several milliseconds of CPU. The series here are few and
    stable (bounded label values), so each one's name-and-labels prefix is built once and
    remembered; only the values are formatted per scrape.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def render(self) -> bytes:
        escaping = openmetrics.UNDERSCORES
        output: list[str] = []
        for metric in self._registry.collect():
            name = metric.name
            kind = metric.type
            # Munging from OpenMetrics into the Prometheus format, as generate_latest does.
            if kind == "counter":
                name = name + "_total"
            elif kind == "info":
                name = name + "_info"
                kind = "gauge"
            elif kind == "stateset":
                kind = "gauge"
            elif kind == "gaugehistogram":
                kind = "histogram"
            elif kind == "unknown":
                kind = "untyped"
            documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            escaped = openmetrics.escape_metric_name(name, escaping)
            output.append(f"# HELP {escaped} {documentation}\n")
            output.append(f"# TYPE {escaped} {kind}\n")
            moved: dict[str, list[str]] = {}
            for sample in metric.samples:
                for suffix in _OPENMETRICS_SUFFIXES:
                    if sample.name == metric.name + suffix:
                        moved.setdefault(suffix, []).append(self._line(sample))
                        break
                else:
                    output.append(self._line(sample))
            for suffix, lines in sorted(moved.items()):
                escaped = openmetrics.escape_metric_name(metric.name + suffix, escaping)
                output.append(f"# HELP {escaped} {documentation}\n")
                output.append(f"# TYPE {escaped} gauge\n")
                output.extend(lines)
        return "".join(output).encode("utf-8")

    def _line(self, sample: Sample) -> str:
        key = (sample.name, tuple(sample.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = _sample_prefix(sample.name, sample.labels)
            if len(self._prefixes) >= _MAX_REMEMBERED_SERIES:
                self._prefixes.clear()
            self._prefixes[key] = prefix
        if sample.timestamp is None:
            return f"{prefix}{_format_value(sample.value)}\n"
        milliseconds = int(float(sample.timestamp) * 1000)
        return f"{prefix}{_format_value(sample.value)} {milliseconds:d}\n"


def _escape_label_value(value: str) -> str:
    # Label values may be any UTF-8: only backslash, newline and double quote are escaped.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_prefix(name: str, labels: dict[str, str]) -> str:
    """A sample's line up to its value (name, labels and the space), as generate_latest
    writes it."""
    escaping = openmetrics.UNDERSCORES
    labelstr = ",".join(
        f'{openmetrics.escape_label_name(key, escaping)}="{_escape_label_value(value)}"'
        for key, value in sorted(labels.items())
    )
    escaped = openmetrics.escape_metric_name(name, escaping)
    # generate_latest only ever escapes to underscores here, so the name is always a
    # legacy one and goes before the braces.
    return f"{escaped}{{{labelstr}}} " if labelstr else f"{escaped} "


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.breaker_state = Gauge(
            "reslab_circuitbreaker_state",
            "1 for the breaker's current state, 0 for the others",
            ["dependency", "state"],
            registry=registry,
        )
        self.calls = Counter(
            "reslab_circuitbreaker_calls",
            "Calls that a breaker admitted, by how they ended",
            ["dependency", "kind"],
            registry=registry,
        )
        self.not_permitted = Counter(
            "reslab_circuitbreaker_not_permitted_calls",
            "Calls that a breaker rejected",
            ["dependency"],
            registry=registry,
        )
        self.failure_rate = Gauge(
            "reslab_circuitbreaker_failure_rate",
            "Failure rate in the breaker's sliding window (0-1)",
            ["dependency"],
            registry=registry,
        )
        self.slow_call_rate = Gauge(
            "reslab_circuitbreaker_slow_call_rate",
            "Slow-call rate in the breaker's sliding window (0-1)",
            ["dependency"],
            registry=registry,
        )
        self.health_score = Gauge(
            "reslab_health_score", "Weighted health score (0-100)", registry=registry
        )
        self.level = Gauge(
            "reslab_degradation_level",
            "Degradation level: 0 OPTIMAL, 1 DEGRADED, 2 LIMITED, 3 MINIMAL, 4 EMERGENCY",
            registry=registry,
        )
        self.level_state = Gauge(
            "reslab_degradation_level_state",
            "1 for the current degradation level, 0 for the others",
            ["level"],
            registry=registry,
        )
        self.feature_available = Gauge(
            "reslab_feature_available",
            "1 when the feature is served by its primary path",
            ["feature"],
            registry=registry,
        )
        self.feature_mode = Gauge(
            "reslab_feature_mode",
            "1 for the feature's current serving mode, 0 for the others",
            ["feature", "mode"],
            registry=registry,
        )
        self.recovery_eta = Gauge(
            "reslab_recovery_eta_seconds",
            "Estimated seconds until every breaker is closed and the level is OPTIMAL",
            registry=registry,
        )
        self.dependency_latency = Histogram(
            "reslab_dependency_call_duration_seconds",
            "Duration of guarded dependency calls",
            ["dependency", "kind"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.request_latency = Histogram(
            "reslab_http_request_duration_seconds",
            "Duration of HTTP requests, by route template and status",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.responses = Counter(
            "reslab_http_responses",
            "HTTP responses by route template and how they were served",
            ["route", "served_by"],
            registry=registry,
        )
        self.policy_events = Counter(
            "reslab_policy_events",
            "Events the policy emitted, by kind",
            ["kind"],
            registry=registry,
        )
        self._text = TextExposition(registry)
        # `labels()` validates and looks its arguments up under a lock on every call; the
        # children of the per-call and per-request series are looked up once and kept.
        self._call_children: dict[tuple[str, Outcome], tuple[Counter, Histogram]] = {}
        self._request_children: dict[tuple[str, str, int, str], tuple[Histogram, Counter]] = {}

    # --- the guard's observer --------------------------------------------------------------

    def on_call(self, dependency: str, outcome: Outcome, seconds: float) -> None:
        children = self._call_children.get((dependency, outcome))
        if children is None:
            kind = _CALL_KIND[outcome]
            children = (
                self.calls.labels(dependency, kind),
                self.dependency_latency.labels(dependency, kind),
            )
            self._call_children[(dependency, outcome)] = children
        calls, latency = children
        calls.inc()
        latency.observe(seconds)

    def on_rejected(self, dependency: str) -> None:
        self.not_permitted.labels(dependency).inc()

    # --- the policy's listener and the tick ------------------------------------------------

    def on_event(self, event: PolicyEvent) -> None:
        self.policy_events.labels(event.kind).inc()

    def update(self, status: PolicyStatus) -> None:
        for dependency, snapshot in status.breakers.items():
            for state in BreakerState:
                self.breaker_state.labels(dependency, state.value).set(
                    1.0 if snapshot.state is state else 0.0
                )
            self.failure_rate.labels(dependency).set(snapshot.failure_rate)
            self.slow_call_rate.labels(dependency).set(snapshot.slow_rate)
        self.health_score.set(status.score)
        self.level.set(int(status.level))
        for level in Level:
            self.level_state.labels(level.name).set(1.0 if status.level is level else 0.0)
        for feature, decision in status.features.items():
            self.feature_available.labels(feature).set(
                1.0 if decision.mode is ServeMode.PRIMARY else 0.0
            )
            for mode in ServeMode:
                self.feature_mode.labels(feature, mode.value).set(
                    1.0 if decision.mode is mode else 0.0
                )
        self.recovery_eta.set(status.eta.seconds)

    # --- requests --------------------------------------------------------------------------

    def on_request(
        self, method: str, route: str, status: int, served_by: str, seconds: float
    ) -> None:
        key = (method, route, status, served_by)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.request_latency.labels(method, route, str(status)),
                self.responses.labels(route, served_by),
            )
            if len(self._request_children) >= _MAX_REMEMBERED_SERIES:
                self._request_children.clear()
            self._request_children[key] = children
        latency, responses = children
        latency.observe(seconds)
        responses.inc()

    def exposition(self) -> bytes:
        return self._text.render()
