"""Themes under faults and races, on the real broker and store: a crash between storing and
publishing, a replica reading stale inputs while another commits, and two replicas publishing
one key at once. Each race is forced into the interleaving that would lose an update."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from services.themes import store as themes_store
from services.themes.domain import CurrentReview, Thresholds, audit_of
from services.themes.process import Incoming, Themes
from services.themes.settings import ThemesSettings
from services.themes.store import ReviewFile, ThemesStore
from shared.contracts import ReviewAcceptedV1, ThemeSnapshotV1
from shared.kafka import ensure_topics, make_broker
from shared.mongo import Document
from shared.taxonomy import default_taxonomy
from tests.conftest import namespaced
from tests.support.infra import Servers
from tests.support.kafka import read_all
from tests.unit.test_themes_property import event, reference

pytestmark = pytest.mark.integration

DA = [("domestic_abuse", None)]
# Two audits where domestic abuse is a pattern, and neglect a theme of the first only.
TWO_AUDITS = [
    event("aud-x", "csc", "C1", 1, DA),
    event("aud-x", "police", "C2", 1, [*DA, ("neglect", None)]),
    event("aud-y", "csc", "C1", 1, DA),
    event("aud-y", "police", "C2", 1, DA),
]
LEASE_S = 2.0


class Wire:
    """Publishes through the real broker, and can lose its connection or stall like one."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker
        self.calls = 0
        self.fail_after: int | None = None
        self.stall_first_s = 0.0
        self.stalled = asyncio.Event()

    async def __call__(
        self, topic: str, key: bytes, value: bytes, correlation_id: str | None
    ) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("connection to the broker lost")
        if self.calls == 1 and self.stall_first_s:
            self.stalled.set()
            await asyncio.sleep(self.stall_first_s)
        await self._broker.publish(value, topic=topic, key=key, correlation_id=correlation_id)


class PausingStore(ThemesStore):
    """The real store, except that the first read of `pause_after` holds its answer until
    told to go on: a replica that read its inputs and then stalled."""

    def __init__(self, db: AsyncDatabase[Document], pause_after: str) -> None:
        super().__init__(db)
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()
        self._pause_after = pause_after
        self._done = False

    async def _hold(self, name: str) -> None:
        if name == self._pause_after and not self._done:
            self._done = True
            self.paused.set()
            await self.resume.wait()

    async def review_file(self, audit_id: str) -> ReviewFile:
        found = await super().review_file(audit_id)
        await self._hold("reviews")
        return found

    async def pattern_audits(self, themes: Iterable[str]) -> dict[str, set[str]]:
        found = await super().pattern_audits(themes)
        await self._hold("pattern_audits")
        return found


class Rig:
    """One test's settings, store and broker, and replicas of the use case over them."""

    def __init__(self, settings: ThemesSettings, db: AsyncDatabase[Document], broker: KafkaBroker):
        self.settings = settings
        self.db = db
        self.broker = broker

    def replica(self, store: ThemesStore | None = None) -> tuple[Themes, Wire]:
        wire = Wire(self.broker)
        themes = Themes(
            store=store or ThemesStore(self.db),
            publish=wire,
            taxonomy=default_taxonomy(),
            thresholds=Thresholds(),
            themes_topic=self.settings.topic_themes,
            lease_s=LEASE_S,
        )
        return themes, wire

    def batch(self, events: Sequence[ReviewAcceptedV1]) -> list[Incoming]:
        return [
            Incoming(self.settings.topic_accepted, 0, offset, e.to_json())
            for offset, e in enumerate(events)
        ]

    async def published(self) -> list[ThemeSnapshotV1]:
        records = await read_all(self.settings.kafka_bootstrap, self.settings.topic_themes, 800)
        return [ThemeSnapshotV1.model_validate_json(value) for _, value, _ in records]

    async def stored(self) -> dict[str, Document]:
        """Every stored snapshot as the store reads it, with the version the broker
        acknowledged."""
        store = ThemesStore(self.db)
        stored: dict[str, Document] = {}
        async for audit in self.db["themes_audits"].find({}, {"_id": 1}):
            for s in (await store.snapshots(audit["_id"])).values():
                stored[s.key] = {
                    "content": s.snapshot.content.model_dump(mode="json"),
                    "version": s.snapshot.version,
                    "published_version": s.published_version,
                    "pattern_changes": s.pattern_changes,
                    "propagated_changes": s.propagated_changes,
                }
        return stored


