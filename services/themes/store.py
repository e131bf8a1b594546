"""Themes' durable state in MongoDB: current reviews, theme snapshots and audits.

Every write that another writer could race is conditional: reviews on their revision, an
audit's snapshots (one document) and the audit itself each on a `rev` counter read before
their inputs were (optimistic concurrency), and the right to publish an audit's snapshots on
a lease kept in the audit's document, with the versions the broker acknowledged (one write
per audit, not per snapshot).
Only the feature subset both MongoDB and FerretDB 1.24 support is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.themes.domain import (
    AuditSummary,
    CurrentReview,
    Snapshot,
    ThemeContent,
    audit_of,
    theme_of,
)
from shared.log import get_logger
from shared.mongo import Document, any_of, chunked, grouped, theme_field, write_all

log = get_logger()

CAUSES_KEPT = 20


@dataclass(frozen=True)
class HeldLists:
    """The lists an audit's snapshots document held as read, each kept once however many of
    its snapshots name it: the events behind their versions (`causes`), and the audits each
    theme recurs in (`recurring`, as JSON text). For each, the key each snapshot names (by
    theme field; one written before the lists were kept apart names none, and holds its
    own) and the lists by key."""

    causes_named: Mapping[str, str]
    causes: Mapping[str, Sequence[str]]
    recurring_named: Mapping[str, str]
    recurring: Mapping[str, str]


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot with the bookkeeping that makes publishing and recurrence reliable.

    `rev` is that of the audit's snapshots document as read (the optimistic-concurrency token:
    it moves with every committed write to any of the audit's snapshots); `version` only with
    the snapshot's content. `published_version` is the highest version the broker
    acknowledged (kept in the audit's document).
    `pattern_changes` counts flips of `is_pattern`; `propagated_changes` how many of them
    other audits' `recurring_in` has been brought up to date with. `held_lists` is the
    document's lists of causes and of recurrences as read, which a write over this snapshot
    rewrites (None once a write of its own changed them: `committed_state`).
    """

    snapshot: Snapshot
    rev: int
    published_version: int
    pattern_changes: int
    propagated_changes: int
    caused_by: tuple[str, ...]
    held_lists: HeldLists | None = None

    @property
    def key(self) -> str:
        """`{audit_id}/{theme}`."""
        return self.snapshot.key

    @property
    def pending_publish(self) -> bool:
        """The stored version has not been acknowledged by the broker yet."""
        return self.snapshot.version > self.published_version

    @property
    def pending_propagation(self) -> bool:
        """A change of `is_pattern` has not reached the other audits' `recurring_in` yet."""
        return self.pattern_changes > self.propagated_changes


@dataclass(frozen=True)
class AuditRecord:
    """An audit as stored: every code its reviews ever carried, and its derived summary."""

    audit_id: str
    rev: int
    codes: tuple[str, ...]
    summary: AuditSummary | None
    updated_at: datetime | None


Published = Mapping[str, Mapping[str, int]]
"""The versions the broker acknowledged, by audit and theme."""


def _stored_snapshots(
    doc: Document, published: Published, wanted: Collection[str] | None = None
) -> list[StoredSnapshot]:
    """The snapshots an audit's document holds (those of the themes in `wanted`, or all)."""
    versions = published.get(doc["_id"], {})
    by_theme: Document = doc.get("by_theme", {})
    lists = HeldLists(
        causes_named={f: held["cause"] for f, held in by_theme.items() if "cause" in held},
        causes=doc.get("causes", {}),
        recurring_named={
            f: held["recurring"] for f, held in by_theme.items() if "recurring" in held
        },
        recurring=doc.get("recurring", {}),
    )
    found = []
    for field, held in by_theme.items():
        content = _content(held, lists.recurring)
        if wanted is not None and content.theme not in wanted:
            continue
        found.append(
            StoredSnapshot(
                snapshot=Snapshot(
                    content=content, version=held["version"], computed_at=held["computed_at"]
                ),
                rev=doc["rev"],
                published_version=versions.get(field, 0),
                pattern_changes=held.get("pattern_changes", 0),
                propagated_changes=held.get("propagated_changes", 0),
                # A snapshot written before causes were kept once per document has its own.
                # They are what its messages carry for tracing, so a list gone missing is
                # published as none rather than stopping the audit.
                caused_by=tuple(
                    held["caused_by"]
                    if "caused_by" in held
                    else lists.causes.get(held["cause"], ())
                ),
                held_lists=lists,
            )
        )
    return found


SnapshotCommit = tuple[StoredSnapshot | None, Snapshot | None, ThemeContent, Sequence[str]]
"""What `commit_snapshots` takes for one snapshot: the snapshot as read (None: none yet), the
new version if the content changed, the content and the events behind it."""


def _kept(causes: Sequence[str]) -> list[str]:
    return list(causes[:CAUSES_KEPT])


