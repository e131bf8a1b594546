"""A crash between storing an action and publishing it: the redelivery publishes it, once; and
theme states stored in the previous layout are moved, newer ones kept."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from services.recommendations.domain import ThemeState
from services.recommendations.process import Incoming, Publish, Recommendations
from services.recommendations.settings import RecommendationsSettings
from services.recommendations.store import RecommendationsStore
from shared.kafka import ensure_topics, make_broker
from shared.mongo import Document, theme_field
from shared.routing import default_routing
from shared.taxonomy import default_taxonomy
from tests.support.infra import Servers
from tests.support.recommendations_fixtures import AUDIT, fixture_snapshots, record
from tests.support.recommendations_harness import published, settings_for, versions_by_action

pytestmark = pytest.mark.integration


class BrokerWentAwayError(RuntimeError):
    """The injected fault."""


async def _use_case(
    store: RecommendationsStore,
    publish: Publish,
    settings: RecommendationsSettings,
    *,
    lease_s: float,
) -> Recommendations:
    """The use case over the real store (indexes made), publishing through `publish`."""
    await store.ensure_indexes()
    return Recommendations(
        store=store,
        publish=publish,
        routing=default_routing(),
        taxonomy=default_taxonomy(),
        actions_topic=settings.topic_actions,
        lease_s=lease_s,
    )


def _fixture_batch(settings: RecommendationsSettings) -> list[Incoming]:
    """The fixture audit's snapshots as one batch from the themes topic."""
    return [
        Incoming(settings.topic_themes, 0, offset, key, value, None)
        for offset, (key, value) in enumerate(record(s) for s in fixture_snapshots())
    ]


async def test_versions_stored_but_not_published_are_published_on_redelivery(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace, tmp_path)
    await ensure_topics(servers.kafka_bootstrap, {settings.topic_actions: 4})
    broker = make_broker(servers.kafka_bootstrap, "recommendations-test")
    await broker.start()
    sends = 0

    async def flaky(topic: str, key: bytes, value: bytes, correlation_id: str | None) -> None:
        # The real broker, with the third send lost as if the process had died there.
        nonlocal sends
        sends += 1
        if sends == 3:
            raise BrokerWentAwayError("connection lost")
        await broker.publish(value, topic=topic, key=key, correlation_id=correlation_id)

    store = RecommendationsStore(mongo[namespace])
    use_case = await _use_case(store, flaky, settings, lease_s=2.0)
    batch = _fixture_batch(settings)
    try:
        with pytest.raises(BrokerWentAwayError):
            await use_case.process(batch)
        assert await mongo[namespace]["actions"].count_documents({}) == 4
        # Actions publish concurrently: the others' sends went through, the lost one did not.
        before = len(await published(servers, settings))
        assert before == 3

        # The batch was not committed, so it comes again: every snapshot is stale by now.
        redelivered = await use_case.process(batch)
        assert redelivered.applied == 0
        assert redelivered.events == {}
        assert redelivered.published == 4 - before
        again = await use_case.process(batch)
        assert again.published == 0
    finally:
        await broker.stop()

    messages = await published(servers, settings)
    assert len(messages) == 4
    assert all(v == [1] for v in versions_by_action(messages).values())
    async for doc in mongo[namespace]["actions"].find({}):
        assert doc["published_version"] == 1
        assert doc["unpublished"] is False


def _entry_as_fields(entry: Document) -> Document:
    """A history entry as the previous layout held it: its message and cause as fields."""
    return {**entry, "message": json.loads(entry["message"]), "cause": json.loads(entry["cause"])}


