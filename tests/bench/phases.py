"""The benchmark's phases: the raw-Kafka baseline, sustained throughput, latency at a fixed
offered load, and the correctness check every pipeline phase ends with."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.bench.kafkautil import Lag, create_topics, delete_topics, publish_all, publish_paced
from tests.bench.load import Load
from tests.bench.pipeline import SERVICES, Pipeline, Profiler, top_frames
from tests.bench.procstat import Sample, sample
from tests.bench.stats import cpu_budget, latency_summary, per_thousand, rate, reflected_at
from tests.bench.watch import Watcher
from tests.support.infra import REPO
from tests.support.workload import Expected, expected

# What a published snapshot says besides its content.
NOT_CONTENT = ("schema_version", "version", "computed_at")

console = Console(stderr=True)

Sampler = Callable[[], dict[str, Sample | None]]
"""CPU time and memory of a set of processes, by name, now."""


def no_servers() -> dict[str, Sample | None]:
    """The sampler for a broker and store that do not run here: nothing to sample."""
    return {}


BENCH = "bench"
"""The sample of the benchmark's own process (its load generator and watchers), which
`Sampler`s may include: the machine runs it too, but it is no part of the pipeline's cost."""


def machine_report(
    services: dict[str, float], servers: dict[str, float], events: int, seconds: float
) -> dict[str, Any]:
    """The servers' CPU over the same window as the services', and what all of it together
    comes to per event and against the machine's cores (`stats.cpu_budget`); the bench's own
    CPU beside it."""
    own = {k: v for k, v in servers.items() if k != BENCH}
    return {
        "servers_cpu_s": own,
        "bench_cpu_s": servers.get(BENCH),
        "cpu_budget": cpu_budget(services | own, events, seconds, os.cpu_count() or 1),
    }


@dataclass
class Window:
    """CPU and store time of processes over one measured interval."""

    before: dict[str, Sample | None]
    store_before: dict[str, dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def cpu(after: dict[str, Sample | None], before: dict[str, Sample | None]) -> dict[str, float]:
        """CPU seconds each process spent between the two samples."""
        out: dict[str, float] = {}
        for name, end in after.items():
            start = before.get(name)
            if end is not None and start is not None:
                out[name] = round(end.cpu_s - start.cpu_s, 3)
        return out


def cpu_report(cpu: dict[str, float], events: int) -> dict[str, Any]:
    """CPU seconds and milliseconds per 1,000 events, per process and for the services."""
    # A replica's process is named after its service (`themes-2`).
    services = {k: v for k, v in cpu.items() if k.split("-")[0] in SERVICES}
    return {
        "cpu_s": cpu,
        "cpu_ms_per_1000_events": {
            name: round(per, 1) for name, s in cpu.items() if (per := per_thousand(s, events))
        },
        "services_cpu_ms_per_1000_events": round(
            per_thousand(sum(services.values()), events) or 0, 1
        ),
    }


def store_report(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], wall_s: float
) -> dict[str, Any]:
    """Per service: wall time with a store command in flight, and the commands sent."""
    out: dict[str, Any] = {}
    for name, end in after.items():
        start = before.get(name, {"busy_s": 0.0})
        busy = end["busy_s"] - start["busy_s"]
        out[name] = {
            "waiting_on_store_s": round(busy, 3),
            "waiting_share_of_wall": round(busy / wall_s, 3) if wall_s else None,
            "commands": _difference(start.get("commands", {}), end["commands"]),
            "by_collection": _difference(
                start.get("by_collection", {}), end.get("by_collection", {})
            ),
        }
    return out


