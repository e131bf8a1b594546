"""Themes' rules: which review is current, and what each theme's snapshot says about an audit.

Pure: no I/O. The store applies `supersedes` as a conditional write; `apply_review` is the same
rule over an in-memory mapping. Snapshot contents are derived from the current reviews alone
(plus which other audits have the theme as a pattern), so a replay can never double count.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, reduce
from sys import intern

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Category, Descriptor, ReviewAcceptedV1, ThemeSnapshotV1
from shared.taxonomy import Taxonomy

SMALL_SAMPLE_BELOW = 10
PREVALENCE_DECIMALS = 4


@dataclass(frozen=True, slots=True)
class Fact:
    """One finding as themes keeps it: the code and the days waited, never the note."""

    code: str
    waited_days: int | None = None


@dataclass(frozen=True, slots=True)
class CurrentReview:
    """One agency's review of one case in one audit, as themes counts it."""

    event_id: str
    audit_id: str
    audit_title: str | None
    agency_id: str
    agency_type: str
    case_token: str
    age_band: str
    legal_status: str
    revision: int
    submitted_at: datetime
    findings: tuple[Fact, ...]

    @property
    def key(self) -> str:
        """The (audit, agency, case) this review is the state of."""
        return review_key(self.audit_id, self.agency_id, self.case_token)

    @classmethod
    def of(cls, review: ReviewAcceptedV1) -> CurrentReview:
        """What themes keeps of an accepted review; notes are not needed, so not kept."""
        return cls.shared(
            event_id=review.event_id,
            audit_id=review.audit_id,
            audit_title=review.audit_title,
            agency_id=review.agency_id,
            agency_type=review.agency_type.value,
            case_token=review.case_token,
            age_band=review.age_band,
            legal_status=review.legal_status,
            revision=review.revision,
            submitted_at=review.submitted_at,
            findings=[(f.code, f.waited_days) for f in review.findings],
        )

    @classmethod
    def shared(
        cls,
        *,
        event_id: str,
        audit_id: str,
        audit_title: str | None,
        agency_id: str,
        agency_type: str,
        case_token: str,
        age_band: str,
        legal_status: str,
        revision: int,
        submitted_at: datetime,
        findings: Iterable[tuple[str, int | None]],
    ) -> CurrentReview:
        """A review whose strings that recur across reviews (audit, agency, cohort, codes)
        are one object each: themes holds every review of the audits it recently recomputed
        (`services.themes.memo`), and these repeat in nearly all of them."""
        return cls(
            event_id=event_id,
            audit_id=intern(audit_id),
            audit_title=intern(audit_title) if audit_title is not None else None,
            agency_id=intern(agency_id),
            agency_type=intern(agency_type),
            case_token=case_token,
            age_band=intern(age_band),
            legal_status=intern(legal_status),
            revision=revision,
            # The contract's model takes a time without an offset; the store would give it
            # back as UTC, and a review's time is compared with others' (`audit_summary`).
            submitted_at=submitted_at
            if submitted_at.tzinfo is not None
            else submitted_at.replace(tzinfo=UTC),
            findings=tuple(_fact(code, days) for code, days in findings),
        )


@lru_cache(maxsize=4096)
def _fact(code: str, waited_days: int | None) -> Fact:
    # Codes and days waited repeat across nearly every review, so one object each: a review
    # holding its own was a third of what each cost in memory (`CurrentReview.shared`).
    return Fact(intern(code), waited_days)


def review_key(audit_id: str, agency_id: str, case_token: str) -> str:
    """Identifies one agency's review of one case in one audit."""
    return f"{audit_id}|{agency_id}|{case_token}"


def supersedes(revision: int, held: int | None) -> bool:
    """A review replaces the held one only with a strictly higher revision."""
    return held is None or revision > held


def apply_review(
    current: Mapping[str, CurrentReview], review: CurrentReview
) -> Mapping[str, CurrentReview]:
    """The current reviews once `review` has arrived; unchanged when it is stale or repeated."""
    held = current.get(review.key)
    if not supersedes(review.revision, held.revision if held is not None else None):
        return current
    return {**current, review.key: review}


def winners(
    reviews: Iterable[CurrentReview], stored_revisions: Mapping[str, int]
) -> list[CurrentReview]:
    """Per key, the one review of a batch worth writing: its highest revision, and only when
    that beats the revision the store holds."""
    empty: Mapping[str, CurrentReview] = {}
    latest = reduce(apply_review, reviews, empty)
    return [r for r in latest.values() if supersedes(r.revision, stored_revisions.get(r.key))]


@dataclass(frozen=True)
class Thresholds:
    """How much evidence makes a theme a pattern in an audit."""

    min_cases: int = 2
    min_agencies: int = 2


