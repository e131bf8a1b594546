"""Privacy sweeps: every stored document, as text, to search for what must never be there."""

from __future__ import annotations

import json

from pymongo import AsyncMongoClient

from shared.mongo import Document


async def stored_documents(client: AsyncMongoClient[Document], database: str) -> list[str]:
    """Every document in every collection of the database, as JSON text."""
    db = client[database]
    out: list[str] = []
    for name in await db.list_collection_names():
        out.extend([json.dumps(doc, default=str) async for doc in db[name].find()])
    return out


def leaks(texts: dict[str, str], secrets: list[str]) -> list[str]:
    """Where each secret appears: `secret in place` for every hit."""
    return [f"{s!r} in {where}" for where, text in texts.items() for s in secrets if s in text]