@pytest.fixture
async def rig(
    servers: Servers, namespace: str, mongo: AsyncMongoClient[Document]
) -> AsyncIterator[Rig]:
    settings = ThemesSettings(**namespaced(servers, namespace))
    await ensure_topics(settings.kafka_bootstrap, {settings.topic_themes: 1})
    broker = make_broker(settings.kafka_bootstrap, "themes-test")
    await broker.start()
    store = ThemesStore(mongo[namespace])
    await store.ensure_indexes()
    try:
        yield Rig(settings, mongo[namespace], broker)
    finally:
        await broker.stop()


async def reached(point: asyncio.Event) -> None:
    """Waits for a replica to get to a point, failing rather than hanging if it never does."""
    await asyncio.wait_for(point.wait(), timeout=15)


@asynccontextmanager
async def running(task: asyncio.Task[Any]) -> AsyncIterator[None]:
    """The body runs alongside the task; then the task is awaited, or cancelled if the body
    failed, so a broken race never hangs the session."""
    try:
        yield
    except BaseException:
        task.cancel()
        await asyncio.wait([task])
        raise
    await task


def contents(stored: dict[str, Document]) -> dict[str, dict[str, Any]]:
    return {key: doc["content"] for key, doc in stored.items()}


def history(published: Sequence[ThemeSnapshotV1], key: str) -> list[ThemeSnapshotV1]:
    return [s for s in published if f"{s.audit_id}/{s.theme}" == key]


def assert_topic_matches_store(
    published: Sequence[ThemeSnapshotV1], stored: dict[str, Document]
) -> None:
    """Per key, versions rise on the topic, and the last one is the stored one, published."""
    for key, doc in stored.items():
        versions = [s.version for s in history(published, key)]
        assert versions == sorted(set(versions)), f"{key}: {versions}"
        assert versions[-1] == doc["version"] == doc["published_version"], key
        last = history(published, key)[-1].model_dump(mode="json")
        assert {k: v for k, v in last.items() if k in doc["content"]} == doc["content"], key


async def test_a_crash_after_storing_is_made_good_by_the_redelivery(rig: Rig) -> None:
    events = [
        event("aud-x", "csc", "C1", 1, DA),
        event("aud-x", "police", "C2", 1, [*DA, ("neglect", None)]),
        event("aud-x", "school", "C3", 1, [("neglect", None)]),
        event("aud-y", "csc", "C1", 1, DA),
        event("aud-y", "police", "C2", 1, DA),
    ]
    batch = rig.batch(events)
    crashing, wire = rig.replica()
    wire.fail_after = 2
    with pytest.raises(ConnectionError):
        await crashing.process(batch)

    stored = await rig.stored()
    unpublished = sorted(k for k, d in stored.items() if d["version"] > d["published_version"])
    assert unpublished, "the crash left versions stored but not published"
    assert any(d["pattern_changes"] > d["propagated_changes"] for d in stored.values())
    # A replica that died holding the right to publish one of them left its lease behind.
    now = datetime.now(UTC)
    dead = await ThemesStore(rig.db).claim_publish(
        [audit_of(unpublished[0])], "dead-replica", now, now + timedelta(seconds=LEASE_S)
    )
    assert list(dead) == [audit_of(unpublished[0])]

    redelivered, _ = rig.replica()
    with capture_logs() as logs:
        tally = await redelivered.process(batch)
    assert tally.published >= len(unpublished)

    stored = await rig.stored()
    assert contents(stored) == reference(events)
    assert stored["aud-x/domestic_abuse"]["content"]["recurring_in"] == ["aud-y"]
    assert all(d["pattern_changes"] == d["propagated_changes"] for d in stored.values())
    assert_topic_matches_store(await rig.published(), stored)

    again, _ = rig.replica()
    assert (await again.process(batch)).published == 0

    event_ids = {e.event_id for e in events}
    lines = {line["event"] for line in logs}
    assert {"batch processed", "snapshot published"} <= lines
    [summary] = [line for line in logs if line["event"] == "batch processed"]
    assert summary["records"] == 5
    assert summary["audits"] == 2
    assert summary["snapshots_published"] == tally.published
    assert summary["offsets"] == [0, 4]
    assert summary["partition"] == 0
    assert summary["topic"] == rig.settings.topic_accepted
    assert isinstance(summary["duration_ms"], float)
    assert list(summary["steps_ms"]) == ["read", "store", "recompute", "publish"]
    assert sum(summary["steps_ms"].values()) <= summary["duration_ms"] + 0.5
    for line in logs:
        if line["event"] == "snapshot published":
            assert line["correlation_id"] in event_ids
            assert set(line["caused_by"]) <= event_ids
            assert line["caused_by"][0] == line["correlation_id"]
            assert {"audit_id", "theme", "version", "is_pattern"} <= set(line)
    tokens = {e.case_token for e in events}
    assert not any(token in str(line) for line in logs for token in tokens)


