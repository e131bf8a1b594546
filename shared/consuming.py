"""How every service consumes: commit only after the batch's effects are durable, retry the
batch after a pause when a dependency fails, and say so at most once per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.kafka.message import KafkaMessage

from shared.log import get_logger

log = get_logger()


def records_of(message: KafkaMessage) -> Sequence[Any]:
    """The aiokafka records behind a batch (or single) message."""
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


class Throttle:
    """Lets a repeated warning through at most once per interval."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """True when this key's warning may be written now."""
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) >= self._interval_s:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False


class ConsumerMonitor:
    """Counts what a subscriber handles and logs, every interval, its lag and throughput."""

    def __init__(self, group: str, interval_s: float) -> None:
        self.group = group
        self.interval_s = interval_s
        self.throttle = Throttle(interval_s)
        self.records = 0
        self.batches = 0
        self.errors = 0
        self._consumer: Callable[[], Any] = lambda: None

    def watch(self, subscriber: Any) -> None:
        """Follows a FastStream Kafka subscriber (its aiokafka consumer exists once started)."""
        self._consumer = lambda: getattr(subscriber, "consumer", None)

    def assigned(self) -> int:
        """How many partitions this replica holds now."""
        consumer = self._consumer()
        return len(consumer.assignment()) if consumer is not None else 0

    async def lag(self) -> dict[str, int]:
        """Records not yet committed, per assigned partition (`topic:partition`)."""
        consumer = self._consumer()
        if consumer is None:
            return {}
        out: dict[str, int] = {}
        for tp in sorted(consumer.assignment()):
            end = consumer.highwater(tp)
            committed = await consumer.committed(tp)
            if end is not None:
                out[f"{tp.topic}:{tp.partition}"] = max(0, end - (committed or 0))
        return out

    async def report_forever(self) -> None:
        """Writes one stats line per interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            records, batches, errors = self.records, self.batches, self.errors
            self.records = self.batches = self.errors = 0
            try:
                lag = await self.lag()
            except Exception as error:
                lag = {}
                if self.throttle.allow("lag"):
                    log.warning("consumer lag unavailable", group=self.group, error=repr(error))
            log.info(
                "consumer stats",
                group=self.group,
                lag=lag,
                lag_total=sum(lag.values()),
                partitions=len(lag),
                records=records,
                batches=batches,
                errors=errors,
                interval_s=self.interval_s,
            )


async def settle(
    message: KafkaMessage,
    work: Callable[[], Awaitable[None]],
    *,
    throttle: Throttle,
    retry_pause_s: float = 1.0,
    monitor: ConsumerMonitor | None = None,
) -> None:
    """Runs the batch's work, then commits; on failure rewinds to the batch's first record.

    The subscriber uses the MANUAL acknowledgement policy, so this is the only place offsets
    move: after `work` returned, never before, and never when it raised or was cancelled.
    """
    try:
        await work()
    except asyncio.CancelledError:
        # Shutdown interrupted the batch: leave the offsets where they were.
        raise
    except Exception as error:
        if monitor is not None:
            monitor.errors += 1
        if throttle.allow(type(error).__name__):
            log.warning(
                "batch failed; it will be retried",
                error=f"{type(error).__name__}: {error}"[:300],
                records=len(records_of(message)),
                retry_in_s=retry_pause_s,
            )
        await asyncio.sleep(retry_pause_s)
        await message.nack()
        return
    await message.ack()
    if monitor is not None:
        monitor.batches += 1
        monitor.records += len(records_of(message))
