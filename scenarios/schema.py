"""The scenario schema: one experiment that the simulator and a chaos campaign both run.

A scenario file (``scenarios/*.yaml``) names a load, a mix of features, a list of faults and
what counts as success. The models below are frozen and refuse unknown keys, so a typo is an
error that names the field instead of a setting that silently does nothing.

Durations are written as a number of seconds or as a string with a unit — ``"500ms"``,
``"30s"``, ``"2m"`` — and are held as floats in seconds. Rates are requests per second.

Every model validates the same way whether the data came from YAML or from Python; turning a
`pydantic.ValidationError` into a message that names the file, the field path and the rule is
`scenarios.loader`'s job.
"""

from __future__ import annotations

import bisect
import difflib
import json
import math
import re
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Literal, NamedTuple, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.policy.config import DEPENDENCIES
from engine.policy.features import FEATURE_NAMES

__all__ = [
    "DEFAULT_MIX",
    "DEPENDENCIES",
    "FEATURE_NAMES",
    "TOXICS",
    "TOXIC_ATTRIBUTES",
    "Abort",
    "BandwidthAttributes",
    "BandwidthFault",
    "Burst",
    "ClosedLoad",
    "DownFault",
    "Fault",
    "FaultBase",
    "Hold",
    "LatencyAttributes",
    "LatencyFault",
    "LimitDataAttributes",
    "LimitDataFault",
    "Load",
    "NoAttributes",
    "OpenLoad",
    "Ramp",
    "RatePiece",
    "ResetPeerAttributes",
    "ResetPeerFault",
    "Scenario",
    "ShapeSegment",
    "SlicerAttributes",
    "SlicerFault",
    "Slo",
    "SlowCloseAttributes",
    "SlowCloseFault",
    "Step",
    "TimeoutAttributes",
    "TimeoutFault",
    "Tolerance",
    "ToxicAttributes",
    "WaitRange",
    "format_duration",
    "parse_duration",
]


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^\s*(?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|m)?\s*$"
)
_SECONDS_PER_UNIT = {"s": 1.0, "m": 60.0}
_DURATION_FORMS = 'a number of seconds or a string such as "250ms", "30s", "1.5m"'


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``2.5``, ``"30s"``, ``"250ms"``, ``"2m"`` or ``"30"``.

    A string without a unit means seconds, like a bare number. Negative, infinite and
    non-numeric values are refused with a `ValueError` that says which forms are accepted.
    """
    # bool is an int subclass; `True` is a typo for a duration, never one second.
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}; expected {_DURATION_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r}; expected {_DURATION_FORMS}")
        # ms divides rather than multiplies by 0.001 so that "1ms" is exactly 1 / 1000.
        number = float(match["number"])
        unit = match["unit"] or "s"
        seconds = number / 1000.0 if unit == "ms" else number * _SECONDS_PER_UNIT[unit]
    else:
        raise ValueError(f"not a duration: {value!r}; expected {_DURATION_FORMS}")
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite duration: {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds + 0.0  # turns "-0s" into 0.0


def format_duration(seconds: float) -> str:
    """The shortest readable string that `parse_duration` turns back into exactly `seconds`."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    candidates = []
    if seconds.is_integer():
        candidates.append(f"{int(seconds)}s")
    milliseconds = round(seconds * 1000.0)
    candidates.append(f"{milliseconds}ms")
    for candidate in candidates:
        if parse_duration(candidate) == seconds:
            return candidate
    return f"{seconds!r}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as a number or a string with a unit (``ms``, ``s``, ``m``); ≥ 0."""

PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""A `Duration` that must be longer than zero."""

Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""Requests per second, ≥ 0."""

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A share between 0 and 1 inclusive."""

RelativeTolerance = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A relative error: 0.10 means 10 % of the measured value."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        # Python code may use the attribute names; files use the aliases (`from`, `for`, `over`).
        validate_by_name=True,
        validate_by_alias=True,
    )


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


class Ramp(_Model):
    """Change the rate linearly from `start_rate` (``from``) to `end_rate` (``to``) over
    `duration` (``over``). Without ``from`` the ramp starts at the current base rate.
    The base rate is ``to`` afterwards."""

    start_rate: Rate | None = Field(default=None, alias="from")
    end_rate: Rate = Field(alias="to")
    duration: PositiveDuration = Field(alias="over")


class Hold(_Model):
    """Keep a constant rate for `duration` (``for``): `rate` if given, else the current base
    rate. The held rate becomes the base rate."""

    rate: Rate | None = None
    duration: PositiveDuration = Field(alias="for")


class Step(_Model):
    """Jump to `rate` and stay there for `duration` (``for``); `rate` becomes the base rate."""

    rate: Rate
    duration: PositiveDuration = Field(alias="for")


class Burst(_Model):
    """A spike: `rate` for `duration` (``for``), then back to the base rate from before it.
    Unlike a `Step`, a burst leaves the base rate unchanged."""

    rate: Rate
    duration: PositiveDuration = Field(alias="for")


ShapeAction = Ramp | Hold | Step | Burst
_SEGMENT_KINDS = ("ramp", "hold", "step", "burst")


class ShapeSegment(_Model):
    """One entry of an open load's `shape`, written ``{ramp: {...}}``, ``{hold: {...}}``,
    ``{step: {...}}`` or ``{burst: {...}}``; exactly one key."""

    # One optional field per kind (rather than a tagged union) keeps the kind as the key in
    # error paths: ``load.shape[0].ramp.over`` says where the mistake is.
    ramp: Ramp | None = None
    hold: Hold | None = None
    step: Step | None = None
    burst: Burst | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ShapeSegment:
        kinds = [kind for kind in _SEGMENT_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise _rule(
                "a shape entry has exactly one of ramp, hold, step, burst "
                f"(found: {', '.join(kinds) or 'none'})"
            )
        return self

    @property
    def action(self) -> ShapeAction:
        for action in (self.ramp, self.hold, self.step, self.burst):
            if action is not None:
                return action
        raise AssertionError("validated segments have exactly one action")  # pragma: no cover


class RatePiece(NamedTuple):
    """A stretch of an open load's timeline on which the target rate is linear (constant when
    `start_rate` equals `end_rate`); times in seconds from the start of the load."""

    start: float
    end: float
    start_rate: float
    end_rate: float

    def rate_at(self, t: float) -> float:
        """The rate at `t`, for `t` within [`start`, `end`]."""
        if self.start_rate == self.end_rate:
            return self.start_rate
        fraction = (t - self.start) / (self.end - self.start)
        return max(0.0, self.start_rate + (self.end_rate - self.start_rate) * fraction)

    @property
    def expected_requests(self) -> float:
        return (self.start_rate + self.end_rate) / 2.0 * (self.end - self.start)


# Segment lengths are summed in floating point; this much is rounding, not a mistake.
_SUM_SLACK = 1e-9


def _piece_start(piece: RatePiece) -> float:
    return piece.start


class OpenLoad(_Model):
    """Open model: requests arrive at a target rate whatever the service does, and latency is
    measured from each request's scheduled time (MEASURING.md).

    - ``{model: open, rate: 200, duration: 120s}`` — a constant rate.
    - With a `shape`, the segments run one after another from t = 0. A *base rate* carries
      from one segment to the next: it starts at `rate` (0 when `rate` is absent); a ramp ends
      at its ``to``, a hold or step sets it, a burst leaves it unchanged. After the last
      segment the base rate holds until `duration`. `duration` defaults to the length of the
      shape and cannot be shorter than it.

    `rate_at` is the one definition of the target rate over time: the simulator's arrival
    process and the Locust load shape both call it.
    """

    model: Literal["open"]
    rate: Rate | None = None
    duration: PositiveDuration | None = None
    shape: tuple[ShapeSegment, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> OpenLoad:
        if not self.shape:
            if self.rate is None:
                raise _rule("an open load needs a rate or a shape", "rate")
            if self.duration is None:
                raise _rule("an open load without a shape needs a duration", "duration")
        shape_length = sum(segment.action.duration for segment in self.shape)
        if self.duration is not None and shape_length > self.duration + _SUM_SLACK:
            raise _rule(
                f"the shape lasts {shape_length:g} s, longer than the duration {self.duration:g} s",
                "duration",
            )
        if self.max_rate <= 0:
            raise _rule("the load never sends a request: every rate is 0", "rate")
        return self

    @cached_property
    def pieces(self) -> tuple[RatePiece, ...]:
        """The target rate as consecutive linear pieces covering [0, `duration_s`)."""
        pieces: list[RatePiece] = []
        base = self.rate if self.rate is not None else 0.0
        t = 0.0
        for segment in self.shape:
            action = segment.action
            end = t + action.duration
            if isinstance(action, Ramp):
                start_rate = base if action.start_rate is None else action.start_rate
                pieces.append(RatePiece(t, end, start_rate, action.end_rate))
                base = action.end_rate
            elif isinstance(action, Hold):
                held = base if action.rate is None else action.rate
                pieces.append(RatePiece(t, end, held, held))
                base = held
            elif isinstance(action, Step):
                pieces.append(RatePiece(t, end, action.rate, action.rate))
                base = action.rate
            else:
                pieces.append(RatePiece(t, end, action.rate, action.rate))
            t = end
        total = self.duration if self.duration is not None else t
        if total - t > _SUM_SLACK:
            pieces.append(RatePiece(t, total, base, base))
        elif pieces:
            # A sum of segment lengths can miss the duration by a rounding error (0.1 + 0.2);
            # the timeline ends at the duration all the same.
            pieces[-1] = pieces[-1]._replace(end=total)
        return tuple(pieces)

    @property
    def duration_s(self) -> float:
        """The length of the load in seconds."""
        return self.pieces[-1].end if self.pieces else 0.0

    @property
    def max_rate(self) -> float:
        """The highest target rate at any time (the bound a thinning arrival process needs)."""
        return max((max(p.start_rate, p.end_rate) for p in self.pieces), default=0.0)

    @property
    def expected_requests(self) -> float:
        """The integral of the target rate: how many requests the load sends on average."""
        return sum(piece.expected_requests for piece in self.pieces)

    def rate_at(self, t: float) -> float:
        """The target rate (req/s) at `t` seconds from the start; 0 outside [0, duration)."""
        if not 0.0 <= t < self.duration_s:
            return 0.0
        index = bisect.bisect_right(self.pieces, t, key=_piece_start) - 1
        return self.pieces[index].rate_at(t)


class WaitRange(_Model):
    """A closed-model user's wait between requests, uniform in [`low`, `high`] seconds
    (Locust's ``between``); ``low == high`` is a constant wait (Locust's ``constant``).
    Written ``0.5s..1.5s`` or a single duration."""

    low: Duration
    high: Duration

    @model_validator(mode="after")
    def _ordered(self) -> WaitRange:
        if self.low > self.high:
            raise _rule(f"the wait range runs backwards: {self.low:g} s..{self.high:g} s", "high")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    def __str__(self) -> str:
        if self.low == self.high:
            return format_duration(self.low)
        return f"{format_duration(self.low)}..{format_duration(self.high)}"


def _wait_input(value: object) -> object:
    if isinstance(value, str) and ".." in value:
        low, _, high = value.partition("..")
        return {"low": parse_duration(low), "high": parse_duration(high)}
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        seconds = parse_duration(value)
        return {"low": seconds, "high": seconds}
    return value


class ClosedLoad(_Model):
    """Closed model: `users` users each send a request, wait, and repeat (Locust's default),
    so a slow service is sent less. Users start at `spawn_rate` per second (default: all of
    them within the first second); the wait defaults to ``0.5s..1.5s``."""

    model: Literal["closed"]
    users: int = Field(ge=1)
    wait: Annotated[WaitRange, BeforeValidator(_wait_input)] = WaitRange(low=0.5, high=1.5)
    spawn_rate: float | None = Field(default=None, gt=0)
    duration: PositiveDuration

    @property
    def duration_s(self) -> float:
        """The length of the load in seconds."""
        return self.duration

    @property
    def spawn_rate_per_s(self) -> float:
        """Users started per second, with the default applied."""
        return self.spawn_rate if self.spawn_rate is not None else float(self.users)

    @property
    def ramp_up_s(self) -> float:
        """Seconds until every user has started."""
        return self.users / self.spawn_rate_per_s


Load = Annotated[OpenLoad | ClosedLoad, Field(discriminator="model")]


# --------------------------------------------------------------------------------------------
# Mix
# --------------------------------------------------------------------------------------------

# The default retail mix, in percent. A store's traffic is dominated by stock look-ups and the
# dashboard that staff keep open; writes are a minority, AI and batch work rarer still. Every
# feature has a weight so that a fault always has some traffic to break.
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "inventory_read": 40.0,
        "dashboard_summary": 10.0,
        "health_status": 5.0,
        "metrics_export": 2.0,
        "order_processing": 8.0,
        "inventory_write": 5.0,
        "product_search": 10.0,
        "pricing_update": 2.0,
        "invoice_upload": 2.0,
        "stock_timeline": 3.0,
        "ai_pricing_suggestion": 3.0,
        "report_export": 1.0,
        "complex_analytics": 2.0,
        "ai_recommendations": 5.0,
        "ai_invoice_enhancement": 1.0,
        "batch_import": 1.0,
    }
)


def _suggestion(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _known_feature(name: str) -> str:
    if name not in FEATURE_NAMES:
        raise ValueError(
            f"unknown feature {name!r}{_suggestion(name, FEATURE_NAMES)} "
            f"(features: {', '.join(FEATURE_NAMES)})"
        )
    return name


def _positive_total(mix: dict[str, float]) -> dict[str, float]:
    if sum(mix.values()) <= 0:
        raise ValueError("the weights must add up to more than 0")
    return mix


FeatureName = Annotated[str, AfterValidator(_known_feature)]
Mix = Annotated[
    dict[FeatureName, Annotated[float, Field(ge=0, allow_inf_nan=False)]],
    AfterValidator(_positive_total),
]


# --------------------------------------------------------------------------------------------
# Faults (Toxiproxy toxics; attributes as Toxiproxy's README defines them)
# --------------------------------------------------------------------------------------------

# Toxiproxy attributes are integers; a float or a quoted number is a mistake, not a value.
_Attribute = Annotated[int, Field(strict=True, ge=0)]


class ToxicAttributes(_Model):
    """The attributes of one kind of toxic, in Toxiproxy's units (see each subclass)."""


class LatencyAttributes(ToxicAttributes):
    """Delay each chunk of data by `latency` ± `jitter` milliseconds."""

    latency: _Attribute
    jitter: _Attribute = 0


class BandwidthAttributes(ToxicAttributes):
    """Limit the connection to `rate` KB/s."""

    rate: _Attribute


class SlowCloseAttributes(ToxicAttributes):
    """Delay the socket's close by `delay` milliseconds."""

    delay: _Attribute


class TimeoutAttributes(ToxicAttributes):
    """Stop all data and close the connection after `timeout` milliseconds; 0 (the default)
    holds the data until the toxic is removed."""

    timeout: _Attribute = 0


class ResetPeerAttributes(ToxicAttributes):
    """Reset the connection (TCP RST) after `timeout` milliseconds; 0 resets at once."""

    timeout: _Attribute = 0


class SlicerAttributes(ToxicAttributes):
    """Slice data into packets of `average_size` ± `size_variation` bytes, `delay`
    **microseconds** apart."""

    average_size: Annotated[int, Field(strict=True, ge=1)]
    size_variation: _Attribute = 0
    delay: _Attribute = 0

    @model_validator(mode="after")
    def _variation_below_average(self) -> SlicerAttributes:
        # A variation as large as the average would allow empty or negative slices.
        if self.size_variation >= self.average_size:
            raise _rule(
                f"size_variation ({self.size_variation}) must be smaller than average_size "
                f"({self.average_size})",
                "size_variation",
            )
        return self


class LimitDataAttributes(ToxicAttributes):
    """Close the connection once `bytes` bytes have passed."""

    bytes: _Attribute


class NoAttributes(ToxicAttributes):
    """A ``down`` fault disables the proxy and takes no attributes."""


def _known_target(name: str) -> str:
    if name not in DEPENDENCIES:
        raise ValueError(
            f"unknown target {name!r}{_suggestion(name, DEPENDENCIES)} "
            f"(targets: {', '.join(DEPENDENCIES)})"
        )
    return name


Target = Annotated[str, AfterValidator(_known_target)]
"""A dependency's name, as `engine.policy` spells it (one Toxiproxy proxy each)."""


class FaultBase(_Model):
    """A fault applied to `target`'s proxy from `at` for `duration` seconds.

    `toxicity` is the probability that Toxiproxy applies the toxic to a connection (drawn once
    per connection and direction; MEASURING.md). `stream` is the direction: ``downstream``
    (server → client, the default) or ``upstream`` (client → server).
    """

    at: Duration
    duration: PositiveDuration
    target: Target
    toxicity: Fraction = 1.0
    stream: Literal["upstream", "downstream"] = "downstream"
    toxic: str
    attributes: ToxicAttributes

    @property
    def end(self) -> float:
        """When the fault is removed, in seconds from the start of the load."""
        return self.at + self.duration

    def toxiproxy_attributes(self) -> dict[str, int]:
        """The toxic's attributes as Toxiproxy's HTTP API takes them."""
        return {name: int(value) for name, value in self.attributes.model_dump().items()}


class LatencyFault(FaultBase):
    toxic: Literal["latency"]
    attributes: LatencyAttributes


class BandwidthFault(FaultBase):
    toxic: Literal["bandwidth"]
    attributes: BandwidthAttributes


class SlowCloseFault(FaultBase):
    toxic: Literal["slow_close"]
    attributes: SlowCloseAttributes


class TimeoutFault(FaultBase):
    toxic: Literal["timeout"]
    attributes: TimeoutAttributes = TimeoutAttributes()


class ResetPeerFault(FaultBase):
    toxic: Literal["reset_peer"]
    attributes: ResetPeerAttributes = ResetPeerAttributes()


class SlicerFault(FaultBase):
    toxic: Literal["slicer"]
    attributes: SlicerAttributes


class LimitDataFault(FaultBase):
    toxic: Literal["limit_data"]
    attributes: LimitDataAttributes


class DownFault(FaultBase):
    """The proxy is disabled: new connections are refused and open ones dropped, in both
    directions and for every connection, so neither toxicity nor stream applies."""

    toxic: Literal["down"]
    attributes: NoAttributes = NoAttributes()

    @field_validator("toxicity")
    @classmethod
    def _whole_proxy(cls, toxicity: float) -> float:
        if toxicity != 1.0:
            raise ValueError("a down fault disables the whole proxy; toxicity must be 1")
        return toxicity

    @field_validator("stream")
    @classmethod
    def _both_directions(cls, stream: str) -> str:
        if stream != "downstream":
            raise ValueError("a down fault disables both directions; leave stream out")
        return stream


Fault = Annotated[
    LatencyFault
    | BandwidthFault
    | SlowCloseFault
    | TimeoutFault
    | ResetPeerFault
    | SlicerFault
    | LimitDataFault
    | DownFault,
    Field(discriminator="toxic"),
]

_FAULT_CLASSES: tuple[type[FaultBase], ...] = (
    LatencyFault,
    BandwidthFault,
    SlowCloseFault,
    TimeoutFault,
    ResetPeerFault,
    SlicerFault,
    LimitDataFault,
    DownFault,
)


def _toxic_of(fault_class: type[FaultBase]) -> str:
    (name,) = get_args(fault_class.model_fields["toxic"].annotation)
    return str(name)


def _attributes_of(fault_class: type[FaultBase]) -> tuple[str, ...]:
    attributes_class = fault_class.model_fields["attributes"].annotation
    assert isinstance(attributes_class, type) and issubclass(attributes_class, ToxicAttributes)
    return tuple(attributes_class.model_fields)


TOXIC_ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {_toxic_of(cls): _attributes_of(cls) for cls in _FAULT_CLASSES}
)
"""The attribute names each toxic takes (``down`` takes none)."""