def _difference(
    start: dict[str, dict[str, float]], end: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Command totals sent between two readings, the ones sent at all."""
    out = {}
    for command, totals in end.items():
        was = start.get(command, {"count": 0, "seconds": 0.0})
        if count := int(totals["count"] - was["count"]):
            out[command] = {"count": count, "seconds": round(totals["seconds"] - was["seconds"], 3)}
    return out


def content_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A published snapshot without its version and computed_at."""
    return {k: v for k, v in snapshot.items() if k not in NOT_CONTENT}


def matches(content: dict[str, Any], want: dict[str, Any]) -> bool:
    """True when a snapshot says what the reference says on every field the reference has."""
    return all(content.get(k) == v for k, v in want.items())


class Snapshots:
    """The latest version of every snapshot seen on the themes topic, and how many match
    the reference."""

    def __init__(self, want: dict[str, dict[str, Any]]) -> None:
        self.want = want
        self.latest: dict[str, tuple[int, dict[str, Any]]] = {}
        self.matching: set[str] = set()
        self.records = 0
        self.last_seen = 0.0
        self.observations: dict[str, list[tuple[float, int]]] = {}

    def on_record(self, record: Any, seen: float) -> None:
        """Notes one snapshot message."""
        doc = json.loads(record.value)
        self.records += 1
        self.last_seen = seen
        self.observations.setdefault(doc["audit_id"], []).append((seen, doc["cases_total"]))
        key = f"{doc['audit_id']}/{doc['theme']}"
        held = self.latest.get(key)
        if held is not None and held[0] >= doc["version"]:
            return
        content = content_of(doc)
        self.latest[key] = (doc["version"], content)
        if key in self.want and matches(content, self.want[key]):
            self.matching.add(key)
        else:
            self.matching.discard(key)

    @property
    def complete(self) -> bool:
        """Every snapshot the reference expects says what it says."""
        return len(self.matching) == len(self.want)


class Actions:
    """The latest version of every action seen on the actions topic."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def on_record(self, record: Any, _: float) -> None:
        """Notes one action message."""
        doc = json.loads(record.value)
        held = self.latest.get(doc["action_id"])
        if held is None or held["version"] < doc["version"]:
            self.latest[doc["action_id"]] = doc

    def routed(self) -> dict[tuple[str, str], list[str]]:
        """Themes per (audit, sub-group) of every action not withdrawn."""
        return {
            (a["audit_id"], a["sub_group"]): sorted(a["themes"])
            for a in self.latest.values()
            if a["status"] != "withdrawn"
        }


def reference_themes(reference: Expected) -> dict[str, dict[str, Any]]:
    """The reference's snapshots keyed as the topic keys them, with audit and theme."""
    return {
        f"{audit}/{theme}": {"audit_id": audit, "theme": theme, **content}
        for (audit, theme), content in reference.themes.items()
    }


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout_s: float,
    progress: Callable[[], str],
    every_s: float = 0.2,
) -> bool:
    """Polls until the condition holds; prints progress every five seconds; False on timeout."""
    deadline = time.monotonic() + timeout_s
    said = time.monotonic()
    while not await condition():
        if time.monotonic() > deadline:
            return False
        if time.monotonic() - said >= 5:
            console.print(f"  … {progress()}")
            said = time.monotonic()
        await asyncio.sleep(every_s)
    return True


async def baseline(
    *,
    bootstrap: str,
    namespace: str,
    partitions: int,
    load: Load,
    workdir: Path,
    timeout_s: float,
    servers: Sampler = no_servers,
) -> dict[str, Any]:
    """The same records through a raw aiokafka consume -> produce passthrough process;
    `servers` samples the broker (and the idle store) over the same window."""
    source, target = f"{namespace}.baseline.in", f"{namespace}.baseline.out"
    await create_topics(bootstrap, [source, target], partitions)
    with (workdir / "passthrough.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.bench.passthrough", bootstrap, source, target),
            f"{namespace}-passthrough",
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    seen = {"records": 0, "last": 0.0}

    def on_record(_: Any, at: float) -> None:
        seen["records"] += 1
        seen["last"] = at

    watcher = Watcher(bootstrap, {target: on_record})
    try:
        await watcher.start()
        # One record through first, so the group has joined before the clock starts.
        await publish_all(bootstrap, source, [(b"warm-up", b"{}")])

        async def warmed() -> bool:
            return seen["records"] >= 1

        if not await wait_until(warmed, 60, lambda: "waiting for the passthrough to join"):
            raise RuntimeError("the passthrough never forwarded its warm-up record")
        before, servers_before = sample(process.pid), servers()
        window = time.monotonic()
        started, _ = await publish_all(bootstrap, source, load.records)
        total = len(load.records) + 1

        async def through() -> bool:
            return int(seen["records"]) >= total

        done = await wait_until(
            through, timeout_s, lambda: f"{int(seen['records']) - 1}/{total - 1} forwarded"
        )
        after, servers_after = sample(process.pid), servers()
        window = time.monotonic() - window
        elapsed = float(seen["last"]) - started
        cpu = Window.cpu({"passthrough": after}, {"passthrough": before})
        server_cpu = Window.cpu(servers_after, servers_before)
        return {
            "completed": done,
            "events": len(load.records),
            "forwarded": int(seen["records"]) - 1,
            "seconds": round(elapsed, 3),
            "events_per_s": round(rate(int(seen["records"]) - 1, elapsed), 1),
            **cpu_report(cpu, len(load.records)),
            **machine_report(cpu, server_cpu, len(load.records), window),
            "peak_rss_mib": round(after.peak_rss_kib / 1024, 1) if after else None,
        }
    finally:
        await watcher.stop()
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
        await delete_topics(bootstrap, [source, target])


