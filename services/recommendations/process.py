"""Recommendations' use case: snapshots in, actions stored and published; leads' changes;
escalation. Every action write is conditional on the version read, so replicas may share work."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from services.recommendations.domain import (
    Refused,
    ThemeState,
    change_status,
    escalate,
    is_overdue,
    may_change,
    may_read,
    reconcile,
    route,
    touched_themes,
)
from services.recommendations.store import HistoryEntry, RecommendationsStore, StoredAction
from shared.consuming import batch_position
from shared.contracts import ActionStatus, ActionV1, ThemeSnapshotV1
from shared.log import bounded_causes, get_logger
from shared.routing import Routing
from shared.taxonomy import Taxonomy

log = get_logger()

Publish = Callable[[str, bytes, bytes, str | None], Awaitable[None]]
"""Sends (topic, key, value, correlation id) and returns once the broker acknowledged it."""

Clock = Callable[[], datetime]

# Conflicts mean another replica changed the same action meanwhile; each retry re-reads, so a
# handful always suffices unless something is badly wrong.
_MAX_ATTEMPTS = 20
_SCAN_LIMIT = 500


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


class ConflictError(RuntimeError):
    """An action kept changing under this writer; the caller retries later."""


class PublicationPendingError(RuntimeError):
    """Another replica holds an action's publication and has not finished in time."""


@dataclass(frozen=True)
class Incoming:
    """One record read from the themes topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    correlation_id: str | None
    caused_by: tuple[str, ...] = ()

    def correlation(self) -> str | None:
        """The snapshot message's correlation id, else its key."""
        if self.correlation_id:
            return self.correlation_id
        return self.key.decode("utf-8", "replace") if self.key else None


@dataclass(frozen=True)
class Tally:
    """What a batch came to."""

    snapshots: int
    applied: int
    stale: int
    unreadable: int
    audits: int
    events: dict[str, int]
    conflicts: int
    published: int


@dataclass(frozen=True)
class NotFound:
    """No such action, or one the caller may not see."""


@dataclass(frozen=True)
class Forbidden:
    """An action the caller may see but not change."""

    detail: str