async def test_first_reviews_are_logged_as_stored_and_stale_ones_at_debug(rig: Rig) -> None:
    newer = event("aud-x", "csc", "C1", 2, DA)
    older = event("aud-x", "csc", "C1", 1, [])
    themes, _ = rig.replica()
    with capture_logs() as logs:
        await themes.process(rig.batch([newer, older, newer]))
    stored = [line for line in logs if line["event"] == "review stored"]
    stale = [line for line in logs if line["event"] == "stale review ignored"]
    assert [(s["event_id"], s["revision"], s["offset"]) for s in stored] == [(newer.event_id, 2, 0)]
    assert stored[0]["correlation_id"] == newer.event_id
    assert {s["offset"] for s in stale} == {1, 2}
    assert all(s["log_level"] == "debug" for s in stale)
    assert (await rig.stored())["aud-x/domestic_abuse"]["content"]["cases_with_theme"] == 1


async def test_a_replica_that_read_before_another_committed_does_not_overwrite_it(
    rig: Rig,
) -> None:
    first = [event("aud-x", "csc", "C1", 1, DA), event("aud-x", "police", "C2", 1, DA)]
    later_a = event("aud-x", "school", "C3", 1, DA)
    later_b = event("aud-x", "gp1", "C4", 1, [("neglect", None)])
    setup, _ = rig.replica()
    await setup.process(rig.batch(first))

    pausing = PausingStore(rig.db, pause_after="reviews")
    slow, _ = rig.replica(pausing)
    fast, _ = rig.replica()
    task = asyncio.create_task(slow.process(rig.batch([later_a])))
    async with running(task):
        await reached(pausing.paused)
        # The slow replica has read three cases; the fast one now stores and commits four.
        await fast.process(rig.batch([later_b]))
        pausing.resume.set()

    stored = await rig.stored()
    assert contents(stored) == reference([*first, later_a, later_b])
    assert stored["aud-x/domestic_abuse"]["content"]["cases_total"] == 4
    assert_topic_matches_store(await rig.published(), stored)
    audit = await rig.db["themes_audits"].find_one({"_id": "aud-x"})
    assert audit is not None and audit["cases"] == 4