async def settle(pipeline: Pipeline, lag: Lag, timeout_s: float) -> bool:
    """Waits until every service has committed past everything on its input topic."""
    consumed = (
        ("intake", "submitted"),
        ("themes", "accepted"),
        ("recommendations", "themes"),
    )
    state: dict[str, Any] = {"lag": {}}

    async def quiet() -> bool:
        lags = {s: await lag.of(pipeline.group(s), pipeline.topic(t)) for s, t in consumed}
        state["lag"] = lags
        return not any(lags.values())

    return await wait_until(quiet, timeout_s, lambda: f"lag {state['lag']}", every_s=0.5)


async def check(
    pipeline: Pipeline, reference: Expected, snapshots: Snapshots, actions: Actions
) -> dict[str, Any]:
    """The published snapshots, the stored ones (through the read API) and the routed
    actions against the reference."""
    want = reference_themes(reference)
    published = {k: c for k, (_, c) in snapshots.latest.items()}
    wrong_published = sorted(
        k
        for k in set(want) | set(published)
        if not matches(published.get(k, {}), want.get(k, {"": 0}))
    )
    stored: dict[str, dict[str, Any]] = {}
    url = str(pipeline.values["themes_url"])
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for audit in sorted({a for a, _ in reference.themes}):
            response = await client.get(f"/v1/audits/{audit}/themes")
            if response.status_code == 200:
                for item in response.json()["themes"]:
                    stored[f"{item['audit_id']}/{item['theme']}"] = content_of(item)
    wrong_stored = sorted(
        k for k in set(want) | set(stored) if not matches(stored.get(k, {}), want.get(k, {"": 0}))
    )
    routed = actions.routed()
    wrong_actions = sorted(
        f"{a}/{g}"
        for a, g in set(routed) | set(reference.actions)
        if routed.get((a, g)) != reference.actions.get((a, g))
    )
    return {
        "snapshots_expected": len(want),
        "published_mismatches": len(wrong_published),
        "stored_mismatches": len(wrong_stored),
        "actions_expected": len(reference.actions),
        "action_mismatches": len(wrong_actions),
        "examples": (wrong_published[:3] + wrong_stored[:3] + wrong_actions[:3]),
        "passed": not (wrong_published or wrong_stored or wrong_actions),
    }


@dataclass
class Run:
    """One pipeline phase's namespace, services and watchers."""

    pipeline: Pipeline
    lag: Lag
    watcher: Watcher
    snapshots: Snapshots
    actions: Actions
    extra: dict[str, Any] = field(default_factory=dict)
    servers: Sampler = no_servers


async def warm_up(pipeline: Pipeline, warm: Load, snapshots: Snapshots, timeout_s: float) -> None:
    """A few reviews through the whole pipeline before the clock starts: consumer groups
    joined, connections open, collections created."""
    await publish_all(pipeline.bootstrap, pipeline.topic("submitted"), warm.records)
    audits = {e["audit_id"] for e in warm.valid}

    async def through() -> bool:
        return audits <= set(snapshots.observations)

    if not await wait_until(through, timeout_s, lambda: "warming up"):
        raise RuntimeError("the warm-up reviews never reached the themes topic")


