"""Recommendations' wiring and lifespan: `create_app(settings, clock)` builds the whole service."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.recommendations.handlers import ActionsApi, run_upkeep, subscribe
from services.recommendations.process import Clock, Recommendations, utc_now
from services.recommendations.settings import RecommendationsSettings
from services.recommendations.store import RecommendationsStore
from shared.http import health_routes
from shared.kafka import kafka_security, make_broker
from shared.mongo import database, make_client
from shared.routing import Routing, load_routing
from shared.runtime import consumer_lifespan, consumer_monitor
from shared.secrets import load_token_hashes
from shared.taxonomy import load_taxonomy

SERVICE = "recommendations"


class TokensError(ValueError):
    """The leads' tokens file names a sub-group the routing does not know."""


def _lead_tokens(settings: RecommendationsSettings, routing: Routing) -> dict[str, str]:
    hashes = load_token_hashes(settings.recommendations_tokens_file)
    unknown = sorted(set(hashes) - set(routing.sub_groups))
    if unknown:
        raise TokensError(
            f"{settings.recommendations_tokens_file}: unknown sub-group(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(routing.sub_groups))}"
        )
    return hashes


def create_app(
    settings: RecommendationsSettings | None = None, clock: Clock = utc_now
) -> Starlette:
    """The recommendations service: a batch consumer of theme snapshots, the leads' HTTP API
    and the escalation task. `clock` dates routings, changes and escalations."""
    settings = settings or RecommendationsSettings()
    taxonomy = load_taxonomy(settings.taxonomy_file)
    routing = load_routing(settings.routing_file, taxonomy)
    tokens = _lead_tokens(settings, routing)
    security = kafka_security(settings)
    broker = make_broker(settings.kafka_bootstrap, SERVICE, security)
    client = make_client(settings.mongo_url)
    store = RecommendationsStore(database(client, settings.mongo_database))

    async def publish(topic: str, key: bytes, value: bytes, correlation_id: str | None) -> None:
        await broker.publish(value, topic=topic, key=key, correlation_id=correlation_id)

    use_case = Recommendations(
        store=store,
        publish=publish,
        routing=routing,
        taxonomy=taxonomy,
        actions_topic=settings.topic_actions,
        clock=clock,
        lease_s=settings.publish_lease_s,
    )
    monitor = consumer_monitor(settings.recommendations_group, settings, broker, client)
    subscribe(broker, use_case, settings, monitor)
    api = ActionsApi(use_case, tokens)

    lifespan = consumer_lifespan(
        SERVICE,
        settings,
        security=security,
        topics=[settings.topic_themes, settings.topic_actions],
        broker=broker,
        client=client,
        monitor=monitor,
        prepare_store=store.prepare,
        background=[lambda: run_upkeep(use_case, settings.escalation_interval_s, monitor)],
    )

    return Starlette(
        routes=[
            *health_routes(SERVICE, monitor.readiness),
            Route("/v1/actions", api.list_actions, methods=["GET"]),
            Route("/v1/actions/{action_id}", api.get_action, methods=["GET"]),
            Route("/v1/actions/{action_id}/status", api.change_status, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