class ThemeContent(BaseModel):
    """Everything a theme snapshot says, except its version and when it was computed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    audit_id: str = Field(description="The audit.")
    theme: str = Field(description="The finding code counted.")
    category: Category = Field(description="The code's category.")
    cases_total: int = Field(ge=0, description="Distinct cases reviewed in the audit.")
    cases_with_theme: int = Field(ge=0, description="Distinct cases carrying the theme.")
    agencies: tuple[str, ...] = Field(description="Agency ids reporting it, sorted.")
    agency_types: tuple[str, ...] = Field(description="Agency types reporting it, sorted.")
    prevalence: float = Field(ge=0, le=1, description="cases_with_theme / cases_total.")
    descriptor: Descriptor = Field(description="Prevalence in the audit's own words.")
    is_pattern: bool = Field(description="Enough cases and agencies to be a pattern.")
    small_sample: bool = Field(description="Fewer than ten cases reviewed.")
    recurring_in: tuple[str, ...] = Field(description="Other audits where it is a pattern.")
    median_waited_days: float | None = Field(description="Median days waited, where tracked.")


class Snapshot(BaseModel):
    """A theme's content at one version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: ThemeContent = Field(description="What the snapshot says.")
    version: int = Field(ge=1, description="Rises by one whenever the content changes.")
    computed_at: datetime = Field(description="When this version was computed.")

    @property
    def key(self) -> str:
        """The snapshot's identity and partition key: `{audit_id}/{theme}`."""
        return snapshot_key(self.content.audit_id, self.content.theme)

    def to_contract(self) -> ThemeSnapshotV1:
        """The snapshot as published."""
        c = self.content
        return ThemeSnapshotV1(
            audit_id=c.audit_id,
            theme=c.theme,
            category=c.category,
            cases_total=c.cases_total,
            cases_with_theme=c.cases_with_theme,
            agencies=list(c.agencies),
            agency_types=list(c.agency_types),
            prevalence=c.prevalence,
            descriptor=c.descriptor,
            is_pattern=c.is_pattern,
            small_sample=c.small_sample,
            recurring_in=list(c.recurring_in),
            median_waited_days=c.median_waited_days,
            version=self.version,
            computed_at=self.computed_at,
        )


def snapshot_key(audit_id: str, theme: str) -> str:
    """Identifies one theme in one audit, as the contract keys it."""
    return f"{audit_id}/{theme}"


def audit_of(key: str) -> str:
    """The audit of a snapshot key (an audit id is a slug, so the first "/" ends it)."""
    return key.partition("/")[0]


def theme_of(key: str) -> str:
    """The theme of a snapshot key (what follows the audit's "/")."""
    return key.partition("/")[2]


def descriptor(cases_with_theme: int, cases_total: int) -> Descriptor:
    """The audit's wording for a prevalence; integer arithmetic so boundaries are exact."""
    if cases_total <= 0 or cases_with_theme <= 0:
        return Descriptor.NONE
    if cases_with_theme >= cases_total:
        return Descriptor.ALL
    if cases_with_theme * 5 >= cases_total * 4:
        return Descriptor.ALMOST_ALL
    if cases_with_theme * 2 >= cases_total:
        return Descriptor.MOST
    if cases_with_theme * 4 >= cases_total:
        return Descriptor.SOME
    return Descriptor.FEW


def median(values: Sequence[int]) -> float | None:
    """The median, or None when there is nothing to take it of."""
    return float(statistics.median(values)) if values else None


def recurring(audit_id: str, pattern_audits: Iterable[str]) -> tuple[str, ...]:
    """The other audits, sorted, among those where a theme is a pattern."""
    return tuple(sorted(set(pattern_audits) - {audit_id}))


def theme_content(
    audit_id: str,
    theme: str,
    reviews: Sequence[CurrentReview],
    *,
    taxonomy: Taxonomy,
    thresholds: Thresholds,
    pattern_audits: Iterable[str],
) -> ThemeContent:
    """One theme's content from the audit's current reviews (all of them: a review with no
    findings still counts its case) and the audits where the theme is a pattern."""
    mine = [r for r in reviews if r.audit_id == audit_id]
    return _content(
        audit_id,
        theme,
        len({r.case_token for r in mine}),
        _carriers(mine).get(theme, _Carriers()),
        taxonomy=taxonomy,
        thresholds=thresholds,
        pattern_audits=pattern_audits,
    )


@dataclass(slots=True)
class _Carriers:
    """The reviews carrying one code (each once, in order) and the days its findings waited."""

    reviews: list[CurrentReview] = field(default_factory=list)
    waited: list[int] = field(default_factory=list)


def _carriers(reviews: Iterable[CurrentReview]) -> dict[str, _Carriers]:
    """Every code's carriers among these reviews, in one pass over them: an audit's recompute
    needs them for each of its themes, and scanning every review once per theme was the
    largest part of themes' own CPU."""
    by_code: dict[str, _Carriers] = {}
    for review in reviews:
        for fact in review.findings:
            carriers = by_code.get(fact.code)
            if carriers is None:
                carriers = by_code[fact.code] = _Carriers()
            if not carriers.reviews or carriers.reviews[-1] is not review:
                carriers.reviews.append(review)
            if fact.waited_days is not None:
                carriers.waited.append(fact.waited_days)
    return by_code