async def throughput(
    run: Run, load: Load, reference: Expected, timeout_s: float, profile_dir: Path | None
) -> dict[str, Any]:
    """Every record published at full speed; measured from the first send to the last
    snapshot, once every service has committed past everything and the published
    snapshots equal the reference."""
    pipeline, snapshots = run.pipeline, run.snapshots
    before, store_before = pipeline.samples(), pipeline.store_totals()
    servers_before = run.servers()
    sampled = time.monotonic()
    profiler = Profiler(pipeline.pids(), pipeline.workdir) if profile_dir else None
    if profiler is not None:
        profiler.start()
    started, sent = await publish_all(pipeline.bootstrap, pipeline.topic("submitted"), load.records)
    console.print(f"  published {load.events} records in {sent - started:.1f} s")
    consumed = (("intake", "submitted"), ("themes", "accepted"))
    state: dict[str, Any] = {"lag": {}}

    async def finished() -> bool:
        if not snapshots.complete:
            return False
        lags = {s: await run.lag.of(pipeline.group(s), pipeline.topic(t)) for s, t in consumed}
        state["lag"] = lags
        return not any(lags.values())

    done = await wait_until(
        finished,
        timeout_s,
        lambda: (
            f"{len(snapshots.matching)}/{len(snapshots.want)} snapshots as the reference has "
            f"them, {snapshots.records} published, {time.monotonic() - started:.0f} s"
        ),
    )
    ended = snapshots.last_seen
    after, store_after = pipeline.samples(), pipeline.store_totals()
    servers_after = run.servers()
    sampled = time.monotonic() - sampled
    profiles = profiler.stop() if profiler is not None else {}
    elapsed = (ended if done else time.monotonic()) - started
    committed = await run.lag.committed(pipeline.group("themes"), pipeline.topic("accepted"))
    result: dict[str, Any] = {
        "completed": done,
        "events": load.events,
        "valid_events": len(load.valid),
        "poison": load.poison,
        "seconds": round(elapsed, 3),
        "publish_seconds": round(sent - started, 3),
        "events_per_s": round(rate(load.events, elapsed), 1) if done else None,
        "snapshots_published": snapshots.records,
        **cpu_report(services := Window.cpu(after, before), load.events),
        **machine_report(services, Window.cpu(servers_after, servers_before), load.events, sampled),
        "store": store_report(store_before, store_after, sampled),
    }
    if not done:
        # What was done end to end in the window: themes commits an accepted review only once
        # it is stored and the snapshots it changed are published.
        result["progress"] = {
            "accepted_reviews_through_themes": committed,
            "accepted_reviews_per_s": round(rate(committed, elapsed), 1),
            "snapshots_matching": len(snapshots.matching),
            "snapshots_expected": len(snapshots.want),
            "lag": state["lag"],
        }
    if profiles:
        result["profile"] = {
            name: top_frames(path) for name, path in profiles.items() if path.exists()
        }
    return result


@dataclass
class Forwarded:
    """What intake forwarded to themes, as the watcher saw it: each audit's reviews in the
    order they were forwarded, and when each was first seen on the accepted topic."""

    order: dict[str, list[str]] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)

    def on_record(self, record: Any, seen: float) -> None:
        doc = json.loads(record.value)
        # A redelivered review keeps the position it was first forwarded at.
        if doc["event_id"] not in self.seen_at:
            self.seen_at[doc["event_id"]] = seen
            self.order.setdefault(doc["audit_id"], []).append(doc["event_id"])