TOXICS: tuple[str, ...] = tuple(TOXIC_ATTRIBUTES)
"""The fault kinds: Toxiproxy's toxics, and ``down`` for a disabled proxy."""


# --------------------------------------------------------------------------------------------
# Success criteria
# --------------------------------------------------------------------------------------------


class Slo(_Model):
    """What the service promises; a run is judged against it.

    - `p95_ms`: the 95th-percentile latency in milliseconds (default 250). Recovery also
      requires the 5 s-windowed p95 to be under it (MEASURING.md).
    - `error_rate`: the share of requests not served — answered ``error``, ``shed`` or
      ``rejected``; ``fallback`` and ``stale`` answers count as served (default 0.01).
    - `recovery_s`: the longest acceptable recovery time after each fault, as MEASURING.md
      defines recovery (default 60 s: POLICY.md's 30 s PostgreSQL open time, a trial call, and
      the 10 s dwell per level step back to OPTIMAL fit inside it).
    """

    p95_ms: float = Field(default=250.0, gt=0)
    error_rate: Fraction = 0.01
    recovery_s: Duration = 60.0


class Abort(_Model):
    """Stop the run early when the error rate stays at or above `error_rate` for `duration`
    (``for``) — a guard for real staging, applied by the campaign and reported by the
    simulator. Rollback of the faults always runs."""

    error_rate: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    duration: PositiveDuration = Field(alias="for")


