"""Intake's durable memory in MongoDB: which revisions are claimed, which refusals answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.intake.domain import Admitted, Claim, Refused
from shared.mongo import Document

_DUPLICATE_KEY = 11000


class IntakeStore:
    """Claims (one per audit, agency, case token and revision) and answered refusals.

    A claim's `_id` is the revision key and its `event_id` is unique too, so the same
    submission or the same revision can be taken only once, across restarts and replicas.
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._claims = db["intake_claims"]
        self._refusals = db["intake_refusals"]

    async def ensure_indexes(self) -> None:
        """Creates the unique index on event id (the revision key is the `_id`) and the one
        claims are marked forwarded by."""
        await self._claims.create_index([("event_id", ASCENDING)], unique=True)
        await self._claims.create_index([("audit_id", ASCENDING)])

    async def claim(self, admitted: Sequence[Admitted], now: datetime) -> list[tuple[Claim, bool]]:
        """Takes each revision key if free; returns the claim that holds it and whether this
        call created it."""
        if not admitted:
            return []
        docs: list[dict[str, Any]] = [
            {
                "_id": a.revision_key,
                "audit_id": a.review.audit_id,
                "event_id": a.review.event_id,
                "fingerprint": a.fingerprint,
                "forwarded": False,
                "claimed_at": now,
            }
            for a in admitted
        ]
        failed: set[int] = set()
        try:
            await self._claims.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            errors: list[dict[str, Any]] = error.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        held: dict[str, Claim] = {}
        by_event: dict[str, Claim] = {}
        if failed:
            keys = [docs[i]["_id"] for i in failed]
            events = [docs[i]["event_id"] for i in failed]
            async for doc in self._claims.find(
                {"$or": [{"_id": {"$in": keys}}, {"event_id": {"$in": events}}]}
            ):
                found = Claim(doc["event_id"], doc["fingerprint"], doc["forwarded"])
                held[doc["_id"]] = found
                by_event[doc["event_id"]] = found
        result: list[tuple[Claim, bool]] = []
        for index, doc in enumerate(docs):
            own = Claim(doc["event_id"], doc["fingerprint"], forwarded=False)
            if index not in failed:
                result.append((own, True))
            elif doc["_id"] in held:
                result.append((held[doc["_id"]], False))
            else:
                # The event id was already used for another revision key: same submission id,
                # so it changes nothing; report it as a forwarded duplicate.
                other = by_event.get(doc["event_id"], own)
                result.append((Claim(other.event_id, doc["fingerprint"], True), False))
        return result

    async def mark_forwarded(self, forwarded: Sequence[Admitted]) -> None:
        """Records that themes has these reviews, so a replay forwards nothing again."""
        by_audit: dict[str, list[str]] = {}
        for a in forwarded:
            by_audit.setdefault(a.review.audit_id, []).append(a.revision_key)
        # A command per audit naming the audit: an index finds its claims on any store, where
        # FerretDB reads the whole collection for an `_id` `$in` alone.
        await asyncio.gather(
            *(
                self._claims.update_many(
                    {"audit_id": audit_id, "_id": {"$in": keys}}, {"$set": {"forwarded": True}}
                )
                for audit_id, keys in sorted(by_audit.items())
            )
        )

    async def answered(self, positions: Sequence[str]) -> set[str]:
        """Which of these source positions already had their refusal published."""
        if not positions:
            return set()
        cursor = self._refusals.find({"_id": {"$in": list(positions)}}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def mark_answered(self, refusals: Sequence[tuple[str, Refused]], now: datetime) -> None:
        """Records published refusals by source position (no payload, no personal data)."""
        if not refusals:
            return
        docs: list[dict[str, Any]] = [
            {"_id": position, "reason": r.reason.value, "event_id": r.event_id, "at": now}
            for position, r in refusals
        ]
        try:
            await self._refusals.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            errors: list[dict[str, Any]] = error.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
