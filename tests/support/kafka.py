"""Test helpers that talk to the real broker: publish raw records, read a topic, measure lag."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def publish(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> None:
    """Sends (key, value) records with an idempotent producer and waits for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, idle_ms: int = 1500
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every record on a topic from the start, once nothing new arrives for `idle_ms`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
                return out
            for records in batch.values():
                out.extend((r.key, r.value, dict(r.headers)) for r in records)
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records on the topic that the group has not committed past."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        meta = (await admin.describe_topics([topic]))[0]
        partitions = [TopicPartition(topic, p["partition"]) for p in meta["partitions"]]
        assert partitions, f"topic {topic} has no partitions"
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for tp in partitions:
            meta = committed.get(tp)
            lag += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def wait_for(predicate_async, timeout_s: float = 30.0, every_s: float = 0.3):  # type: ignore[no-untyped-def]
    """Polls an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate_async()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(every_s)
