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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from services.themes.domain import (
    CurrentReview,
    Thresholds,
    audit_of,
    audit_summary,
    revise,
    snapshot_key,
    theme_contents,
    themes_of,
    winners,
    with_recurring,
)
from services.themes.memo import REVIEWS_REMEMBERED, ReviewMemo
from services.themes.store import (
    AuditRecord,
    ReviewFile,
    StoredSnapshot,
    ThemesStore,
    acknowledged,
    committed_states,
)
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


@dataclass(frozen=True)
class Inputs:
    """What a recompute of one audit is computed from: the audit and its snapshots as read
    (what the commit is conditional on), then its reviews (read, or remembered from this
    replica's latest commit of the audit; with the batch's own stored over them)."""

    record: AuditRecord
    snapshots: Mapping[str, StoredSnapshot]
    file: ReviewFile


@dataclass(frozen=True)
class Refreshed:
    """What refreshing other audits' snapshots of flipped themes left: the snapshots to
    publish (as committed) by key, the audits whose snapshots changed, and how many a redo
    already published."""

    wanted: Mapping[str, StoredSnapshot]
    touched: set[str]
    published: int


class _Steps:
    """How long each step of a batch took, in milliseconds, for its `batch processed` line:
    which step a slow batch spent its time in, without a profiler."""

    def __init__(self, started: float) -> None:
        self._last = started
        self.ms: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.ms[step] = round((now - self._last) * 1000, 1)
        self._last = now


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
        memo: ReviewMemo | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._taxonomy = taxonomy
        self._thresholds = thresholds
        self._topic = themes_topic
        self._lease = timedelta(seconds=lease_s)
        self._clock = clock
        self._max_attempts = max_attempts
        self._memo = memo if memo is not None else ReviewMemo(REVIEWS_REMEMBERED)

    def _now(self) -> datetime:
        return _millis(self._clock())

    async def process(self, batch: Sequence[Incoming]) -> Tally:
        """Handles every record; returns once every effect is durable and acknowledged."""
        started = time.monotonic()
        self._memo.new_batch()
        parsed = [(record, _parse(record)) for record in batch]
        arrived = [(record, review) for record, review in parsed if review is not None]
        by_audit: dict[str, list[CurrentReview]] = {}
        for _, review in arrived:
            by_audit.setdefault(review.audit_id, []).append(review)
        # Superseded and late revisions count too: which themes an audit has must depend only
        # on the set of reviews, never on the order they came in.
        steps = _Steps(started)
        inputs = await self._read_inputs(
            {a: {f.code for r in rs for f in r.findings} for a, rs in sorted(by_audit.items())}
        )
        steps.done("read")
        stored = await self._store_reviews(arrived, inputs)
        steps.done("store")
        current = await self._recompute_all(
            inputs, {a: _causes(rs, stored) for a, rs in by_audit.items()}
        )
        steps.done("recompute")
        published = await self._flush(current)
        steps.done("publish")
        tally = Tally(records=len(batch), audits=len(by_audit), published=published)
        if batch:
            log.info(
                "batch processed",
                records=tally.records,
                audits=tally.audits,
                snapshots_published=tally.published,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                steps_ms=steps.ms,
                **batch_position(batch),
            )
        return tally

    async def _read_inputs(self, codes: Mapping[str, set[str]]) -> dict[str, Inputs]:
        """What the first recompute of each of these audits starts from, read for all of them
        together: the audits, with `codes` (each audit's codes in the batch) among those they
        list, and their snapshots (what the commits are conditional on) before their reviews,
        which are read only where this replica does not remember them as of the audit's
        latest commit (`ReviewMemo`).

        An audit is written only when it lacks one of the codes (or does not exist yet), which
        is the same as adding them all: so only in the batches that bring it a new code,
        instead of in every batch."""
        audits = sorted(codes)
        found = await self._store.audits_by_id(audits)
        unlisted = {
            a: c for a, c in codes.items() if a not in found or not c <= set(found[a].codes)
        }
        if unlisted:
            await self._store.note_codes(unlisted)
            found |= await self._store.audits_by_id(unlisted)
        records = {a: _known(a, found.get(a)) for a in audits}
        held = await self._store.snapshots_of(audits)
        remembered = {a: self._memo.recall(a, records[a].rev) for a in audits}
        unknown = [a for a, file in remembered.items() if file is None]
        files = await _concurrently(self._store.review_file(a) for a in unknown)
        read = dict(zip(unknown, files, strict=True))
        return {
            a: Inputs(records[a], held[a], file if (file := remembered[a]) is not None else read[a])
            for a in audits
        }

    async def _store_reviews(
        self, arrived: Sequence[tuple[Incoming, CurrentReview]], inputs: dict[str, Inputs]
    ) -> set[str]:
        """Stores the batch's winning reviews and brings `inputs` up to date with them.

        The revisions they are weighed against come from the audits' reviews `_read_inputs`
        read, so the store is not asked twice. A review stored here replaces the one read; an
        audit where a winner lost to another writer is read again. Another writer's review of
        a key this batch does not touch, stored after the read, is that writer's to recompute
        (it reads the audit after storing it, so its commit comes after this one's or fails).
        """
        reviews = [review for _, review in arrived]
        held = {k: r.revision for i in inputs.values() for k, r in i.file.current.items()}
        chosen = winners(reviews, held)
        stored = await self._store.write_reviews(chosen, {a: i.file for a, i in inputs.items()})
        written: dict[str, list[CurrentReview]] = {}
        unsure: set[str] = set()
        for review in chosen:
            written.setdefault(review.audit_id, []).append(review)
            if review.event_id not in stored:
                unsure.add(review.audit_id)
        for audit_id, ours in written.items():
            if audit_id not in unsure:
                inputs[audit_id] = replace(
                    inputs[audit_id], file=inputs[audit_id].file.with_stored(ours)
                )
        found = await _concurrently(self._store.review_file(a) for a in sorted(unsure))
        for audit_id, file in zip(sorted(unsure), found, strict=True):
            inputs[audit_id] = replace(inputs[audit_id], file=file)
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

    async def _recompute_all(
        self, inputs: Mapping[str, Inputs], causes: Mapping[str, Sequence[str]]
    ) -> dict[str, list[StoredSnapshot]]:
        """`_recompute` for each of these audits; the first attempt for all of them together,
        from `inputs`, with the other audits' pattern flags read once, an audit whose commit
        lost retrying on its own. Returns each audit's snapshots as committed."""
        audits = sorted(causes)
        themes = {
            a: themes_of([*inputs[a].record.codes, *inputs[a].snapshots], self._taxonomy)
            for a in audits
        }
        patterns = await self._store.pattern_audits({t for ts in themes.values() for t in ts})
        committed = await _concurrently(
            self._commit_recompute(
                a,
                inputs[a].record,
                inputs[a].snapshots,
                inputs[a].file,
                themes[a],
                patterns,
                causes[a],
                attempt=0,
            )
            for a in audits
        )
        lost = [a for a, done in zip(audits, committed, strict=True) if done is None]
        redone = await _concurrently(self._recompute(a, causes[a]) for a in lost)
        current = {a: done for a, done in zip(audits, committed, strict=True) if done is not None}
        return current | dict(zip(lost, redone, strict=True))

    async def _recompute(self, audit_id: str, causes: Sequence[str]) -> list[StoredSnapshot]:
        """Recomputes every theme of the audit and its summary, committing all or retrying.

        What each write is conditional on (audit and snapshot `rev`) is read before the
        inputs (reviews, other audits' patterns), so a commit that wins was computed from
        inputs at least as new as those of every commit before it.
        """
        for attempt in range(1, self._max_attempts):
            await _back_off(attempt - 1)
            record = _known(audit_id, await self._store.audit(audit_id))
            held = await self._store.snapshots(audit_id)
            file = await self._store.review_file(audit_id)
            themes = themes_of([*record.codes, *held], self._taxonomy)
            patterns = await self._store.pattern_audits(themes)
            committed = await self._commit_recompute(
                audit_id, record, held, file, themes, patterns, causes, attempt
            )
            if committed is not None:
                return committed
        raise ConflictError(f"audit {audit_id}: recompute lost {self._max_attempts} times")

    async def _commit_recompute(
        self,
        audit_id: str,
        record: AuditRecord,
        held: Mapping[str, StoredSnapshot],
        file: ReviewFile,
        themes: Sequence[str],
        patterns: Mapping[str, set[str]],
        causes: Sequence[str],
        attempt: int,
    ) -> list[StoredSnapshot] | None:
        """Computes the audit's snapshots and summary from what was read and commits them,
        returning the snapshots as committed; None when another writer committed the audit or
        one of its snapshots since. The reviews of a commit that won are remembered."""
        reviews = list(file.current.values())
        contents = theme_contents(
            audit_id,
            reviews,
            themes,
            taxonomy=self._taxonomy,
            thresholds=self._thresholds,
            patterns=patterns,
        )
        summary = audit_summary(audit_id, reviews)
        now = self._now()
        revisions = {
            theme: revise(s.snapshot if (s := held.get(theme)) else None, content, now)
            for theme, content in contents.items()
        }
        commits = [(held.get(t), revisions[t], contents[t], causes) for t in contents]
        self._memo.forget(audit_id)
        if not await self._store.commit_snapshots(commits, complete=True):
            return None
        changed = summary != record.summary or any(r is not None for r in revisions.values())
        listed = [theme for theme, content in contents.items() if content.is_pattern]
        if not await self._store.commit_audit(record, summary, now, changed, listed):
            return None
        # `commit_audit` moved the audit's `rev` by one from the one read.
        self._memo.keep(audit_id, record.rev + 1, file)
        log.info(
            "themes recomputed",
            audit_id=audit_id,
            changed_themes=sorted(t for t, r in revisions.items() if r is not None),
            attempts=attempt + 1,
            correlation_id=causes[0] if causes else None,
            caused_by=list(causes),
        )
        return committed_states(commits)

    async def _flush(self, current: Mapping[str, Sequence[StoredSnapshot]]) -> int:
        """Publishes the audits' unacknowledged versions and carries their pattern flips into
        other audits; also finishes whatever a crashed run left of either. `current` is every
        snapshot of the audits as the batch's recomputes committed them (a crashed run's
        unfinished work shows in them too: the recompute read it).

        Done once for the whole batch: every store command here reads or writes a set of
        snapshots at once, each other audit is refreshed with one write for all the themes
        that flipped in the batch's audits, however many audits each flipped in, and what the
        refreshes changed is published together with the audits' own versions. Flips are
        recorded as carried only once everything they changed is published, so a crash before
        leaves them to be carried again.
        """
        held = [s for snapshots in current.values() for s in snapshots]
        if not held:
            return 0
        wanted = {s.key: s for s in held if s.pending_publish}
        flipped: dict[str, list[StoredSnapshot]] = {}
        for s in held:
            if s.pending_propagation:
                flipped.setdefault(s.snapshot.content.theme, []).append(s)
        refreshed = await self._propagate(flipped)
        for key, snapshot in refreshed.wanted.items():
            # A refresh committed after the recompute read the key: its state is the later.
            if key not in wanted or snapshot.rev > wanted[key].rev:
                wanted[key] = snapshot
        await self._store.touch_audits(refreshed.touched, self._now())
        published = await self._publish_many(wanted)
        await self._store.mark_propagated([s for sources in flipped.values() for s in sources])
        return published + refreshed.published

    async def _propagate(self, flipped: Mapping[str, Sequence[StoredSnapshot]]) -> Refreshed:
        """Brings `recurring_in` up to date in every other audit's snapshot of each theme whose
        pattern flag flipped in its `flipped` sources.

        The snapshots are read before the themes' pattern audits (so, as in `_recompute`,
        every write is conditional on a `rev` read before its inputs), and committed one write
        per audit. When a commit lost to another writer, each audit is redone (and
        published) on its own; otherwise the publishing is left to the caller.
        """
        if not flipped:
            return Refreshed({}, set(), 0)
        sources = {t: {s.snapshot.content.audit_id for s in ss} for t, ss in flipped.items()}
        # An audit's own snapshot already counts its own flip; it needs refreshing only for
        # another audit's.
        held = [
            s
            for s in await self._store.theme_snapshots(flipped)
            if sources[s.snapshot.content.theme] != {s.snapshot.content.audit_id}
        ]
        if not held:
            return Refreshed({}, set(), 0)
        patterns = await self._store.pattern_audits(flipped)
        causes = {
            theme: list(dict.fromkeys(c for s in ss for c in s.caused_by))[:CAUSES_LOGGED]
            for theme, ss in flipped.items()
        }
        now = self._now()
        commits = []
        for stored in held:
            theme = stored.snapshot.content.theme
            updated = with_recurring(stored.snapshot.content, patterns.get(theme, set()))
            commits.append((stored, revise(stored.snapshot, updated, now), updated, causes[theme]))
        touched = {
            s.snapshot.content.audit_id for s, revised, _, _ in commits if revised is not None
        }
        if not await self._store.commit_snapshots(commits):
            # Some audits' commits lost to another writer (which, a bulk write does not say):
            # each audit is redone on its own, which also publishes any that did commit.
            redo: dict[str, dict[str, Sequence[str]]] = {}
            for s in held:
                theme = s.snapshot.content.theme
                redo.setdefault(s.snapshot.content.audit_id, {})[theme] = causes[theme]
            redone = await _concurrently(self._refresh_audit(a, c) for a, c in redo.items())
            return Refreshed({}, touched, sum(redone))
        now_held = committed_states(commits)
        return Refreshed({s.key: s for s in now_held if s.pending_publish}, touched, 0)

    async def _refresh_audit(self, audit_id: str, causes: Mapping[str, Sequence[str]]) -> int:
        """Brings the `recurring_in` of one audit's snapshots of these themes (`causes`: the
        events behind each) up to date, optimistically like `_recompute`, and publishes what
        changed."""
        keys = [snapshot_key(audit_id, theme) for theme in causes]
        for attempt in range(self._max_attempts):
            held = await self._store.snapshots_by_key(keys)
            if not held:
                return 0
            patterns = await self._store.pattern_audits(causes)
            now = self._now()
            commits = []
            for stored in held.values():
                theme = stored.snapshot.content.theme
                updated = with_recurring(stored.snapshot.content, patterns.get(theme, ()))
                commits.append(
                    (stored, revise(stored.snapshot, updated, now), updated, causes[theme])
                )
            if await self._store.commit_snapshots(commits):
                if any(revised is not None for _, revised, _, _ in commits):
                    await self._store.touch_audit(audit_id, now)
                wanted = {
                    s.key: s.snapshot.version
                    for s in committed_states(commits)
                    if s.pending_publish
                }
                return await self._publish_pending(audit_id, wanted) if wanted else 0
            await _back_off(attempt)
        raise ConflictError(f"audit {audit_id}: recurrence update lost {self._max_attempts} times")

    async def _publish_many(self, wanted: Mapping[str, StoredSnapshot]) -> int:
        """Returns once the broker has acknowledged, for each snapshot key, the version of the
        snapshot given (as its caller committed it) or a later one.

        Publishing is serialised per audit by a lease in the audit's document, and the holder
        publishes a snapshot only above its acknowledged version, so each key's versions reach
        the topic in rising order even when replicas race. The leases of all the audits are
        taken and given back a command at a time, the sends run concurrently; an audit another
        holder has, or with a wanted version still unacknowledged after, goes through
        `_publish_pending` on its own.
        """
        if not wanted:
            return 0
        by_audit: dict[str, dict[str, int]] = {}
        for key, snapshot in wanted.items():
            by_audit.setdefault(audit_of(key), {})[key] = snapshot.snapshot.version
        holder = uuid.uuid4().hex
        now = self._now()
        claimed = await self._store.claim_audits(by_audit, holder, now, now + self._lease)
        sent: dict[str, int] = {}
        lost: set[str] = set()
        try:
            # The snapshots are sent as committed, not read back: a version committed by
            # someone else since is that committer's to publish, and one already acknowledged
            # (the claim read what the broker acknowledged) is not sent again.
            await self._send_pending(
                [
                    acknowledged(claimed[audit_of(k)], s)
                    for k, s in wanted.items()
                    if audit_of(k) in claimed
                ],
                sent,
            )
        finally:
            # Also on failure or cancellation, so nobody waits for the leases to run out.
            lost = await self._store.release_publish(claimed, holder, sent)
        # Where the lease held to the end, every version wanted is acknowledged: it was sent
        # then or already had been.
        leftovers = {
            audit_id: keys
            for audit_id, keys in by_audit.items()
            if audit_id not in claimed or audit_id in lost
        }
        redone = await _concurrently(self._publish_pending(a, k) for a, k in leftovers.items())
        return len(sent) + sum(redone)

    async def _publish_pending(self, audit_id: str, wanted: Mapping[str, int]) -> int:
        """`_publish_many` for one audit, waiting for its lease when another holder has it (a
        lease left by a dead replica is waited out)."""
        holder = uuid.uuid4().hex
        published = 0
        give_up = asyncio.get_running_loop().time() + 2 * self._lease.total_seconds()
        while True:
            now = self._now()
            claimed = await self._store.claim_publish([audit_id], holder, now, now + self._lease)
            if audit_id not in claimed:
                current = await self._store.snapshots_by_key(wanted)
                if not _unacknowledged(wanted, current):
                    return published
                if asyncio.get_running_loop().time() > give_up:
                    raise ConflictError(f"audit {audit_id}: publishing lease never came free")
                await asyncio.sleep(0.02)
                continue
            sent: dict[str, int] = {}
            lost: set[str] = set()
            try:
                await self._send_pending(claimed[audit_id], sent)
            finally:
                # Also on failure or cancellation, so nobody waits for the lease to run out.
                lost = await self._store.release_publish([audit_id], holder, sent)
            published += len(sent)
            if not lost:
                return published

    async def _send_pending(self, held: Sequence[StoredSnapshot], sent: dict[str, int]) -> None:
        """Sends every snapshot not yet acknowledged, concurrently (one version per key), and
        records in `sent` each version the broker acknowledged, also when another failed."""

        async def send(stored: StoredSnapshot) -> None:
            await self._send(stored)
            sent[stored.key] = stored.snapshot.version

        await _concurrently(send(s) for s in held if s.pending_publish)

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


def _unacknowledged(wanted: Mapping[str, int], held: Mapping[str, StoredSnapshot]) -> bool:
    """Whether any of these snapshots still has a version, the wanted one or a later stored
    one, the broker has not acknowledged (a key no longer stored wants nothing)."""
    return any(
        (s := held.get(key)) is not None and (s.pending_publish or s.published_version < version)
        for key, version in wanted.items()
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


def _known(audit_id: str, record: AuditRecord | None) -> AuditRecord:
    # The batch's reviews created the audit before any recompute reads it.
    if record is None:
        raise ConflictError(f"audit {audit_id} vanished from the store")
    return record


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