_RELATIVE_METRICS = ("p50", "p95", "p99")
_ABSOLUTE_METRICS = ("error_rate", "recovery_s", "detection_s")


class Tolerance(_Model):
    """How far a prediction may be from the measurement and still hold (MEASURING.md): a
    prediction holds when the measured value lies inside the predicted interval, or when its
    error is within the tolerance below. A tolerance of None means the metric is not judged.

    - `p50`, `p95`, `p99`: **relative** — ``|predicted − measured| / measured``; 0.10 is 10 %.
      The default for p95 is 0.10, the upper end of a single run's noise on a 2-core machine.
    - `error_rate`: **absolute**, in the same units as the rate — 0.01 is one percentage point.
      (A relative error of a rate near 0 would judge 0.001 against 0.002 as 100 % off.)
    - `recovery_s`, `detection_s`: **absolute seconds**. Recovery defaults to 5 s: the engine
      evaluates levels on a 1 s tick and recovery spans several of them.
    """

    p50: RelativeTolerance | None = None
    p95: RelativeTolerance = 0.10
    p99: RelativeTolerance | None = None
    error_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    recovery_s: Duration = 5.0
    detection_s: Duration | None = None

    def prediction_holds(
        self,
        metric: str,
        predicted: float,
        measured: float,
        interval: tuple[float, float] | None = None,
    ) -> bool | None:
        """Whether `predicted` holds against `measured` for `metric` (one of p50, p95, p99,
        error_rate, recovery_s, detection_s); None when this tolerance does not judge the
        metric. `interval` is the prediction's (low, high) interval, when it has one.

        With a relative tolerance and a measured value of 0, only a prediction of 0 holds.
        """
        if metric not in _RELATIVE_METRICS + _ABSOLUTE_METRICS:
            raise ValueError(
                f"unknown metric {metric!r} "
                f"(one of {', '.join(_RELATIVE_METRICS + _ABSOLUTE_METRICS)})"
            )
        allowed: float | None = getattr(self, metric)
        if allowed is None:
            return None
        if interval is not None and interval[0] <= measured <= interval[1]:
            return True
        error = abs(predicted - measured)
        if metric in _RELATIVE_METRICS:
            if measured == 0:
                return predicted == 0
            return error / abs(measured) <= allowed
        return error <= allowed


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _slug(name: str) -> str:
    if not _SLUG.match(name):
        raise ValueError(
            f"{name!r} is not a slug: use lowercase letters, digits and single hyphens, "
            "e.g. postgres-outage"
        )
    return name


