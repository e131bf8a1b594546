"""Batch consumption on the real broker: after a batch big enough to mean a backlog, the next
batch is taken only after a pause, so it gathers more; smaller batches never wait."""

from __future__ import annotations

import time

import pytest

from shared.consuming import ConsumerMonitor, subscribe_batches
from shared.kafka import ensure_topics, make_broker
from tests.support.infra import Servers
from tests.support.kafka import publish, wait_for

pytestmark = pytest.mark.integration

PAUSE_S = 3.0


async def test_a_backlog_batch_is_followed_by_a_pause_and_a_small_one_is_not(
    servers: Servers, namespace: str
) -> None:
    topic = f"{namespace}.backlog"
    await ensure_topics(servers.kafka_bootstrap, {topic: 1})
    await publish(servers.kafka_bootstrap, topic, [(b"k", b"%d" % i) for i in range(45)])
    broker = make_broker(servers.kafka_bootstrap, "consuming-test")
    batches: list[tuple[float, list[int]]] = []

    async def process(batch: list[int]) -> None:
        batches.append((time.monotonic(), batch))

    subscribe_batches(
        broker,
        topic,
        group=f"{namespace}-backlog",
        max_records=20,
        monitor=ConsumerMonitor(f"{namespace}-backlog", 60.0, {}),
        decode=lambda r: r.offset,
        process=process,
        backlog_records=20,
        backlog_pause_s=PAUSE_S,
    )
    await broker.start()
    try:

        async def handled(count: int) -> bool:
            return sum(len(b) for _, b in batches) >= count

        await wait_for(lambda: handled(45), timeout_s=30)
        # The backlog came as batches of 20, 20 and 5; each full one made the next wait.
        assert [len(b) for _, b in batches] == [20, 20, 5]
        starts = [t for t, _ in batches]
        assert starts[1] - starts[0] >= PAUSE_S
        assert starts[2] - starts[1] >= PAUSE_S

        # After the small batch, a record sent now is taken without the pause.
        sent = time.monotonic()
        await publish(servers.kafka_bootstrap, topic, [(b"k", b"late")])
        await wait_for(lambda: handled(46), timeout_s=30, every_s=0.05)
        assert batches[-1][1] == [45]
        assert batches[-1][0] - sent < PAUSE_S
    finally:
        await broker.stop()
    assert sorted(o for _, b in batches for o in b) == list(range(46))