async def test_history_entries_held_as_fields_are_published_archived_and_read(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = settings_for(servers, namespace, tmp_path)
    await ensure_topics(servers.kafka_bootstrap, {settings.topic_actions: 4})
    broker = make_broker(servers.kafka_bootstrap, "recommendations-test")
    await broker.start()
    down = True

    async def wire(topic: str, key: bytes, value: bytes, correlation_id: str | None) -> None:
        if down:
            raise BrokerWentAwayError("connection lost")
        await broker.publish(value, topic=topic, key=key, correlation_id=correlation_id)

    db = mongo[namespace]
    store = RecommendationsStore(db)
    use_case = await _use_case(store, wire, settings, lease_s=0.5)
    batch = _fixture_batch(settings)
    try:
        with pytest.raises(BrokerWentAwayError):
            await use_case.process(batch)
        # The versions stored and not published, as the previous release held them.
        for doc in await db["actions"].find({}).to_list():
            assert all(isinstance(entry["message"], str) for entry in doc["pending"])
            pending = [_entry_as_fields(entry) for entry in doc["pending"]]
            await db["actions"].update_one({"_id": doc["_id"]}, {"$set": {"pending": pending}})
        await asyncio.sleep(0.6)  # the failed publisher's leases run out
        down = False
        assert (await use_case.process(batch)).published == 4
    finally:
        await broker.stop()

    messages = await published(servers, settings)
    assert all(v == [1] for v in versions_by_action(messages).values())
    history = db["action_history"]
    archived = await history.find({}).to_list()
    assert len(archived) == 4
    for doc in archived:
        await history.replace_one({"_id": doc["_id"]}, _entry_as_fields(doc))
    for message in messages:
        held = await store.action(message["action_id"])
        assert held is not None
        [entry] = held.history
        assert json.loads(entry.message.to_json()) == message
        assert entry.cause["snapshots"]


def _previous_layout(state: ThemeState, applied_at: datetime) -> Document:
    """A theme state as the previous layout stored it: a document per audit and theme."""
    return {
        "_id": f"{state.audit_id}/{state.theme}",
        "audit_id": state.audit_id,
        "theme": state.theme,
        "category": state.category.value,
        "is_pattern": state.is_pattern,
        "cases_with_theme": state.cases_with_theme,
        "cases_total": state.cases_total,
        "agency_count": state.agency_count,
        "descriptor": state.descriptor.value,
        "small_sample": state.small_sample,
        "version": state.version,
        "correlation_id": state.correlation_id,
        "applied_at": applied_at,
    }


async def test_theme_states_in_the_previous_layout_are_moved_and_newer_ones_kept(
    namespace: str, mongo: AsyncMongoClient[Document]
) -> None:
    db = mongo[namespace]
    now = datetime.now(UTC)
    states = [ThemeState.of(s, f"ev-{s.theme}") for s in fixture_snapshots(version=2)]
    await db["recommendation_themes"].insert_many([_previous_layout(s, now) for s in states])
    store = RecommendationsStore(db)
    # A replica of this release applied a newer snapshot of one theme, and an older of
    # another, before the move.
    newer = replace(states[0], version=3)
    assert await store.apply_many([newer, replace(states[1], version=1)], now) == [True, True]

    with capture_logs() as logs:
        await store.prepare()
        await store.prepare()
    held = {s.theme: s for s in await store.theme_states(AUDIT)}
    assert held == {s.theme: s for s in [newer, *states[1:]]}
    assert "recommendation_themes" not in await db.list_collection_names()
    [moved] = [
        line for line in logs if line["event"] == "theme states moved to one document per audit"
    ]
    assert (moved["states_moved"], moved["audits"]) == (len(states), 1)
    # Stale snapshots stay stale.
    assert await store.apply_many([states[0], states[2]], now) == [False, False]


async def test_theme_states_held_as_fields_are_read_and_replaced_by_newer_ones(
    namespace: str, mongo: AsyncMongoClient[Document]
) -> None:
    db = mongo[namespace]
    now = datetime.now(UTC)
    states = [ThemeState.of(s, f"ev-{s.theme}") for s in fixture_snapshots(version=2)]
    # The audit's document as the previous release wrote it: each state as fields.
    as_fields = {
        theme_field(s.theme): {k: v for k, v in _previous_layout(s, now).items() if k != "_id"}
        for s in states
    }
    await db["recommendation_states"].insert_one({"_id": AUDIT, "rev": 4, "themes": as_fields})
    store = RecommendationsStore(db)

    assert {s.theme: s for s in await store.theme_states(AUDIT)} == {s.theme: s for s in states}
    newer = replace(states[0], version=3, cases_total=states[0].cases_total + 1)
    assert await store.apply_many([newer, states[1]], now) == [True, False]
    held = {s.theme: s for s in await store.theme_states(AUDIT)}
    assert held == {s.theme: s for s in [newer, *states[1:]]}
    [doc] = await db["recommendation_states"].find({}).to_list()
    assert doc["rev"] == 5
    assert isinstance(doc["themes"][theme_field(newer.theme)]["state"], str)
