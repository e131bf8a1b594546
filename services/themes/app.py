"""Themes' wiring and lifespan: `create_app(settings)` builds the whole service."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.themes.domain import Thresholds
from services.themes.handlers import ReadApi, subscribe
from services.themes.memo import ReviewMemo
from services.themes.process import Themes
from services.themes.settings import ThemesSettings
from services.themes.store import ThemesStore
from shared.http import health_routes
from shared.kafka import kafka_security, make_broker
from shared.log import trace_headers
from shared.mongo import database, make_client
from shared.runtime import consumer_lifespan, consumer_monitor
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
        memo=ReviewMemo(settings.themes_reviews_remembered),
    )
    monitor = consumer_monitor(settings.themes_group, settings, broker, client)
    subscribe(broker, themes, settings, monitor)
    read = ReadApi(store)

    lifespan = consumer_lifespan(
        SERVICE,
        settings,
        security=security,
        topics=[settings.topic_accepted, settings.topic_themes],
        broker=broker,
        client=client,
        monitor=monitor,
        prepare_store=store.prepare,
    )

    return Starlette(
        routes=[
            *health_routes(SERVICE, monitor.readiness),
            Route("/v1/audits", read.audits, methods=["GET"]),
            Route("/v1/audits/{audit_id}/themes", read.themes, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
