"""Intake's durable memory in MongoDB: which revisions are claimed and forwarded, which refusals
answered."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.intake.domain import Admitted, Claim, Refused
from shared.mongo import Document, any_of, find_by_group, grouped, write_all

_DUPLICATE_KEY = 11000


class Source(NamedTuple):
    """Where a submission was read: its topic partition as `topic:partition`, and offset."""

    partition: str
    offset: int


class IntakeStore:
    """Claims (one per audit, agency, case token and revision), how far each source partition's
    claims are forwarded, and answered refusals.

    A claim's `_id` is the revision key and its `event_id` is unique too, so the same
    submission or the same revision can be taken only once, across restarts and replicas. A
    claim records the position of the submission that took it; a claim was forwarded when its
    offset is below its partition's `forwarded_below`, which moves once a batch's forwards are
    all acknowledged (one write per partition and batch, not one per claim).
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._claims = db["intake_claims"]
        self._forwarded = db["intake_forwarded"]
        self._refusals = db["intake_refusals"]

    async def ensure_indexes(self) -> None:
        """Creates the unique index on event id (the revision key is the `_id`) and the one
        claims are read by."""
        await self._claims.create_index([("event_id", ASCENDING)], unique=True)
        await self._claims.create_index([("audit_id", ASCENDING)])

    async def claim(
        self, admitted: Sequence[Admitted], sources: Sequence[Source], now: datetime
    ) -> list[tuple[Claim, bool]]:
        """Takes each revision key if free (`sources[i]` is where `admitted[i]` was read);
        returns the claim that holds it and whether this call created it."""
        if not admitted:
            return []
        docs: list[dict[str, Any]] = [
            {
                "_id": a.revision_key,
                "audit_id": a.review.audit_id,
                "event_id": a.review.event_id,
                "fingerprint": a.fingerprint,
                "source": source.partition,
                "offset": source.offset,
                "claimed_at": now,
            }
            for a, source in zip(admitted, sources, strict=True)
        ]
        failed: set[int] = set()
        try:
            await self._claims.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            errors: list[dict[str, Any]] = error.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        held = await self._held([docs[i] for i in sorted(failed)])
        result: list[tuple[Claim, bool]] = []
        for index, doc in enumerate(docs):
            if index not in failed:
                result.append((Claim(doc["event_id"], doc["fingerprint"], forwarded=False), True))
            elif doc["_id"] in held:
                result.append((held[doc["_id"]], False))
            else:
                # The event id was already used for another revision key: same submission id,
                # so it changes nothing; report it as a forwarded duplicate.
                result.append((Claim(doc["event_id"], doc["fingerprint"], True), False))
        return result

    async def _held(self, wanted: Sequence[Document]) -> dict[str, Claim]:
        """The claims already holding these documents' revision keys, by key."""
        by_audit = grouped((doc["audit_id"], doc["_id"]) for doc in wanted)
        docs = await find_by_group(self._claims, "audit_id", by_audit)
        below = await self._forwarded_below({doc["source"] for doc in docs if "source" in doc})
        return {
            doc["_id"]: Claim(
                doc["event_id"],
                doc["fingerprint"],
                # A claim stored before positions were kept carries its own flag instead.
                forwarded=doc["offset"] < below.get(doc["source"], 0)
                if "source" in doc
                else bool(doc.get("forwarded", False)),
            )
            for doc in docs
        }

    async def _forwarded_below(self, partitions: Collection[str]) -> dict[str, int]:
        if not partitions:
            return {}
        cursor = self._forwarded.find(any_of("_id", partitions))
        return {doc["_id"]: int(doc["below"]) async for doc in cursor}

    async def mark_forwarded(self, below: Mapping[str, int]) -> None:
        """Records that every claim taken from these partitions below these offsets has been
        forwarded, so a replay forwards nothing again: one command for a batch's
        partitions, where a command each kept the others waiting behind it in the store."""
        ops = [
            UpdateOne({"_id": p}, {"$max": {"below": offset}}, upsert=True)
            for p, offset in sorted(below.items())
        ]
        if ops and await write_all(self._forwarded, ops) is None:
            # Two replicas upserted a new partition at once: each partition on its own.
            await asyncio.gather(*(self._mark(p, offset) for p, offset in sorted(below.items())))

    async def _mark(self, partition: str, offset: int) -> None:
        update = {"$max": {"below": offset}}
        try:
            await self._forwarded.update_one({"_id": partition}, update, upsert=True)
        except DuplicateKeyError:
            # Two replicas upserted the new partition at once; now it exists, so this updates.
            await self._forwarded.update_one({"_id": partition}, update, upsert=True)

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
