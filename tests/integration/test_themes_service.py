"""The themes service on the real broker and store: the picture equals the reference for any
delivery, a replay publishes nothing, recurrence follows patterns both ways, and two replicas
in one consumer group agree without publishing a version twice."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from services.themes.app import create_app
from services.themes.settings import ThemesSettings
from shared.contracts import ReviewAcceptedV1, ThemeSnapshotV1
from shared.mongo import Document
from shared.taxonomy import default_taxonomy
from tests.conftest import namespaced
from tests.support.infra import Servers
from tests.support.kafka import group_lag, publish, read_all, wait_for
from tests.unit.test_themes_property import AGENCIES, Content, event, reference

pytestmark = pytest.mark.integration

NOT_CONTENT = {"schema_version", "version", "computed_at"}
LEGAL = ["child_in_need", "child_protection_plan", "child_in_care"]


def settings_for(servers: Servers, namespace: str, **overrides: Any) -> ThemesSettings:
    return ThemesSettings(
        **namespaced(servers, namespace, themes_group=f"{namespace}-themes", **overrides)
    )


@asynccontextmanager
async def running(*apps: Starlette) -> AsyncIterator[None]:
    """The apps started in-process exactly as uvicorn starts them, stopped afterwards."""
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield


async def send(
    servers: Servers, settings: ThemesSettings, events: Sequence[ReviewAcceptedV1]
) -> None:
    """Puts accepted reviews on the internal topic, keyed by audit as intake does."""
    await publish(
        servers.kafka_bootstrap,
        settings.topic_accepted,
        [(e.audit_id.encode(), e.to_json()) for e in events],
    )


async def quiesce(servers: Servers, settings: ThemesSettings) -> list[ThemeSnapshotV1]:
    """Waits until the group has committed past every review and the themes topic has stopped
    growing; returns what is on it."""

    async def caught_up() -> bool:
        lag = await group_lag(
            servers.kafka_bootstrap, settings.themes_group, settings.topic_accepted
        )
        return lag == 0

    seen = -1
    while True:
        await wait_for(caught_up, timeout_s=45)
        records = await read_all(servers.kafka_bootstrap, settings.topic_themes, idle_ms=1000)
        if len(records) == seen:
            return [ThemeSnapshotV1.model_validate_json(value) for _, value, _ in records]
        seen = len(records)


def content(snapshot: dict[str, Any] | ThemeSnapshotV1) -> Content:
    raw = snapshot.model_dump(mode="json") if isinstance(snapshot, ThemeSnapshotV1) else snapshot
    return {k: v for k, v in raw.items() if k not in NOT_CONTENT}


async def served(app: Starlette, audits: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every audit's snapshots as the read API serves them, keyed `{audit}/{theme}`."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        out: dict[str, dict[str, Any]] = {}
        for audit_id in audits:
            response = await c.get(f"/v1/audits/{audit_id}/themes")
            assert response.status_code == 200, response.text
            for item in response.json()["themes"]:
                out[f"{item['audit_id']}/{item['theme']}"] = item
        return out


def by_key(published: Sequence[ThemeSnapshotV1]) -> dict[str, list[ThemeSnapshotV1]]:
    keyed: dict[str, list[ThemeSnapshotV1]] = {}
    for snapshot in published:
        keyed.setdefault(f"{snapshot.audit_id}/{snapshot.theme}", []).append(snapshot)
    return keyed


def assert_versions_rise(published: Sequence[ThemeSnapshotV1]) -> None:
    for key, snapshots in by_key(published).items():
        versions = [s.version for s in snapshots]
        assert versions == sorted(set(versions)), f"{key}: versions on the topic {versions}"


def audit_events(
    rng: random.Random, audits: dict[str, int], agencies: Sequence[str], pool: Sequence[str]
) -> list[ReviewAcceptedV1]:
    """Every agency reviews every case; about a third of reviews are revised once or twice,
    dropping or adding findings."""
    events: list[ReviewAcceptedV1] = []
    for audit_id, cases in audits.items():
        for n in range(cases):
            case = f"C{n:02d}"
            cohort = {"legal_status": rng.choice(LEGAL), "age_band": rng.choice(["10-15", "16-17"])}
            for agency in agencies:
                findings = [
                    (code, rng.randint(5, 200) if default_taxonomy().codes[code].waits else None)
                    for code in pool
                    if rng.random() < 0.2
                ]
                revision = 1
                events.append(event(audit_id, agency, case, revision, findings, **cohort))
                while rng.random() < 0.35 and revision < 3:
                    revision += 1
                    if findings and rng.random() < 0.6:
                        findings = findings[: rng.randrange(len(findings))]
                    else:
                        findings = [*findings, (rng.choice(pool), None)]
                    events.append(event(audit_id, agency, case, revision, findings, **cohort))
    return events


def delivery(rng: random.Random, events: Sequence[ReviewAcceptedV1]) -> list[ReviewAcceptedV1]:
    """The events shuffled, a fifth of them twice."""
    delivered = [*events, *rng.sample(list(events), len(events) // 5)]
    rng.shuffle(delivered)
    return delivered


async def test_picture_equals_the_reference_and_a_replay_publishes_nothing(
    servers: Servers, namespace: str, mongo: AsyncMongoClient[Document]
) -> None:
    rng = random.Random(20250301)
    pool = [c for c in default_taxonomy().codes if c != "child_of_offender"]
    audits = {"aud-north": 12, "aud-south": 10, "aud-east": 8}
    events = audit_events(rng, audits, sorted(AGENCIES), pool)
    # A theme every case in aud-east has lost through later revisions.
    for agency, case in (("csc", "C01"), ("police", "C02"), ("school", "C02")):
        events.append(event("aud-east", agency, case, 8, [("child_of_offender", None)]))
        events.append(event("aud-east", agency, case, 9, [("neglect", None)]))
    expected = reference(events)
    assert expected["aud-east/child_of_offender"]["descriptor"] == "none"

    settings = settings_for(servers, namespace)
    app = create_app(settings)
    async with running(app):
        await send(servers, settings, delivery(rng, events))
        published = await quiesce(servers, settings)
        stored = await served(app, list(audits))
        assert {key: content(s) for key, s in stored.items()} == expected

        # What is on the topic is what is stored: the highest version of every key.
        assert_versions_rise(published)
        last = {key: snaps[-1] for key, snaps in by_key(published).items()}
        assert {key: s.model_dump(mode="json") for key, s in last.items()} == stored

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            listed = (await client.get("/v1/audits")).json()["audits"]
            missing = await client.get("/v1/audits/aud-nowhere/themes")
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        assert [(a["audit_id"], a["cases"], len(a["agencies"])) for a in listed] == [
            ("aud-east", 8, 5),
            ("aud-north", 12, 5),
            ("aud-south", 10, 5),
        ]
        for audit in listed:
            assert audit["patterns"] == sum(
                1
                for c in expected.values()
                if c["audit_id"] == audit["audit_id"] and c["is_pattern"]
            )
            assert sum(audit["legal_status"].values()) == audit["cases"]
            assert sum(audit["age_band"].values()) == audit["cases"]
            assert audit["title"] == f"Audit {audit['audit_id']}"
        assert missing.status_code == 404
        assert missing.json()["reason"] == "unknown_audit"
        assert ready.status_code == 200
        assert alive.json() == {"service": "themes", "status": "alive"}

        await send(servers, settings, delivery(rng, events))
        replayed = await quiesce(servers, settings)
        assert len(replayed) == len(published)
        assert await served(app, list(audits)) == stored
    stored_reviews = await mongo[namespace]["themes_reviews"].find_one({})
    assert stored_reviews is not None
    assert "note" not in str(stored_reviews)


async def test_recurring_in_follows_a_theme_becoming_and_ceasing_to_be_a_pattern(
    servers: Servers, namespace: str, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace)
    app = create_app(settings)
    da = [("domestic_abuse", None)]
    async with running(app):
        await send(
            servers,
            settings,
            [
                event("rec-a", "csc", "C1", 1, da),
                event("rec-a", "police", "C2", 1, da),
                event("rec-b", "csc", "C1", 1, da),
                event("rec-b", "csc", "C2", 1, da),
            ],
        )
        await quiesce(servers, settings)
        first = (await served(app, ["rec-a", "rec-b"]))["rec-a/domestic_abuse"]
        assert first["is_pattern"] is True
        assert first["recurring_in"] == []

        # A second agency reports it in rec-b: now a pattern there too.
        becomes = event("rec-b", "police", "C1", 1, da)
        await send(servers, settings, [becomes])
        await quiesce(servers, settings)
        now = await served(app, ["rec-a", "rec-b"])
        assert now["rec-a/domestic_abuse"]["recurring_in"] == ["rec-b"]
        assert now["rec-a/domestic_abuse"]["version"] == first["version"] + 1
        assert now["rec-b/domestic_abuse"]["recurring_in"] == ["rec-a"]

        # That agency revises its review without the finding: rec-b loses the pattern.
        await send(servers, settings, [event("rec-b", "police", "C1", 2, [])])
        published = await quiesce(servers, settings)
        after = await served(app, ["rec-a", "rec-b"])
        assert after["rec-a/domestic_abuse"]["recurring_in"] == []
        assert after["rec-a/domestic_abuse"]["version"] == first["version"] + 2
        assert after["rec-b/domestic_abuse"]["is_pattern"] is False

    history = by_key(published)["rec-a/domestic_abuse"]
    assert_versions_rise(published)
    changes = [s.recurring_in for s in history if s.version > first["version"]]
    assert changes == [["rec-b"], []]
    # Only recurrence changed in rec-a; its own figures stayed as they were.
    assert {(s.cases_with_theme, s.cases_total, tuple(s.agencies)) for s in history[-3:]} == {
        (2, 2, ("csc", "police"))
    }
    assert history[-2].model_dump()["computed_at"] != history[-1].model_dump()["computed_at"]


async def group_members(servers: Servers, group: str) -> list[list[int]]:
    """The partitions each member of a stable consumer group holds; empty while rebalancing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.to_object()["groups"]
        if described["state"] != "Stable":
            return []
        return [
            sorted(
                p
                for _, parts in ConsumerProtocolMemberAssignment.decode(
                    m["member_assignment"]
                ).assignment
                for p in parts
            )
            for m in described["members"]
        ]
    finally:
        await admin.close()


