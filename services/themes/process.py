"""Themes' use case: a batch of accepted reviews in, current snapshots stored and published out.

Order of effects for a batch: reviews stored, each touched audit recomputed once (snapshots
and summary, optimistic writes), every snapshot version not yet acknowledged published,
pattern flips carried into the other audits' `recurring_in`; only then does the caller
commit the offsets. Each step is idempotent and finds what a crashed run left undone.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from services.themes.domain import (
    CurrentReview,
    Thresholds,
    audit_summary,
    revise,
    theme_contents,
    themes_of,
    winners,
    with_recurring,
)
from services.themes.store import StoredSnapshot, ThemesStore
from shared.contracts import ReviewAcceptedV1
from shared.log import get_logger
from shared.taxonomy import Taxonomy

log = get_logger()

Publish = Callable[[str, bytes, bytes, str | None], Awaitable[None]]
"""Sends (topic, key, value, correlation id) and returns once the broker acknowledged it."""

CAUSES_LOGGED = 20

T = TypeVar("T")


class ConflictError(RuntimeError):
    """Optimistic writes kept losing to other writers; the batch is retried."""


@dataclass(frozen=True)
class Incoming:
    """One record read from the accepted-reviews topic."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Tally:
    """What a batch came to."""

    records: int
    audits: int
    published: int


def _millis(moment: datetime) -> datetime:
    # BSON keeps milliseconds; computing at that precision makes the stored and the published
    # `computed_at` of a version the same value.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Themes:
    """Keeps theme snapshots current; the handler gives it batches."""

    def __init__(
        self,
        *,
        store: ThemesStore,
        publish: Publish,
        taxonomy: Taxonomy,
        thresholds: Thresholds,
        themes_topic: str,
        lease_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 25,
    ) -> None:
        self._store = store
        self._publish = publish
        self._taxonomy = taxonomy
        self._thresholds = thresholds
        self._topic = themes_topic
        self._lease = timedelta(seconds=lease_s)
        self._clock = clock
        self._max_attempts = max_attempts

    def _now(self) -> datetime:
        return _millis(self._clock())

    async def process(self, batch: Sequence[Incoming]) -> Tally:
        """Handles every record; returns once every effect is durable and acknowledged."""
        started = time.monotonic()
        parsed = [(record, _parse(record)) for record in batch]
        arrived = [(record, review) for record, review in parsed if review is not None]
        stored = await self._store_reviews(arrived)

        by_audit: dict[str, list[CurrentReview]] = {}
        for _, review in arrived:
            by_audit.setdefault(review.audit_id, []).append(review)
        # Superseded and late revisions count too: which themes an audit has must depend only
        # on the set of reviews, never on the order they came in.
        await self._store.note_codes(
            {a: {f.code for r in rs for f in r.findings} for a, rs in by_audit.items()}
        )
        published = await _concurrently(
            self._settle_audit(a, _causes(rs, stored)) for a, rs in by_audit.items()
        )
        tally = Tally(records=len(batch), audits=len(by_audit), published=sum(published))
        if batch:
            log.info(
                "batch processed",
                records=tally.records,
                audits=tally.audits,
                snapshots_published=tally.published,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                **_position(batch),
            )
        return tally

    async def _store_reviews(self, arrived: Sequence[tuple[Incoming, CurrentReview]]) -> set[str]:
        reviews = [review for _, review in arrived]
        held = await self._store.revisions({r.key for r in reviews})
        stored = await self._store.write_reviews(winners(reviews, held), held)
        logged: set[str] = set()
        for record, review in arrived:
            fields: dict[str, Any] = {
                "correlation_id": review.event_id,
                "event_id": review.event_id,
                "audit_id": review.audit_id,
                "agency_id": review.agency_id,
                "revision": review.revision,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            }
            if review.event_id in stored and review.event_id not in logged:
                logged.add(review.event_id)
                log.info("review stored", findings=len(review.findings), **fields)
            else:
                log.debug("stale review ignored", **fields)
        return stored

    async def _settle_audit(self, audit_id: str, causes: Sequence[str]) -> int:
        await self._recompute(audit_id, causes)
        return await self._flush(audit_id)

    async def _recompute(self, audit_id: str, causes: Sequence[str]) -> None:
        """Recomputes every theme of the audit and its summary, committing all or retrying.

        What each write is conditional on (audit and snapshot `rev`) is read before the
        inputs (reviews, other audits' patterns), so a commit that wins was computed from
        inputs at least as new as those of every commit before it.
        """
        for attempt in range(self._max_attempts):
            record = await self._store.audit(audit_id)
            if record is None:
                raise ConflictError(f"audit {audit_id} vanished from the store")
            held = await self._store.snapshots(audit_id)
            reviews = await self._store.reviews(audit_id)
            themes = themes_of([*record.codes, *held], self._taxonomy)
            contents = theme_contents(
                audit_id,
                reviews,
                themes,
                taxonomy=self._taxonomy,
                thresholds=self._thresholds,
                patterns=await self._store.pattern_audits(themes),
            )
            summary = audit_summary(audit_id, reviews)
            now = self._now()
            revisions = {
                theme: revise(s.snapshot if (s := held.get(theme)) else None, content, now)
                for theme, content in contents.items()
            }
            commits = await _concurrently(
                self._store.commit_snapshot(held.get(t), revisions[t], contents[t], causes)
                for t in contents
            )
            if all(c is not None for c in commits):
                changed = summary != record.summary or any(
                    r is not None for r in revisions.values()
                )
                if await self._store.commit_audit(record, summary, now, changed):
                    return
            await _back_off(attempt)
        raise ConflictError(f"audit {audit_id}: recompute lost {self._max_attempts} times")

    async def _flush(self, audit_id: str) -> int:
        """Publishes the audit's unacknowledged versions and carries its pattern flips into
        other audits; also finishes whatever a crashed run left of either."""
        held = (await self._store.snapshots(audit_id)).values()
        publishing = [
            self._publish_pending(s.key, s.snapshot.version) for s in held if s.pending_publish
        ]
        propagating = [self._propagate(s) for s in held if s.pending_propagation]
        counts = await _concurrently([*publishing, *propagating])
        return sum(counts)

    async def _propagate(self, source: StoredSnapshot) -> int:
        content = source.snapshot.content
        keys = await self._store.holders(content.theme, except_audit=content.audit_id)
        counts = await _concurrently(self._refresh_recurring(key, source.caused_by) for key in keys)
        await self._store.mark_propagated(source.key, source.pattern_changes)
        return sum(counts)

    async def _refresh_recurring(self, key: str, causes: Sequence[str]) -> int:
        """Brings one snapshot's `recurring_in` up to date, optimistically like `_recompute`."""
        for attempt in range(self._max_attempts):
            held = await self._store.snapshot(key)
            if held is None:
                return 0
            content = held.snapshot.content
            patterns = await self._store.pattern_audits([content.theme])
            updated = with_recurring(content, patterns.get(content.theme, ()))
            now = self._now()
            revised = revise(held.snapshot, updated, now)
            if await self._store.commit_snapshot(held, revised, updated, causes) is not None:
                if revised is not None:
                    await self._store.touch_audit(content.audit_id, now)
                version = revised.version if revised is not None else held.snapshot.version
                if version > held.published_version:
                    return await self._publish_pending(key, version)
                return 0
            await _back_off(attempt)
        raise ConflictError(f"snapshot {key}: recurrence update lost {self._max_attempts} times")

    async def _publish_pending(self, key: str, version: int) -> int:
        """Returns once the broker has acknowledged `version` of the snapshot or a later one.

        Publishing is serialised per key by a lease, and the holder publishes only a version
        above the acknowledged one, so each key's versions reach the topic in rising order
        even when replicas race. A lease left by a dead replica is waited out.
        """
        holder = uuid.uuid4().hex
        published = 0
        give_up = asyncio.get_running_loop().time() + 2 * self._lease.total_seconds()
        while True:
            now = self._now()
            claimed = await self._store.claim_publish(key, holder, now, now + self._lease)
            if claimed is None:
                current = await self._store.snapshot(key)
                if current is None or current.published_version >= version:
                    return published
                if asyncio.get_running_loop().time() > give_up:
                    raise ConflictError(f"snapshot {key}: publishing lease never came free")
                await asyncio.sleep(0.02)
                continue
            sent: int | None = None
            try:
                if claimed.pending_publish:
                    await self._send(claimed)
                    sent = claimed.snapshot.version
                    published += 1
            finally:
                # Also on failure or cancellation, so nobody waits for the lease to run out.
                released = await self._store.release_publish(key, holder, sent)
            if released is None or not released.pending_publish:
                return published
            version = released.snapshot.version

    async def _send(self, stored: StoredSnapshot) -> None:
        snapshot = stored.snapshot
        causes = list(stored.caused_by[:CAUSES_LOGGED])
        correlation_id = causes[0] if causes else None
        # Bounded well inside the lease, so no other replica can take the key over while
        # this send is still in flight.
        async with asyncio.timeout(self._lease.total_seconds() / 2):
            await self._publish(
                self._topic,
                snapshot.key.encode(),
                snapshot.to_contract().to_json(),
                correlation_id,
            )
        log.info(
            "snapshot published",
            audit_id=snapshot.content.audit_id,
            theme=snapshot.content.theme,
            version=snapshot.version,
            is_pattern=snapshot.content.is_pattern,
            correlation_id=correlation_id,
            caused_by=causes,
            topic=self._topic,
        )


