"""Intake's wiring and lifespan: `create_app(settings)` builds the whole service."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.intake.handlers import SubmitEndpoint, subscribe
from services.intake.process import Intake
from services.intake.settings import IntakeSettings
from services.intake.store import IntakeStore
from shared.http import health_routes
from shared.kafka import kafka_security, make_broker
from shared.mongo import database, make_client
from shared.runtime import consumer_lifespan, consumer_monitor
from shared.secrets import load_token_hashes, secret_key
from shared.taxonomy import load_taxonomy

SERVICE = "intake"


def create_app(settings: IntakeSettings | None = None) -> Starlette:
    """The intake service: a batch consumer of the submitted topic and an HTTP API."""
    settings = settings or IntakeSettings()
    taxonomy = load_taxonomy(settings.taxonomy_file)
    key = secret_key(settings.pseudonym_key, settings, "pseudonym_key")
    security = kafka_security(settings)
    broker = make_broker(settings.kafka_bootstrap, SERVICE, security)
    client = make_client(settings.mongo_url)
    store = IntakeStore(database(client, settings.mongo_database))

    async def publish(topic: str, key_: bytes, value: bytes, correlation_id: str | None) -> None:
        await broker.publish(value, topic=topic, key=key_, correlation_id=correlation_id)

    intake = Intake(
        store=store,
        publish=publish,
        taxonomy=taxonomy,
        key=key,
        accepted_topic=settings.topic_accepted,
        rejected_topic=settings.topic_rejected,
        max_bytes=settings.max_message_bytes,
    )
    monitor = consumer_monitor(settings.intake_group, settings, broker, client)
    subscribe(broker, intake, settings, monitor)
    submit = SubmitEndpoint(
        intake=intake,
        broker=broker,
        topic=settings.topic_submitted,
        token_hashes=load_token_hashes(settings.agency_tokens_file),
    )

    lifespan = consumer_lifespan(
        SERVICE,
        settings,
        security=security,
        topics=[settings.topic_submitted, settings.topic_accepted, settings.topic_rejected],
        broker=broker,
        client=client,
        monitor=monitor,
        prepare_store=store.ensure_indexes,
    )

    return Starlette(
        routes=[
            *health_routes(SERVICE, monitor.readiness),
            Route("/v1/findings", submit.handle, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