async def latency(
    run: Run, load: Load, offered: float, timeout_s: float, forwarded: Forwarded
) -> dict[str, Any]:
    """Markers at a paced rate; each one's latency runs from its send to the first snapshot
    that counts its case (see `stats.reflected_at`). Split at the moment the watcher saw it
    forwarded on the accepted topic: intake's part, and themes' with the hops around it."""
    positions = forwarded.order
    pipeline, snapshots = run.pipeline, run.snapshots
    ids = [e["event_id"] for e in load.valid]
    audit_of = {e["event_id"]: e["audit_id"] for e in load.valid}
    sent_at: dict[str, float] = {}

    def sent(index: int, at: float) -> None:
        sent_at[ids[index]] = at

    before, store_before = pipeline.samples(), pipeline.store_totals()
    servers_before = run.servers()
    published_before = snapshots.records
    sampled = time.monotonic()
    started, finished_sending = await publish_paced(
        pipeline.bootstrap, pipeline.topic("submitted"), load.records, offered, sent
    )
    markers = set(ids)

    def reflected_count() -> int:
        highest = {a: max(c for _, c in obs) for a, obs in snapshots.observations.items()}
        count = 0
        for audit, events in positions.items():
            count += min(len([e for e in events if e in markers]), highest.get(audit, 0))
        return count

    async def all_reflected() -> bool:
        return reflected_count() >= len(ids)

    done = await wait_until(
        all_reflected, timeout_s, lambda: f"{reflected_count()}/{len(ids)} markers reflected"
    )
    after, store_after = pipeline.samples(), pipeline.store_totals()
    servers_after = run.servers()
    sampled = time.monotonic() - sampled
    ordered = {a: [e for e in events if e in markers] for a, events in positions.items()}
    when = reflected_at(ordered, snapshots.observations)
    # A marker never reflected within the timeout counts as infinitely late, so a percentile
    # that falls among them is reported as unknown rather than flattered.
    latencies = [when[e] - sent_at[e] if e in when else math.inf for e in ids]
    through_intake = [
        forwarded.seen_at[e] - sent_at[e] if e in forwarded.seen_at else math.inf for e in ids
    ]
    after_intake = [
        when[e] - forwarded.seen_at[e] if e in when and e in forwarded.seen_at else math.inf
        for e in ids
    ]
    by_audit_missing = sum(1 for e in ids if e not in when)
    sending = finished_sending - started
    return {
        "completed": done,
        "markers": len(ids),
        "audits": len({audit_of[e] for e in ids}),
        "offered_per_s": offered,
        "achieved_offered_per_s": round(rate(len(ids) - 1, sending), 1),
        "sending_seconds": round(sending, 3),
        "unreflected": by_audit_missing,
        # Every version themes published in the window: a batch publishes each theme of each
        # audit it changed, so this over the markers is how much each marker cost downstream.
        "snapshots_published": snapshots.records - published_before,
        "latency": latency_summary(latencies),
        "latency_to_accepted": latency_summary(through_intake),
        "latency_accepted_to_snapshot": latency_summary(after_intake),
        **cpu_report(services := Window.cpu(after, before), len(ids)),
        **machine_report(services, Window.cpu(servers_after, servers_before), len(ids), sampled),
        "store": store_report(store_before, store_after, sampled),
    }


async def open_run(
    pipeline: Pipeline,
    want: dict[str, dict[str, Any]],
    forwarded: Forwarded | None,
    servers: Sampler = no_servers,
) -> Run:
    """Starts the services and the watchers on a fresh namespace; `servers` samples the
    broker and store processes alongside the services."""
    try:
        await pipeline.start()
    except BaseException:
        # A service that never became ready: stop the ones that did.
        await pipeline.stop()
        raise
    lag = Lag(pipeline.bootstrap)
    await lag.start()
    snapshots, actions = Snapshots(want), Actions()
    handlers: dict[str, Callable[[Any, float], None]] = {
        pipeline.topic("themes"): snapshots.on_record,
        pipeline.topic("actions"): actions.on_record,
    }
    if forwarded is not None:
        handlers[pipeline.topic("accepted")] = forwarded.on_record
    watcher = Watcher(pipeline.bootstrap, handlers)
    await watcher.start()
    return Run(pipeline, lag, watcher, snapshots, actions, servers=servers)


async def close_run(run: Run, keep: bool) -> dict[str, Any]:
    """Stops the watchers and services; reports their memory; cleans up unless kept."""
    peak = {
        name: round(s.peak_rss_kib / 1024, 1)
        for name, s in run.pipeline.samples().items()
        if s is not None
    }
    await run.watcher.stop()
    await run.lag.stop()
    stopped = await run.pipeline.stop()
    if not keep:
        await run.pipeline.clean_up()
    return {"peak_rss_mib": peak, "stopped_cleanly": stopped}


def namespace() -> str:
    """A prefix no other run uses."""
    return f"bench{time.strftime('%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"


def reference_of(load: Load, *more: Load) -> Expected:
    """What the pipeline must come to for these loads' valid events."""
    return expected([e for part in (load, *more) for e in part.valid])
