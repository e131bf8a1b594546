"""Themes' wiring and lifespan: `create_app(settings)` builds the whole service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from services.themes.domain import Thresholds
from services.themes.handlers import ReadApi, subscribe
from services.themes.process import Themes
from services.themes.settings import ThemesSettings
from services.themes.store import ThemesStore
from shared.consuming import ConsumerMonitor
from shared.http import health_routes
from shared.kafka import ensure_topics, kafka_security, make_broker, wait_for_kafka
from shared.log import trace_headers
from shared.mongo import database, make_client, ping
from shared.runtime import log_started, log_stopped
from shared.taxonomy import load_taxonomy

SERVICE = "themes"


def create_app(settings: ThemesSettings | None = None) -> Starlette:
    """The themes service: a batch consumer of accepted reviews and a read-only HTTP API."""
    settings = settings or ThemesSettings()
    taxonomy = load_taxonomy(settings.taxonomy_file)
    security = kafka_security(settings)
    broker = make_broker(settings.kafka_bootstrap, SERVICE, security)
    client = make_client(settings.mongo_url)
    store = ThemesStore(database(client, settings.mongo_database))

    async def publish(topic: str, key: bytes, value: bytes, correlation_id: str | None) -> None:
        # The snapshot's causes ride along as a header, so recommendations can log them too.
        await broker.publish(
            value, topic=topic, key=key, correlation_id=correlation_id, headers=trace_headers()
        )

    themes = Themes(
        store=store,
        publish=publish,
        taxonomy=taxonomy,
        thresholds=Thresholds(
            min_cases=settings.themes_min_cases, min_agencies=settings.themes_min_agencies
        ),
        themes_topic=settings.topic_themes,
        lease_s=settings.themes_publish_lease_s,
    )
    monitor = ConsumerMonitor(
        settings.themes_group,
        settings.stats_interval_s,
        {"kafka": lambda: broker.ping(timeout=2.0), "mongodb": lambda: ping(client)},
    )
    subscribe(broker, themes, settings, monitor)
    read = ReadApi(store)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await wait_for_kafka(settings.kafka_bootstrap, security=security)
        await ensure_topics(
            settings.kafka_bootstrap,
            {
                settings.topic_accepted: settings.topic_partitions,
                settings.topic_themes: settings.topic_partitions,
            },
            security=security,
        )
        await store.ensure_indexes()
        await broker.start()
        stats = asyncio.create_task(monitor.report_forever())
        log_started(SERVICE, settings)
        try:
            yield
        finally:
            stats.cancel()
            await broker.stop()
            await client.close()
            log_stopped(SERVICE)

    return Starlette(
        routes=[
            *health_routes(SERVICE, monitor.readiness),
            Route("/v1/audits", read.audits, methods=["GET"]),
            Route("/v1/audits/{audit_id}/themes", read.themes, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