def _parse(record: Incoming) -> CurrentReview | None:
    try:
        return CurrentReview.of(ReviewAcceptedV1.model_validate_json(record.value))
    except ValidationError as error:
        # Intake validated it; a record that still does not parse would block the partition
        # forever if retried, so it is reported and passed over.
        log.error(
            "unreadable accepted review skipped",
            error=f"{error.error_count()} validation errors",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        return None


def _causes(reviews: Sequence[CurrentReview], stored: set[str]) -> list[str]:
    """The batch's events behind an audit's recompute: those stored, else (a redelivery after a
    crash) all of them; de-duplicated, in arrival order, bounded."""
    chosen = [r.event_id for r in reviews if r.event_id in stored] or [r.event_id for r in reviews]
    return list(dict.fromkeys(chosen))[:CAUSES_LOGGED]


def _position(batch: Sequence[Incoming]) -> dict[str, Any]:
    topics = sorted({r.topic for r in batch})
    partitions = sorted({r.partition for r in batch})
    offsets = [r.offset for r in batch]
    return {
        "topic": topics[0] if len(topics) == 1 else topics,
        "partition": partitions[0] if len(partitions) == 1 else partitions,
        "offsets": [min(offsets), max(offsets)],
    }


async def _concurrently(work: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Runs the coroutines together and, when any failed, raises the first failure once all
    have finished: a send already in flight gets acknowledged and recorded rather than
    abandoned (and published again on the retry), and nothing outlives the batch."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


async def _back_off(attempt: int) -> None:
    # Jittered so that replicas that just collided do not collide again.
    await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