def _content(
    audit_id: str,
    theme: str,
    cases_total: int,
    carriers: _Carriers,
    *,
    taxonomy: Taxonomy,
    thresholds: Thresholds,
    pattern_audits: Iterable[str],
) -> ThemeContent:
    code = taxonomy.codes[theme]
    carrying = carriers.reviews
    cases_with = len({r.case_token for r in carrying})
    agencies = tuple(sorted({r.agency_id for r in carrying}))
    return ThemeContent(
        audit_id=audit_id,
        theme=theme,
        category=code.category,
        cases_total=cases_total,
        cases_with_theme=cases_with,
        agencies=agencies,
        agency_types=tuple(sorted({r.agency_type for r in carrying})),
        prevalence=round(cases_with / cases_total, PREVALENCE_DECIMALS) if cases_total else 0.0,
        descriptor=descriptor(cases_with, cases_total),
        is_pattern=cases_with >= thresholds.min_cases and len(agencies) >= thresholds.min_agencies,
        small_sample=cases_total < SMALL_SAMPLE_BELOW,
        recurring_in=recurring(audit_id, pattern_audits),
        median_waited_days=median(carriers.waited) if code.waits else None,
    )


def themes_of(codes: Iterable[str], taxonomy: Taxonomy) -> list[str]:
    """The themes an audit has snapshots of: every known code any of its reviews carried."""
    return sorted({c for c in codes if c in taxonomy})


def theme_contents(
    audit_id: str,
    reviews: Sequence[CurrentReview],
    themes: Iterable[str],
    *,
    taxonomy: Taxonomy,
    thresholds: Thresholds,
    patterns: Mapping[str, Collection[str]],
) -> dict[str, ThemeContent]:
    """Every theme's content for one audit; `patterns` maps a theme to the audits where it is
    a pattern (the audit itself may be among them)."""
    mine = [r for r in reviews if r.audit_id == audit_id]
    cases_total = len({r.case_token for r in mine})
    carriers = _carriers(mine)
    return {
        theme: _content(
            audit_id,
            theme,
            cases_total,
            carriers.get(theme, _Carriers()),
            taxonomy=taxonomy,
            thresholds=thresholds,
            pattern_audits=patterns.get(theme, ()),
        )
        for theme in themes_of(themes, taxonomy)
    }


def with_recurring(content: ThemeContent, pattern_audits: Iterable[str]) -> ThemeContent:
    """The content with `recurring_in` brought up to date and nothing else changed."""
    return content.model_copy(update={"recurring_in": recurring(content.audit_id, pattern_audits)})


def revise(stored: Snapshot | None, content: ThemeContent, now: datetime) -> Snapshot | None:
    """The next version when the content changed; None when it did not, so nothing is
    published and no version number moves."""
    if stored is not None and stored.content == content:
        return None
    return Snapshot(
        content=content,
        version=stored.version + 1 if stored is not None else 1,
        computed_at=now,
    )


class AuditSummary(BaseModel):
    """What an audit is, for the read API and the briefing: no case tokens, only counts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    audit_id: str = Field(description="The audit.")
    title: str | None = Field(description="The title most recently sent with a review.")
    cases: int = Field(ge=0, description="Distinct cases reviewed.")
    agencies: tuple[str, ...] = Field(description="Agencies that reviewed any case, sorted.")
    legal_status: dict[str, int] = Field(description="Distinct cases by legal status.")
    age_band: dict[str, int] = Field(description="Distinct cases by age band.")


def _consensus(values: Sequence[str]) -> str:
    # Agencies may record a case differently; the value most of them give counts, and ties go
    # to the first in sort order so the answer never depends on arrival order.
    first = values[0]
    if all(v == first for v in values):
        # Nearly always: counting would make two Counters per case on every recompute.
        return first
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def audit_summary(audit_id: str, reviews: Sequence[CurrentReview]) -> AuditSummary:
    """The audit's cohort from its current reviews, one vote per agency per case."""
    mine = [r for r in reviews if r.audit_id == audit_id]
    by_case: dict[str, list[CurrentReview]] = {}
    for r in mine:
        by_case.setdefault(r.case_token, []).append(r)
    legal = Counter(_consensus([r.legal_status for r in rs]) for rs in by_case.values())
    ages = Counter(_consensus([r.age_band for r in rs]) for rs in by_case.values())
    titled = [r for r in mine if r.audit_title]
    latest = max(titled, key=lambda r: (r.submitted_at, r.event_id), default=None)
    return AuditSummary(
        audit_id=audit_id,
        title=latest.audit_title if latest is not None else None,
        cases=len(by_case),
        agencies=tuple(sorted({r.agency_id for r in mine})),
        legal_status=dict(sorted(legal.items())),
        age_band=dict(sorted(ages.items())),
    )
