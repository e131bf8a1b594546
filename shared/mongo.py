"""MongoDB access through PyMongo's asyncio API (the maintained successor of Motor)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


def make_client(url: str) -> AsyncMongoClient[Document]:
    """A client with bounded waits, so an unreachable store fails fast and is retried."""
    return AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=5000,
        tz_aware=True,
        appname="casereview",
    )


def database(client: AsyncMongoClient[Document], name: str) -> AsyncDatabase[Document]:
    """The project's database on a client."""
    return client[name]


async def ping(client: AsyncMongoClient[Document]) -> bool:
    """True when the store answers."""
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
