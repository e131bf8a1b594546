"""The parts are real: Kafka delivery and commit semantics, and the store's features we rely on."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared.kafka import broker_answers, ensure_topics, make_broker
from shared.mongo import Document
from tests.support.infra import Servers

pytestmark = pytest.mark.integration


async def _consume(servers: Servers, topic: str, group: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        while len(got) < n:
            batch = await consumer.getmany(timeout_ms=10_000, max_records=n - len(got))
            assert batch, f"no records within 10 s after {len(got)} of {n}"
            for records in batch.values():
                got.extend(r.value for r in records)
        await consumer.commit()
        return got
    finally:
        await consumer.stop()


async def test_consumer_group_resumes_from_committed_offset(
    servers: Servers, namespace: str
) -> None:
    topic = f"{namespace}.smoke"
    await ensure_topics(servers.kafka_bootstrap, {topic: 1})
    producer = AIOKafkaProducer(
        bootstrap_servers=servers.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    first = await _consume(servers, topic, f"{namespace}-group", 6)
    rest = await _consume(servers, topic, f"{namespace}-group", 4)

    assert first == [f"m{i}".encode() for i in range(6)]
    assert rest == [f"m{i}".encode() for i in range(6, 10)]

    probe = AIOKafkaConsumer(
        bootstrap_servers=servers.kafka_bootstrap, group_id=f"{namespace}-group"
    )
    await probe.start()
    try:
        assert await probe.committed(TopicPartition(topic, 0)) == 10
    finally:
        await probe.stop()


async def test_unique_index_violation_raises(
    mongo: AsyncMongoClient[Document], namespace: str
) -> None:
    items = mongo[namespace]["items"]
    await items.create_index([("event_id", ASCENDING)], unique=True)
    await items.insert_one({"event_id": "e1"})
    with pytest.raises(DuplicateKeyError):
        await items.insert_one({"event_id": "e1"})


async def test_conditional_upsert_keeps_the_highest_revision(
    mongo: AsyncMongoClient[Document], namespace: str
) -> None:
    reviews = mongo[namespace]["reviews"]

    async def offer(revision: int, value: str) -> None:
        # A higher or equal revision already stored makes the upsert collide on _id.
        with contextlib.suppress(DuplicateKeyError):
            await reviews.update_one(
                {"_id": "a|b|c", "revision": {"$lt": revision}},
                {"$set": {"revision": revision, "value": value}},
                upsert=True,
            )

    await offer(2, "second")
    await offer(1, "first")
    await offer(2, "again")
    assert await reviews.find_one({"_id": "a|b|c"}) == {
        "_id": "a|b|c",
        "revision": 2,
        "value": "second",
    }
    await offer(3, "third")
    doc = await reviews.find_one({"_id": "a|b|c"})
    assert doc is not None and doc["value"] == "third"


async def test_group_and_sum_aggregation(mongo: AsyncMongoClient[Document], namespace: str) -> None:
    reviews = mongo[namespace]["reviews"]
    await reviews.insert_many(
        [
            {"audit": "a1", "codes": ["x", "y"]},
            {"audit": "a1", "codes": ["x"]},
            {"audit": "a2", "codes": ["y"]},
        ]
    )
    cursor = await reviews.aggregate(
        [
            {"$match": {"audit": "a1"}},
            {"$unwind": "$codes"},
            {"$group": {"_id": "$codes", "n": {"$sum": 1}}},
            {"$sort": {"_id": 1}},
        ]
    )
    assert [doc async for doc in cursor] == [{"_id": "x", "n": 2}, {"_id": "y", "n": 1}]


async def test_in_filters_select_as_mongodb_does(
    mongo: AsyncMongoClient[Document], namespace: str
) -> None:
    """`$in` is what the services read, update and delete sets of documents by; the store
    deploy/ferretdb builds pushes it down to SQL (pushdown-in.patch), which must select every
    document MongoDB's semantics match: a scalar equal to one of the values, an array holding
    one, beside other conditions, and never one merely containing a value as a substring."""
    docs = mongo[namespace]["docs"]
    await docs.create_index([("group", ASCENDING)])
    await docs.insert_many(
        [
            {"_id": "a", "group": "g1", "tag": "x"},
            {"_id": "b", "group": "g1", "tag": ["y", "x"]},
            {"_id": "c", "group": "g2", "tag": "y"},
            {"_id": "d", "group": "g2", "tag": 5},
            {"_id": "e", "group": "g2"},
            {"_id": "f", "group": "g1", "tag": "xx"},
        ]
    )

    async def ids(query: Document) -> list[str]:
        return sorted(doc["_id"] for doc in await docs.find(query).to_list())

    assert await ids({"_id": {"$in": ["a", "c", "zz"]}}) == ["a", "c"]
    assert await ids({"tag": {"$in": ["x"]}}) == ["a", "b"]
    assert await ids({"tag": {"$in": ["x", "y"]}, "group": "g1"}) == ["a", "b"]
    assert await ids({"group": "g2", "_id": {"$in": ["a", "c", "d"]}}) == ["c", "d"]
    assert await ids({"tag": {"$in": ["y", 5]}}) == ["b", "c", "d"]
    assert await ids({"tag": {"$in": []}}) == []
    assert await ids({"tag": {"$in": ["x", None]}}) == ["a", "b", "e"]
    deleted = await docs.delete_many({"group": "g1", "_id": {"$in": ["a", "c", "f"]}})
    assert deleted.deleted_count == 2
    assert await ids({}) == ["b", "c", "d", "e"]


async def test_concurrent_single_document_writes_are_atomic(
    mongo: AsyncMongoClient[Document], namespace: str
) -> None:
    # Every conditional write in the services rests on this. FerretDB 1.24 runs an update as
    # a query and then a write, so the store's front end (deploy/ferretdb/serialize.go) must
    # keep writes to one collection apart, while writes elsewhere run alongside.
    db = mongo[namespace]
    await db["counters"].insert_one({"_id": "n", "n": 0, "rev": 0})
    others = [db["elsewhere"].insert_one({"i": i}) for i in range(50)]
    increments = [db["counters"].update_one({"_id": "n"}, {"$inc": {"n": 1}}) for _ in range(200)]
    racing = [
        db["counters"].update_one({"_id": "n", "rev": 0}, {"$set": {"rev": 1}}) for _ in range(20)
    ]
    _, raced, _ = await asyncio.gather(
        asyncio.gather(*increments), asyncio.gather(*racing), asyncio.gather(*others)
    )
    assert sum(r.modified_count for r in raced) == 1
    assert await db["counters"].find_one({"_id": "n"}) == {"_id": "n", "n": 200, "rev": 1}
    assert await db["elsewhere"].count_documents({}) == 50


async def test_the_broker_check_answers_only_while_the_service_is_connected(
    servers: Servers,
) -> None:
    broker = make_broker(servers.kafka_bootstrap, "check-test")
    assert not await broker_answers(broker, 1.0)
    await broker.start()
    try:
        assert await broker_answers(broker, 2.0)
    finally:
        await broker.stop()
    assert not await broker_answers(broker, 1.0)
