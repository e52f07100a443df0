"""The flow table: what each of the 16 features calls, in what order, and what serves
instead when it cannot (POLICY.md, "The 16 features").

A `Path` is the ordered dependency calls of one way of answering; a `Flow` is a feature's
primary path and its named fallback paths. A call that fails or is refused hands over to the
fallback it names (`on_failure`), or the request ends in a 503. A cached read (`cache`) ends
the path on a hit, or skips the fetch and fill that a miss would need. These are the flows
the engine runs (engine/service/routes_*.py), including the calls the policy does not gate
on: best-effort cache fills and invalidations, and ai_recommendations' top sellers, read
for its prompt. So:

- `primary_dependencies` gives, per feature, the dependencies the policy gates its primary
  path on (POLICY.md's *needs*);
- `primary_touches` gives the dependency sets a healthy primary path calls, one per outcome
  of its caches and memo, which is what the engine's `Server-Timing` header shows per
  request;
- `calls_by_dependency` tells, from such a set, how many calls each dependency took.

A stale copy (`stale_copy`) is the long-lived duplicate the engine keeps beside a fresh
cache entry; whether one exists for a read is drawn with the cache's stale ratio
(`sim.parameters`), because the engine only has stale copies of what was read before.
Fresh entries lapse once nothing refills them (`fills`): see `sim.model`.
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
    # The cache whose hit ratio decides, after a successful call, whether this was a hit or
    # a miss. A miss goes on with the next call; `miss_fails`: a miss is an answer-less end
    # (a stale read that found nothing).
    cache: str | None = None
    miss_fails: bool = False
    # Reads the cache's stale copy, not its fresh entry: the draw uses the stale ratio.
    stale_copy: bool = False
    # None: a hit ends the path. n: a hit skips the n calls that follow (the fetch and the
    # fill that a miss needs) and the path goes on (the hit is only an input).
    hit_skips: int | None = None
    # How a hit that ends the path is served, when not as the path is: a fresh entry found
    # on the way to a stale copy is served as primary.
    hit_served: Served | None = None
    # A call whose failure does not fail the request (a cache fill or invalidation, or a
    # lookup a miss can do without): the path goes on with its next call. A best-effort
    # call to a dependency that already failed in the same request is skipped, as the
    # engine skips the fill after a failed cache read.
    best_effort: bool = False
    # False for a call to a dependency that POLICY.md does not list among the feature's
    # needs: the policy serves the feature whatever that dependency's breaker says.
    policy_need: bool = True
    # The cache whose fresh entries (and stale copies) this call writes.
    fills: str | None = None
    # The fallback path to take when this call fails or its breaker refuses it.
    on_failure: str | None = None


@dataclass(frozen=True, slots=True)
class Path:
    calls: tuple[Call, ...]
    served: Served = Served.PRIMARY
    # An in-process memo in front of the calls (its time to live is a model parameter):
    # while it holds a result the path answers from it without calling anything, and
    # concurrent misses share one computation.
    memo: str | None = None

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
        """The call sequences a healthy primary path can take: one per outcome of its memo
        and caches, hits first."""
        calls = self.primary.calls
        branches: list[tuple[Call, ...]] = [()] if self.primary.memo is not None else []

        def walk(index: int, taken: tuple[Call, ...]) -> None:
            while index < len(calls):
                call = calls[index]
                taken = (*taken, call)
                if call.cache is not None and not call.miss_fails:
                    if call.hit_skips is None:
                        branches.append(taken)
                    else:
                        walk(index + 1 + call.hit_skips, taken)
                index += 1
            branches.append(taken)

        walk(0, ())
        return tuple(branches)


def _path(*calls: Call, served: Served = Served.PRIMARY, memo: str | None = None) -> Path:
    return Path(tuple(calls), served, memo)


_NO_CALLS = _path()
_FALLBACK_HERE = _path(served=Served.FALLBACK)  # what the path already fetched suffices
_STALE_HERE = _path(served=Served.STALE)  # ... and it was already a stale copy


def _single(dependency: str, operation: str) -> Flow:
    return Flow("", _path(Call(dependency, operation)))


def _write(*calls: Call) -> Flow:
    """A write that commits in PostgreSQL, then drops the inventory entries it made stale
    (best effort: a failed invalidation does not undo an acknowledged write)."""
    return Flow("", _path(*calls, Call("redis", "invalidate", best_effort=True)))


_FLOWS: dict[str, Flow] = {
    "inventory_read": Flow(
        "",
        _path(
            Call("redis", "get", cache="inventory", on_failure="direct"),
            Call("postgres", "select", on_failure="stale"),
            Call("redis", "set", best_effort=True, fills="inventory"),
        ),
        fallbacks={
            "direct": _path(Call("postgres", "select"), served=Served.FALLBACK),
            # The engine runs its primary code here too: a fresh entry still answers as
            # primary; on a miss, PostgreSQL's open breaker refuses at once (no time
            # spent) and the stale copy answers if the SKU has one.
            "stale": _path(
                Call("redis", "get", cache="inventory", hit_served=Served.PRIMARY),
                Call("redis", "get_stale", cache="inventory", stale_copy=True, miss_fails=True),
                served=Served.STALE,
            ),
        },
        # Forced off by a flag with both available: read PostgreSQL directly.
        fallback_when=(("redis", "direct"), ("postgres", "stale"), (None, "direct")),
    ),
    "dashboard_summary": Flow(
        "",
        _path(
            Call("redis", "get", cache="summary", on_failure="direct"),
            Call("postgres", "aggregate", on_failure="stale"),
            Call("redis", "set", best_effort=True, fills="summary"),
        ),
        fallbacks={
            "direct": _path(
                Call("postgres", "aggregate", on_failure="last_good_in_process"),
                served=Served.FALLBACK,
            ),
            # The last good summary: its copy in Redis, else the engine's own in memory.
            # Both are written on every success, so after the first one it is always there
            # (stale ratio 1 by default).
            "stale": _path(
                Call(
                    "redis",
                    "get_stale",
                    cache="summary",
                    stale_copy=True,
                    miss_fails=True,
                    on_failure="last_good_in_process",
                ),
                served=Served.STALE,
            ),
            "last_good_in_process": _STALE_HERE,
        },
        fallback_when=((None, "stale"),),
    ),
    "health_status": Flow("", _NO_CALLS),
    "metrics_export": Flow("", _NO_CALLS),
    "order_processing": _write(Call("postgres", "transaction")),
    "inventory_write": _write(Call("postgres", "transaction")),
    "product_search": _single("postgres", "select"),
    "pricing_update": _write(Call("postgres", "transaction")),
    # The supplier is checked and the invoice's id reserved first, so that the original
    # is stored in S3 under its id before the row that points at it is inserted.
    "invoice_upload": Flow(
        "",
        _path(Call("postgres", "reserve_id"), Call("s3", "put"), Call("postgres", "insert")),
    ),
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
    # Weekly trends are kept in process for a while: most requests call nothing.
    "complex_analytics": Flow("", _path(Call("postgres", "select"), memo="analytics_trends")),
    "ai_recommendations": Flow(
        "",
        # The model is asked about the top sellers, which come first: from the cache, or
        # from PostgreSQL (then cached). The policy gates the feature on OpenAI alone.
        _path(
            Call("redis", "get", cache="top_sellers", hit_skips=2, best_effort=True),
            Call("postgres", "select", policy_need=False, on_failure="stale_prompt"),
            Call("redis", "set", best_effort=True, fills="top_sellers"),
            Call("openai", "complete", on_failure="top_sellers_here"),
        ),
        fallbacks={
            "stale_prompt": _path(
                Call("redis", "get_stale", cache="top_sellers", stale_copy=True, miss_fails=True),
                Call("openai", "complete", on_failure="stale_top_sellers_here"),
                served=Served.STALE,
            ),
            "top_sellers_here": _FALLBACK_HERE,
            "stale_top_sellers_here": _STALE_HERE,
            "top_sellers": _path(
                Call("redis", "get", cache="top_sellers", on_failure="top_sellers_db"),
                Call("postgres", "select", on_failure="stale_top_sellers"),
                Call("redis", "set", best_effort=True, fills="top_sellers"),
                served=Served.FALLBACK,
            ),
            "top_sellers_db": _path(Call("postgres", "select"), served=Served.FALLBACK),
            "stale_top_sellers": _path(
                Call("redis", "get_stale", cache="top_sellers", stale_copy=True, miss_fails=True),
                served=Served.STALE,
            ),
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
    # The file goes to S3 first: an import in PostgreSQL always has its source file.
    "batch_import": _write(Call("s3", "put"), Call("postgres", "transaction")),
}

FLOWS: Mapping[str, Flow] = {
    name: Flow(name, flow.primary, flow.fallbacks, flow.fallback_when)
    for name, flow in _FLOWS.items()
}
"""The flow of every feature, in POLICY.md's order."""

assert tuple(FLOWS) == FEATURE_NAMES, "the flow table must list the 16 features in order"


def primary_dependencies(feature: str) -> frozenset[str]:
    """The dependencies the policy gates the primary path of `feature` on: those of its
    calls that are neither best effort nor outside the policy's needs."""
    return frozenset(
        call.dependency
        for call in FLOWS[feature].primary.calls
        if call.policy_need and not call.best_effort
    )


def primary_touches(feature: str) -> frozenset[frozenset[str]]:
    """The dependency sets a healthy primary path of `feature` calls, one per outcome of
    its memo and caches (what the engine's `Server-Timing` names)."""
    return frozenset(
        frozenset(call.dependency for call in branch)
        for branch in FLOWS[feature].primary_branches()
    )


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
