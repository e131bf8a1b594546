"""Replay: the reference audit sent thrice, every group reset to the earliest offset: no change."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from services.cli.dataset import by_agency, interleaved, load_dataset
from tests.faults.checks import compare_themes, open_actions
from tests.faults.conftest import Figures
from tests.support.pipeline import NAMES, Pipeline, canonical
from tests.support.workload import expected

pytestmark = pytest.mark.faults

TIMES = 3


async def state_hash(pipeline: Pipeline) -> str:
    """One hash over everything the APIs serve: every snapshot with its version and time,
    every action with its version, status and time."""
    themes = await pipeline.themes()
    actions = await pipeline.actions()
    return canonical(
        {
            "themes": [themes[key] for key in sorted(themes)],
            "actions": sorted(actions, key=lambda a: a["action_id"]),
        }
    )


async def test_a_replay_from_the_earliest_offsets_changes_nothing(
    pipeline: Pipeline, figures: Figures
) -> None:
    started = time.monotonic()
    submissions = interleaved(by_agency(load_dataset()))
    good = [s.event.model_dump(mode="json") for s in submissions if s.refused_for is None]
    refused = Counter(s.refused_for.value for s in submissions if s.refused_for is not None)
    reference = expected(good)
    records = [(s.key, s.to_json()) for s in submissions]

    await pipeline.start()
    for _ in range(TIMES):
        await pipeline.submit(records)
    await pipeline.quiet()
    outcome = compare_themes(await pipeline.themes(), reference)
    assert outcome.differences == []
    assert open_actions(await pipeline.actions()) == reference.actions
    rejected = await pipeline.read("rejected", idle_ms=500)
    # Each copy of a refused submission sits at its own offset and gets its own answer.
    assert len(rejected) == TIMES * sum(refused.values())
    before = await state_hash(pipeline)
    ends = await pipeline.ends()

    pipeline.stop_all()
    replayed = {name: await pipeline.reset_to_earliest(name) for name in NAMES}
    for name in NAMES:
        assert await pipeline.lag(name) == replayed[name] > 0, f"{name} was not reset"
    await pipeline.start()
    await pipeline.quiet()

    grown = {topic: n - ends[topic] for topic, n in (await pipeline.ends()).items()}
    assert not any(grown.values()), f"the replay published something: {grown}"
    assert await state_hash(pipeline) == before

    figures.record(
        "replay",
        events=len(records) * TIMES,
        distinct_events=len({s.event.event_id for s in submissions}),
        duplicates_injected=len(records) * TIMES - len({s.event.event_id for s in submissions}),
        replayed_records=replayed,
        new_messages_after_replay=sum(grown.values()),
        state_sha256=before,
        lost=outcome.lost,
        double_counted=outcome.double_counted,
        duration_s=round(time.monotonic() - started, 1),
    )
