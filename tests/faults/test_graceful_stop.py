"""Graceful stop: SIGTERM mid-batch commits only what was processed, even when cancelled."""

from __future__ import annotations

import json
import time

import pytest

from shared.mongo import make_client
from tests.faults.checks import compare_themes, open_actions
from tests.faults.conftest import Figures
from tests.faults.hang import HANGS
from tests.support.pipeline import Pipeline, record
from tests.support.workload import expected, generate

pytestmark = pytest.mark.faults

# FastStream's graceful timeout as `shared.kafka.make_broker` sets it.
GRACE_S = 30.0


async def forwarded_claims(pipeline: Pipeline) -> dict[str, bool]:
    """Intake's claims: event id to whether its forward to themes was acknowledged (its
    offset is below how far its partition's claims are recorded as forwarded)."""
    client = make_client(pipeline.servers.mongo_url)
    try:
        db = client[pipeline.database]
        below = {doc["_id"]: doc["below"] async for doc in db["intake_forwarded"].find({})}
        claims = db["intake_claims"].find({}, {"event_id": 1, "source": 1, "offset": 1})
        return {
            doc["event_id"]: doc["offset"] < below.get(doc["source"], 0) async for doc in claims
        }
    finally:
        await client.close()


def stopped_cleanly(lines: list[str]) -> bool:
    """The service's own last words (uvicorn adds a line or two after them)."""
    return any('"service stopped"' in line for line in lines[-5:])


def after(lines: list[str], event: str) -> list[str]:
    """The lines written after the first line carrying the event."""
    for index, line in enumerate(lines):
        if f'"event": "{event}"' in line:
            return lines[index + 1 :]
    raise AssertionError(f"no {event!r} line")


async def test_sigterm_mid_batch_commits_only_what_was_processed(
    pipeline: Pipeline, figures: Figures
) -> None:
    started = time.monotonic()
    # Enough events that intake is still busy well after its first forward is seen (it works
    # through a few hundred in the time the signal takes to land), and small batches: many
    # per service, so that one is in flight while others wait.
    events = generate(audits=20, cases_per_audit=10, max_revision=9, seed=31, favoured_only=True)
    reference = expected(events)
    pipeline.values.update(intake_batch_max=200, themes_batch_max=200)
    await pipeline.submit(record(e) for e in events)

    # Intake: SIGTERM right after its first forward, in the middle of its first batch.
    await pipeline.start("intake")
    await pipeline.logged("intake", "submission accepted")
    at_signal = pipeline.events_logged("intake", "submission accepted")
    intake_stop_s = await pipeline.terminate("intake")
    finished = pipeline.events_logged("intake", "submission accepted")
    assert finished > at_signal, "the batch was not in flight when SIGTERM came"
    assert stopped_cleanly(pipeline.log_lines("intake"))
    committed = await pipeline.committed("intake")
    claims = await forwarded_claims(pipeline)
    below = [
        json.loads(r.value)["event_id"]
        for r in await pipeline.records("submitted")
        if r.offset < committed.get(r.partition, 0)
    ]
    assert below, "the batch in flight was not committed after it finished"
    assert len(below) < len(events), "everything was processed before the signal"
    assert [e for e in below if not claims.get(e)] == []

    await pipeline.restart("intake")
    await pipeline.drained("intake")

    # Themes: the second batch's store write never returns; SIGTERM; FastStream cancels the
    # handler when its grace runs out. Its offsets must stay where the first batch left them.
    pipeline.launch_with(
        "themes", "tests.faults.hang", "services.themes.store:ThemesStore.write_reviews", "2"
    )
    await pipeline.start("themes")
    await pipeline.logged("themes", HANGS)
    held = await pipeline.committed("themes")
    assert sum(held.values()) > 0, "the first batch was not committed"
    themes_stop_s = await pipeline.terminate("themes", timeout_s=GRACE_S + 60)
    assert themes_stop_s >= GRACE_S - 1, "the handler was not left running until the grace ended"
    assert await pipeline.committed("themes") == held
    tail = after(pipeline.log_lines("themes"), HANGS)
    assert not [line for line in tail if '"batch processed"' in line]
    assert stopped_cleanly(tail)

    pipeline.launch_with("themes")
    await pipeline.restart("themes")
    await pipeline.start("recommendations")
    await pipeline.quiet()
    outcome = compare_themes(await pipeline.themes(), reference)
    assert outcome.differences == []
    assert open_actions(await pipeline.actions()) == reference.actions

    figures.record(
        "graceful_stop",
        events=len(events),
        sigterms=2,
        restarts=sum(pipeline.restarts.values()),
        intake_records_committed_at_sigterm=len(below),
        intake_stop_s=round(intake_stop_s, 1),
        themes_handler_cancelled_after_s=round(themes_stop_s, 1),
        lost=outcome.lost,
        double_counted=outcome.double_counted,
        duration_s=round(time.monotonic() - started, 1),
    )
