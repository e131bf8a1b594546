"""Crashes: themes and intake SIGKILLed mid-batch in 5,000+ events; every effect lands once."""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.checks import (
    check_history,
    compare_themes,
    open_actions,
    reviews_lost,
    stored_reviews,
)
from tests.faults.conftest import Figures
from tests.support.pipeline import Name, Pipeline, record
from tests.support.workload import expected, generate

pytestmark = pytest.mark.faults

SEED = 20261125
CHUNKS = 10
# Where a kill lands: after a random number of these lines past the count before the chunk,
# which each service writes in the middle of a batch, before its offsets are committed.
MARKERS: dict[Name, tuple[str, int]] = {
    "intake": ("submission accepted", 300),
    "themes": ("review stored", 60),
}


async def test_kills_lose_nothing_and_count_nothing_twice(
    pipeline: Pipeline, figures: Figures
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    # Each audit draws on four themes only: twenty audits of every theme would recompute
    # cross-audit recurrence more often than the test store answers in the time allowed.
    events = generate(
        audits=20,
        cases_per_audit=10,
        max_revision=10,
        seed=SEED % 1000,
        favoured=4,
        favoured_only=True,
    )
    cases = {(e["audit_id"], e["case"]["ref"]) for e in events}
    assert len(events) >= 5000
    assert len(cases) >= 200
    assert len({e["audit_id"] for e in events}) >= 20
    resent = rng.sample(events, len(events) // 20)
    stream = [record(e) for e in [*events, *resent]]
    # Shuffled: later revisions often come first, and re-sends anywhere.
    rng.shuffle(stream)
    reference = expected(events)

    plan: list[Name] = ["themes", "themes", "themes", "intake", "intake"]
    rng.shuffle(plan)
    kill_after = dict(zip(sorted(rng.sample(range(CHUNKS - 1), len(plan))), plan, strict=True))
    # Batches as the services shipped them when this test was written, so that a kill lands
    # in the middle of one whatever the defaults become.
    pipeline.values.update(intake_batch_max=500, themes_batch_max=2000)
    await pipeline.start()
    size = -(-len(stream) // CHUNKS)
    for index in range(CHUNKS):
        await pipeline.submit(stream[index * size : (index + 1) * size])
        victim = kill_after.get(index)
        if victim is None:
            continue
        marker, spread = MARKERS[victim]
        await pipeline.logged(
            victim,
            marker,
            pipeline.events_logged(victim, marker) + rng.randint(1, spread),
            timeout_s=240,
        )
        await pipeline.kill(victim)
        await pipeline.restart(victim)
    quiet_after = await pipeline.quiet(timeout_s=360)

    served = await pipeline.themes()
    outcome = compare_themes(served, reference)
    assert outcome.differences == []
    lost_reviews = reviews_lost(pipeline, events, await stored_reviews(pipeline))
    assert lost_reviews == []
    actions = await pipeline.actions()
    assert open_actions(actions) == reference.actions

    snapshots = check_history(
        await pipeline.read("themes"),
        "audit_id+theme",
        {f"{a}/{t}": s for (a, t), s in served.items()},
    )
    history = check_history(
        await pipeline.read("actions"), "action_id", {a["action_id"]: a for a in actions}
    )
    assert await pipeline.read("rejected", idle_ms=500) == []
    forwarded = await pipeline.read("accepted", idle_ms=500)
    assert pipeline.kills == {"intake": 2, "themes": 3, "recommendations": 0}

    figures.record(
        "crashes",
        events=len(stream),
        distinct_events=len(events),
        cases=len(cases),
        audits=len({e["audit_id"] for e in events}),
        duplicates_injected=len(resent),
        kills=sum(pipeline.kills.values()),
        kills_by_service=pipeline.kills,
        restarts=sum(pipeline.restarts.values()),
        forwarded_again_after_a_crash=len(forwarded) - len(events),
        snapshot_keys=snapshots.keys,
        snapshot_versions_published=snapshots.messages,
        snapshot_versions_resent=snapshots.resent,
        action_versions_published=history.messages,
        action_versions_resent=history.resent,
        lost=outcome.lost + len(lost_reviews),
        double_counted=outcome.double_counted,
        quiet_after_last_restart_s=round(quiet_after, 1),
        duration_s=round(time.monotonic() - started, 1),
    )