class Scenario(_Model):
    """One experiment, run alike by the simulator (prediction) and a campaign (measurement).

    - `name`: a slug; run folders are named after it.
    - `load`: an `OpenLoad` or a `ClosedLoad`.
    - `mix`: relative weights over POLICY.md's feature names (they need not add up to 100);
      absent, `DEFAULT_MIX`. A feature left out gets no traffic.
    - `faults`: what to break, when; each lies within [`warmup`, the load's end].
    - `slo`, `abort`, `tolerance`: what success is, when to stop, and how close a prediction
      must come (see their classes for defaults).
    - `warmup`: the first seconds of the run, excluded from measurement (default 0); faults
      start after it.
    - `seed`: makes the simulator and the load generator's random draws repeatable; absent,
      each run draws its own.
    """

    name: Annotated[str, AfterValidator(_slug)]
    description: str | None = None
    load: Load
    mix: Mix = Field(default_factory=lambda: dict(DEFAULT_MIX))
    faults: tuple[Fault, ...] = ()
    slo: Slo = Slo()
    abort: Abort | None = None
    tolerance: Tolerance = Tolerance()
    warmup: Duration = 0.0
    seed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _fits_the_load(self) -> Scenario:
        duration = self.duration_s
        if self.warmup >= duration:
            raise _rule(
                f"the warm-up ({self.warmup:g} s) must be shorter than the load ({duration:g} s)",
                "warmup",
            )
        if self.abort is not None and self.abort.duration >= duration:
            raise _rule(
                f"abort.for ({self.abort.duration:g} s) must be shorter than the load "
                f"({duration:g} s), or the guard could never act",
                "abort",
                "for",
            )
        for index, fault in enumerate(self.faults):
            if fault.at < self.warmup:
                raise _rule(
                    f"the fault starts at {fault.at:g} s, during the warm-up "
                    f"(the first {self.warmup:g} s)",
                    "faults",
                    index,
                    "at",
                )
            if fault.end > duration:
                raise _rule(
                    f"the fault ends at {fault.end:g} s ({fault.at:g} s + {fault.duration:g} s), "
                    f"after the load ends at {duration:g} s",
                    "faults",
                    index,
                    "duration",
                )
        self._no_clashing_faults()
        return self

    def _no_clashing_faults(self) -> None:
        # Toxiproxy names a toxic `<type>_<stream>`, so two of the same kind on one proxy at
        # once would collide; two `down`s at once would re-enable the proxy at the first's end.
        for index, fault in enumerate(self.faults):
            for earlier_index, earlier in enumerate(self.faults[:index]):
                same_kind = (earlier.target, earlier.toxic, earlier.stream) == (
                    fault.target,
                    fault.toxic,
                    fault.stream,
                )
                if same_kind and fault.at < earlier.end and earlier.at < fault.end:
                    raise _rule(
                        f"overlaps faults[{earlier_index}] ({earlier.toxic} on "
                        f"{earlier.target}, {earlier.at:g}–{earlier.end:g} s); one proxy "
                        f"cannot have the same toxic twice at once",
                        "faults",
                        index,
                    )

    def __hash__(self) -> int:
        # The generated hash would fail on the mix (a dict); the normalised content is
        # hashable and equal scenarios have equal content.
        return hash(self.canonical_json())

    def canonical_json(self) -> str:
        """The normalised content as compact JSON with sorted keys: defaults filled in,
        durations in seconds, aliases as in files, the description left out (rewording it
        does not change the experiment). `scenarios.scenario_hash` digests this."""
        content = self.model_dump(mode="json", by_alias=True, exclude={"description"})
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def duration_s(self) -> float:
        """The length of the run in seconds (the load's duration)."""
        return self.load.duration_s

    def mix_fractions(self) -> dict[str, float]:
        """The mix as probabilities that add up to 1, in POLICY.md's feature order, without
        the features whose weight is 0."""
        total = sum(self.mix.values())
        return {name: self.mix[name] / total for name in FEATURE_NAMES if self.mix.get(name, 0) > 0}


def _rule(message: str, *loc: str | int) -> PydanticCustomError:
    """A broken cross-field rule. `loc` is the path of the field to blame, relative to the
    model that checks the rule; the loader appends it to the error's location."""
    return PydanticCustomError("scenario_rule", "{message}", {"message": message, "loc": loc})