class Recommendations:
    """Routes snapshots to actions, applies leads' changes and escalates overdue actions."""

    def __init__(
        self,
        *,
        store: RecommendationsStore,
        publish: Publish,
        routing: Routing,
        taxonomy: Taxonomy,
        actions_topic: str,
        clock: Clock = utc_now,
        lease_s: float = 15.0,
    ) -> None:
        self._store = store
        self._publish = publish
        self._routing = routing
        self._labels = {code: entry.label for code, entry in taxonomy.codes.items()}
        self._actions_topic = actions_topic
        self._clock = clock
        self._lease_s = lease_s

    @property
    def routing(self) -> Routing:
        """The routing rules in force."""
        return self._routing

    # --- snapshots ------------------------------------------------------------------------

    async def process(self, batch: Sequence[Incoming]) -> Tally:
        """Applies a batch of snapshots; returns once every resulting version is published."""
        started = time.perf_counter()
        now = self._clock()
        latest: dict[tuple[str, str], ThemeState] = {}
        # The events behind each theme's snapshots in this batch, for the action lines.
        causes: dict[str, dict[str, list[str]]] = {}
        unreadable = 0
        for record in batch:
            try:
                snapshot = ThemeSnapshotV1.model_validate_json(record.value)
            except ValidationError as error:
                unreadable += 1
                log.warning(
                    "snapshot unreadable; skipped",
                    correlation_id=record.correlation(),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=f"{error.error_count()} validation error(s)",
                )
                continue
            state = ThemeState.of(snapshot, record.correlation())
            theme_causes = causes.setdefault(state.audit_id, {})
            theme_causes[state.theme] = bounded_causes(
                theme_causes.get(state.theme, ()), record.caused_by, [state.correlation_id]
            )
            held = latest.get((state.audit_id, state.theme))
            if held is None or held.version < state.version:
                latest[(state.audit_id, state.theme)] = state
        kept = await self._store.apply_many(list(latest.values()), now)
        for state, applied in zip(latest.values(), kept, strict=True):
            if not applied:
                log.debug(
                    "stale snapshot ignored",
                    correlation_id=state.correlation_id,
                    audit_id=state.audit_id,
                    theme=state.theme,
                    version=state.version,
                )
        # Every audit in the batch is reconciled, stale or not: a crash after a snapshot was
        # stored but before its action was written is completed by the redelivery.
        fallback: dict[str, str | None] = {}
        for state in latest.values():
            fallback.setdefault(state.audit_id, state.correlation_id)
        # The first attempt of every audit reads together, actions before snapshots as each
        # attempt does: one query each for the batch, where a pair per audit kept the store
        # busiest with the queries themselves.
        audits = sorted(fallback)
        actions = await self._store.actions_of_audits(audits)
        states = await self._store.theme_states_of_audits(audits)
        outcomes = await asyncio.gather(
            *(
                self._reconcile(
                    audit,
                    now,
                    fallback[audit],
                    causes.get(audit, {}),
                    first_read=(actions[audit], states[audit]),
                )
                for audit in audits
            )
        )
        recorded = [entry for entries, _, _ in outcomes for entry in entries]
        due = {action: v for _, pending, _ in outcomes for action, v in pending.items()}
        published = await self._publish_all(due)
        tally = Tally(
            snapshots=len(batch),
            applied=sum(kept),
            stale=len(kept) - sum(kept),
            unreadable=unreadable,
            audits=len(fallback),
            events=dict(Counter(e.message.event.value for e in recorded)),
            conflicts=sum(retries for _, _, retries in outcomes),
            published=published,
        )
        log.info(
            "batch processed",
            records=tally.snapshots,
            applied=tally.applied,
            stale=tally.stale,
            unreadable=tally.unreadable,
            audits=tally.audits,
            events=tally.events,
            conflicts=tally.conflicts,
            published=tally.published,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            **(batch_position(batch) if batch else {}),
        )
        return tally

    async def _reconcile(
        self,
        audit_id: str,
        now: datetime,
        fallback: str | None,
        causes: Mapping[str, Sequence[str]],
        first_read: tuple[Mapping[str, StoredAction], Sequence[ThemeState]] | None = None,
    ) -> tuple[list[HistoryEntry], dict[str, int], int]:
        """Brings every action of an audit in line with its current patterns.

        The actions are read before the snapshots: a writer whose snapshot this read misses
        reads the actions after this one's write, so its own write sees it or conflicts.
        `first_read` is the actions and snapshots the first attempt starts from, read in that
        order by the caller; every later attempt reads again.
        `causes` names, per theme, the events behind the batch's snapshots of it.
        Returns the versions written, the versions to publish, and the conflicts met.
        """
        recorded: list[HistoryEntry] = []
        due: dict[str, int] = {}
        pending: set[str] | None = None
        for attempt in range(_MAX_ATTEMPTS):
            actions: Mapping[str, StoredAction]
            states: Sequence[ThemeState]
            if attempt == 0 and first_read is not None:
                actions, states = first_read
            else:
                actions = await self._store.actions_of(audit_id)
                states = await self._store.theme_states(audit_id)
            by_theme = {s.theme: s for s in states}
            routed = route(audit_id, states, self._routing, self._labels)
            groups = set(actions) | set(routed) if pending is None else pending
            conflicts: set[str] = set()
            for group in sorted(groups):
                stored = actions.get(group)
                current = stored.action if stored is not None else None
                after = reconcile(
                    current, routed.get(group), audit_id=audit_id, sub_group=group, now=now
                )
                if after is None:
                    if stored is not None and stored.published_version < stored.version:
                        due[stored.action.action_id] = stored.version
                    continue
                touched = [by_theme[t] for t in touched_themes(current, after) if t in by_theme]
                entry = HistoryEntry(
                    message=after,
                    cause={
                        "snapshots": [{"theme": s.theme, "version": s.version} for s in touched]
                    },
                    correlation_id=touched[0].correlation_id if touched else fallback,
                )
                read = current.version if current is not None else None
                if await self._store.record(after, entry, read_version=read):
                    recorded.append(entry)
                    due[after.action_id] = after.version
                    _log_event(entry, *(causes.get(s.theme, [s.correlation_id]) for s in touched))
                else:
                    conflicts.add(group)
            if not conflicts:
                return recorded, due, attempt
            log.debug(
                "actions changed meanwhile; re-applying",
                audit_id=audit_id,
                sub_groups=sorted(conflicts),
                attempt=attempt + 1,
            )
            pending = conflicts
            # Jitter keeps two replicas from colliding on the same action in lock-step.
            await asyncio.sleep(random.uniform(0.0, 0.02) * (attempt + 1))
        raise ConflictError(f"actions of audit {audit_id} kept changing; giving up for now")

    # --- publication ----------------------------------------------------------------------

    async def _publish_all(self, due: dict[str, int]) -> int:
        """Returns once, for each action of `due`, that version and every earlier one are
        acknowledged by the broker; the number of messages published.

        The actions' publication leases are taken with one command and given back with one
        more, and their unpublished versions sent concurrently, each action's in order (when
        the bulk recording is not the whole story, each action's is recorded on its own). An
        action another replica holds goes through `_ensure_published` on its own.
        """
        if not due:
            return 0
        token = uuid.uuid4().hex
        held = await self._store.take_leases(due, token, utc_now(), self._lease_s)
        sent: dict[str, int] = {}
        counts: dict[str, int] = {}
        try:
            # Every action's sends run to their end before a failure is raised, so none is
            # left running behind the batch's retry.
            failures = await asyncio.gather(
                *(self._send_unpublished(held[a], sent, counts) for a in sorted(held)),
                return_exceptions=True,
            )
        finally:
            # Also on failure or cancellation, so nobody waits for the leases to run out.
            await self._give_back(held, token, sent)
        for failure in failures:
            if isinstance(failure, BaseException):
                raise failure
        others = {a: v for a, v in due.items() if a not in held}
        results = await asyncio.gather(
            *(self._ensure_published(a, v) for a, v in others.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(counts.values()) + sum(r for r in results if isinstance(r, int))

    async def _send_unpublished(
        self, held: StoredAction, sent: dict[str, int], counts: dict[str, int]
    ) -> None:
        """Sends the action's versions the broker has not acknowledged, in order, recording in
        `sent` the latest acknowledged and in `counts` how many were sent."""
        action_id = held.action.action_id
        for entry in held.unpublished():
            await self._send(entry)
            sent[action_id] = entry.message.version
            counts[action_id] = counts.get(action_id, 0) + 1

    async def _send(self, entry: HistoryEntry) -> None:
        message = entry.message
        await self._publish(
            self._actions_topic, message.sub_group.encode(), message.to_json(), entry.correlation_id
        )

    async def _give_back(
        self, held: Mapping[str, StoredAction], token: str, sent: Mapping[str, int]
    ) -> None:
        """Records what the broker acknowledged and gives the leases back: in bulk for the
        actions whose every version is now published and still the latest (`pending` then
        empties), else each on its own."""
        done = {
            a: h.version for a, h in held.items() if sent.get(a, h.published_version) >= h.version
        }
        if len(done) == len(held) and await self._store.finish_publications(token, done):
            return
        for action_id in sorted(held):
            if action_id in sent:
                await self._store.mark_published(action_id, sent[action_id])
            await self._store.release_lease(action_id, token)

    async def _ensure_published(self, action_id: str, version: int) -> int:
        """Returns once `version` and every earlier one are acknowledged by the broker.

        One replica at a time holds an action's publication lease and publishes its
        unpublished versions in order, so the topic carries each action's versions strictly
        increasing; a crash between storing and publishing leaves them for the next holder.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self._lease_s
        published = 0
        while True:
            token = uuid.uuid4().hex
            held = await self._store.take_lease(action_id, token, utc_now(), self._lease_s)
            if held is not None:
                released = False
                try:
                    entries = held.unpublished()
                    for entry in entries:
                        message = entry.message
                        await self._send(entry)
                        # The last version usually leaves nothing behind it: recorded and
                        # the lease given back in one write.
                        released = entry is entries[-1] and await self._store.finish_publication(
                            action_id, token, message.version
                        )
                        if not released:
                            await self._store.mark_published(action_id, message.version)
                        published += 1
                finally:
                    if not released:
                        await self._store.release_lease(action_id, token)
                if held.version >= version:
                    return published
            elif await self._store.published_version(action_id) >= version:
                return published
            if loop.time() > deadline:
                raise PublicationPendingError(f"{action_id} v{version} is not published yet")
            await asyncio.sleep(0.02)

    # --- leads ----------------------------------------------------------------------------

    async def listing(
        self, principal: str, *, status: ActionStatus | None, audit_id: str | None
    ) -> list[StoredAction]:
        """The actions a lead may see: their own, or every one for the oversight sub-group."""
        own = None if principal == self._routing.escalate_to else principal
        return await self._store.listing(
            sub_group=own, status=status.value if status else None, audit_id=audit_id
        )

    async def action(self, principal: str, action_id: str) -> StoredAction | NotFound:
        """One action with its history, if the lead may see it."""
        stored = await self._store.action(action_id)
        if stored is None or not may_read(
            principal, stored.action.sub_group, self._routing.escalate_to
        ):
            return NotFound()
        return stored

    async def change_status(
        self,
        principal: str,
        action_id: str,
        status: ActionStatus,
        *,
        owner: str | None,
        note: str | None,
        correlation_id: str,
    ) -> StoredAction | Refused | NotFound | Forbidden:
        """A lead's status change, stored and then published; re-applied on a conflict."""
        for _ in range(_MAX_ATTEMPTS):
            stored = await self.action(principal, action_id)
            if isinstance(stored, NotFound):
                return stored
            if not may_change(principal, stored.action.sub_group):
                return Forbidden(
                    f"the {principal} lead may read this action but only the "
                    f"{stored.action.sub_group} lead may change it"
                )
            after = change_status(stored.action, status, owner=owner, note=note, now=self._clock())
            if isinstance(after, Refused):
                return after
            entry = HistoryEntry(
                message=after,
                cause={"lead": principal},
                by=principal,
                note=note,
                correlation_id=correlation_id,
            )
            if await self._store.record(after, entry, read_version=stored.version):
                _log_event(entry)
                await self._publish_soon(after)
                return StoredAction(after, stored.published_version, (*stored.history, entry))
        raise ConflictError(f"{action_id} kept changing; try again")

    async def _publish_soon(self, action: ActionV1) -> None:
        # The change is stored: the lead's answer does not depend on the broker, and the
        # upkeep sweep publishes whatever this could not.
        try:
            await self._ensure_published(action.action_id, action.version)
        except Exception as error:
            log.warning(
                "action stored; publication deferred to the upkeep sweep",
                action_id=action.action_id,
                version=action.version,
                error=f"{type(error).__name__}: {error}"[:300],
            )

    # --- upkeep ---------------------------------------------------------------------------

    async def upkeep(self) -> tuple[int, int]:
        """Escalates overdue actions and publishes versions a crash left unpublished.

        Returns (escalated, published).
        """
        escalated = await self.escalate_overdue()
        leftovers = await self._store.unpublished(_SCAN_LIMIT)
        published = await self._publish_all({s.action.action_id: s.version for s in leftovers})
        return escalated, published

    async def escalate_overdue(self) -> int:
        """Escalates each open action past its due date to the oversight sub-group, once.

        The write is conditional on the version read and on no escalation yet, so however
        many replicas run this, and however often, each action is escalated once.
        """
        now = self._clock()
        today = now.date()
        escalated = 0
        for stored in await self._store.overdue(today, _SCAN_LIMIT):
            current: StoredAction | None = stored
            for _ in range(_MAX_ATTEMPTS):
                if current is None or not is_overdue(current.action, today):
                    break
                after = escalate(current.action, self._routing.escalate_to, now)
                entry = HistoryEntry(
                    message=after,
                    cause={
                        "overdue": {"due_by": after.due_by.isoformat(), "on": today.isoformat()}
                    },
                    correlation_id=uuid.uuid4().hex,
                )
                if await self._store.record(
                    after, entry, read_version=current.version, also={"escalated_to": None}
                ):
                    _log_event(entry)
                    await self._ensure_published(after.action_id, after.version)
                    escalated += 1
                    break
                current = await self._store.action(stored.action.action_id)
        return escalated


def _log_event(entry: HistoryEntry, *causes: Sequence[str | None]) -> None:
    """One line per action version; for a routing, `causes` are the submissions behind the
    snapshots that changed it, so a search for one finds the actions it led to."""
    action = entry.message
    log.info(
        f"action {action.event.value.replace('_', ' ')}",
        action_event=action.event.value,
        action_id=action.action_id,
        audit_id=action.audit_id,
        sub_group=action.sub_group,
        version=action.version,
        status=action.status.value,
        themes=action.themes,
        correlation_id=entry.correlation_id,
        caused_by=bounded_causes([entry.correlation_id], *causes),
    )
