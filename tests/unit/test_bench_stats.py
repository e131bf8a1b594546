"""The benchmark's arithmetic: percentiles, CPU per 1,000 events, /proc parsing, and which
snapshot reflects which latency marker."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace
from typing import Any

import pytest

from tests.bench.load import arrival_order, with_poison
from tests.bench.phases import Forwarded
from tests.bench.procstat import cpu_seconds_of, memory_kib_of, tree_cpu_seconds_of
from tests.bench.report import budget_rows, rss_met, summary
from tests.bench.stats import (
    allowed_ms_per_1000_events,
    cpu_budget,
    latency_summary,
    per_thousand,
    percentile,
    rate,
    reflected_at,
)
from tests.support.workload import generate

pytestmark = pytest.mark.unit


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_percentiles_refuse_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.010, 0.020, 0.030, 0.040])
    assert summary["count"] == 4
    assert summary["p50_ms"] == pytest.approx(25.0)
    assert summary["max_ms"] == pytest.approx(40.0)
    assert latency_summary([])["p99_ms"] is None


def test_a_percentile_among_markers_never_seen_is_unknown() -> None:
    summary = latency_summary([0.01] * 97 + [math.inf] * 3)
    assert summary["never_seen"] == 3
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["p95_ms"] == pytest.approx(10.0)
    assert summary["p99_ms"] is None


def test_rates_and_cpu_per_thousand_events() -> None:
    assert rate(6000, 60.0) == 100.0
    assert rate(10, 0.0) == 0.0
    assert per_thousand(2.5, 5000) == pytest.approx(500.0)
    assert per_thousand(1.0, 0) is None


def test_the_cpu_budget_counts_every_process_against_the_cores() -> None:
    # 60,000 events for 30 core-seconds: 500 ms per 1,000, so two cores could do 4,000/s.
    budget = cpu_budget(
        {"intake": 8.0, "themes": 7.0, "kafka": 2.0, "ferretdb": 13.0}, 60_000, 20.0, 2
    )
    assert budget == {
        "processes": ["ferretdb", "intake", "kafka", "themes"],
        "cpu_ms_per_1000_events": 500.0,
        "window_s": 20.0,
        "cores_busy": 1.5,
        "cores": 2,
        "events_per_s_with_every_core_busy": 4000,
    }
    assert cpu_budget({}, 0, 0.0, 2)["events_per_s_with_every_core_busy"] is None
    assert allowed_ms_per_1000_events(5000, 2) == pytest.approx(400.0)


def _phases(events_per_s: float | None, budget: dict[str, object]) -> dict[str, Any]:
    return {
        "phases": {
            "baseline": {"completed": True, "events_per_s": 20_000.0},
            "throughput": {
                "completed": events_per_s is not None,
                "events_per_s": events_per_s,
                "cpu_budget": budget,
            },
        }
    }


def test_the_report_sets_the_cpu_budget_against_what_the_targets_allow() -> None:
    budget = cpu_budget({"intake": 8.0, "kafka": 2.0, "ferretdb": 20.0}, 60_000, 20.0, 2)
    results = _phases(3000.0, budget)
    results["phases"]["throughput"]["bench_cpu_s"] = 5.0
    head = summary(results)
    assert head["events_per_s_with_every_core_busy"] == 4000
    rows = budget_rows("throughput", results["phases"]["throughput"], head)
    assert rows[0][0] == "CPU ms per 1,000 events, every process (throughput)"
    assert rows[0][1] == "500 (1.50 of 2 cores busy; the bench itself 0.25)"
    # 5,000 events/s on two cores: 400 ms; the ratio 0.3 of 20,000/s, 6,000/s: 333 ms.
    assert rows[0][2] == "≤ 400 ms; ≤ 333 ms (ratio)"
    assert rows[1][1] == "4,000 ev/s"
    # A run that did not drain has no ceiling to claim; a run without the servers says so.
    assert summary(_phases(None, budget))["events_per_s_with_every_core_busy"] is None
    services_only = cpu_budget({"intake": 8.0}, 60_000, 20.0, 2)
    rows = budget_rows("throughput", {"cpu_budget": services_only}, head)
    assert len(rows) == 1
    assert "the services only" in rows[0][0]


def test_proc_fields_survive_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S", *["0"] * 10, "150", "50", *["0"] * 30]
    stat = "4242 (python (worker) x) " + " ".join(fields)
    assert cpu_seconds_of(stat, ticks_per_second=100) == pytest.approx(2.0)
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert memory_kib_of(status) == {"VmHWM": 204800, "VmRSS": 102400}


def test_a_servers_cpu_counts_its_reaped_and_its_live_children() -> None:
    # utime 100, stime 50, then the reaped children's cutime 300 and cstime 100.
    parent = "17 (postgres) " + " ".join(["S", *["0"] * 10, "100", "50", "300", "100", *["0"] * 30])
    child = "18 (postgres: ferretdb) " + " ".join(["S", "17", *["0"] * 9, "40", "10", "7", "7"])
    assert tree_cpu_seconds_of(parent, [child, child], ticks_per_second=100) == pytest.approx(
        5.5 + 2 * 0.5
    )


def test_a_marker_is_reflected_by_the_first_snapshot_counting_its_case() -> None:
    positions = {"a": ["e1", "e2", "e3"], "b": ["f1"]}
    observations = {
        # Seen out of order; cases_total only counts up, but a late, older snapshot may
        # still arrive after a newer one.
        "a": [(1.0, 1), (3.0, 3), (2.5, 1), (2.0, 2)],
        "b": [],
    }
    assert reflected_at(positions, observations) == {"e1": 1.0, "e2": 2.0, "e3": 3.0}


def test_a_snapshot_that_skips_ahead_reflects_every_marker_before_it() -> None:
    when = reflected_at({"a": ["e1", "e2", "e3"]}, {"a": [(5.0, 3)]})
    assert when == {"e1": 5.0, "e2": 5.0, "e3": 5.0}


def test_a_forwarded_review_keeps_the_place_and_time_it_was_first_seen_at() -> None:
    def record(audit: str, event: str) -> SimpleNamespace:
        return SimpleNamespace(value=json.dumps({"audit_id": audit, "event_id": event}).encode())

    forwarded = Forwarded()
    forwarded.on_record(record("a", "e1"), 1.0)
    forwarded.on_record(record("b", "f1"), 1.5)
    forwarded.on_record(record("a", "e2"), 2.0)
    forwarded.on_record(record("a", "e1"), 3.0)  # redelivered after a crash
    assert forwarded.order == {"a": ["e1", "e2"], "b": ["f1"]}
    assert forwarded.seen_at == {"e1": 1.0, "f1": 1.5, "e2": 2.0}


def test_arrival_order_keeps_each_agencys_revisions_in_order() -> None:
    events = generate(audits=3, cases_per_audit=4, seed=3)
    arrived = arrival_order(events, active_audits=2, rng=random.Random(1))
    assert sorted(e["event_id"] for e in arrived) == sorted(e["event_id"] for e in events)
    last: dict[tuple[str, str, str], int] = {}
    for event in arrived:
        key = (event["audit_id"], event["agency"]["id"], event["case"]["ref"])
        assert event["revision"] > last.get(key, 0)
        last[key] = event["revision"]


def test_poison_is_extra_and_counted() -> None:
    events = generate(audits=2, cases_per_audit=5, seed=4)
    load = with_poison(events, share=0.5, rng=random.Random(2))
    assert load.valid == events
    assert load.events == len(events) + sum(load.poison.values())
    assert sum(load.poison.values()) > 0


def test_the_rss_target_is_in_megabytes_not_mebibytes() -> None:
    # 200 MB is 190.7 MiB: a peak of 195 MiB (204 MB) misses it.
    assert rss_met(190.7)
    assert not rss_met(190.8)
    assert not rss_met(195.0)
    results = {"phases": {"throughput": {"peak_rss_mib": {"themes": 195.0, "intake": 100.0}}}}
    assert summary(results)["met"]["rss"] is False
