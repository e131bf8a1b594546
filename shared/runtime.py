"""Starting a service process: logging, the ASGI server, the consumer's lifespan, and clean
shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvicorn
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from shared.consuming import ConsumerMonitor
from shared.kafka import broker_answers, ensure_topics, wait_for_kafka
from shared.log import configure_logging, get_logger
from shared.mongo import Document, ping
from shared.settings import CommonSettings


def package_version() -> str:
    """The installed casereview version."""
    try:
        return version("casereview")
    except PackageNotFoundError:
        return "0+unknown"


def log_started(service: str, settings: CommonSettings) -> None:
    """The one line every service writes when it is up."""
    get_logger().info(
        "service started",
        service=service,
        release=package_version(),
        kafka_bootstrap=settings.kafka_bootstrap,
        mongo_host=settings.mongo_host(),
        mode=settings.mode,
    )


def log_stopped(service: str) -> None:
    """The line every service writes once its consumers stopped and its clients closed."""
    get_logger().info("service stopped", service=service)


def consumer_monitor(
    group: str, settings: CommonSettings, broker: KafkaBroker, client: AsyncMongoClient[Document]
) -> ConsumerMonitor:
    """The monitor of a service's consumer group, watching its broker and its store."""
    return ConsumerMonitor(
        group,
        settings.stats_interval_s,
        {"kafka": lambda: broker_answers(broker, 2.0), "mongodb": lambda: ping(client)},
    )


def consumer_lifespan(
    service: str,
    settings: CommonSettings,
    *,
    security: BaseSecurity | None,
    topics: Sequence[str],
    broker: KafkaBroker,
    client: AsyncMongoClient[Document],
    monitor: ConsumerMonitor,
    prepare_store: Callable[[], Awaitable[None]],
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The lifespan every service shares.

    Up: waits for Kafka, creates the service's topics, prepares the store, starts consuming,
    then the background tasks and the monitor's reports. Down (SIGTERM): the tasks are
    cancelled first, then the broker stops (FastStream finishes or abandons the batch in
    hand without committing it), and the store's client closes last.
    """

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await wait_for_kafka(settings.kafka_bootstrap, security=security)
        await ensure_topics(
            settings.kafka_bootstrap,
            dict.fromkeys(topics, settings.topic_partitions),
            security=security,
        )
        await prepare_store()
        await broker.start()
        tasks = [asyncio.create_task(work()) for work in (*background, monitor.report_forever)]
        log_started(service, settings)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await broker.stop()
            await client.close()
            log_stopped(service)

    return lifespan


# Container allocations (net of frees) between collections of the youngest generation;
# Python's default is 700. See `settle_collector`.
YOUNG_COLLECTION_AT = 50_000


def settle_collector() -> None:
    """Sets the cyclic garbage collector up for a long-running service once it is built.

    Everything allocated so far (modules, the app, its settings) lives as long as the
    process, so it is frozen out of every collection; and the youngest generation is collected
    every `YOUNG_COLLECTION_AT` allocations rather than every 700. Each event makes hundreds
    of short-lived containers (models, dicts, log records) that reference counting frees on
    its own, so at the default the collector ran many times per batch, mostly scanning live
    objects; this setting cut the services' CPU per event by a fifth to a quarter under the
    benchmark's load (docs/performance.md). Collections still run, so reference cycles are
    still reclaimed.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AT, older, oldest)


def serve(
    service: str, factory: Callable[[], Starlette], settings: CommonSettings, port: int
) -> None:
    """Runs the app until SIGTERM or SIGINT; uvicorn then runs the lifespan's shutdown."""
    configure_logging(
        service, settings.log_level, settings.log_format, throttle_s=settings.stats_interval_s
    )
    app = factory()
    settle_collector()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
