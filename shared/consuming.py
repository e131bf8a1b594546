"""How every service consumes: commit only after the batch's effects are durable, retry the
batch after a pause when a dependency fails, and say so at most once per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage as InjectedMessage
from faststream.kafka.message import KafkaMessage
from faststream.middlewares import AckPolicy

from shared.log import describe, get_logger

log = get_logger()

T = TypeVar("T")

Check = Callable[[], Awaitable[bool]]
"""Answers whether one dependency (Kafka, MongoDB) is reachable now."""

# Longest a reachability check or a lag query may take (aiokafka would wait for a broker that
# is gone indefinitely): the store's server selection timeout.
CHECK_TIMEOUT_S = 5.0


async def undecoded(message: KafkaMessage) -> Any:
    """The subscribers' decoder: the bodies as they came. Each service parses its records
    itself (`decode` and its use case), so FastStream's own decoding of a batch (a message
    object and a `json.loads` per record, kept until the batch is done) was work done twice
    and, for a batch of thousands, tens of MiB held for nothing."""
    return message.body


def records_of(message: KafkaMessage) -> Sequence[Any]:
    """The aiokafka records behind a batch (or single) message."""
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


class Positioned(Protocol):
    """A record read from Kafka, as the services' `Incoming` types describe one."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


def batch_position(batch: Sequence[Positioned]) -> dict[str, Any]:
    """Where a non-empty batch was read, for its `batch processed` line: the topic, the
    partition (or `partitions` when it spans several) and the first and last offsets."""
    partitions = sorted({r.partition for r in batch})
    offsets = [r.offset for r in batch]
    where: dict[str, Any] = (
        {"partition": partitions[0]} if len(partitions) == 1 else {"partitions": partitions}
    )
    return {"topic": batch[0].topic, **where, "offsets": [min(offsets), max(offsets)]}


class Throttle:
    """Lets a repeated warning through at most once per interval."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None while this key's interval runs; else how many were held back since the last."""
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


async def _within(check: Check) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except Exception:
        return False


class ConsumerMonitor:
    """Watches one consumer: counts what it handles and, every interval, logs its lag and
    throughput, and warns while a dependency does not answer."""

    def __init__(self, group: str, interval_s: float, dependencies: Mapping[str, Check]) -> None:
        self.group = group
        self.interval_s = interval_s
        self.dependencies = dict(dependencies)
        self.records = 0
        self.batches = 0
        self.errors = 0
        # One throttle for every warning about the service's trouble: an outage of either
        # server is one warning per interval, however many batches and checks fail meanwhile.
        self._throttle = Throttle(interval_s)
        self._down_since: dict[str, float] = {}
        self._consumer: Callable[[], Any] = lambda: None

    def watch(self, subscriber: Any) -> None:
        """Follows a FastStream Kafka subscriber (its aiokafka consumer exists once started)."""
        self._consumer = lambda: getattr(subscriber, "consumer", None)

    def warn(self, event: str, **fields: Any) -> None:
        """Logs a warning unless one was logged less than an interval ago."""
        held = self._throttle.allow("trouble")
        if held is not None:
            log.warning(event, suppressed=held, **fields)

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

    async def check(self) -> dict[str, bool]:
        """Whether each dependency answers, each asked at once and for a bounded time."""
        answers = await asyncio.gather(*(_within(c) for c in self.dependencies.values()))
        return dict(zip(self.dependencies, answers, strict=True))

    async def readiness(self) -> dict[str, bool]:
        """What `/readyz` reports: every dependency answers and the consumer holds partitions."""
        return {**await self.check(), "consumer_assigned": self.assigned() > 0}

    async def report_forever(self) -> None:
        """Reports once per interval until cancelled."""
        while True:
            started = time.monotonic()
            try:
                await self.report()
            except Exception as error:
                # A report that failed must not end the reporting.
                self.warn("consumer stats failed", group=self.group, error=describe(error))
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def report(self) -> None:
        """One `consumer stats` line: lag per partition and what was handled since the last;
        before it, a warning while a dependency does not answer, or a line once it does again."""
        records, batches, errors = self.records, self.batches, self.errors
        self.records = self.batches = self.errors = 0
        checks = await self.check()
        self._note_reachability(checks)
        lag: dict[str, int] | None = None
        # Lag is the broker's answer: without it, asking would only wait out the timeout.
        if checks.get("kafka", True):
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    lag = await self.lag()
            except Exception as error:
                self.warn("consumer lag unavailable", group=self.group, error=describe(error))
        log.info(
            "consumer stats",
            group=self.group,
            lag=lag,
            lag_total=sum(lag.values()) if lag is not None else None,
            assigned=self.assigned(),
            records=records,
            batches=batches,
            errors=errors,
            interval_s=self.interval_s,
        )

    def _note_reachability(self, checks: Mapping[str, bool]) -> None:
        now = time.monotonic()
        back = sorted(name for name in self._down_since if checks.get(name, True))
        if back:
            log.info(
                "dependency reachable again",
                group=self.group,
                recovered=back,
                down_s=round(now - min(self._down_since.pop(name) for name in back), 1),
            )
        down = sorted(name for name, ok in checks.items() if not ok)
        if down:
            for name in down:
                self._down_since.setdefault(name, now)
            self.warn(
                "dependency unreachable",
                group=self.group,
                unreachable=down,
                down_s=round(now - min(self._down_since[name] for name in down), 1),
            )


