"""Kafka plumbing every service uses: an idempotent broker, credentials, topics, reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.log import get_logger
from shared.settings import CommonSettings

log = get_logger()


_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: CommonSettings) -> BaseSecurity | None:
    """The service's Kafka credentials from its settings; None on a plaintext listener."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    username, password = settings.kafka_sasl_username, settings.kafka_sasl_password
    if username is None or password is None:
        raise ValueError(f"{protocol} needs a SASL user name and password")
    tls = protocol == "SASL_SSL"
    return _SASL[settings.kafka_sasl_mechanism](
        username,
        password.get_secret_value(),
        ssl_context=ssl.create_default_context() if tls else None,
        use_ssl=tls,
    )


def _client_options(security: BaseSecurity | None) -> dict[str, Any]:
    # FastStream's own translation, so admin clients authenticate exactly as the broker does.
    return parse_security(security)


def kafka_client_options(settings: CommonSettings) -> dict[str, Any]:
    """aiokafka client keyword arguments that authenticate as the settings say (none for
    PLAINTEXT): what a plain aiokafka client outside a service (the CLI) passes."""
    return _client_options(kafka_security(settings))


class RememberingPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2 of the key, so every producer
    puts a key on the same partition), with each key's hash remembered: the keys are audit,
    agency and action ids, few and sent again and again, and aiokafka's murmur2 is pure
    Python (about 6 % of intake's CPU before)."""

    REMEMBERED = 10_000

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """The partition for the key; a random available one for no key, as aiokafka does."""
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.REMEMBERED:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def make_broker(bootstrap: str, service: str, security: BaseSecurity | None = None) -> KafkaBroker:
    """A broker whose producer is idempotent and waits for all in-sync replicas."""
    return KafkaBroker(
        bootstrap,
        security=security,
        client_id=f"casereview-{service}",
        enable_idempotence=True,
        acks="all",
        # A few milliseconds of lingering lets concurrent sends share one request.
        linger_ms=5,
        # aiokafka closes a partition's batch at 16 KiB by default, and every send waiting
        # behind a full batch wakes when it drains and tries again: a batch's thousands of
        # concurrent sends then spent more time in that loop than in sending. Batches this
        # size stay under the broker's default limit on one (`message.max.bytes`, 1 MiB).
        max_batch_size=512 * 1024,
        partitioner=RememberingPartitioner(),
        graceful_timeout=30.0,
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    security: BaseSecurity | None = None,
) -> None:
    """Creates the topics that do not exist yet, with the given partition counts."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="casereview-admin", **_client_options(security)
    )
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


async def wait_for_kafka(
    bootstrap: str, timeout_s: float = 60.0, security: BaseSecurity | None = None
) -> None:
    """Waits until the broker answers, so a service started before it does not crash."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    warned = False
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=3000, **_client_options(security)
        )
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


async def broker_answers(broker: KafkaBroker, timeout_s: float) -> bool:
    """Whether the broker answers the service's connection, within `timeout_s`.

    It is asked for the metadata of no topic. FastStream's `ping` asks for the whole
    cluster's (aiokafka's `describe_cluster` decodes every topic and partition, then drops
    them), which costs in proportion to the topics on the cluster: about 56 ms of the
    service's CPU a check with 1,500 topics of four partitions, where this costs under 2 ms
    whatever the cluster holds. As `ping` does, a request that fails is asked again until
    the time is up: the first ones after the broker comes back fail while the connection is
    made again."""
    try:
        admin = broker.config.admin_client
    except IncorrectState:
        # Not connected (not started yet, or stopped).
        return False
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    await admin.describe_topics([])
                except Exception:
                    await asyncio.sleep(timeout_s / 10)
                else:
                    return True
    except TimeoutError:
        return False