async def partitions_with_records(servers: Servers, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(parts)
        return {tp.partition for tp, end in ends.items() if end > 0}
    finally:
        await consumer.stop()
        await admin.close()


async def test_two_replicas_agree_with_the_reference_and_never_reuse_a_version(
    servers: Servers, namespace: str, mongo: AsyncMongoClient[Document]
) -> None:
    rng = random.Random(4242)
    pool = [
        "domestic_abuse",
        "neglect",
        "parental_mental_health",
        "young_carer",
        "mh_intervention_delayed",
        "child_voice_recorded",
        "poor_school_attendance",
    ]
    audits = {f"aud-{n}": 7 for n in range(6)}
    events = audit_events(rng, audits, ["csc", "camhs", "police", "school"], pool)
    expected = reference(events)
    # Small batches, so the replicas interleave many recomputes of shared themes.
    settings = settings_for(servers, namespace, topic_partitions=6, themes_batch_max=25)
    one, two = create_app(settings), create_app(settings)
    async with running(one, two):

        async def both_hold_partitions() -> list[list[int]] | None:
            held = await group_members(servers, settings.themes_group)
            return held if len(held) == 2 and all(held) else None

        assignment = await wait_for(both_hold_partitions, timeout_s=30)
        await send(servers, settings, delivery(rng, events))
        published = await quiesce(servers, settings)
        busy = await partitions_with_records(servers, settings.topic_accepted)
        assert all(set(member) & busy for member in assignment), (assignment, busy)
        stored = await served(one, list(audits))
        assert {key: content(s) for key, s in stored.items()} == expected
        assert await served(two, list(audits)) == stored

    assert_versions_rise(published)
    last = {key: snaps[-1] for key, snaps in by_key(published).items()}
    assert {key: s.model_dump(mode="json") for key, s in last.items()} == stored
    assert any(c["recurring_in"] for c in expected.values())
