"""Running recommendations in-process on the real servers, and reading what it published."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette

from services.recommendations.app import create_app
from services.recommendations.process import Clock, utc_now
from services.recommendations.settings import RecommendationsSettings
from tests.conftest import namespaced
from tests.support.infra import Servers
from tests.support.kafka import group_lag, read_all, wait_for

SUB_GROUPS = (
    "safeguarding_in_education",
    "domestic_abuse_operational_group",
    "business_group",
    "neglect_strategy_group",
)
TOKENS = {group: f"lead-token-{group}" for group in SUB_GROUPS}


def settings_for(
    servers: Servers, namespace: str, tmp_path: Path, **overrides: Any
) -> RecommendationsSettings:
    """Settings on the test's own topics, group and database, with a lead token per sub-group."""
    tokens = tmp_path / "recommendations-tokens.yaml"
    tokens.write_text(
        "".join(
            f"{group}: {hashlib.sha256(token.encode()).hexdigest()}\n"
            for group, token in TOKENS.items()
        )
    )
    values = namespaced(
        servers,
        namespace,
        recommendations_group=f"{namespace}-recommendations",
        recommendations_tokens_file=str(tokens),
        local_dir=str(tmp_path),
        stats_interval_s=1,
    )
    values.update(overrides)
    return RecommendationsSettings(**values)


@asynccontextmanager
async def running(
    settings: RecommendationsSettings, clock: Clock = utc_now
) -> AsyncIterator[Starlette]:
    """One recommendations instance with its lifespan running."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def client(app: Starlette, group: str | None = None, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client on the app, with a lead's bearer token when a group is given."""
    headers = {}
    if group is not None or token is not None:
        headers["authorization"] = f"Bearer {token if token is not None else TOKENS[group or '']}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://recommendations", headers=headers
    )


async def drained(
    servers: Servers, settings: RecommendationsSettings, timeout_s: float = 40
) -> None:
    """Waits until the group has committed past every snapshot, and stays there a moment.

    Offsets are committed only after a batch's actions are published, so lag 0 means done;
    the quiet period catches a redelivery after a rebalance.
    """

    async def caught_up() -> bool:
        lag = await group_lag(
            servers.kafka_bootstrap, settings.recommendations_group, settings.topic_themes
        )
        return lag == 0

    await wait_for(caught_up, timeout_s, every_s=0.2)
    await asyncio.sleep(0.5)
    await wait_for(caught_up, timeout_s, every_s=0.2)


async def published(servers: Servers, settings: RecommendationsSettings) -> list[dict[str, Any]]:
    """Every action message on the actions topic, grouped by action, each in topic order."""
    records = await read_all(servers.kafka_bootstrap, settings.topic_actions, idle_ms=800)
    out = []
    for key, value, _ in records:
        message: dict[str, Any] = json.loads(value)
        assert key == message["sub_group"].encode(), "actions are keyed by sub-group"
        out.append(message)
    # Partitions come back in no set order; one action is one key, so one partition, and the
    # stable sort keeps its messages in the order the topic carries them.
    return sorted(out, key=lambda m: m["action_id"])


def latest(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The highest version of each action."""
    out: dict[str, dict[str, Any]] = {}
    for message in messages:
        held = out.get(message["action_id"])
        if held is None or held["version"] < message["version"]:
            out[message["action_id"]] = message
    return out


def versions_by_action(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each action's versions in the order the topic carries them (one key, one partition)."""
    out: dict[str, list[int]] = {}
    for message in messages:
        out.setdefault(message["action_id"], []).append(message["version"])
    return out


async def stable_members(servers: Servers, group: str) -> int:
    """How many consumers the group has once it is stable (0 while it rebalances)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([group]))[0]
    finally:
        await admin.close()
    _, _, state, _, _, members = response.groups[0]
    return len(members) if state == "Stable" else 0