def _cause_key(causes: Sequence[str]) -> str:
    """The key of a list of causes (as kept) in its audit's document, made from the list
    itself, so the snapshots one commit revises, which share their causes, share one entry."""
    return hashlib.blake2b("\n".join(causes).encode(), digest_size=8).hexdigest()


def _recurring_key(audits: Sequence[str]) -> str:
    """The key of a `recurring_in` list in its audit's document, made from the list itself,
    so the themes that recur in the same audits share one entry."""
    return hashlib.blake2b("\n".join(audits).encode(), digest_size=8).hexdigest()


def _content_fields(content: ThemeContent) -> Document:
    """A snapshot's content as its audit's document keeps it: the JSON text of its fields
    but `recurring_in`, and the key of that list in the document's `recurring`, which holds
    each list its snapshots name once, as JSON text (`_recurring_lists`).

    The content is only ever read whole, never queried into, and one string is far cheaper
    for the store to write and read back than the nested fields: FerretDB keeps a type entry
    beside every value, and encodes, decodes and PostgreSQL parses each of them on every
    rewrite of the document. The lists are kept apart because they were most of the
    document: a theme that is a pattern across many audits names them all, in every theme
    that is (docs/performance.md)."""
    return {
        "content": content.model_dump_json(exclude={"recurring_in"}),
        "recurring": _recurring_key(content.recurring_in),
    }


def _recurring_lists(contents: Iterable[ThemeContent]) -> dict[str, str]:
    """The `recurring` entries these contents name, by key."""
    return {
        _recurring_key(c.recurring_in): json.dumps(list(c.recurring_in), separators=(",", ":"))
        for c in contents
    }


def _content(held: Document, recurring: Mapping[str, str]) -> ThemeContent:
    """A snapshot's content from its entry in its audit's document and the document's
    `recurring` lists. Entries written before the lists were kept apart hold theirs in the
    text, and those written before the content was kept as text hold it as fields."""
    raw = held["content"]
    if not isinstance(raw, str):
        return ThemeContent.model_validate(raw)
    if "recurring" not in held:
        return ThemeContent.model_validate_json(raw)
    # The text is a JSON object: the list goes in before its closing brace, so the whole
    # is parsed once.
    return ThemeContent.model_validate_json(
        f'{raw[:-1]},"recurring_in":{recurring[held["recurring"]]}}}'
    )


def _theme_doc(revised: Snapshot, content: ThemeContent, cause: str) -> Document:
    """A new snapshot's entry in its audit's document, `cause` the key of its causes."""
    return {
        **_content_fields(content),
        "version": revised.version,
        "computed_at": revised.computed_at,
        "cause": cause,
        "pattern_changes": 1 if content.is_pattern else 0,
        "propagated_changes": 0,
    }


def _read_rev(commits: Sequence[SnapshotCommit]) -> int | None:
    """The `rev` of the audit's document these commits (one audit's) were read at: 0 when it
    held none of them; None when they were read at different ones (they cannot all win)."""
    revs = {held.rev for held, *_ in commits if held is not None}
    if len(revs) > 1:
        return None
    return revs.pop() if revs else 0


