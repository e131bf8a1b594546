"""The benchmark's arithmetic: percentiles, rates, and which snapshot reflects which marker."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between the two nearest ranks."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    if rank == low or ordered[high] == ordered[low]:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, p99 and max, in milliseconds; `math.inf` marks a value never seen,
    and a figure it reaches is None (unknown: beyond the wait)."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ms = [s * 1000 for s in seconds]

    def known(value: float) -> float | None:
        return round(value, 2) if math.isfinite(value) else None

    return {
        "count": len(ms),
        "never_seen": sum(1 for v in ms if not math.isfinite(v)),
        "p50_ms": known(percentile(ms, 50)),
        "p95_ms": known(percentile(ms, 95)),
        "p99_ms": known(percentile(ms, 99)),
        "max_ms": known(max(ms)),
    }


def rate(count: int, seconds: float) -> float:
    """Events per second; zero for an empty or instantaneous interval."""
    return count / seconds if seconds > 0 else 0.0


def per_thousand(cpu_seconds: float, events: int) -> float | None:
    """CPU milliseconds spent per 1,000 events."""
    return cpu_seconds * 1000 / events * 1000 if events else None


def cpu_budget(
    cpu_s: Mapping[str, float], events: int, seconds: float, cores: int
) -> dict[str, object]:
    """What the measured processes' CPU says about the machine: their CPU per 1,000 events
    together, the cores they kept busy on average over the window, and the events per second
    at which that cost per event would keep every core busy. No run on these cores can go
    faster than that last figure without costing less per event, however the work is spread
    over the processes."""
    total = sum(cpu_s.values())
    per = per_thousand(total, events)
    return {
        "processes": sorted(cpu_s),
        "cpu_ms_per_1000_events": round(per, 1) if per is not None else None,
        "window_s": round(seconds, 3),
        "cores_busy": round(total / seconds, 2) if seconds > 0 else None,
        "cores": cores,
        "events_per_s_with_every_core_busy": round(cores * 1_000_000 / per) if per else None,
    }


def allowed_ms_per_1000_events(events_per_s: float, cores: int) -> float:
    """The most CPU 1,000 events may cost, every process counted, for `cores` cores to
    sustain `events_per_s`."""
    return cores * 1_000_000 / events_per_s


def reflected_at(
    positions: Mapping[str, Sequence[str]],
    observations: Mapping[str, Sequence[tuple[float, int]]],
) -> dict[str, float]:
    """When each marker was first reflected in a snapshot of its audit.

    `positions` lists each audit's markers in the order its reviews were forwarded to themes
    (one partition per audit, so themes stores them in this order: the reviews stored are
    always a prefix of it). `observations` are (time seen, cases_total) of that audit's
    snapshots. Each marker is a new case, so a snapshot counting n cases reflects exactly
    the first n markers, and the marker at position p is reflected by the first snapshot
    seen with cases_total >= p.
    """
    out: dict[str, float] = {}
    for audit, markers in positions.items():
        highs: list[int] = []
        times: list[float] = []
        for seen, cases in sorted(observations.get(audit, ()), key=lambda o: o[0]):
            if not highs or cases > highs[-1]:
                highs.append(cases)
                times.append(seen)
        for position, marker in enumerate(markers, start=1):
            index = bisect.bisect_left(highs, position)
            if index < len(highs):
                out[marker] = times[index]
    return out
