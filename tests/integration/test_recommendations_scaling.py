"""Two recommendations replicas in one consumer group end where one does, versions in order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.recommendations.settings import RecommendationsSettings
from shared.mongo import Document
from tests.support.infra import Servers
from tests.support.kafka import publish, wait_for
from tests.support.recommendations_fixtures import fixture_snapshots, record, snapshot
from tests.support.recommendations_harness import (
    drained,
    latest,
    published,
    running,
    settings_for,
    stable_members,
    versions_by_action,
)

pytestmark = pytest.mark.integration

AUDITS = [f"audit-{n:02d}" for n in range(1, 7)]
CONTENT = ("themes", "evidence", "recommendation", "status", "due_by", "owner", "escalated_to")


def inputs() -> list[tuple[bytes, bytes]]:
    """Six audits' snapshots, later versions for some themes, and re-deliveries, shuffled
    within each theme's key only (a key's snapshots stay in version order, as themes sends)."""
    per_key: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for audit in AUDITS:
        snaps = [
            *fixture_snapshots(audit_id=audit),
            snapshot("large_sibling_group", 1, ("county-csc",), audit_id=audit, version=2),
            snapshot("domestic_abuse", 6, ("a-1", "b-2", "c-3"), audit_id=audit, version=2),
            snapshot("mh_intervention_delayed", 3, ("a-1", "b-2"), audit_id=audit, version=1),
            snapshot("neglect", 2, ("a-1", "b-2"), audit_id=audit, version=1),
            snapshot("neglect", 1, ("a-1",), audit_id=audit, version=2),
        ]
        for snap in snaps:
            key, value = record(snap)
            per_key.setdefault(key, []).append((key, value))
    rng = random.Random(7)
    keys = list(per_key)
    rng.shuffle(keys)
    out = [item for key in keys for item in per_key[key]]
    return out + out[: len(out) // 3]


def content(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a: {k: m[k] for k in CONTENT} for a, m in latest(messages).items()}


async def run(
    servers: Servers, settings: RecommendationsSettings, replicas: int, records: list[Any]
) -> list[dict[str, Any]]:
    async with running(settings):
        if replicas == 2:
            async with running(settings):

                async def both_assigned() -> bool:
                    return await stable_members(servers, settings.recommendations_group) == 2

                await wait_for(both_assigned, 30)
                await publish(servers.kafka_bootstrap, settings.topic_themes, records)
                await drained(servers, settings)
        else:
            await publish(servers.kafka_bootstrap, settings.topic_themes, records)
            await drained(servers, settings)
    return await published(servers, settings)


async def test_two_replicas_give_the_same_actions_as_one(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    records = inputs()
    one = settings_for(servers, namespace, tmp_path)
    two = settings_for(servers, f"{namespace}x", tmp_path)
    assert two.topic_partitions >= 4
    try:
        alone = await run(servers, one, 1, records)
        together = await run(servers, two, 2, records)
    finally:
        await mongo.drop_database(two.mongo_database)

    assert len(latest(alone)) == 4 * len(AUDITS)
    assert content(together) == content(alone)
    for messages in (alone, together):
        for action, versions in versions_by_action(messages).items():
            assert versions == list(range(1, len(versions) + 1)), f"{action}: {versions}"
    business = content(together)["act-audit-01-business_group"]
    assert business["themes"] == [
        "health_absent_from_strategy_discussion",
        "mh_intervention_delayed",
        "parental_mental_health",
    ]
    assert "neglect" not in content(together)["act-audit-01-neglect_strategy_group"]["themes"]
    assert (
        content(together)["act-audit-01-domestic_abuse_operational_group"]["evidence"][0][
            "cases_with_theme"
        ]
        == 6
    )
