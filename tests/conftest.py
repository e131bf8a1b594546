"""Fixtures shared by every test: the real servers, and a clean namespace per test."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from shared.mongo import Document, make_client
from shared.settings import CommonSettings
from tests.support.infra import Servers, ServersUnavailableError, real_servers


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """The real broker and store for the whole session; a clear failure if none can be had."""
    try:
        with real_servers() as found:
            yield found
    except ServersUnavailableError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def namespaces(servers: Servers) -> Iterator[list[str]]:
    """Every namespace the session's tests used; their topics are deleted at its end, so a
    broker kept between sessions does not gather thousands of them (every client asking
    for the cluster's metadata then pays for them all)."""
    used: list[str] = []
    yield used
    try:
        asyncio.run(_delete_topics(servers.kafka_bootstrap, used))
    except Exception as error:
        # Tidying up, not a check: the session's verdict stands either way.
        warnings.warn(f"the tests' topics were not deleted: {error!r}", stacklevel=1)


async def _delete_topics(bootstrap: str, prefixes: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        for start in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[start : start + 100])
    finally:
        await admin.close()


def fresh_namespace(namespaces: list[str]) -> str:
    """A prefix nothing else uses, for topics, groups and the database, whose topics are
    deleted at the end of the session (`namespaces`)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    namespaces.append(name)
    return name


@pytest.fixture
def namespace(namespaces: list[str]) -> str:
    """A prefix no other test uses, for topics, groups and the database."""
    return fresh_namespace(namespaces)


def namespaced(servers: Servers, namespace: str, **overrides: Any) -> dict[str, Any]:
    """Settings values that keep a test's topics, groups and database to itself."""
    base = CommonSettings()
    values: dict[str, Any] = {
        "mode": "test",
        "kafka_bootstrap": servers.kafka_bootstrap,
        "mongo_url": servers.mongo_url,
        "mongo_database": namespace,
        "log_format": "json",
    }
    for name in ("submitted", "rejected", "accepted", "themes", "actions"):
        values[f"topic_{name}"] = f"{namespace}.{getattr(base, f'topic_{name}')}"
    values.update(overrides)
    return values


@pytest.fixture
async def mongo(servers: Servers, namespace: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    """A client on the real store; the test's database is dropped afterwards."""
    client = make_client(servers.mongo_url)
    try:
        yield client
    finally:
        await client.drop_database(namespace)
        await client.close()
