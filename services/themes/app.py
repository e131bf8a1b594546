"""Themes' wiring and lifespan: `create_app(settings)` builds the whole service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from services.themes.domain import Thresholds
from services.themes.handlers import ReadApi, subscribe
from services.themes.process import Themes
from services.themes.settings import ThemesSettings
from services.themes.store import ThemesStore
from shared.http import health_routes
from shared.kafka import ensure_topics, make_broker, wait_for_kafka
from shared.mongo import database, make_client, ping
from shared.runtime import log_started
from shared.taxonomy import load_taxonomy

SERVICE = "themes"


def create_app(settings: ThemesSettings | None = None) -> Starlette:
    """The themes service: a batch consumer of accepted reviews and a read-only HTTP API."""
    settings = settings or ThemesSettings()
    taxonomy = load_taxonomy(settings.taxonomy_file)
    broker = make_broker(settings.kafka_bootstrap, SERVICE)
    client = make_client(settings.mongo_url)
    store = ThemesStore(database(client, settings.mongo_database))

    async def publish(topic: str, key: bytes, value: bytes, correlation_id: str | None) -> None:
        await broker.publish(value, topic=topic, key=key, correlation_id=correlation_id)

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
    subscribe(broker, themes, settings)
    read = ReadApi(store)

    async def readiness() -> dict[str, bool]:
        return {"kafka": await broker.ping(timeout=2.0), "mongodb": await ping(client)}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await wait_for_kafka(settings.kafka_bootstrap)
        await ensure_topics(
            settings.kafka_bootstrap,
            {
                settings.topic_accepted: settings.topic_partitions,
                settings.topic_themes: settings.topic_partitions,
            },
        )
        await store.ensure_indexes()
        await broker.start()
        log_started(SERVICE, settings)
        try:
            yield
        finally:
            await broker.stop()
            await client.close()

    return Starlette(
        routes=[
            *health_routes(SERVICE, readiness),
            Route("/v1/audits", read.audits, methods=["GET"]),
            Route("/v1/audits/{audit_id}/themes", read.themes, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
