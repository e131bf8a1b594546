"""Reads topics from their start as records arrive, noting when each was seen."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Handler = Callable[[Any, float], None]
"""Called with an aiokafka record and the monotonic time it was read."""


class Watcher:
    """One consumer, no group, every partition of the given topics, fetching with a short
    wait so that what is seen is seen within a few milliseconds of being written."""

    def __init__(self, bootstrap: str, handlers: dict[str, Handler]) -> None:
        self._bootstrap = bootstrap
        self._handlers = handlers
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.records = 0

    async def start(self, wait_s: float = 30.0) -> None:
        """Assigns every partition of the topics (which must exist) and starts reading.

        A topic created a moment ago may not have its partitions' leaders yet (a broker that
        has just started takes a few seconds), so they are asked for until `wait_s` runs out.
        """
        deadline = time.monotonic() + wait_s
        while True:
            partitions, missing = await self._partitions()
            if not missing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions for {', '.join(sorted(missing))}")
            await asyncio.sleep(0.5)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # The broker answers a fetch as soon as a record arrives, so this bounds only how
            # often an idle watcher asks again: at 5 ms its polling cost the broker about a
            # second of CPU in a ten-second latency phase, taken from the pipeline measured.
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())

    async def _partitions(self) -> tuple[list[TopicPartition], set[str]]:
        """The partitions of the topics that are ready (each partition has a leader), and the
        topics that are not."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._handlers))
        finally:
            await admin.close()
        partitions: list[TopicPartition] = []
        ready: set[str] = set()
        for topic in described:
            found = topic.get("partitions") or []
            if topic.get("error_code") or not found or any(p["leader"] < 0 for p in found):
                continue
            ready.add(topic["topic"])
            partitions += [TopicPartition(topic["topic"], p["partition"]) for p in found]
        return partitions, set(self._handlers) - ready

    async def _run(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=50, max_records=5000)
            seen = time.monotonic()
            for tp, records in fetched.items():
                handler = self._handlers[tp.topic]
                for record in records:
                    handler(record, seen)
                self.records += len(records)

    def failed(self) -> BaseException | None:
        """The error that stopped reading, if any."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def stop(self) -> None:
        """Stops reading and closes the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