def _audit_write(
    audit_id: str, commits: Sequence[SnapshotCommit], complete: bool
) -> InsertOne[Document] | UpdateOne | None:
    """The one write that commits these recomputes of one audit's snapshots: an insert of the
    audit's document when it held none of them, else an update conditional on the `rev` they
    were read at (None: they were read at different ones, so they cannot all win).

    `complete`: the commits are every snapshot of the audit (a recompute), so the document's
    list of themes is set from them. Otherwise (a refresh of `recurring_in`) neither a new
    theme nor a change of `is_pattern` may be among them.

    A snapshot names the events behind its version by a key into the document's `causes`,
    which the snapshots a commit revises share (one list instead of one per theme), and the
    audits it recurs in by a key into `recurring` likewise; every write rewrites both to hold
    exactly the lists its snapshots then name, from the lists as read (the write is
    conditional on the `rev` they were read at).
    """
    rev = _read_rev(commits)
    if rev is None:
        return None
    if rev == 0:
        assert complete, "only a recompute creates snapshots"
        by_theme: Document = {}
        lists: dict[str, Sequence[str]] = {}
        for _, revised, content, why in commits:
            assert revised is not None, "a first snapshot is always a new version"
            kept = _kept(why)
            lists[_cause_key(kept)] = kept
            by_theme[theme_field(content.theme)] = _theme_doc(revised, content, _cause_key(kept))
        return InsertOne(
            {
                "_id": audit_id,
                "rev": 1,
                **_theme_lists(commits),
                "causes": lists,
                "recurring": _recurring_lists(content for _, _, content, _ in commits),
                "by_theme": by_theme,
            }
        )
    read = _held_lists(commits)
    named = dict(read.causes_named)
    lists = dict(read.causes)
    recurring_named = dict(read.recurring_named)
    recurring = dict(read.recurring)
    sets: Document = _theme_lists(commits) if complete else {}
    incs: dict[str, int] = {"rev": 1}
    # What documents written before this layout held: the list of patterns (now in the
    # audits' documents) and each snapshot's own list of causes.
    unsets: Document = {"patterns": ""} if complete else {}
    for held, revised, content, why in commits:
        theme = theme_field(content.theme)
        field = f"by_theme.{theme}"
        if held is None:
            assert complete, "only a recompute creates snapshots"
            assert revised is not None, "a first snapshot is always a new version"
            kept = _kept(why)
            named[theme] = _cause_key(kept)
            lists[named[theme]] = kept
            sets[field] = _theme_doc(revised, content, named[theme])
            recurring_named[theme] = sets[field]["recurring"]
            recurring |= _recurring_lists([content])
            continue
        if revised is not None or complete:
            kept = _kept(why) if revised is not None else list(held.caused_by)
            named[theme] = _cause_key(kept)
            lists[named[theme]] = kept
            sets[f"{field}.cause"] = named[theme]
            unsets[f"{field}.caused_by"] = ""
            # A recompute writes every entry's content, so entries written before the lists
            # were kept apart are brought into this layout.
            written = _content_fields(content)
            sets |= {f"{field}.{name}": value for name, value in written.items()}
            recurring_named[theme] = written["recurring"]
            recurring |= _recurring_lists([content])
        if revised is None:
            continue
        sets |= {
            f"{field}.version": revised.version,
            f"{field}.computed_at": revised.computed_at,
        }
        if content.is_pattern != held.snapshot.content.is_pattern:
            assert complete, "only a recompute flips a pattern"
            incs[f"{field}.pattern_changes"] = 1
    sets["causes"] = {key: list(lists[key]) for key in sorted(set(named.values()))}
    sets["recurring"] = {key: recurring[key] for key in sorted(set(recurring_named.values()))}
    update: Document = {"$inc": incs, "$set": sets}
    if unsets:
        update["$unset"] = unsets
    return UpdateOne({"_id": audit_id, "rev": rev}, update)


def _held_lists(commits: Sequence[SnapshotCommit]) -> HeldLists:
    """The lists of causes and of recurrences the audit's document held when these commits'
    snapshots (one audit's, read at one `rev`) were read."""
    for held, *_ in commits:
        if held is not None:
            assert held.held_lists is not None, "a snapshot written over is one read"
            return held.held_lists
    return HeldLists({}, {}, {}, {})


def _theme_lists(commits: Sequence[SnapshotCommit]) -> Document:
    # The list the theme-wise reads find an audit's document by (indexed; an array field
    # matches an element).
    return {"themes": sorted(content.theme for _, _, content, _ in commits)}


def _patterns(doc: Document) -> list[str]:
    """The themes that are patterns in an audit's snapshots document."""
    recurring = doc.get("recurring", {})
    contents = (_content(held, recurring) for held in doc.get("by_theme", {}).values())
    return sorted(c.theme for c in contents if c.is_pattern)


def committed_states(commits: Sequence[SnapshotCommit]) -> list[StoredSnapshot]:
    """What the store holds once the writes of `commits` won (`ThemesStore.commit_snapshots`),
    one state per commit, so that the committer can publish from memory instead of reading
    its own write back (the fields change exactly as those writes change them)."""
    revs: dict[str, int] = {}
    for held, _, content, _ in commits:
        if held is not None:
            revs[content.audit_id] = held.rev
    return [committed_state(commit, revs.get(commit[2].audit_id, 0) + 1) for commit in commits]


def committed_state(commit: SnapshotCommit, rev: int) -> StoredSnapshot:
    """One snapshot as its commit left it, the audit's document then at `rev`."""
    held, revised, content, causes = commit
    if held is None:
        assert revised is not None, "a first snapshot is always a new version"
        return StoredSnapshot(
            snapshot=revised,
            rev=rev,
            published_version=0,
            pattern_changes=1 if content.is_pattern else 0,
            propagated_changes=0,
            caused_by=tuple(causes[:CAUSES_KEPT]),
        )
    if revised is None:
        return replace(held, rev=rev, held_lists=None)
    flipped = content.is_pattern != held.snapshot.content.is_pattern
    return replace(
        held,
        held_lists=None,
        snapshot=revised,
        rev=rev,
        pattern_changes=held.pattern_changes + (1 if flipped else 0),
        caused_by=tuple(causes[:CAUSES_KEPT]),
    )


def acknowledged(published: Mapping[str, int], snapshot: StoredSnapshot) -> StoredSnapshot:
    """The snapshot with its theme's acknowledged version taken from `published` (an audit's,
    as `ThemesStore.claim_audits` returned it)."""
    version = published.get(theme_field(snapshot.snapshot.content.theme), 0)
    return replace(snapshot, published_version=version)