async def test_a_stale_read_of_other_audits_patterns_does_not_undo_recurrence(rig: Rig) -> None:
    setup_events = [
        event("aud-x", "csc", "C1", 1, DA),
        event("aud-x", "police", "C2", 1, DA),
        event("aud-y", "csc", "C1", 1, DA),
        event("aud-y", "csc", "C2", 1, DA),
    ]
    setup, _ = rig.replica()
    await setup.process(rig.batch(setup_events))
    x_changes = event("aud-x", "school", "C3", 1, [])
    y_becomes_pattern = event("aud-y", "police", "C1", 1, DA)

    pausing = PausingStore(rig.db, pause_after="pattern_audits")
    slow, _ = rig.replica(pausing)
    fast, _ = rig.replica()
    task = asyncio.create_task(slow.process(rig.batch([x_changes])))
    async with running(task):
        await reached(pausing.paused)
        # The slow replica saw aud-y without the pattern; now it becomes one there.
        await fast.process(rig.batch([y_becomes_pattern]))
        pausing.resume.set()

    stored = await rig.stored()
    assert contents(stored) == reference([*setup_events, x_changes, y_becomes_pattern])
    x = stored["aud-x/domestic_abuse"]["content"]
    assert (x["recurring_in"], x["cases_total"]) == (["aud-y"], 3)
    assert_topic_matches_store(await rig.published(), stored)


async def test_versions_of_one_key_reach_the_topic_in_order_when_replicas_race(
    rig: Rig,
) -> None:
    slow, slow_wire = rig.replica()
    slow_wire.stall_first_s = 0.6
    fast, _ = rig.replica()
    task = asyncio.create_task(slow.process(rig.batch([event("aud-x", "csc", "C1", 1, DA)])))
    async with running(task):
        await reached(slow_wire.stalled)
        # Version 1 is on its way, slowly; version 2 is committed and must not overtake it.
        await fast.process(rig.batch([event("aud-x", "police", "C2", 1, DA)]))

    published = await rig.published()
    assert [s.version for s in history(published, "aud-x/domestic_abuse")] == [1, 2]
    assert_topic_matches_store(published, await rig.stored())


async def test_a_replica_reads_an_audits_reviews_again_once_another_committed_it(
    rig: Rig,
) -> None:
    first = [event("aud-x", "csc", "C1", 1, DA), event("aud-x", "police", "C2", 1, DA)]
    elsewhere = [
        event("aud-x", "school", "C3", 1, DA),
        event("aud-x", "csc", "C1", 2, [("neglect", None)]),
    ]
    later = [event("aud-x", "gp1", "C4", 1, [("neglect", None)])]
    remembering, _ = rig.replica()
    other, _ = rig.replica()
    await remembering.process(rig.batch(first))
    # Another replica (after a rebalance, say) stores and commits two reviews of the audit,
    # one of them a revision; the first replica's memory of the audit is now out of date.
    await other.process(rig.batch(elsewhere))
    await remembering.process(rig.batch(later))

    stored = await rig.stored()
    assert contents(stored) == reference([*first, *elsewhere, *later])
    assert stored["aud-x/neglect"]["content"]["cases_total"] == 4
    assert_topic_matches_store(await rig.published(), stored)


async def test_reviews_a_crashed_replica_stored_count_when_they_come_again(rig: Rig) -> None:
    first = [event("aud-x", "csc", "C1", 1, DA), event("aud-x", "police", "C2", 1, DA)]
    again = [event("aud-x", "school", "C3", 1, DA), event("aud-x", "csc", "C1", 2, [])]
    remembering, _ = rig.replica()
    await remembering.process(rig.batch(first))
    # A replica stored these reviews and died before recomputing the audit: the audit's
    # `rev` has not moved, so the first replica still trusts its memory, which lacks them.
    store = ThemesStore(rig.db)
    reviews = [CurrentReview.of(e) for e in again]
    assert await store.write_reviews(reviews, {"aud-x": await store.review_file("aud-x")}) == {
        r.event_id for r in reviews
    }
    await remembering.process(rig.batch(again))

    stored = await rig.stored()
    assert contents(stored) == reference([*first, *again])
    assert stored["aud-x/domestic_abuse"]["content"]["cases_with_theme"] == 2
    assert_topic_matches_store(await rig.published(), stored)
    held = await rig.db["themes_reviews"].find({}, {"_id": 1}).to_list()
    # The superseded first revision of C1 was deleted.
    assert sorted(d["_id"] for d in held) == sorted(_revision_ids([*first[1:], *again]))


