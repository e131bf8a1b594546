"""The benchmark's results: one JSON file per run and a table on the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.bench.pipeline import SERVICES
from tests.bench.stats import allowed_ms_per_1000_events

TARGETS = {
    "throughput_events_per_s": 5000.0,
    "latency_p99_ms": 250.0,
    "ratio": 0.3,
    "rss_mb": 200.0,
}

MIB_PER_MB = 1_000_000 / 2**20
"""The target speaks of megabytes (10^6 bytes), /proc of kibibytes: 200 MB is 190.7 MiB."""


def rss_met(mib: float) -> bool:
    """Whether a peak RSS in MiB is within the target in MB."""
    return mib <= TARGETS["rss_mb"] * MIB_PER_MB


def write(results: dict[str, Any], out_dir: Path) -> Path:
    """Writes the run's results as `<out_dir>/<run>.json` and `latest.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{results['run']}.json"
    text = json.dumps(results, indent=2, sort_keys=False)
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path


def _met(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]n/a[/]"
    return "[green]met[/]" if ok else "[red]not met[/]"


def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and whether each target is met (None when not measured)."""
    phases = results["phases"]
    through = phases.get("throughput", {})
    base = phases.get("baseline", {})
    lat = phases.get("latency", {})
    eps = through.get("events_per_s") if through.get("completed") else None
    base_eps = base.get("events_per_s") if base.get("completed") else None
    ratio = round(eps / base_eps, 3) if eps and base_eps else None
    p99 = lat.get("latency", {}).get("p99_ms")
    rss: dict[str, float] = {}
    for phase in (through, lat):
        for name, mib in phase.get("peak_rss_mib", {}).items():
            rss[name] = max(rss.get(name, 0.0), mib)
    correct = [p["correctness"]["passed"] for p in (through, lat) if p.get("correctness")]
    budget = through.get("cpu_budget", {}) if eps is not None else {}
    return {
        "throughput_events_per_s": eps,
        "baseline_events_per_s": base_eps,
        "ratio": ratio,
        "latency_p99_ms": p99,
        "peak_rss_mib": rss,
        "events_per_s_with_every_core_busy": budget.get("events_per_s_with_every_core_busy"),
        "correct": all(correct) if correct else None,
        "met": {
            "throughput": None if eps is None else eps >= TARGETS["throughput_events_per_s"],
            "latency": None if p99 is None else p99 <= TARGETS["latency_p99_ms"],
            "ratio": None if ratio is None else ratio >= TARGETS["ratio"],
            "rss": None if not rss else rss_met(max(rss.values())),
        },
    }


def p99_unknown(summary_ms: dict[str, Any]) -> bool:
    """The p99 fell among markers never reflected: beyond any target."""
    return summary_ms.get("count", 0) > 0 and summary_ms.get("p99_ms") is None


def table(results: dict[str, Any]) -> Table:
    """The results as a Rich table: figure, value, target, verdict."""
    head = summary(results)
    phases = results["phases"]
    through, lat, base = (phases.get(k, {}) for k in ("throughput", "latency", "baseline"))
    grid = Table(title=f"casereview benchmark {results['run']}", title_justify="left")
    grid.add_column("measure")
    grid.add_column("value", justify="right")
    grid.add_column("target", justify="right")
    grid.add_column("", justify="left")
    met = head["met"]
    if through.get("completed", True):
        figure = _num(head["throughput_events_per_s"], " ev/s")
    else:
        progress = through.get("progress", {})
        figure = (
            f"did not drain in {through.get('seconds', 0):,.0f} s; "
            f"{progress.get('accepted_reviews_per_s', 0):,.1f} reviews/s through themes"
        )
    grid.add_row(
        "end to end throughput (submitted → snapshots published)",
        figure,
        "≥ 5,000 ev/s",
        _met(met["throughput"] if through.get("completed", True) else False),
    )
    if through:
        grid.add_row(
            "  events, window",
            f"{through.get('events', 0):,} in {through.get('seconds', 0):,.1f} s",
            "≥ 60 s",
            "",
        )
    grid.add_row("raw aiokafka passthrough", _num(head["baseline_events_per_s"], " ev/s"), "", "")
    grid.add_row("pipeline / passthrough", _num(head["ratio"], "", 3), "≥ 0.3", _met(met["ratio"]))
    if lat:
        summary_ms = lat.get("latency", {})
        never = summary_ms.get("never_seen") or 0
        grid.add_row(
            f"latency at {lat.get('achieved_offered_per_s', 0):,.0f} ev/s offered: p50 / p95 / p99"
            + (f" ({never:,} of {summary_ms.get('count', 0):,} never reflected)" if never else ""),
            " / ".join(
                _num(summary_ms.get(q), " ms") if summary_ms.get(q) is not None else "> wait"
                for q in ("p50_ms", "p95_ms", "p99_ms")
            ),
            "p99 ≤ 250 ms",
            _met(False if never and p99_unknown(summary_ms) else met["latency"]),
        )
        for part, label in (
            ("latency_to_accepted", "  send → seen accepted (intake)"),
            ("latency_accepted_to_snapshot", "  seen accepted → snapshot (themes)"),
        ):
            if part in lat:
                grid.add_row(
                    label,
                    " / ".join(
                        _num(v, " ms") if (v := lat[part].get(q)) is not None else "> wait"
                        for q in ("p50_ms", "p95_ms", "p99_ms")
                    ),
                    "",
                    "",
                )
        if lat.get("snapshots_published") is not None and lat.get("markers"):
            grid.add_row(
                "  snapshot versions published per marker",
                _num(lat["snapshots_published"] / lat["markers"], "", 1),
                "",
                "",
            )
    for name, mib in sorted(head["peak_rss_mib"].items()):
        grid.add_row(
            f"peak RSS {name}",
            _num(mib, " MiB", 1),
            f"≤ 200 MB ({TARGETS['rss_mb'] * MIB_PER_MB:.1f} MiB)",
            _met(rss_met(mib)),
        )
    for label, phase in (("throughput", through), ("latency", lat), ("passthrough", base)):
        per = phase.get("cpu_ms_per_1000_events", {})
        if per:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in per.items())
            grid.add_row(f"CPU ms per 1,000 events ({label})", parts, "", "")
    for label, phase in (("throughput", through), ("latency", lat), ("passthrough", base)):
        for row in budget_rows(label, phase, head):
            grid.add_row(*row)
    for label, phase in (("throughput", through), ("latency", lat)):
        for name, store in phase.get("store", {}).items():
            share = 100 * (store["waiting_share_of_wall"] or 0)
            grid.add_row(
                f"waiting on the store, {name} ({label})",
                f"{store['waiting_on_store_s']:,.1f} s ({share:.0f}% of the window)",
                "",
                "",
            )
    for label, phase in (("throughput", through), ("latency", lat)):
        if "correctness" in phase and phase["correctness"] is None:
            grid.add_row(f"correct ({label})", "not checked: did not drain", "all", _met(None))
        elif "correctness" in phase:
            c = phase["correctness"]
            grid.add_row(
                f"correct ({label}): snapshots, stored, actions",
                f"{c['snapshots_expected'] - c['published_mismatches']}/{c['snapshots_expected']}, "
                f"{c['snapshots_expected'] - c['stored_mismatches']}/{c['snapshots_expected']}, "
                f"{c['actions_expected'] - c['action_mismatches']}/{c['actions_expected']}",
                "all",
                _met(c["passed"]),
            )
    machine = results["machine"]
    grid.caption = (
        f"{machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB; "
        f"load average before {machine['load_average']}, after {results['load_average_after']}; "
        f"broker {results['servers']['kafka_bootstrap']}, store {results['servers']['mongo']}"
    )
    return grid


def budget_rows(
    label: str, phase: dict[str, Any], head: dict[str, Any]
) -> list[tuple[str, str, str, str]]:
    """The CPU of every measured process together, against the machine's cores; for the
    throughput phase, against the CPU per event the throughput and ratio targets allow on
    these cores."""
    budget = phase.get("cpu_budget")
    if not budget or budget["cpu_ms_per_1000_events"] is None:
        return []
    servers = [p for p in budget["processes"] if p.split("-")[0] not in SERVICES]
    counted = "every process" if servers else "the services only (broker and store not here)"
    cores = budget["cores"]
    own, window = phase.get("bench_cpu_s"), budget["window_s"]
    bench = f"; the bench itself {own / window:.2f}" if own is not None and window else ""
    allowed = ""
    if label == "throughput":
        limits = [
            f"≤ {allowed_ms_per_1000_events(TARGETS['throughput_events_per_s'], cores):,.0f} ms"
        ]
        if head["baseline_events_per_s"]:
            ratio_rate = TARGETS["ratio"] * head["baseline_events_per_s"]
            limits.append(f"≤ {allowed_ms_per_1000_events(ratio_rate, cores):,.0f} ms (ratio)")
        allowed = "; ".join(limits)
    rows = [
        (
            f"CPU ms per 1,000 events, {counted} ({label})",
            f"{budget['cpu_ms_per_1000_events']:,.0f} ({budget['cores_busy']:.2f} of "
            f"{cores} cores busy{bench})",
            allowed,
            "",
        )
    ]
    if servers:
        rows.append(
            (
                f"  events/s at that cost with all {cores} cores busy",
                _num(budget["events_per_s_with_every_core_busy"], " ev/s"),
                f"≥ {TARGETS['throughput_events_per_s']:,.0f} ev/s"
                if label == "throughput"
                else "",
                "",
            )
        )
    return rows


def show(results: dict[str, Any]) -> None:
    """Prints the table."""
    Console().print(table(results))