REVIEWS_PER_INSERT = 2_000
"""Reviews stored by one insert command."""


def review_document(review: CurrentReview) -> Document:
    """A review as stored: the revision's id, the audit (what reviews are read by) as a
    field, and the rest as the JSON text of its fields.

    Nothing queries a review by any other field, and one string is far cheaper for the store
    than the fields: FerretDB keeps a type entry beside every value, each finding's most of
    all, and every insert and read encoded, decoded and PostgreSQL parsed each of them
    (docs/performance.md)."""
    fields = {
        "event_id": review.event_id,
        "audit_title": review.audit_title,
        "agency_id": review.agency_id,
        "agency_type": review.agency_type,
        "case_token": review.case_token,
        "age_band": review.age_band,
        "legal_status": review.legal_status,
        "revision": review.revision,
        "submitted_at": review.submitted_at.isoformat(),
        "findings": [[f.code, f.waited_days] for f in review.findings],
    }
    return {
        "_id": _revision_id(review),
        "audit_id": review.audit_id,
        "review": json.dumps(fields, separators=(",", ":")),
    }


def _revision_id(review: CurrentReview) -> str:
    return f"{review.key}#{review.revision}"


@dataclass(frozen=True)
class ReviewFile:
    """An audit's stored reviews: the current (highest) revision for each key, the id of the
    document holding it, and the ids of documents holding lower ones, left to delete.

    A document's id is its review's revision id (`_revision_id`), except for documents an
    earlier release wrote; only those are kept in `ids`. Themes holds every review of the
    audits it recently recomputed (`services.themes.memo`), and an id beside each was about a
    quarter of what each cost."""

    current: dict[str, CurrentReview]
    ids: dict[str, str]
    stale: tuple[str, ...]

    @classmethod
    def of(cls, docs: Iterable[Document]) -> ReviewFile:
        """The file these documents (one audit's) make."""
        file = cls({}, {}, ())
        stale: list[str] = []
        for doc in docs:
            review = stored_review(doc)
            key = review.key
            held = file.current.get(key)
            if held is not None and held.revision >= review.revision:
                stale.append(doc["_id"])
                continue
            if held is not None:
                stale.append(file.id_of(key))
            file.current[key] = review
            if doc["_id"] == _revision_id(review):
                file.ids.pop(key, None)
            else:
                file.ids[key] = doc["_id"]
        return cls(file.current, file.ids, tuple(stale))

    def id_of(self, key: str) -> str:
        """The id of the document holding the current review of `key`."""
        found = self.ids.get(key)
        return found if found is not None else _revision_id(self.current[key])

    def with_stored(self, reviews: Iterable[CurrentReview]) -> ReviewFile:
        """The file once these reviews (higher revisions) are stored and every revision they
        or earlier ones superseded deleted (`ThemesStore.write_reviews`)."""
        stored = {r.key: r for r in reviews}
        return ReviewFile(
            {**self.current, **stored},
            {k: v for k, v in self.ids.items() if k not in stored},
            (),
        )

    def superseded_by(self, reviews: Iterable[CurrentReview]) -> list[str]:
        """The documents left to delete once these reviews (higher revisions) are stored: the
        ones they replace and those already stale."""
        return [*self.stale, *(self.id_of(r.key) for r in reviews if r.key in self.current)]


def stored_review(doc: Document) -> CurrentReview:
    """The review a `themes_reviews` document holds; documents written before reviews were
    kept as text hold it as fields."""
    text = doc.get("review")
    if isinstance(text, str):
        fields = json.loads(text)
        submitted_at = datetime.fromisoformat(fields["submitted_at"])
        findings = [(code, waited) for code, waited in fields["findings"]]
    else:
        fields = doc
        submitted_at = doc["submitted_at"]
        findings = [(f["code"], f.get("waited_days")) for f in doc["findings"]]
    return CurrentReview.shared(
        event_id=fields["event_id"],
        audit_id=doc["audit_id"],
        audit_title=fields.get("audit_title"),
        agency_id=fields["agency_id"],
        agency_type=fields["agency_type"],
        case_token=fields["case_token"],
        age_band=fields["age_band"],
        legal_status=fields["legal_status"],
        revision=fields["revision"],
        submitted_at=submitted_at,
        findings=findings,
    )


def _audit_record(doc: Document) -> AuditRecord:
    summary = None
    if doc.get("rev", 0) > 0:
        summary = AuditSummary(
            audit_id=doc["_id"],
            title=doc.get("title"),
            cases=doc.get("cases", 0),
            agencies=tuple(doc.get("agencies", ())),
            legal_status=doc.get("legal_status", {}),
            age_band=doc.get("age_band", {}),
        )
    return AuditRecord(
        audit_id=doc["_id"],
        rev=doc.get("rev", 0),
        codes=tuple(doc.get("codes", ())),
        summary=summary,
        updated_at=doc.get("updated_at"),
    )