async def test_reviews_stored_over_several_inserts_one_already_stored_are_all_stored(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backlog's batch is stored a chunk at a time: a review another writer stored since the
    # audit was read, in any chunk, still leaves every review stored and reported current.
    monkeypatch.setattr(themes_store, "REVIEWS_PER_INSERT", 3)
    events = [event("aud-x", "csc", f"C{n}", 1, DA) for n in range(8)]
    reviews = [CurrentReview.of(e) for e in events]
    store = ThemesStore(rig.db)
    file = await store.review_file("aud-x")
    # Another writer stored the first chunk's second review since this one read the audit.
    assert await store.write_reviews([reviews[1]], {}) == {reviews[1].event_id}
    assert await store.write_reviews(reviews, {"aud-x": file}) == {r.event_id for r in reviews}
    held = await rig.db["themes_reviews"].find({}, {"_id": 1}).to_list()
    assert sorted(d["_id"] for d in held) == sorted(_revision_ids(events))


async def test_reviews_held_as_fields_are_read_and_superseded_like_the_others(rig: Rig) -> None:
    first = [
        event("aud-x", "csc", "C1", 1, DA),
        event("aud-x", "police", "C2", 1, [*DA, ("neglect", None)]),
        event("aud-x", "school", "C3", 1, DA),
    ]
    themes, _ = rig.replica()
    await themes.process(rig.batch(first))
    # The same reviews as the previous layout held them: every field a field of the
    # document.
    reviews = rig.db["themes_reviews"]
    docs = await reviews.find({}).to_list()
    assert all(isinstance(doc["review"], str) for doc in docs)
    await reviews.delete_many({})
    await reviews.insert_many([_review_as_fields(doc) for doc in docs])

    # A replica that remembers nothing reads them; a revision supersedes one of them.
    later = [
        event("aud-x", "csc", "C1", 2, [("neglect", None)]),
        event("aud-x", "gp1", "C4", 1, DA),
    ]
    fresh, _ = rig.replica()
    await fresh.process(rig.batch(later))

    stored = await rig.stored()
    assert contents(stored) == reference([*first, *later])
    assert stored["aud-x/neglect"]["content"]["cases_with_theme"] == 2
    assert_topic_matches_store(await rig.published(), stored)
    held = await reviews.find({}, {"_id": 1}).to_list()
    assert sorted(d["_id"] for d in held) == sorted(_revision_ids([*first[1:], *later]))


def _review_as_fields(doc: Document) -> Document:
    """A review's document as the previous layout held it: its fields, not text."""
    fields = json.loads(doc["review"])
    return {
        "_id": doc["_id"],
        "audit_id": doc["audit_id"],
        **fields,
        "key": doc["_id"].rsplit("#", 1)[0],
        "submitted_at": datetime.fromisoformat(fields["submitted_at"]),
        "findings": [{"code": code, "waited_days": days} for code, days in fields["findings"]],
    }


def _revision_ids(events: Iterable[ReviewAcceptedV1]) -> list[str]:
    return [f"{CurrentReview.of(e).key}#{e.revision}" for e in events]


def _entries_as_fields(doc: Document) -> list[Document]:
    """A snapshots document's entries as the layouts before text held them: each content as
    fields, its `recurring_in` among them."""
    return [
        {
            **{name: value for name, value in held.items() if name != "recurring"},
            "content": {
                **json.loads(held["content"]),
                "recurring_in": json.loads(doc["recurring"][held["recurring"]]),
            },
        }
        for held in doc["by_theme"].values()
    ]


def _entries_as_text(doc: Document) -> dict[str, Document]:
    """A snapshots document's entries as the layout before the `recurring` lists held them:
    each content as text, its `recurring_in` in it."""
    entries = {}
    for field, held in doc["by_theme"].items():
        content = json.loads(held["content"])
        content["recurring_in"] = json.loads(doc["recurring"][held["recurring"]])
        entry = {name: value for name, value in held.items() if name != "recurring"}
        entries[field] = {**entry, "content": json.dumps(content)}
    return entries


async def test_snapshots_holding_their_recurrence_in_their_text_are_read_and_rewritten(
    rig: Rig,
) -> None:
    first = TWO_AUDITS
    themes, _ = rig.replica()
    await themes.process(rig.batch(first))
    before = await rig.stored()
    assert before["aud-x/domestic_abuse"]["content"]["recurring_in"] == ["aud-y"]
    snapshots = rig.db["themes_snapshots"]
    for doc in await snapshots.find({}).to_list():
        assert set(doc["recurring"]) == {held["recurring"] for held in doc["by_theme"].values()}
        previous = {name: value for name, value in doc.items() if name != "recurring"}
        await snapshots.replace_one(
            {"_id": doc["_id"]}, {**previous, "by_theme": _entries_as_text(doc)}
        )
    assert await rig.stored() == before

    # A third audit where the theme becomes a pattern refreshes only the others' snapshots
    # of it, leaving the rest of their documents as they were.
    third = [event("aud-z", "csc", "C1", 1, DA), event("aud-z", "school", "C2", 1, DA)]
    fresh, _ = rig.replica()
    await fresh.process(rig.batch(third))
    stored = await rig.stored()
    assert contents(stored) == reference([*first, *third])
    assert stored["aud-y/domestic_abuse"]["content"]["recurring_in"] == ["aud-x", "aud-z"]
    # The refresh wrote its entry in this layout, with the one list it names, and left the
    # other entry as it was.
    refreshed = await snapshots.find_one({"_id": "aud-x"})
    assert refreshed is not None
    assert "recurring" not in refreshed["by_theme"]["neglect"]
    named = refreshed["by_theme"]["domestic_abuse"]["recurring"]
    assert list(refreshed["recurring"]) == [named]
    # A recompute writes every entry of the audit afresh, with exactly the lists they name.
    later = event("aud-x", "school", "C3", 1, DA)
    await fresh.process(rig.batch([later]))
    stored = await rig.stored()
    assert contents(stored) == reference([*first, *third, later])
    assert_topic_matches_store(await rig.published(), stored)
    recomputed = await snapshots.find_one({"_id": "aud-x"})
    assert recomputed is not None
    entries = recomputed["by_theme"].values()
    assert all("recurring_in" not in json.loads(held["content"]) for held in entries)
    assert set(recomputed["recurring"]) == {held["recurring"] for held in entries}
    named = recomputed["by_theme"]["domestic_abuse"]["recurring"]
    assert json.loads(recomputed["recurring"][named]) == ["aud-y", "aud-z"]
    assert len(recomputed["recurring"]) == 2


async def test_snapshots_in_the_previous_layout_are_moved_and_their_versions_go_on(
    rig: Rig,
) -> None:
    first = TWO_AUDITS
    themes, _ = rig.replica()
    await themes.process(rig.batch(first))
    before = await rig.stored()
    # The same snapshots as the previous layout held them: a document per audit and theme,
    # read by an index on the audit.
    snapshots = rig.db["themes_snapshots"]
    docs = await snapshots.find({}).to_list()
    await snapshots.delete_many({})
    await snapshots.insert_many(
        [
            {
                "_id": f"{doc['_id']}/{held['content']['theme']}",
                "audit_id": doc["_id"],
                "theme": held["content"]["theme"],
                "is_pattern": held["content"]["is_pattern"],
                "rev": 3,
                **{name: value for name, value in held.items() if name != "cause"},
                "caused_by": doc["causes"][held["cause"]],
            }
            for doc in docs
            for held in _entries_as_fields(doc)
        ]
    )
    await snapshots.create_index("audit_id")

    store = ThemesStore(rig.db)
    with capture_logs() as logs:
        await store.prepare()
        await store.prepare()
    assert await rig.stored() == before
    assert sorted(d["_id"] for d in await snapshots.find({}, {"_id": 1}).to_list()) == [
        "aud-x",
        "aud-y",
    ]
    assert "audit_id_1" not in {index["name"] async for index in await snapshots.list_indexes()}
    [moved] = [
        line for line in logs if line["event"] == "snapshots moved to one document per audit"
    ]
    assert (moved["snapshots_moved"], moved["audits"]) == (len(before), 2)

    # Versions go on from where they were, and recurrence still reaches the other audit.
    later = event("aud-x", "school", "C3", 1, DA)
    await themes.process(rig.batch([later]))
    stored = await rig.stored()
    assert contents(stored) == reference([*first, later])
    key = "aud-x/domestic_abuse"
    assert stored[key]["version"] == before[key]["version"] + 1
    assert stored[key]["content"]["recurring_in"] == ["aud-y"]
    assert_topic_matches_store(await rig.published(), stored)
    # The recompute gave each snapshot a key into the document's lists of causes, and kept
    # exactly the lists named.
    doc = await snapshots.find_one({"_id": "aud-x"})
    assert doc is not None
    assert not any("caused_by" in held for held in doc["by_theme"].values())
    assert set(doc["causes"]) == {held["cause"] for held in doc["by_theme"].values()}
    assert [later.event_id] in doc["causes"].values()
    # Every snapshot of the audit changes with its next case, so one list is left.
    latest = event("aud-x", "police", "C4", 1, DA)
    await themes.process(rig.batch([latest]))
    doc = await snapshots.find_one({"_id": "aud-x"})
    assert doc is not None
    assert list(doc["causes"].values()) == [[latest.event_id]]


async def test_audits_committed_before_they_listed_their_patterns_are_given_the_list(
    rig: Rig,
) -> None:
    first = [
        event("aud-x", "csc", "C1", 1, DA),
        event("aud-x", "police", "C2", 1, DA),
        event("aud-y", "csc", "C1", 1, DA),
        event("aud-y", "police", "C2", 1, DA),
    ]
    themes, _ = rig.replica()
    await themes.process(rig.batch(first))
    # As the previous release left them: the list in the snapshots' documents, indexed there,
    # and none in the audits' documents.
    snapshots = rig.db["themes_snapshots"]
    async for doc in snapshots.find({}):
        patterns = sorted(
            held["content"]["theme"]
            for held in _entries_as_fields(doc)
            if held["content"]["is_pattern"]
        )
        await snapshots.update_one({"_id": doc["_id"]}, {"$set": {"patterns": patterns}})
    await snapshots.create_index("patterns")
    await rig.db["themes_audits"].update_many({}, {"$unset": {"patterns": ""}})

    store = ThemesStore(rig.db)
    with capture_logs() as logs:
        await store.prepare()
        await store.prepare()
    assert await store.pattern_audits(["domestic_abuse"]) == {"domestic_abuse": {"aud-x", "aud-y"}}
    assert await store.pattern_counts() == {"aud-x": 1, "aud-y": 1}
    assert "patterns_1" not in {index["name"] async for index in await snapshots.list_indexes()}
    [listed] = [line for line in logs if line["event"] == "patterns listed in audits"]
    assert listed["audits"] == 2

    # A new audit where the theme is a pattern too recurs in both, and they in it.
    later = [event("aud-z", "csc", "C1", 1, DA), event("aud-z", "police", "C2", 1, DA)]
    await themes.process(rig.batch(later))
    stored = await rig.stored()
    assert contents(stored) == reference([*first, *later])
    assert stored["aud-z/domestic_abuse"]["content"]["recurring_in"] == ["aud-x", "aud-y"]
    assert "patterns" not in (await snapshots.find_one({"_id": "aud-z"}) or {})
    assert_topic_matches_store(await rig.published(), stored)
    # The refreshes of the other two kept only the lists of causes their snapshots name: an
    # audit no longer reviewed does not pile up a list for every flip elsewhere.
    for audit_id in ("aud-x", "aud-y"):
        refreshed = await snapshots.find_one({"_id": audit_id})
        assert refreshed is not None
        assert stored[f"{audit_id}/domestic_abuse"]["content"]["recurring_in"] != []
        named = {held["cause"] for held in refreshed["by_theme"].values()}
        assert set(refreshed["causes"]) == named
