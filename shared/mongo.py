"""MongoDB access through PyMongo's asyncio API (the maintained successor of Motor)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

Document = dict[str, Any]

T = TypeVar("T")

# FerretDB 1.24 keeps the cursor of every matched statement of one `update` command open
# until the command ends (a `defer` inside its per-statement loop), each holding one of its
# backend's pooled connections (100 on SQLite; on PostgreSQL as many as `pool_max_conns`,
# which deploy/ferretdb sets to 100), shared with every read cursor still open: a command
# that needs more than are free waits for a connection forever and, behind the wrapper's
# one-writer-at-a-time front end, wedges the whole store. A themes batch of 1000 revisions
# did exactly that. Bulk writes go in chunks far below the pool (sent together by
# `write_all`, the front end runs them one at a time); MongoDB is indifferent to the split.
WRITE_CHUNK = 16

# Up to this many ids of one group are read one `_id` at a time (`find_by_group`).
FEW_IDS = 4


def chunked(items: Sequence[T], size: int = WRITE_CHUNK) -> Iterator[Sequence[T]]:
    """`items` in runs of at most `size`; by default `WRITE_CHUNK`, the size bulk writes are
    sent in."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def any_of(field: str, values: Collection[str]) -> Document:
    """A filter on `field` matching any of `values`: plain equality when there is one, which
    every FerretDB backend pushes down to an index; `$in` otherwise (FerretDB as released
    pushes no `$in` down, so reads the whole collection for one; the PostgreSQL build
    deploy/ferretdb makes does, deploy/ferretdb/pushdown-in.patch)."""
    wanted = sorted(values)
    return {field: wanted[0]} if len(wanted) == 1 else {field: {"$in": wanted}}


def theme_field(theme: str) -> str:
    """A theme's code as a field name (the key of a theme's entry in a document): a code may
    hold "." (a slug), which an update would read as a path; ":" never occurs in one."""
    return theme.replace(".", ":")


def grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(group, id) pairs as each group's sorted, distinct ids, groups in order."""
    groups: dict[str, set[str]] = {}
    for group, doc_id in pairs:
        groups.setdefault(group, set()).add(doc_id)
    return {group: sorted(ids) for group, ids in sorted(groups.items())}


async def find_by_group(
    collection: AsyncCollection[Document],
    field: str,
    groups: Mapping[str, Sequence[str] | None],
    projection: Document | None = None,
) -> list[Document]:
    """The documents whose `field` is each group's value (and, where ids are given, whose
    `_id` is among them), one query per group, run together. Naming the group's value lets an
    index find its documents on any store; FerretDB would read the whole collection for an
    `_id` `$in` alone (as released; see `any_of`). A group of a few ids is read an id at a
    time instead: FerretDB's SQLite backend finds each from the `_id` index, where the group's
    value has it decode every document of the group."""

    def queries(value: str, ids: Sequence[str] | None) -> list[Document]:
        if ids is None:
            return [{field: value}]
        if len(ids) <= FEW_IDS:
            return [{field: value, "_id": doc_id} for doc_id in ids]
        return [{field: value, "_id": {"$in": list(ids)}}]

    found = await asyncio.gather(
        *(
            collection.find(query, projection).to_list()
            for value, ids in groups.items()
            for query in queries(value, ids)
        )
    )
    return [doc for docs in found for doc in docs]


async def write_all(
    collection: AsyncCollection[Document], ops: Sequence[InsertOne[Document] | UpdateOne]
) -> int | None:
    """Sends unordered writes all at once: the inserts in one command, the updates in chunks
    of `WRITE_CHUNK`. Returns, once every command has finished, how many documents they
    inserted, matched or upserted, or None when one met a duplicate key (then FerretDB 1.24
    stops at its first error whatever `ordered` says and leaves out the counts PyMongo
    merges, hence the KeyError: the caller must find out what was written).
    """
    inserts: list[InsertOne[Document] | UpdateOne] = [op for op in ops if isinstance(op, InsertOne)]
    updates = [op for op in ops if not isinstance(op, InsertOne)]
    commands = ([inserts] if inserts else []) + list(chunked(updates))
    results = await asyncio.gather(
        *(collection.bulk_write(list(c), ordered=False) for c in commands), return_exceptions=True
    )
    written: int | None = 0
    for result in results:
        if isinstance(result, BulkWriteError | KeyError):
            written = None
        elif isinstance(result, BaseException):
            raise result
        elif written is not None:
            written += result.inserted_count + result.matched_count + result.upserted_count
    return written


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