async def settle(
    message: KafkaMessage,
    work: Callable[[], Awaitable[None]],
    *,
    monitor: ConsumerMonitor,
    retry_pause_s: float = 1.0,
) -> None:
    """Runs the batch's work, then commits; on failure rewinds to the batch's first record.

    The subscriber uses the MANUAL acknowledgement policy, so this is the only place offsets
    move: after `work` returned, never before, and never when it raised or was cancelled. A
    commit that fails (the broker went away) rewinds too: the batch's effects are idempotent,
    so doing it again is how its offsets get committed after all.
    """
    records = len(records_of(message))
    try:
        await work()
        await message.ack()
    except asyncio.CancelledError:
        # Shutdown interrupted the batch: leave the offsets where they were.
        raise
    except Exception as error:
        monitor.errors += 1
        monitor.warn(
            "batch failed; it will be retried",
            group=monitor.group,
            error=describe(error),
            records=records,
            retry_in_s=retry_pause_s,
        )
        await asyncio.sleep(retry_pause_s)
        await message.nack()
        return
    monitor.batches += 1
    monitor.records += records


DEFAULT_FETCH_BYTES = 1024 * 1024
"""aiokafka's own bound on one fetch of a partition."""


def subscribe_batches(
    broker: KafkaBroker,
    topic: str,
    *,
    group: str,
    max_records: int,
    monitor: ConsumerMonitor,
    decode: Callable[[Any], T],
    process: Callable[[list[T]], Awaitable[object]],
    fetch_bytes: int = DEFAULT_FETCH_BYTES,
    fetch_wait_ms: int = 500,
    backlog_records: int = 0,
    backlog_pause_s: float = 0.0,
    batch_interval_s: float = 0.0,
) -> None:
    """Consumes `topic` in batches of up to `max_records` as `group`: each aiokafka record is
    turned into what `process` takes by `decode`, and offsets move only after `process`
    returned (`settle`); a new group starts from the earliest offset. `fetch_bytes` bounds
    what one fetch brings of a partition, so how full a batch a backlog can make (and what
    the consumer holds in memory: about this much per partition). `fetch_wait_ms` bounds how
    long the broker holds a fetch with nothing new (`CommonSettings.kafka_fetch_wait_ms`).

    After a batch of at least `backlog_records` (a backlog), the next batch is taken only
    after `backlog_pause_s`, so that it gathers what arrives meanwhile: for a
    `process` whose cost is mostly per batch, not per record, fewer and bigger batches are
    less work in all, which leaves the processes it shares cores with more of them. A
    stream whose batches stay smaller never waits.

    `batch_interval_s` spaces batches whatever their size: the next is taken no sooner than
    that long after this one was, so a steady stream comes in batches of that many seconds'
    records, each record waiting at most that long."""
    subscriber = broker.subscriber(
        topic,
        group_id=group,
        batch=True,
        max_records=max_records,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_wait_ms=fetch_wait_ms,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        decoder=undecoded,
    )
    monitor.watch(subscriber)

    @subscriber
    async def on_batch(message: InjectedMessage) -> None:
        taken = time.monotonic()
        batch = [decode(r) for r in records_of(message)]

        async def work() -> None:
            await process(batch)

        await settle(message, work, monitor=monitor)
        pause = batch_interval_s - (time.monotonic() - taken)
        if backlog_pause_s > 0 and len(batch) >= backlog_records:
            pause = max(pause, backlog_pause_s)
        if pause > 0:
            await asyncio.sleep(pause)
