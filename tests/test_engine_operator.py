"""What operators get without a running engine: the flags file applied at start, and the
ordered event log behind `/resilience/events`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.policy import BreakerState, ManualClock, ResiliencePolicy, ServeMode
from engine.policyfile import load_policy
from engine.service.event_log import EventLog, log_event
from engine.service.flags_file import FlagsFileError, apply_flags_file


def policy() -> ResiliencePolicy:
    return ResiliencePolicy(load_policy(), ManualClock(50.0))


def test_a_flags_file_forces_features_and_breakers(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(
        "features:\n  ai_recommendations: false\n  batch_import: null\n"
        "breakers:\n  s3: metrics_only\n"
    )
    target = policy()
    apply_flags_file(target, path)
    assert target.decide("ai_recommendations").mode is ServeMode.FALLBACK
    assert target.status().breakers["s3"].state is BreakerState.METRICS_ONLY
    assert target.status().flags == {"ai_recommendations": False}


VALID_FEATURES = "features:\n  report_export: false\n"


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("features:\n  no_such_feature: false\n", "features.no_such_feature"),
        ("features:\n  ai_recommendations: maybe\n", "features.ai_recommendations"),
        (VALID_FEATURES + "breakers:\n  mongodb: FORCED_OPEN\n", "breakers.mongodb"),
        (VALID_FEATURES + "breakers:\n  redis: HALF_OPEN\n", "breakers.redis"),
        ("flags: {}\n", "flags"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_a_bad_flags_file_is_refused_whole_naming_the_entry(
    tmp_path: Path, content: str, names: str
) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(content)
    target = policy()
    with pytest.raises(FlagsFileError, match=names):
        apply_flags_file(target, path)
    assert target.status().flags == {}  # nothing half-applied


def test_the_event_log_numbers_events_in_order_and_pages_by_sequence() -> None:
    log = EventLog(capacity=4)
    target = policy()
    target.subscribe(log.on_event)
    for feature in ("ai_recommendations", "batch_import", "report_export"):
        target.set_flag(feature, False)
    target.force_breaker("redis", BreakerState.FORCED_OPEN)
    last = log.last_seq
    assert last > 4  # more events than the log keeps
    kept = log.since(0, limit=100)
    assert [row["seq"] for row in kept] == list(range(last - 3, last + 1))
    assert all({"kind", "at_monotonic", "at_wall", "at_iso"} <= set(row) for row in kept)
    assert kept[0]["at_monotonic"] == 50.0
    assert log.since(last, limit=10) == []
    assert [row["seq"] for row in log.since(last - 2, limit=10)] == [last - 1, last]
    assert [row["seq"] for row in log.since(0, limit=2)] == [last - 3, last - 2]


def test_transitions_are_logged_for_operators(caplog: pytest.LogCaptureFixture) -> None:
    target = policy()
    target.subscribe(log_event)
    with caplog.at_level(logging.INFO, logger="engine.service.events"):
        target.force_breaker("postgres", BreakerState.FORCED_OPEN)
    messages = [record.getMessage() for record in caplog.records]
    assert any("breaker postgres CLOSED -> FORCED_OPEN" in message for message in messages)
    assert any("level OPTIMAL -> DEGRADED" in message for message in messages)
