"""Escalation of overdue actions: once per action, with two instances running and a restart."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.recommendations.domain import action_id
from services.recommendations.settings import RecommendationsSettings
from services.recommendations.store import HistoryEntry
from shared.mongo import Document
from tests.support.infra import Servers
from tests.support.kafka import publish, wait_for
from tests.support.recommendations_fixtures import AUDIT, FakeClock, fixture_snapshots, record
from tests.support.recommendations_harness import (
    client,
    drained,
    published,
    running,
    settings_for,
    versions_by_action,
)

pytestmark = pytest.mark.integration

EDUCATION = action_id(AUDIT, "safeguarding_in_education")


async def escalations(servers: Servers, settings: RecommendationsSettings) -> list[dict[str, Any]]:
    return [m for m in await published(servers, settings) if m["event"] == "escalated"]


async def passes(clock: FakeClock, n: int) -> None:
    """Waits until the running instances have read the clock `n` more times (upkeep passes)."""
    target = clock.reads + n

    async def done() -> bool:
        return clock.reads >= target

    await wait_for(done, 20, every_s=0.05)


async def test_an_overdue_action_is_escalated_once_across_replicas_and_restarts(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace, tmp_path, escalation_interval_s=0.1)
    clock = FakeClock(datetime(2020, 5, 11, 10, 2, 12, tzinfo=UTC))
    async with running(settings, clock) as one, running(settings, clock):
        await publish(
            servers.kafka_bootstrap,
            settings.topic_themes,
            [record(s) for s in fixture_snapshots()],
        )
        await drained(servers, settings)
        async with client(one, "safeguarding_in_education") as http:
            for status in ("acknowledged", "in_progress", "completed"):
                response = await http.post(
                    f"/v1/actions/{EDUCATION}/status", json={"status": status}
                )
                assert response.status_code == 200
        due_by = date.fromisoformat((await published(servers, settings))[0]["due_by"])
        assert due_by == date(2020, 7, 6)

        # On the due date itself nothing is overdue yet.
        clock.now = datetime.combine(due_by, time(23, 59), tzinfo=UTC)
        await passes(clock, 10)
        assert await escalations(servers, settings) == []

        clock.advance(minutes=2)

        async def three_escalated() -> bool:
            return len(await escalations(servers, settings)) >= 3

        await wait_for(three_escalated, 20)
        await passes(clock, 20)
        escalated = await escalations(servers, settings)

    # The three open actions, once each; the completed one not at all.
    assert sorted(m["action_id"] for m in escalated) == sorted(
        action_id(AUDIT, g)
        for g in ("domestic_abuse_operational_group", "business_group", "neglect_strategy_group")
    )
    for message in escalated:
        assert message["escalated_to"] == "business_group"
        assert message["status"] == "routed"
        assert message["occurred_at"].startswith("2020-07-07T00:01")

    # A restarted instance, still past due, escalates nothing again.
    async with running(settings, clock):
        await passes(clock, 10)
    assert await escalations(servers, settings) == escalated
    for versions in versions_by_action(await published(servers, settings)).values():
        assert versions == list(range(1, len(versions) + 1))
    docs = [doc async for doc in mongo[namespace]["actions"].find({})]
    for doc in docs:
        history = mongo[namespace]["action_history"].find({"action_id": doc["_id"]})
        events = [HistoryEntry.from_doc(h).message.event.value async for h in history]
        assert len(events) == doc["version"], "every version is in the history"
        assert events.count("escalated") == (0 if doc["_id"] == EDUCATION else 1)
        assert doc["published_version"] == doc["version"]
