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

    async def start(self) -> None:
        """Assigns every partition of the topics (which must exist) and starts reading."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._handlers))
        finally:
            await admin.close()
        partitions = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            for p in topic["partitions"]
        ]
        missing = set(self._handlers) - {tp.topic for tp in partitions}
        if missing:
            raise RuntimeError(f"no partitions for {', '.join(sorted(missing))}")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())

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
