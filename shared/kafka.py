"""Kafka plumbing every service uses: an idempotent broker, topics that exist, reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.log import get_logger

log = get_logger()


def make_broker(bootstrap: str, service: str) -> KafkaBroker:
    """A broker whose producer is idempotent and waits for all in-sync replicas."""
    return KafkaBroker(
        bootstrap,
        client_id=f"casereview-{service}",
        enable_idempotence=True,
        acks="all",
        # A few milliseconds of lingering lets concurrent sends share one request.
        linger_ms=5,
        graceful_timeout=30.0,
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )


async def ensure_topics(bootstrap: str, topics: dict[str, int], replication: int = 1) -> None:
    """Creates the topics that do not exist yet, with the given partition counts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="casereview-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            # Another replica may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("topics created", topics=sorted(t.name for t in missing))
    finally:
        await admin.close()


async def wait_for_kafka(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Waits until the broker answers, so a service started before it does not crash."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    warned = False
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as error:
            if asyncio.get_running_loop().time() > deadline:
                raise
            if not warned:
                log.warning("kafka not reachable yet; retrying", error=type(error).__name__)
                warned = True
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
