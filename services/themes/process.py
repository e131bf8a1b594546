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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
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
from shared.consuming import batch_position
from shared.contracts import ReviewAcceptedV1
from shared.log import bind_causes, get_logger
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
        await _concurrently(self._recompute(a, _causes(rs, stored)) for a, rs in by_audit.items())
        published = await self._flush(list(by_audit))
        tally = Tally(records=len(batch), audits=len(by_audit), published=published)
        if batch:
            log.info(
                "batch processed",
                records=tally.records,
                audits=tally.audits,
                snapshots_published=tally.published,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                **batch_position(batch),
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
                    log.info(
                        "themes recomputed",
                        audit_id=audit_id,
                        changed_themes=sorted(t for t, r in revisions.items() if r is not None),
                        attempts=attempt + 1,
                        correlation_id=causes[0] if causes else None,
                        caused_by=list(causes),
                    )
                    return
            await _back_off(attempt)
        raise ConflictError(f"audit {audit_id}: recompute lost {self._max_attempts} times")

    async def _flush(self, audit_ids: Sequence[str]) -> int:
        """Publishes the audits' unacknowledged versions and carries their pattern flips into
        other audits; also finishes whatever a crashed run left of either.

        Done once for the whole batch: every store command here reads or writes a set of
        snapshots at once, and a theme that flipped in several of the batch's audits
        refreshes each other audit's snapshot of it once, not once per flip.
        """
        if not audit_ids:
            return 0
        held = await self._store.snapshots_of(audit_ids)
        published = await self._publish_many(
            {s.key: s.snapshot.version for s in held if s.pending_publish}
        )
        flipped: dict[str, list[StoredSnapshot]] = {}
        for s in held:
            if s.pending_propagation:
                flipped.setdefault(s.snapshot.content.theme, []).append(s)
        counts = await _concurrently(self._propagate(sources) for sources in flipped.values())
        return published + sum(counts)

    async def _propagate(self, sources: Sequence[StoredSnapshot]) -> int:
        """Brings `recurring_in` up to date in every other audit's snapshot of a theme whose
        pattern flag flipped in `sources`, then records the flips as carried."""
        theme = sources[0].snapshot.content.theme
        audits = {s.snapshot.content.audit_id for s in sources}
        # An audit's own snapshot already counts its own flip; it needs refreshing only for
        # another audit's.
        keys = await self._store.holders(
            theme, except_audit=next(iter(audits)) if len(audits) == 1 else None
        )
        causes = list(dict.fromkeys(c for s in sources for c in s.caused_by))[:CAUSES_LOGGED]
        published = await self._refresh_many(theme, keys, causes)
        await _concurrently(
            self._store.mark_propagated(source.key, source.pattern_changes) for source in sources
        )
        return published

    async def _refresh_many(self, theme: str, keys: Sequence[str], causes: Sequence[str]) -> int:
        """`_refresh_recurring` for many snapshots of one theme: read together, the theme's
        pattern audits read once after them (so, as in `_recompute`, every write is
        conditional on a `rev` read before its inputs), committed, then published together.
        A snapshot whose commit lost to another writer is redone on its own."""
        if not keys:
            return 0
        held = await self._store.snapshots_by_key(keys)
        patterns = (await self._store.pattern_audits([theme])).get(theme, set())
        now = self._now()
        planned = []
        for stored in held.values():
            updated = with_recurring(stored.snapshot.content, patterns)
            planned.append((stored, revise(stored.snapshot, updated, now), updated))
        commits = await _concurrently(
            self._store.commit_snapshot(stored, revised, updated, causes)
            for stored, revised, updated in planned
        )
        wanted: dict[str, int] = {}
        touched: set[str] = set()
        lost: list[str] = []
        for (stored, revised, _), committed in zip(planned, commits, strict=True):
            if committed is None:
                lost.append(stored.key)
                continue
            if revised is not None:
                touched.add(stored.snapshot.content.audit_id)
            version = revised.version if revised is not None else stored.snapshot.version
            if version > stored.published_version:
                wanted[stored.key] = version
        await self._store.touch_audits(touched, now)
        published = await self._publish_many(wanted)
        redone = await _concurrently(self._refresh_recurring(key, causes) for key in lost)
        return published + sum(redone)

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

    async def _publish_many(self, wanted: Mapping[str, int]) -> int:
        """`_publish_pending` for many snapshots with one lease holder: the leases taken and
        given back a command at a time for all of them, the sends concurrent. A key whose
        lease another holder has, or whose wanted version is still not acknowledged after,
        goes through `_publish_pending` on its own."""
        if not wanted:
            return 0
        holder = uuid.uuid4().hex
        now = self._now()
        claimed = await self._store.claim_publish_many(wanted, holder, now, now + self._lease)
        sent: dict[str, int] = {}

        async def send(stored: StoredSnapshot) -> None:
            await self._send(stored)
            sent[stored.key] = stored.snapshot.version

        try:
            await _concurrently(send(s) for s in claimed.values() if s.pending_publish)
        finally:
            # Also on failure or cancellation, so nobody waits for the leases to run out.
            released = await self._store.release_publish_many(claimed, holder, sent)
        leftovers: dict[str, int] = {}
        for key, version in wanted.items():
            if key not in claimed:
                leftovers[key] = version
                continue
            after = released.get(key)
            target = max(version, claimed[key].snapshot.version)
            if after is not None and (after.pending_publish or after.published_version < target):
                leftovers[key] = max(target, after.snapshot.version)
        redone = await _concurrently(self._publish_pending(k, v) for k, v in leftovers.items())
        return len(sent) + sum(redone)

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
        # The version's own causes (a crashed run's, or another audit's for a recurrence
        # change), not the batch's: its line names them and its message carries them.
        with bind_causes(causes):
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
