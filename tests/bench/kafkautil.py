"""Kafka plumbing for the benchmark: topics, producers at full or paced rate, and lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Creates the topics, so every consumer sees all their partitions from the start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Deletes the run's topics from the shared broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    """An idempotent producer waiting for all in-sync replicas, as the agencies' would be."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
    )


async def publish_all(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> tuple[float, float]:
    """Sends every record as fast as the producer takes them; returns the monotonic times
    of the first send and of the last acknowledgement."""
    sender = producer(bootstrap, linger_ms=5)
    await sender.start()
    try:
        started = time.monotonic()
        futures = [await sender.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return started, time.monotonic()
    finally:
        await sender.stop()


async def publish_paced(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    rate: float,
    sent: Callable[[int, float], None],
) -> tuple[float, float]:
    """Sends record i at `i / rate` seconds after the first, calling `sent(i, time)` as it
    goes out; returns the monotonic times of the first and the last send."""
    sender = producer(bootstrap, linger_ms=0)
    await sender.start()
    futures: list[Any] = []
    try:
        started = time.monotonic()
        for index, (key, value) in enumerate(records):
            due = started + index / rate
            ahead = due - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            sent(index, time.monotonic())
            futures.append(await sender.send(topic, value, key=key))
        finished = time.monotonic()
        await asyncio.gather(*futures)
        return started, finished
    finally:
        await sender.stop()


class Lag:
    """Records each consumer group has not committed past, per topic."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        """Connects."""
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        """Disconnects."""
        await self._consumer.stop()
        await self._admin.close()

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition's end offset."""
        if topic not in self._partitions:
            described = await self._admin.describe_topics([topic])
            self._partitions[topic] = [
                TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]
            ]
        ends = await self._consumer.end_offsets(self._partitions[topic])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def committed(self, group: str, topic: str) -> int:
        """Records of the topic the group has committed past, summed over partitions."""
        await self.end_offsets(topic)
        offsets = await self._admin.list_consumer_group_offsets(group)
        return sum(
            meta.offset
            for tp in self._partitions[topic]
            if (meta := offsets.get(tp)) is not None and meta.offset > 0
        )

    async def of(self, group: str, topic: str) -> int:
        """How far the group is behind the end of the topic, summed over partitions."""
        ends = await self.end_offsets(topic)
        committed = await self._admin.list_consumer_group_offsets(group)
        behind = 0
        for partition, end in ends.items():
            meta = committed.get(TopicPartition(topic, partition))
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            behind += end - done
        return behind
