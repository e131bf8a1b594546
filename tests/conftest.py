"""Fixtures shared by every test: the real servers, and a clean namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
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


@pytest.fixture
def namespace() -> str:
    """A prefix no other test uses, for topics, groups and the database."""
    return f"t{uuid.uuid4().hex[:10]}"


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
