"""MongoDB access through PyMongo's asyncio API (the maintained successor of Motor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]

T = TypeVar("T")

# FerretDB 1.24 keeps the cursor of every matched statement of one `update` command open
# until the command ends (a `defer` inside its per-statement loop), each holding one of its
# backend's pooled connections (100 on SQLite; on PostgreSQL as many as `pool_max_conns`,
# which deploy/ferretdb sets to 100), shared with every read cursor still open: a command
# that needs more than are free waits for a connection forever and, behind the wrapper's
# one-writer-at-a-time front end, wedges the whole store. A themes batch of 1000 revisions
# did exactly that. Bulk writes go in chunks far below the pool; MongoDB is indifferent to
# the split.
WRITE_CHUNK = 16


def chunked(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """`items` in runs of at most `WRITE_CHUNK`, the size bulk writes are sent in."""
    for start in range(0, len(items), WRITE_CHUNK):
        yield items[start : start + WRITE_CHUNK]


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
