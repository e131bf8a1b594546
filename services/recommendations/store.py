"""Recommendations' durable memory in MongoDB: the latest snapshot per theme, and the actions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, InsertOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.recommendations.domain import OPEN, ThemeState
from shared.contracts import ActionV1, Category, Descriptor
from shared.log import get_logger
from shared.mongo import Document, any_of, theme_field, write_all

log = get_logger()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A lost write means another replica applied a snapshot of the same audit meanwhile; each
# attempt reads again, so a handful always suffices unless something is badly wrong.
_MAX_STATE_ATTEMPTS = 20
_MESSAGE_FIELDS = tuple(ActionV1.model_fields)


@dataclass(frozen=True)
class HistoryEntry:
    """One version of an action: the message published for it and what caused it."""

    message: ActionV1
    cause: dict[str, Any]
    by: str | None = None
    note: str | None = None
    correlation_id: str | None = None

    def to_doc(self) -> Document:
        """As the action document's `pending` and `action_history` hold it: the message and
        its cause as JSON text, who and why as fields.

        Both are only ever read whole, and one string is far cheaper for the store than the
        fields: FerretDB keeps a type entry beside every value (the message's evidence has
        five per theme), and encodes, decodes and PostgreSQL parses each of them on every
        write and read (docs/performance.md)."""
        return {
            "message": self.message.model_dump_json(),
            "cause": json.dumps(self.cause, separators=(",", ":")),
            "by": self.by,
            "note": self.note,
            "correlation_id": self.correlation_id,
        }

    @classmethod
    def from_doc(cls, doc: Document) -> HistoryEntry:
        """Back from the action document or the history; entries written before the message
        and cause were kept as text hold them as fields."""
        message, cause = doc["message"], doc.get("cause")
        return cls(
            message=ActionV1.model_validate_json(message)
            if isinstance(message, str)
            else _message(message),
            cause=(json.loads(cause) if isinstance(cause, str) else cause) or {},
            by=doc.get("by"),
            note=doc.get("note"),
            correlation_id=doc.get("correlation_id"),
        )


@dataclass(frozen=True)
class StoredAction:
    """An action as stored: its current state, how far it is published, its history if read."""

    action: ActionV1
    published_version: int
    history: tuple[HistoryEntry, ...] = ()

    @property
    def version(self) -> int:
        """The version the next conditional write is conditional on."""
        return self.action.version

    def unpublished(self) -> list[HistoryEntry]:
        """The versions not yet acknowledged by the broker, oldest first."""
        pending = [e for e in self.history if e.message.version > self.published_version]
        return sorted(pending, key=lambda e: e.message.version)


def _message(doc: Document) -> ActionV1:
    # Stored in JSON mode (dates as ISO text), so validate leniently back into the model.
    return ActionV1.model_validate({k: doc[k] for k in _MESSAGE_FIELDS if k in doc}, strict=False)


def _stored(doc: Document) -> StoredAction:
    return StoredAction(
        action=_message(doc),
        published_version=int(doc.get("published_version", 0)),
        history=tuple(HistoryEntry.from_doc(h) for h in doc.get("pending", ())),
    )


def _state_doc(state: ThemeState) -> Document:
    return {
        "audit_id": state.audit_id,
        "theme": state.theme,
        "category": state.category.value,
        "is_pattern": state.is_pattern,
        "cases_with_theme": state.cases_with_theme,
        "cases_total": state.cases_total,
        "agency_count": state.agency_count,
        "descriptor": state.descriptor.value,
        "small_sample": state.small_sample,
        "version": state.version,
        "correlation_id": state.correlation_id,
    }


def _state_fields(state: ThemeState, now: datetime) -> Document:
    """A theme's state as its audit's document holds it: the version (what a write compares)
    and when it was applied as fields, the rest as one JSON text. The state is only ever read
    whole, never queried into, and one string is far cheaper for the store to write and read
    back than a dozen fields: FerretDB keeps a type entry beside every value, and encodes,
    decodes and PostgreSQL parses each of them on every rewrite of the document
    (docs/performance.md)."""
    return {
        "version": state.version,
        "applied_at": now,
        "state": json.dumps(_state_doc(state), separators=(",", ":")),
    }


@dataclass(frozen=True)
class _StatesWrite:
    """One write of an audit's theme states: `body` inserted as its document (`rev` None: it
    held none), or applied as an update where the document is still at `rev`."""

    audit_id: str
    rev: int | None
    body: Document

    def op(self) -> InsertOne[Document] | UpdateOne:
        if self.rev is None:
            return InsertOne(self.body)
        return UpdateOne({"_id": self.audit_id, "rev": self.rev}, self.body)


def _states_write(
    audit_id: str, doc: Document | None, states: Sequence[ThemeState], now: datetime
) -> tuple[_StatesWrite | None, list[bool]]:
    """The write that keeps, of these snapshots of one audit (one per theme), those newer than
    `doc` (the audit's document as read; None: not held yet) holds, and which they are; no
    write when none is."""
    held = (doc or {}).get("themes", {})
    kept = [s.version > held.get(theme_field(s.theme), {}).get("version", 0) for s in states]
    newer = {
        theme_field(s.theme): _state_fields(s, now)
        for s, keep in zip(states, kept, strict=True)
        if keep
    }
    if not newer:
        return None, kept
    if doc is None:
        return _StatesWrite(audit_id, None, {"_id": audit_id, "rev": 1, "themes": newer}), kept
    sets = {f"themes.{field}": fields for field, fields in newer.items()}
    return _StatesWrite(audit_id, doc["rev"], {"$set": sets, "$inc": {"rev": 1}}), kept


def _held_state(held: Document) -> ThemeState:
    """A theme's state from its entry in its audit's document; entries written before the
    state was kept as text hold it as fields."""
    return _state(json.loads(held["state"]) if "state" in held else held)


def _state(doc: Document) -> ThemeState:
    return ThemeState(
        audit_id=doc["audit_id"],
        theme=doc["theme"],
        category=Category(doc["category"]),
        is_pattern=bool(doc["is_pattern"]),
        cases_with_theme=int(doc["cases_with_theme"]),
        cases_total=int(doc["cases_total"]),
        agency_count=int(doc["agency_count"]),
        descriptor=Descriptor(doc["descriptor"]),
        small_sample=bool(doc["small_sample"]),
        version=int(doc["version"]),
        correlation_id=doc.get("correlation_id"),
    )


def _archive(action_id: str, entry: HistoryEntry) -> UpdateOne:
    # An upsert that inserts only what is missing: archiving twice (a publisher that died
    # after archiving) changes nothing.
    return UpdateOne(
        {"_id": f"{action_id}#{entry.message.version:010d}"},
        {"$setOnInsert": {"action_id": action_id, **entry.to_doc()}},
        upsert=True,
    )


def _finished(version: int) -> Document:
    # Published up to `version`, the lease given back, and `pending` emptied (every entry in it
    # was archived when the lease was taken).
    return {
        "$max": {"published_version": version},
        "$set": {"unpublished": False, "lease_by": None, "lease_until": _EPOCH, "pending": []},
    }


class RecommendationsStore:
    """Three collections.

    `recommendation_states`: one document per audit, `_id` the audit, holding under `themes`
    the latest applied snapshot's fields of each theme (each replaced only by a higher
    version), and a `rev` every write is conditional on, so that a batch's snapshots of an
    audit are one write however many themes they touch.
    `actions`: one document per action, `_id` the action id, the current message's fields at
    the top (queried and conditioned on), `pending` (the history entries of the versions not
    yet known to be in `action_history`: every unpublished one), `published_version` (the
    highest the broker acknowledged), `unpublished` (a version is stored but not yet
    acknowledged) and a publication lease.
    `action_history`: the append-only history, one document per version, `_id`
    `{action_id}#{version:010d}`. A version's entry is written with the version itself (into
    `pending`, in the same conditional write) and copied here by the publisher before it
    publishes; `pending` is emptied only once every version in it is published. So an action's
    document stays small however many versions it has (a write costs the same at the
    hundredth version as at the first), and no entry is ever lost.
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._db = db
        self._states = db["recommendation_states"]
        # The previous layout of the theme states, a document per audit and theme; read only
        # to move them (`migrate_states`).
        self._themes = db["recommendation_themes"]
        self._actions = db["actions"]
        self._history = db["action_history"]

    async def ensure_indexes(self) -> None:
        """The audit lookups, the leads' listings, the overdue scan and the publication sweep."""
        await self._actions.create_index([("audit_id", ASCENDING), ("sub_group", ASCENDING)])
        await self._actions.create_index([("sub_group", ASCENDING), ("status", ASCENDING)])
        await self._actions.create_index([("status", ASCENDING), ("due_by", ASCENDING)])
        await self._actions.create_index([("unpublished", ASCENDING)])
        await self._history.create_index([("action_id", ASCENDING)])

    async def prepare(self) -> None:
        """What a replica does before it consumes: the indexes, then any theme states still
        in the layout before this one brought into their audits' documents."""
        await self.ensure_indexes()
        await self.migrate_states()

    async def migrate_states(self) -> int:
        """Moves theme states stored a document per audit and theme (`recommendation_themes`,
        the layout before this one) into their audits' documents, a higher version already
        there winning; returns how many it moved. Idempotent, and safe beside replicas doing
        the same or applying snapshots: an audit's are applied as a batch's snapshots are
        (a newer version held stays), and the old collection is dropped only once all are.
        Every replica must run this version: one of the old would go on writing the old
        layout."""
        if self._themes.name not in await self._db.list_collection_names():
            return 0
        by_audit: dict[str, list[Document]] = {}
        async for doc in self._themes.find({}):
            by_audit.setdefault(doc["audit_id"], []).append(doc)
        for _, docs in sorted(by_audit.items()):
            applied_at = max(doc["applied_at"] for doc in docs)
            await self._apply_audit([_state(doc) for doc in docs], applied_at)
        await self._themes.drop()
        moved = sum(len(docs) for docs in by_audit.values())
        if moved:
            log.info(
                "theme states moved to one document per audit",
                states_moved=moved,
                audits=len(by_audit),
            )
        return moved

    async def apply_many(self, states: Sequence[ThemeState], now: datetime) -> list[bool]:
        """Keeps each of these snapshots (at most one per theme) that is newer than the one
        held; returns which were kept. The audits' documents are read in one query and
        written in one command, one write per audit, each conditional on the audit's `rev` as
        read (an insert for an audit not held yet); an audit whose write lost to another
        writer goes again on its own. A stale snapshot is not written: versions only rise, so
        what was read stale stays stale."""
        if not states:
            return []
        by_audit: dict[str, list[int]] = {}
        for index, state in enumerate(states):
            by_audit.setdefault(state.audit_id, []).append(index)
        cursor = self._states.find(any_of("_id", by_audit))
        held = {doc["_id"]: doc async for doc in cursor}
        out = [False] * len(states)
        writes: dict[str, _StatesWrite] = {}
        for audit_id, indices in by_audit.items():
            write, kept = _states_write(
                audit_id, held.get(audit_id), [states[i] for i in indices], now
            )
            if write is not None:
                writes[audit_id] = write
                for index, newer in zip(indices, kept, strict=True):
                    out[index] = newer
        ops = [write.op() for write in writes.values()]
        if writes and await write_all(self._states, ops) != len(writes):
            # One lost to another writer (a bulk write does not say which): each audit goes
            # again on its own. A write the bulk one applied then finds its snapshots held,
            # which only the tally and a debug line see: every audit of the batch is
            # reconciled from the stored snapshots either way.
            redone = await asyncio.gather(
                *(self._apply_audit([states[i] for i in by_audit[a]], now) for a in writes)
            )
            for audit_id, kept in zip(writes, redone, strict=True):
                for index, newer in zip(by_audit[audit_id], kept, strict=True):
                    out[index] = newer
        return out

    async def _apply_audit(self, states: Sequence[ThemeState], now: datetime) -> list[bool]:
        """`apply_many` for one audit's snapshots, reading again after every lost write."""
        audit_id = states[0].audit_id
        for _ in range(_MAX_STATE_ATTEMPTS):
            doc = await self._states.find_one({"_id": audit_id})
            write, kept = _states_write(audit_id, doc, states, now)
            if write is None:
                return kept
            try:
                if write.rev is None:
                    await self._states.insert_one(write.body)
                    return kept
                result = await self._states.update_one(
                    {"_id": audit_id, "rev": write.rev}, write.body
                )
            except DuplicateKeyError:
                # Another writer inserted the audit's document meanwhile.
                continue
            if result.matched_count == 1:
                return kept
        raise RuntimeError(f"audit {audit_id}: theme states kept changing under this writer")

    async def theme_states(self, audit_id: str) -> list[ThemeState]:
        """The latest applied snapshot of every theme of an audit."""
        doc = await self._states.find_one({"_id": audit_id})
        return [_held_state(held) for held in (doc or {}).get("themes", {}).values()]

    async def theme_states_of_audits(
        self, audit_ids: Collection[str]
    ) -> dict[str, list[ThemeState]]:
        """`theme_states` for each of these audits, in one query."""
        out: dict[str, list[ThemeState]] = {a: [] for a in audit_ids}
        if audit_ids:
            async for doc in self._states.find(any_of("_id", audit_ids)):
                out[doc["_id"]] = [_held_state(held) for held in doc.get("themes", {}).values()]
        return out

    async def actions_of(self, audit_id: str) -> dict[str, StoredAction]:
        """Every action of an audit by sub-group, without history."""
        cursor = self._actions.find({"audit_id": audit_id}, {"pending": 0})
        return {doc["sub_group"]: _stored(doc) async for doc in cursor}

    async def actions_of_audits(
        self, audit_ids: Collection[str]
    ) -> dict[str, dict[str, StoredAction]]:
        """`actions_of` for each of these audits, in one query."""
        out: dict[str, dict[str, StoredAction]] = {a: {} for a in audit_ids}
        if audit_ids:
            async for doc in self._actions.find(any_of("audit_id", audit_ids), {"pending": 0}):
                out[doc["audit_id"]][doc["sub_group"]] = _stored(doc)
        return out

    async def action(self, action_id: str) -> StoredAction | None:
        """One action with its history."""
        doc = await self._actions.find_one({"_id": action_id})
        if doc is None:
            return None
        pending = _stored(doc)
        cursor = self._history.find({"action_id": action_id}).sort("_id", ASCENDING)
        archived = [HistoryEntry.from_doc(h) async for h in cursor]
        seen = {e.message.version for e in archived}
        history = [*archived, *(e for e in pending.history if e.message.version not in seen)]
        return StoredAction(
            pending.action,
            pending.published_version,
            tuple(sorted(history, key=lambda e: e.message.version)),
        )

    async def record(
        self,
        after: ActionV1,
        entry: HistoryEntry,
        *,
        read_version: int | None,
        also: Document | None = None,
    ) -> bool:
        """Stores a new version if the action is still at `read_version` (None: absent).

        False on a conflict: another writer got there first; re-read and re-apply.
        `also` adds conditions to the filter.
        """
        fields = {**after.model_dump(mode="json"), "unpublished": True}
        if read_version is None:
            try:
                await self._actions.insert_one(
                    {
                        "_id": after.action_id,
                        **fields,
                        "pending": [entry.to_doc()],
                        "published_version": 0,
                        "lease_by": None,
                        "lease_until": _EPOCH,
                    }
                )
            except DuplicateKeyError:
                return False
            return True
        result = await self._actions.update_one(
            {"_id": after.action_id, "version": read_version, **(also or {})},
            {"$set": fields, "$push": {"pending": {"$each": [entry.to_doc()]}}},
        )
        return result.matched_count == 1

    async def listing(
        self, *, sub_group: str | None, status: str | None, audit_id: str | None
    ) -> list[StoredAction]:
        """Actions without history, by audit and sub-group; None leaves a filter out."""
        query: Document = {}
        for field, value in (("sub_group", sub_group), ("status", status), ("audit_id", audit_id)):
            if value is not None:
                query[field] = value
        cursor = self._actions.find(query, {"pending": 0}).sort(
            [("audit_id", ASCENDING), ("sub_group", ASCENDING)]
        )
        return [_stored(doc) async for doc in cursor]

    async def overdue(self, today: date, limit: int) -> list[StoredAction]:
        """Open actions due before today and not escalated yet, without history."""
        cursor = self._actions.find(
            {
                "status": {"$in": sorted(s.value for s in OPEN)},
                "escalated_to": None,
                "due_by": {"$lt": today.isoformat()},
            },
            {"pending": 0},
        ).limit(limit)
        return [_stored(doc) async for doc in cursor]

    async def unpublished(self, limit: int) -> list[StoredAction]:
        """Actions with a stored version the broker has not acknowledged, without history."""
        cursor = self._actions.find({"unpublished": True}, {"pending": 0}).limit(limit)
        return [_stored(doc) async for doc in cursor]

    async def take_lease(
        self, action_id: str, token: str, now: datetime, ttl_s: float
    ) -> StoredAction | None:
        """The action, with the history entries of every version not yet archived (every
        unpublished one among them), if this caller may publish it now; None if another may.
        Those entries are archived before this returns, so publishing may then empty
        `pending` (`finish_publication`)."""
        doc = await self._actions.find_one_and_update(
            {"_id": action_id, "lease_until": {"$lt": now}},
            {"$set": {"lease_by": token, "lease_until": now + timedelta(seconds=ttl_s)}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        held = _stored(doc)
        await write_all(self._history, [_archive(action_id, e) for e in held.history])
        return held

    async def take_leases(
        self, action_ids: Collection[str], token: str, now: datetime, ttl_s: float
    ) -> dict[str, StoredAction]:
        """`take_lease` for many actions with one write and one read: those this caller may
        publish now, by id, their unarchived entries archived together."""
        if not action_ids:
            return {}
        await self._actions.update_many(
            {**any_of("_id", action_ids), "lease_until": {"$lt": now}},
            {"$set": {"lease_by": token, "lease_until": now + timedelta(seconds=ttl_s)}},
        )
        # The token is this call's own, so the documents holding it are exactly those taken.
        cursor = self._actions.find({**any_of("_id", action_ids), "lease_by": token})
        held = {doc["_id"]: _stored(doc) async for doc in cursor}
        await write_all(
            self._history,
            [_archive(action_id, e) for action_id, h in held.items() for e in h.history],
        )
        return held

    async def finish_publications(self, token: str, versions: Mapping[str, int]) -> bool:
        """`finish_publication` for many actions (`versions`: the latest version each had
        when its lease was taken, every one of them now published), in bulk writes; False
        when any was not finished (a newer version came, or the lease ran out): which, a bulk
        write does not say, so the caller then records each on its own."""
        ops = [
            UpdateOne({"_id": a, "version": v, "lease_by": token}, _finished(v))
            for a, v in sorted(versions.items())
        ]
        return await write_all(self._actions, ops) == len(ops)

    async def mark_published(self, action_id: str, version: int) -> None:
        """Records a broker acknowledgement; `unpublished` clears only if no newer version came."""
        await self._actions.update_one({"_id": action_id}, {"$max": {"published_version": version}})
        await self._actions.update_one(
            {"_id": action_id, "version": version}, {"$set": {"unpublished": False}}
        )

    async def finish_publication(self, action_id: str, token: str, version: int) -> bool:
        """`mark_published` and `release_lease` in one write, when `version` is still the
        action's latest and the lease still this caller's; False (nothing written) if not.
        Every version is then published and, by `take_lease`, archived: `pending` empties."""
        result = await self._actions.update_one(
            {"_id": action_id, "version": version, "lease_by": token}, _finished(version)
        )
        return result.matched_count == 1

    async def published_version(self, action_id: str) -> int:
        """The highest version the broker acknowledged; 0 when none or no such action."""
        doc = await self._actions.find_one({"_id": action_id}, {"published_version": 1})
        return int(doc.get("published_version", 0)) if doc is not None else 0

    async def release_lease(self, action_id: str, token: str) -> None:
        """Lets the next publisher in, if the lease is still this caller's."""
        await self._actions.update_one(
            {"_id": action_id, "lease_by": token},
            {"$set": {"lease_by": None, "lease_until": _EPOCH}},
        )
