"""The flow table: what each of the 16 features calls, in what order, and what serves
instead when it cannot (POLICY.md, "The 16 features").

A `Path` is the ordered dependency calls of one way of answering; a `Flow` is a feature's
primary path and its named fallback paths. A call that fails or is refused hands over to the
fallback it names (`on_failure`), or the request ends in a 503. A cached read (`cache`) ends
the path on a hit. These are the flows the engine runs; `primary_dependencies` gives, per
feature, the dependencies its healthy primary path calls, which is what the engine's
`Server-Timing` header shows per route.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from engine.policy import FEATURE_NAMES


class Served(IntEnum):
    """How a finished path answered (the `X-Served-By` header)."""

    PRIMARY = 0
    FALLBACK = 1
    STALE = 2


@dataclass(frozen=True, slots=True)
class Call:
    dependency: str
    operation: str
    # The cache whose hit ratio decides, after a successful call, whether the path ends here
    # (a hit) or goes on (a miss). `miss_fails`: a miss is an answer-less end (a stale read).
    cache: str | None = None
    miss_fails: bool = False
    # A cache fill: its failure does not fail the request.
    best_effort: bool = False
    # The fallback path to take when this call fails or its breaker refuses it.
    on_failure: str | None = None


@dataclass(frozen=True, slots=True)
class Path:
    calls: tuple[Call, ...]
    served: Served = Served.PRIMARY

    @property
    def dependencies(self) -> frozenset[str]:
        return frozenset(call.dependency for call in self.calls)


@dataclass(frozen=True, slots=True)
class Flow:
    feature: str
    primary: Path
    fallbacks: Mapping[str, Path] = field(default_factory=dict)
    # When the policy decides FALLBACK: the first entry whose dependency is unavailable
    # names the fallback path; an entry with None matches always.
    fallback_when: tuple[tuple[str | None, str], ...] = ()

    def choose_fallback(self, unavailable: Collection[str]) -> Path | None:
        for dependency, name in self.fallback_when:
            if dependency is None or dependency in unavailable:
                return self.fallbacks[name]
        return None

    def primary_branches(self) -> tuple[tuple[Call, ...], ...]:
        """The call sequences a healthy primary path can take: one per cache outcome."""
        calls = self.primary.calls
        branches = [calls[: index + 1] for index, call in enumerate(calls) if call.cache]
        branches.append(calls)
        return tuple(branches)


def _path(*calls: Call, served: Served = Served.PRIMARY) -> Path:
    return Path(tuple(calls), served)


_NO_CALLS = _path()
_STALE_SUMMARY = _path(served=Served.STALE)  # the last good summary, kept in memory
_FALLBACK_HERE = _path(served=Served.FALLBACK)  # what the path already fetched suffices


def _single(dependency: str, operation: str) -> Flow:
    return Flow("", _path(Call(dependency, operation)))


_FLOWS: dict[str, Flow] = {
    "inventory_read": Flow(
        "",
        _path(
            Call("redis", "get", cache="inventory", on_failure="direct"),
            Call("postgres", "select", on_failure="stale"),
            Call("redis", "set", best_effort=True),
        ),
        fallbacks={
            "direct": _path(Call("postgres", "select"), served=Served.FALLBACK),
            "stale": _path(
                Call("redis", "get_stale", cache="stale", miss_fails=True), served=Served.STALE
            ),
        },
        # Forced off by a flag with both available: read PostgreSQL directly.
        fallback_when=(("redis", "direct"), ("postgres", "stale"), (None, "direct")),
    ),
    "dashboard_summary": Flow(
        "",
        _path(
            Call("redis", "get", cache="summary", on_failure="stale"),
            Call("postgres", "aggregate", on_failure="stale"),
            Call("redis", "set", best_effort=True),
        ),
        fallbacks={"stale": _STALE_SUMMARY},
        fallback_when=((None, "stale"),),
    ),
    "health_status": Flow("", _NO_CALLS),
    "metrics_export": Flow("", _NO_CALLS),
    "order_processing": _single("postgres", "transaction"),
    "inventory_write": _single("postgres", "transaction"),
    "product_search": _single("postgres", "select"),
    "pricing_update": _single("postgres", "update"),
    "invoice_upload": Flow("", _path(Call("s3", "put"), Call("postgres", "insert"))),
    "stock_timeline": _single("postgres", "select"),
    "ai_pricing_suggestion": Flow(
        "",
        _path(Call("postgres", "select"), Call("openai", "complete", on_failure="rule_based")),
        fallbacks={
            "rule_based_cold": _path(Call("postgres", "select"), served=Served.FALLBACK),
            "rule_based": _FALLBACK_HERE,  # the cost was read before the model failed
        },
        fallback_when=((None, "rule_based_cold"),),
    ),
    "report_export": Flow(
        "",
        _path(Call("postgres", "select"), Call("s3", "put", on_failure="unarchived")),
        fallbacks={
            "unarchived_cold": _path(Call("postgres", "select"), served=Served.FALLBACK),
            "unarchived": _FALLBACK_HERE,  # the CSV was built before the archive copy failed
        },
        fallback_when=((None, "unarchived_cold"),),
    ),
    "complex_analytics": _single("postgres", "select"),
    "ai_recommendations": Flow(
        "",
        _path(Call("openai", "complete", on_failure="top_sellers")),
        fallbacks={
            "top_sellers": _path(
                Call("redis", "get", cache="top_sellers", on_failure="top_sellers_db"),
                Call("postgres", "select"),
                Call("redis", "set", best_effort=True),
                served=Served.FALLBACK,
            ),
            "top_sellers_db": _path(Call("postgres", "select"), served=Served.FALLBACK),
        },
        fallback_when=(("redis", "top_sellers_db"), (None, "top_sellers")),
    ),
    "ai_invoice_enhancement": Flow(
        "",
        _path(Call("s3", "get"), Call("openai", "complete", on_failure="raw_text")),
        fallbacks={
            "raw_text_cold": _path(Call("s3", "get"), served=Served.FALLBACK),
            "raw_text": _FALLBACK_HERE,
        },
        fallback_when=((None, "raw_text_cold"),),
    ),
    "batch_import": Flow("", _path(Call("s3", "get"), Call("postgres", "copy"))),
}

FLOWS: Mapping[str, Flow] = {
    name: Flow(name, flow.primary, flow.fallbacks, flow.fallback_when)
    for name, flow in _FLOWS.items()
}
"""The flow of every feature, in POLICY.md's order."""

assert tuple(FLOWS) == FEATURE_NAMES, "the flow table must list the 16 features in order"


def primary_dependencies(feature: str) -> frozenset[str]:
    """The dependencies the healthy primary path of `feature` calls (on a cache miss)."""
    return FLOWS[feature].primary.dependencies


def calls_by_dependency(feature: str, touched: Collection[str]) -> dict[str, int] | None:
    """How many calls to each dependency the healthy primary branch that touches exactly
    `touched` makes (e.g. inventory_read touching only redis was a hit: one redis call);
    None when no branch touches exactly those dependencies."""
    wanted = frozenset(touched)
    for branch in FLOWS[feature].primary_branches():
        if frozenset(call.dependency for call in branch) == wanted:
            counts: dict[str, int] = {}
            for call in branch:
                counts[call.dependency] = counts.get(call.dependency, 0) + 1
            return counts
    return None
