"""Order, duplicates and stale revisions never change the picture: the domain against a
reference written here from the contract's words, not from the service's code."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.themes.domain import (
    CurrentReview,
    ThemeContent,
    Thresholds,
    apply_review,
    snapshot_key,
    theme_contents,
    winners,
)
from shared.contracts import AcceptedFinding, AgencyType, ReviewAcceptedV1
from shared.taxonomy import Taxonomy, default_taxonomy

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TAXONOMY = default_taxonomy()
AGENCIES = {
    "csc": AgencyType.CHILDRENS_SOCIAL_CARE,
    "camhs": AgencyType.CAMHS,
    "police": AgencyType.POLICE,
    "school": AgencyType.EDUCATION,
    "gp1": AgencyType.GP,
}
CODES = [
    "domestic_abuse",
    "neglect",
    "young_carer",
    "mh_intervention_delayed",
    "mh_intervention_timely",
    "child_voice_recorded",
]

Content = dict[str, Any]


def case_token(audit_id: str, case: str) -> str:
    """A stand-in for intake's keyed hash: 64 hex characters per (audit, case)."""
    return hashlib.sha256(f"{audit_id}/{case}".encode()).hexdigest()


def event(
    audit_id: str,
    agency_id: str,
    case: str,
    revision: int,
    findings: Sequence[tuple[str, int | None]],
    *,
    legal_status: str = "child_in_need",
    age_band: str = "10-15",
) -> ReviewAcceptedV1:
    """An accepted review as intake forwards it; one event id per (audit, agency, case,
    revision), as intake guarantees."""
    return ReviewAcceptedV1(
        event_id=hashlib.sha256(f"{audit_id}|{agency_id}|{case}|{revision}".encode()).hexdigest()[
            :32
        ],
        accepted_at=T0 + timedelta(minutes=revision),
        submitted_at=T0 + timedelta(minutes=revision),
        audit_id=audit_id,
        audit_title=f"Audit {audit_id}",
        agency_id=agency_id,
        agency_type=AGENCIES[agency_id],
        case_token=case_token(audit_id, case),
        age_band=age_band,  # type: ignore[arg-type]
        legal_status=legal_status,  # type: ignore[arg-type]
        revision=revision,
        findings=[
            AcceptedFinding(code=code, note="[redacted:date] seen at home", waited_days=days)
            for code, days in findings
        ],
    )


