"""A run summary as a terminal table, each figure with its 95 % interval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reports.summary import PHASES


def _figure(
    entry: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 1, unit: str = ""
) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    mean = entry["mean"] * scale
    text = f"{mean:.{digits}f}{unit}"
    if entry.get("low") is not None:
        text += f" [{entry['low'] * scale:.{digits}f}, {entry['high'] * scale:.{digits}f}]"
    return text


def _served_otherwise(row: Mapping[str, Any]) -> Mapping[str, Any]:
    fallback, stale = row.get("fallback_rate") or {}, row.get("stale_rate") or {}
    if fallback.get("mean") is None:
        return {}
    total = {"mean": fallback["mean"] + (stale.get("mean") or 0.0)}
    if fallback.get("low") is not None and stale.get("low") is not None:
        # Conservative: the sum of the half-widths.
        total["low"] = fallback["low"] + stale["low"]
        total["high"] = fallback["high"] + stale["high"]
    else:
        total["low"] = total["high"] = None
    return total


def format_summary(summary: Mapping[str, Any]) -> str:
    metrics = summary["metrics"]
    scenario = summary.get("scenario", {})
    calibration = (summary.get("calibration") or {}).get("path") or "defaults"
    lines = [
        f"{scenario.get('name', '?')} — {summary.get('source', '?')}, "
        f"{summary.get('replications', 1)} replication(s), seed {summary.get('seed')}, "
        f"policy {summary.get('policy', {}).get('name', '?')}, calibration {calibration}",
        "mean [95 % interval] over replications; latency from the scheduled time",
        "",
    ]
    header = (
        "phase",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "not served %",
        "fallback+stale %",
        "shed %",
    )
    rows = [header]
    for phase in (*PHASES, "overall"):
        row = metrics["overall"] if phase == "overall" else metrics["phases"][phase]
        if not row["requests"].get("mean"):
            continue
        rows.append(
            (
                phase,
                f"{row['requests']['mean']:,.0f}",
                _figure(row["p50_ms"]),
                _figure(row["p95_ms"]),
                _figure(row["p99_ms"]),
                _figure(row["error_rate"], 100.0, 2),
                _figure(_served_otherwise(row), 100.0, 2),
                _figure(row["shed_rate"], 100.0, 2),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    if metrics.get("faults"):
        lines += ["", "faults"]
        for fault in metrics["faults"]:
            recovery = fault["recovery_s"]
            seen = recovery["n"]
            total = seen + recovery["missing"]
            lines.append(
                f"  #{fault['index']} {fault['target']} {fault['toxic']} "
                f"at {fault['applied_at']['mean']:g} s – {fault['removed_at']['mean']:g} s: "
                f"detection {_figure(fault['detection_s'], digits=2, unit=' s')}, "
                f"recovery {_figure(recovery, digits=2, unit=' s')} ({seen}/{total} recovered in the run)"
            )
    if metrics.get("aborted"):
        lines += [
            "",
            f"the abort guard would have stopped {metrics['aborted']} of "
            f"{summary.get('replications', 1)} replication(s), at "
            f"{_figure(metrics['abort_at'], digits=0, unit=' s')}",
        ]
    timeline = metrics.get("level_timeline") or []
    if timeline:
        lines += ["", "level (median over replications; best..worst where they differ)"]
        for segment in timeline:
            spread = (
                ""
                if segment["best"] == segment["worst"]
                else f"  ({segment['best']}..{segment['worst']})"
            )
            lines.append(
                f"  {segment['from']:7.0f} – {segment['to']:7.0f} s  {segment['median']}{spread}"
            )
    return "\n".join(lines)
