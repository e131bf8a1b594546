"""Recommendations on the real broker and store: snapshots in, one action per sub-group out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pymongo import AsyncMongoClient

from services.recommendations.domain import action_id
from shared.mongo import Document
from tests.support.contracts import REFERENCE
from tests.support.contracts import validator as contract_validator
from tests.support.infra import Servers
from tests.support.kafka import publish
from tests.support.recommendations_fixtures import (
    AUDIT,
    EXPECTED_THEMES,
    FIXTURE,
    fixture_snapshots,
    record,
    snapshot,
)
from tests.support.recommendations_harness import (
    client,
    drained,
    latest,
    published,
    running,
    settings_for,
    versions_by_action,
)

pytestmark = pytest.mark.integration


def validator() -> Draft202012Validator:
    return contract_validator("action")


def assert_valid_and_ordered(messages: list[dict[str, Any]]) -> None:
    check = validator()
    for message in messages:
        check.validate(message)
    for action, versions in versions_by_action(messages).items():
        assert versions == sorted(set(versions)), f"{action}: {versions}"
        assert versions[0] == 1, action


async def test_fixture_audit_yields_one_action_per_sub_group_and_a_replay_nothing(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace, tmp_path)
    records = [record(s) for s in fixture_snapshots()]
    async with running(settings) as app:
        await publish(servers.kafka_bootstrap, settings.topic_themes, records)
        await drained(servers, settings)
        first = await published(servers, settings)

        assert_valid_and_ordered(first)
        finals = latest(first)
        assert set(finals) == {action_id(AUDIT, g) for g in EXPECTED_THEMES}
        for group, themes in EXPECTED_THEMES.items():
            final = finals[action_id(AUDIT, group)]
            assert final["themes"] == themes
            assert final["status"] == "routed"
            assert final["sub_group"] == group
            assert final["audit_id"] == AUDIT
            for evidence in final["evidence"]:
                cases, agencies = FIXTURE[evidence["theme"]]
                assert evidence["cases_with_theme"] == cases
                assert evidence["cases_total"] == 6
                assert evidence["agency_count"] == len(agencies)
        example_path = REFERENCE / "examples" / "action.valid.json"
        if not example_path.is_file():
            pytest.skip(f"the reference contracts folder {REFERENCE} is not beside this clone")
        example = json.loads(example_path.read_text())
        education = finals[example["action_id"]]
        assert education["evidence"] == example["evidence"]
        assert education["recommendation"].startswith(
            "Reinforce the message that clear planning is needed to get children back into school"
        )

        # The very same snapshots again: nothing new is published.
        await publish(servers.kafka_bootstrap, settings.topic_themes, records)
        await drained(servers, settings)
        assert await published(servers, settings) == first

        async with client(app, "business_group") as http:
            listed = (await http.get("/v1/actions")).json()["actions"]
    assert sorted(a["action_id"] for a in listed) == sorted(finals)
    assert await mongo[namespace]["actions"].count_documents({}) == 4


async def test_a_theme_that_stops_being_a_pattern_leaves_and_the_last_withdraws(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace, tmp_path)
    neglect = action_id(AUDIT, "neglect_strategy_group")
    abuse = action_id(AUDIT, "domestic_abuse_operational_group")
    async with running(settings) as app:
        await publish(
            servers.kafka_bootstrap,
            settings.topic_themes,
            [record(s) for s in fixture_snapshots()],
        )
        await drained(servers, settings)
        before = latest(await published(servers, settings))

        gone = [
            snapshot("large_sibling_group", 1, ("county-csc",), version=2),
            snapshot("domestic_abuse", 1, ("county-csc",), version=2),
            # Out of order and stale: ignored.
            snapshot("domestic_abuse", 4, ("county-csc", "thames-police"), version=1),
        ]
        await publish(servers.kafka_bootstrap, settings.topic_themes, [record(s) for s in gone])
        await drained(servers, settings)
        after = latest(await published(servers, settings))

        assert after[neglect]["event"] == "updated"
        assert after[neglect]["version"] == before[neglect]["version"] + 1
        assert after[neglect]["themes"] == ["child_needs_overshadowed", "not_signposted_to_support"]
        assert after[neglect]["due_by"] == before[neglect]["due_by"]
        assert after[abuse]["event"] == "withdrawn"
        assert after[abuse]["status"] == "withdrawn"
        assert after[abuse]["themes"] == []
        assert after[abuse]["evidence"] == []
        assert after[abuse]["version"] == before[abuse]["version"] + 1

        back = snapshot("domestic_abuse", 3, ("county-csc", "thames-police"), version=3)
        await publish(servers.kafka_bootstrap, settings.topic_themes, [record(back)])
        await drained(servers, settings)
        messages = await published(servers, settings)
        assert_valid_and_ordered(messages)
        again = latest(messages)[abuse]
        assert again["event"] == "routed"
        assert again["status"] == "routed"
        assert again["themes"] == ["domestic_abuse"]
        assert again["version"] == before[abuse]["version"] + 2
        # Nothing else moved.
        for other, message in latest(messages).items():
            if other not in (neglect, abuse):
                assert message == before[other]

        async with client(app, "domestic_abuse_operational_group") as http:
            detail = (await http.get(f"/v1/actions/{abuse}")).json()
    events = [h["event"] for h in detail["history"]]
    assert events == ["routed", "withdrawn", "routed"]
    assert [h["version"] for h in detail["history"]] == [1, 2, 3]
    assert detail["history"][1]["cause"] == {
        "snapshots": [{"theme": "domestic_abuse", "version": 2}]
    }
    assert detail["history"][2]["cause"] == {
        "snapshots": [{"theme": "domestic_abuse", "version": 3}]
    }
    # Without a correlation id header, the snapshot's key stands in.
    assert detail["history"][1]["correlation_id"] == f"{AUDIT}/domestic_abuse"
    [states] = await mongo[namespace]["recommendation_states"].find({}).to_list()
    assert (states["_id"], len(states["themes"])) == (AUDIT, len(FIXTURE))