def _median(values: list[int]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _words(share: Fraction) -> str:
    if share == 0:
        return "none"
    if share == 1:
        return "all"
    for floor, word in ((Fraction(4, 5), "almost_all"), (Fraction(1, 2), "most")):
        if share >= floor:
            return word
    return "some" if share >= Fraction(1, 4) else "few"


def reference(
    events: Iterable[ReviewAcceptedV1],
    taxonomy: Taxonomy = TAXONOMY,
    min_cases: int = 2,
    min_agencies: int = 2,
) -> dict[str, Content]:
    """The snapshot contents a set of events must give, keyed `{audit}/{theme}`: the highest
    revision per (audit, agency, case) is that agency's view of the case; every code any event
    of an audit carried has a snapshot; then count."""
    latest: dict[tuple[str, str, str], ReviewAcceptedV1] = {}
    codes: dict[str, set[str]] = {}
    for e in events:
        codes.setdefault(e.audit_id, set()).update(f.code for f in e.findings)
        key = (e.audit_id, e.agency_id, e.case_token)
        if key not in latest or e.revision > latest[key].revision:
            latest[key] = e
    out: dict[str, Content] = {}
    for audit_id, seen in codes.items():
        reviews = [e for (a, _, _), e in latest.items() if a == audit_id]
        cases = {e.case_token for e in reviews}
        for theme in seen:
            carrying = [e for e in reviews if theme in {f.code for f in e.findings}]
            with_theme = {e.case_token for e in carrying}
            agencies = sorted({e.agency_id for e in carrying})
            share = Fraction(len(with_theme), len(cases)) if cases else Fraction(0)
            waited = [
                f.waited_days
                for e in carrying
                for f in e.findings
                if f.code == theme and f.waited_days is not None
            ]
            out[f"{audit_id}/{theme}"] = {
                "audit_id": audit_id,
                "theme": theme,
                "category": taxonomy.codes[theme].category.value,
                "cases_total": len(cases),
                "cases_with_theme": len(with_theme),
                "agencies": agencies,
                "agency_types": sorted({e.agency_type.value for e in carrying}),
                "prevalence": round(len(with_theme) / len(cases), 4) if cases else 0.0,
                "descriptor": _words(share),
                "is_pattern": len(with_theme) >= min_cases and len(agencies) >= min_agencies,
                "small_sample": len(cases) < 10,
                "median_waited_days": _median(waited) if taxonomy.codes[theme].waits else None,
            }
    for content in out.values():
        content["recurring_in"] = sorted(
            other["audit_id"]
            for other in out.values()
            if other["theme"] == content["theme"]
            and other["audit_id"] != content["audit_id"]
            and other["is_pattern"]
        )
    return out


def picture(
    current: Mapping[str, CurrentReview], codes: Mapping[str, set[str]]
) -> dict[str, Content]:
    """Every audit's snapshot contents through the domain, as the service recomputes them:
    patterns first, then recurrence from the other audits' patterns."""

    def contents(patterns: Mapping[str, set[str]]) -> dict[str, ThemeContent]:
        found: dict[str, ThemeContent] = {}
        for audit_id, seen in codes.items():
            reviews = [r for r in current.values() if r.audit_id == audit_id]
            for theme, content in theme_contents(
                audit_id,
                reviews,
                seen,
                taxonomy=TAXONOMY,
                thresholds=Thresholds(),
                patterns=patterns,
            ).items():
                found[snapshot_key(audit_id, theme)] = content
        return found

    patterns: dict[str, set[str]] = {}
    for content in contents({}).values():
        if content.is_pattern:
            patterns.setdefault(content.theme, set()).add(content.audit_id)
    return {key: c.model_dump(mode="json") for key, c in contents(patterns).items()}


def fold_one_by_one(delivered: Iterable[ReviewAcceptedV1]) -> dict[str, Content]:
    current: Mapping[str, CurrentReview] = {}
    codes: dict[str, set[str]] = {}
    for e in delivered:
        codes.setdefault(e.audit_id, set()).update(f.code for f in e.findings)
        current = apply_review(current, CurrentReview.of(e))
    return picture(current, codes)


def fold_in_batches(
    delivered: Sequence[ReviewAcceptedV1], cuts: Iterable[int]
) -> dict[str, Content]:
    """As the store sees it: per batch, only the winners above the stored revisions are written."""
    stored: dict[str, CurrentReview] = {}
    codes: dict[str, set[str]] = {}
    bounds = [0, *sorted(set(cuts)), len(delivered)]
    for start, end in itertools.pairwise(bounds):
        batch = [CurrentReview.of(e) for e in delivered[start:end]]
        for r in batch:
            codes.setdefault(r.audit_id, set()).update(f.code for f in r.findings)
        revisions = {key: r.revision for key, r in stored.items()}
        for r in winners(batch, revisions):
            stored[r.key] = r
    return picture(stored, codes)


findings_strategy = st.lists(
    st.tuples(st.sampled_from(CODES), st.one_of(st.none(), st.integers(0, 200))),
    max_size=4,
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[ReviewAcceptedV1], list[ReviewAcceptedV1]]:
    """A set of events (several revisions of some reviews) and one way Kafka might deliver it:
    any order, some events more than once."""
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a1", "a2", "a3"]),
                st.sampled_from(sorted(AGENCIES)),
                st.sampled_from(["c1", "c2", "c3", "c4", "c5"]),
            ),
            min_size=1,
            max_size=20,
            unique=True,
        )
    )
    events = [
        event(audit_id, agency_id, case, revision, draw(findings_strategy))
        for audit_id, agency_id, case in keys
        for revision in sorted(draw(st.sets(st.integers(1, 4), min_size=1, max_size=3)))
    ]
    duplicates = draw(st.lists(st.sampled_from(events), max_size=8))
    delivered = draw(st.permutations(events + duplicates))
    return events, delivered


@settings(max_examples=300, deadline=None)
@given(deliveries(), st.lists(st.integers(0, 40), max_size=6))
def test_any_delivery_gives_the_reference_picture(
    case: tuple[list[ReviewAcceptedV1], list[ReviewAcceptedV1]], cuts: list[int]
) -> None:
    events, delivered = case
    expected = reference(events)
    assert fold_one_by_one(delivered) == expected
    assert fold_in_batches(delivered, [c for c in cuts if c < len(delivered)]) == expected


def test_reference_counts_withdrawals_and_stale_arrivals() -> None:
    events = [
        event("a1", "csc", "c1", 1, [("neglect", None), ("young_carer", None)]),
        event("a1", "csc", "c1", 2, [("neglect", None)]),
        event("a1", "police", "c2", 1, [("neglect", None)]),
        event("a1", "camhs", "c3", 1, []),
        event("a2", "csc", "c1", 1, [("neglect", None)]),
        event("a2", "school", "c2", 1, [("neglect", None)]),
    ]
    expected = reference(events)
    assert expected["a1/young_carer"]["descriptor"] == "none"
    assert expected["a1/neglect"]["cases_with_theme"] == 2
    assert expected["a1/neglect"]["cases_total"] == 3
    assert expected["a1/neglect"]["recurring_in"] == ["a2"]
    assert expected["a2/neglect"]["recurring_in"] == ["a1"]
    shuffled = list(reversed(events)) + events[:2]
    random.Random(7).shuffle(shuffled)
    assert fold_one_by_one(shuffled) == expected