class ThemesStore:
    """Three collections: `themes_reviews` (one per revision of each audit, agency and case
    token, `_id` `{key}#{revision}`; the highest is the current review, and the ones below
    it are deleted once it is stored), `themes_snapshots` (one per audit, `_id` the audit:
    its snapshots by theme, under one `rev`, so that a recompute of the audit, or a batch's
    refreshes of it, is one write; and the lists of events behind their versions, each kept
    once however many snapshots name it) and `themes_audits` (one per audit: codes seen,
    cohort summary, the themes that are patterns in it, the lease on publishing its
    snapshots and the version of each the broker acknowledged)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._reviews = db["themes_reviews"]
        self._snapshots = db["themes_snapshots"]
        self._audits = db["themes_audits"]

    async def ensure_indexes(self) -> None:
        """Reviews are read by audit; snapshots by audit (`_id`) and by theme; audits by the
        themes that are patterns in them, and the ones a publisher holds by its lease."""
        await self._reviews.create_index([("audit_id", ASCENDING)])
        await self._snapshots.create_index([("themes", ASCENDING)])
        await self._audits.create_index([("patterns", ASCENDING)])
        await self._audits.create_index([("lease", ASCENDING)])

    async def prepare(self) -> None:
        """What a replica does before it consumes: the indexes, then any snapshots still in
        the layout before this one brought into their audits' documents, and audits
        committed before their documents listed their patterns given the list."""
        await self.ensure_indexes()
        await self.migrate_snapshots()
        await self.list_patterns()

    async def list_patterns(self) -> int:
        """Gives every audit committed before audits' documents listed the themes that are
        patterns in it (they were read from its snapshots' document, whose every read decodes
        every snapshot of the audit on FerretDB) that list, taken from its snapshots; returns
        how many audits it gave one. Idempotent, and safe beside replicas committing: only an
        audit that has no list yet is given one, and a commit always writes its own. Then
        drops the snapshots' index on the list they no longer keep."""
        missing = await self._audits.find(
            {"rev": {"$gte": 1}, "patterns": {"$exists": False}}, {"_id": 1}
        ).to_list()
        listed = 0
        for audit_ids in chunked([doc["_id"] for doc in missing]):
            docs = await self._snapshots.find(any_of("_id", audit_ids)).to_list()
            for doc in docs:
                result = await self._audits.update_one(
                    {"_id": doc["_id"], "patterns": {"$exists": False}},
                    {"$set": {"patterns": _patterns(doc)}},
                )
                listed += result.modified_count
        held = {index["name"] async for index in await self._snapshots.list_indexes()}
        if "patterns_1" in held:
            await self._snapshots.drop_index("patterns_1")
        if listed:
            log.info("patterns listed in audits", audits=listed)
        return listed

    async def migrate_snapshots(self) -> int:
        """Moves snapshots stored a document per audit and theme (the layout before this one:
        `_id` `{audit_id}/{theme}`, with `audit_id` and `theme` fields) into their audits'
        documents, versions, acknowledgements and pattern counters kept; returns how many it
        moved. Idempotent, and safe beside replicas doing the same: an audit's document is
        inserted whole, and its old documents deleted only once it exists. Every replica
        must run this version: one of the old would go on writing the old layout.

        Only a store that has the old layout's indexes is searched (that search reads the
        whole collection on FerretDB); they are dropped once the documents are moved."""
        held = {index["name"] async for index in await self._snapshots.list_indexes()}
        old_indexes = sorted(held & {"audit_id_1", "theme_1_is_pattern_1"})
        if not old_indexes:
            return 0
        moved = 0
        old = await self._snapshots.find({"theme": {"$exists": True}}).to_list()
        by_audit: dict[str, list[Document]] = {}
        for doc in old:
            by_audit.setdefault(doc["audit_id"], []).append(doc)
        for audit_id, docs in sorted(by_audit.items()):
            by_theme = {
                theme_field(doc["theme"]): {
                    "content": doc["content"],
                    "version": doc["version"],
                    "computed_at": doc["computed_at"],
                    "caused_by": doc.get("caused_by", []),
                    "pattern_changes": doc.get("pattern_changes", 0),
                    "propagated_changes": doc.get("propagated_changes", 0),
                }
                for doc in docs
            }
            with contextlib.suppress(DuplicateKeyError):
                # Another replica moved them first.
                await self._snapshots.insert_one(
                    {
                        "_id": audit_id,
                        "rev": max(doc.get("rev", 0) for doc in docs) + 1,
                        "themes": sorted(doc["theme"] for doc in docs),
                        "by_theme": by_theme,
                    }
                )
            await self._snapshots.delete_many(any_of("_id", [doc["_id"] for doc in docs]))
            moved += len(docs)
        for name in old_indexes:
            await self._snapshots.drop_index(name)
        if moved:
            log.info(
                "snapshots moved to one document per audit",
                snapshots_moved=moved,
                audits=len(by_audit),
            )
        return moved

    # --- reviews -------------------------------------------------------------------------

    async def review_file(self, audit_id: str) -> ReviewFile:
        """An audit's stored reviews (tens of cases, a handful of agencies), in one query."""
        docs = await self._reviews.find({"audit_id": audit_id}).to_list()
        return ReviewFile.of(docs)

    async def revisions(self, reviews: Iterable[CurrentReview]) -> dict[str, int]:
        """The stored revision of each of these reviews that is stored at all."""
        files = await self._files({r.audit_id for r in reviews})
        current = {k: r for f in files.values() for k, r in f.current.items()}
        return {r.key: current[r.key].revision for r in reviews if r.key in current}

    async def _files(self, audit_ids: Collection[str]) -> dict[str, ReviewFile]:
        found = await asyncio.gather(*(self.review_file(a) for a in sorted(audit_ids)))
        return dict(zip(sorted(audit_ids), found, strict=True))

    async def write_reviews(
        self, reviews: Sequence[CurrentReview], files: Mapping[str, ReviewFile]
    ) -> set[str]:
        """Stores these reviews (each a higher revision than `files`, the audits' stored
        reviews as the caller read them, hold for its key); returns the event ids that are
        now the current ones.

        Each revision is a document of its own, and the highest one stored is the current
        review, so storing one is an insert, which no concurrent writer can make wrong (on
        FerretDB an insert is one statement for the whole batch, where a conditional update
        is a query and a write per review). The revisions they supersede are deleted after, in
        one command per audit: until then, or if that never happens, readers skip them.
        """
        if not reviews:
            return set()
        clean = True
        # A command per `REVIEWS_PER_INSERT`, one after another: each chunk's documents and
        # their BSON exist only while it is sent, where a backlog's batch of ten thousand at
        # once was the largest thing themes held (docs/performance.md).
        for chunk in chunked(reviews, REVIEWS_PER_INSERT):
            ops: list[InsertOne[Document] | UpdateOne] = [
                InsertOne(review_document(r)) for r in chunk
            ]
            clean = await write_all(self._reviews, ops) == len(ops) and clean
        if not clean:
            # That revision of one of them was stored already (a redelivery, or another
            # writer's): each one the store still lacks is stored on its own.
            await self._settle_reviews(reviews)
        # Now every review's revision is stored, so each document the files name below it is
        # superseded.
        superseded = grouped(
            (audit_id, doc_id)
            for audit_id, file in files.items()
            for doc_id in file.superseded_by(reviews)
        )
        await asyncio.gather(
            *(
                self._reviews.delete_many({"audit_id": audit_id, **any_of("_id", ids)})
                for audit_id, ids in superseded.items()
            )
        )
        if clean:
            return {r.event_id for r in reviews}
        found = await self._files({r.audit_id for r in reviews})
        current = {r.event_id for f in found.values() for r in f.current.values()}
        return {r.event_id for r in reviews if r.event_id in current}

    async def _settle_reviews(self, reviews: Sequence[CurrentReview]) -> None:
        found = await self._files({r.audit_id for r in reviews})
        for review in reviews:
            held = found[review.audit_id].current.get(review.key)
            if held is None or held.revision < review.revision:
                # DuplicateKeyError: another writer stored this very revision meanwhile.
                with contextlib.suppress(DuplicateKeyError):
                    await self._reviews.insert_one(review_document(review))

    # --- audits --------------------------------------------------------------------------

    async def note_codes(self, codes_by_audit: Mapping[str, Collection[str]]) -> None:
        """Adds codes to the audits' sets of codes ever seen, creating audits as needed."""
        await asyncio.gather(
            *(self._note_codes(audit_id, codes) for audit_id, codes in codes_by_audit.items())
        )

    async def _note_codes(self, audit_id: str, codes: Collection[str]) -> None:
        update = {
            "$addToSet": {"codes": {"$each": sorted(codes)}},
            "$setOnInsert": {"rev": 0, "lease": None},
        }
        try:
            await self._audits.update_one({"_id": audit_id}, update, upsert=True)
        except DuplicateKeyError:
            # Two replicas upserted the new audit at once; now it exists, so this one updates.
            await self._audits.update_one({"_id": audit_id}, update, upsert=True)

    async def audit(self, audit_id: str) -> AuditRecord | None:
        """One audit, if any review of it has arrived."""
        doc = await self._audits.find_one({"_id": audit_id})
        return _audit_record(doc) if doc is not None else None

    async def audits_by_id(self, audit_ids: Collection[str]) -> dict[str, AuditRecord]:
        """These audits by id, in one query; those no review has created yet are left out."""
        if not audit_ids:
            return {}
        cursor = self._audits.find(any_of("_id", audit_ids))
        return {doc["_id"]: _audit_record(doc) async for doc in cursor}

    async def audits(self) -> list[AuditRecord]:
        """Every audit whose summary has been computed, by id."""
        cursor = self._audits.find({"rev": {"$gte": 1}}).sort("_id", ASCENDING)
        return [_audit_record(doc) async for doc in cursor]

    async def commit_audit(
        self,
        record: AuditRecord,
        summary: AuditSummary,
        now: datetime,
        changed: bool,
        patterns: Collection[str],
    ) -> bool:
        """Writes the summary, and the themes that are patterns in the snapshots the same
        recompute committed just before (what `pattern_audits` reads), if nobody committed
        the audit since `record` was read."""
        update: dict[str, Any] = {
            "$set": {
                **summary.model_dump(mode="json", exclude={"audit_id"}),
                "patterns": sorted(patterns),
            },
            "$inc": {"rev": 1},
        }
        if changed:
            update["$max"] = {"updated_at": now}
        result = await self._audits.update_one({"_id": record.audit_id, "rev": record.rev}, update)
        return result.matched_count == 1

    async def touch_audit(self, audit_id: str, now: datetime) -> None:
        """Records that one of the audit's snapshots changed at `now`."""
        await self._audits.update_one({"_id": audit_id}, {"$max": {"updated_at": now}})

    async def touch_audits(self, audit_ids: Collection[str], now: datetime) -> None:
        """Records that a snapshot of each of these audits changed at `now`."""
        if audit_ids:
            await self._audits.update_many(
                {"_id": {"$in": sorted(audit_ids)}}, {"$max": {"updated_at": now}}
            )

    async def pattern_counts(self) -> dict[str, int]:
        """Patterns per audit (audits with none left out)."""
        cursor = self._audits.find({"patterns.0": {"$exists": True}}, {"patterns": 1})
        return {doc["_id"]: len(doc["patterns"]) async for doc in cursor}

    # --- snapshots -----------------------------------------------------------------------

    async def snapshots(self, audit_id: str) -> dict[str, StoredSnapshot]:
        """Every snapshot of an audit by theme."""
        return (await self.snapshots_of([audit_id]))[audit_id]

    async def snapshots_of(
        self, audit_ids: Collection[str]
    ) -> dict[str, dict[str, StoredSnapshot]]:
        """Every snapshot of each of these audits, by audit and theme, read together."""
        held: dict[str, dict[str, StoredSnapshot]] = {a: {} for a in audit_ids}
        for s in await self._read_snapshots(dict.fromkeys(audit_ids)):
            held[s.snapshot.content.audit_id][s.snapshot.content.theme] = s
        return held

    async def snapshots_by_key(self, keys: Collection[str]) -> dict[str, StoredSnapshot]:
        """These snapshots by `{audit_id}/{theme}`; absent keys are left out."""
        wanted: dict[str, set[str]] = {}
        for key in keys:
            wanted.setdefault(audit_of(key), set()).add(theme_of(key))
        found = await self._read_snapshots(wanted)
        return {s.key: s for s in found}

    async def snapshot(self, key: str) -> StoredSnapshot | None:
        """One snapshot by `{audit_id}/{theme}`."""
        return (await self.snapshots_by_key([key])).get(key)

    async def _read_snapshots(
        self, wanted: Mapping[str, Collection[str] | None], published: Published | None = None
    ) -> list[StoredSnapshot]:
        # The snapshots (all of each audit's, or the themes given) are read before the
        # versions acknowledged, so a snapshot is never taken as published when it was not.
        if not wanted:
            return []
        docs = await self._snapshots.find(any_of("_id", wanted)).to_list()
        if published is None:
            published = await self._published(wanted)
        return [s for doc in docs for s in _stored_snapshots(doc, published, wanted[doc["_id"]])]

    async def _published(self, audit_ids: Collection[str]) -> dict[str, dict[str, int]]:
        if not audit_ids:
            return {}
        cursor = self._audits.find(any_of("_id", audit_ids), {"published": 1})
        return {doc["_id"]: dict(doc.get("published", {})) async for doc in cursor}

    async def pattern_audits(self, themes: Iterable[str]) -> dict[str, set[str]]:
        """For each theme, the audits where it is a pattern as of their latest recompute.

        Read from the audits' documents, not from their snapshots' (which are larger by far,
        and each read in full on FerretDB). An audit's list is written by `commit_audit`
        after its snapshots, so it may lag them; but the flips it lags by are not carried
        into other audits yet either: that happens only after both commits, and a recompute
        redone (a lost `commit_audit`, a redelivery after a crash) writes the list again
        before the flips it carries.
        """
        found: dict[str, set[str]] = {}
        wanted = set(themes)
        if not wanted:
            return found
        cursor = self._audits.find(any_of("patterns", wanted), {"patterns": 1})
        async for doc in cursor:
            for theme in wanted.intersection(doc["patterns"]):
                found.setdefault(theme, set()).add(doc["_id"])
        return found

    async def theme_snapshots(self, themes: Collection[str]) -> list[StoredSnapshot]:
        """These themes' snapshots in every audit that has any of them, in one query."""
        if not themes:
            return []
        docs = await self._snapshots.find(any_of("themes", themes)).to_list()
        published = await self._published({doc["_id"] for doc in docs})
        return [s for doc in docs for s in _stored_snapshots(doc, published, themes)]

    async def commit_snapshots(
        self, commits: Sequence[SnapshotCommit], *, complete: bool = False
    ) -> bool:
        """Commits these recomputes, one write per audit (all its commits or none), the writes
        together; False when another writer committed to any of the audits since its
        snapshots were read (the others may then be committed or not: the caller redoes the
        whole recompute, which overwrites them).

        `complete`: the commits are every snapshot of each of their audits, as a recompute of
        the audit makes (only those create snapshots or change `is_pattern`). Unchanged
        snapshots still move the audit's `rev`: a writer that read them before and its inputs
        earlier still must not overwrite the newer picture.
        """
        by_audit: dict[str, list[SnapshotCommit]] = {}
        for commit in commits:
            by_audit.setdefault(commit[2].audit_id, []).append(commit)
        ops = [_audit_write(a, cs, complete) for a, cs in sorted(by_audit.items())]
        writes = [op for op in ops if op is not None]
        # A duplicate `_id` (None) means another writer created the audit's document.
        return len(writes) == len(ops) and await write_all(self._snapshots, writes) == len(ops)

    async def claim_audits(
        self, audit_ids: Collection[str], holder: str, now: datetime, until: datetime
    ) -> dict[str, dict[str, int]]:
        """Takes the right to publish the snapshots of each of these audits that nobody holds
        (or whose holder's lease ran out), with one command; returns, for the audits taken,
        the version of each theme the broker acknowledged (by theme)."""
        if not audit_ids:
            return {}
        await self._audits.update_many(
            {**any_of("_id", audit_ids), "$or": [{"lease": None}, {"lease_until": {"$lt": now}}]},
            {"$set": {"lease": holder, "lease_until": until}},
        )
        # The holder is this call's own, so its lease names exactly the audits it took, and
        # while it holds them nobody else moves their acknowledged versions.
        cursor = self._audits.find({"lease": holder}, {"published": 1})
        return {doc["_id"]: dict(doc.get("published", {})) async for doc in cursor}

    async def claim_publish(
        self, audit_ids: Collection[str], holder: str, now: datetime, until: datetime
    ) -> dict[str, list[StoredSnapshot]]:
        """`claim_audits`, returning for the audits taken their snapshots as they are at that
        moment."""
        published = await self.claim_audits(audit_ids, holder, now, until)
        claimed: dict[str, list[StoredSnapshot]] = {a: [] for a in published}
        for s in await self._read_snapshots(dict.fromkeys(published), published):
            claimed[s.snapshot.content.audit_id].append(s)
        return claimed

    async def release_publish(
        self, audit_ids: Collection[str], holder: str, published: Mapping[str, int]
    ) -> set[str]:
        """Gives the right back for these audits, recording the versions the broker
        acknowledged (`published`, by snapshot key), in bulk writes; returns the audits whose
        lease may have run out and been taken over (nothing was recorded for those)."""
        acknowledged: dict[str, dict[str, int]] = {a: {} for a in audit_ids}
        for key, version in published.items():
            field = f"published.{theme_field(theme_of(key))}"
            acknowledged.setdefault(audit_of(key), {})[field] = version
        updates: list[tuple[str, dict[str, Any]]] = []
        for audit_id, versions in sorted(acknowledged.items()):
            update: dict[str, Any] = {"$set": {"lease": None}}
            if versions:
                update["$max"] = versions
            updates.append((audit_id, update))
        ops = [UpdateOne({"_id": a, "lease": holder}, u) for a, u in updates]
        # A bulk write does not say which audit it missed; a lease running out under a live
        # holder is rare, so then all of them are reported.
        released = await write_all(self._audits, ops)
        return set() if released == len(ops) else {a for a, _ in updates}

    async def mark_propagated(self, sources: Sequence[StoredSnapshot]) -> None:
        """Records that other audits' `recurring_in` reflects these snapshots' pattern flips
        (as many as each had when read), in bulk writes."""
        marks: dict[str, dict[str, int]] = {}
        for s in sources:
            field = f"by_theme.{theme_field(s.snapshot.content.theme)}.propagated_changes"
            marks.setdefault(s.snapshot.content.audit_id, {})[field] = s.pattern_changes
        # Not conditional, and `rev` does not move: no other write sets these fields.
        ops = [UpdateOne({"_id": a}, {"$max": m}) for a, m in sorted(marks.items())]
        await write_all(self._snapshots, ops)
