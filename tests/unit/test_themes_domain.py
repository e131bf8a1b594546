"""Themes' rules: descriptors, patterns, medians, withdrawal by revision, versions, cohort."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from services.themes.domain import (
    CurrentReview,
    Fact,
    Thresholds,
    apply_review,
    audit_summary,
    descriptor,
    median,
    revise,
    theme_content,
    theme_contents,
    winners,
    with_recurring,
)
from shared.contracts import Descriptor
from shared.taxonomy import default_taxonomy
from tests.support.contracts import errors

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TAXONOMY = default_taxonomy()
DEFAULTS = Thresholds()


def token(case: str) -> str:
    return hashlib.sha256(case.encode()).hexdigest()


def review(
    case: str,
    agency: str = "csc",
    *findings: Fact | str,
    revision: int = 1,
    audit: str = "a1",
    agency_type: str = "childrens_social_care",
    legal_status: str = "child_in_need",
    age_band: str = "10-15",
    title: str | None = None,
    minutes: int = 0,
) -> CurrentReview:
    return CurrentReview(
        event_id=f"{audit}-{agency}-{case}-{revision}",
        audit_id=audit,
        audit_title=title,
        agency_id=agency,
        agency_type=agency_type,
        case_token=token(case),
        age_band=age_band,
        legal_status=legal_status,
        revision=revision,
        submitted_at=T0 + timedelta(minutes=minutes),
        findings=tuple(f if isinstance(f, Fact) else Fact(f) for f in findings),
    )


def current(*reviews: CurrentReview) -> list[CurrentReview]:
    folded: Mapping[str, CurrentReview] = {}
    for r in reviews:
        folded = apply_review(folded, r)
    return list(folded.values())


def content_of(
    reviews: Sequence[CurrentReview],
    theme: str,
    thresholds: Thresholds = DEFAULTS,
    patterns: Sequence[str] = (),
) -> dict[str, object]:
    return theme_content(
        "a1", theme, reviews, taxonomy=TAXONOMY, thresholds=thresholds, pattern_audits=patterns
    ).model_dump(mode="json")


@pytest.mark.parametrize(
    ("with_theme", "total", "expected"),
    [
        (0, 0, Descriptor.NONE),
        (0, 10, Descriptor.NONE),
        (1, 1, Descriptor.ALL),
        (10, 10, Descriptor.ALL),
        (99, 100, Descriptor.ALMOST_ALL),
        (80, 100, Descriptor.ALMOST_ALL),
        (79, 100, Descriptor.MOST),
        (4, 5, Descriptor.ALMOST_ALL),
        (50, 100, Descriptor.MOST),
        (1, 2, Descriptor.MOST),
        (49, 100, Descriptor.SOME),
        (25, 100, Descriptor.SOME),
        (1, 4, Descriptor.SOME),
        (24, 100, Descriptor.FEW),
        (1, 100, Descriptor.FEW),
    ],
)
def test_descriptor_boundaries(with_theme: int, total: int, expected: Descriptor) -> None:
    assert descriptor(with_theme, total) is expected


def test_a_pattern_needs_enough_cases_and_enough_agencies() -> None:
    one_agency_two_cases = current(review("c1", "csc", "neglect"), review("c2", "csc", "neglect"))
    two_agencies_one_case = current(
        review("c1", "csc", "neglect"), review("c1", "police", "neglect", agency_type="police")
    )
    two_and_two = current(
        review("c1", "csc", "neglect"), review("c2", "police", "neglect", agency_type="police")
    )
    assert content_of(one_agency_two_cases, "neglect")["is_pattern"] is False
    assert content_of(two_agencies_one_case, "neglect")["is_pattern"] is False
    assert content_of(two_and_two, "neglect")["is_pattern"] is True
    assert content_of(two_and_two, "neglect", Thresholds(min_cases=3))["is_pattern"] is False
    assert content_of(two_and_two, "neglect", Thresholds(min_agencies=3))["is_pattern"] is False


def test_counts_agencies_types_and_prevalence() -> None:
    reviews = current(
        review("c1", "csc", "domestic_abuse"),
        review("c1", "police", "domestic_abuse", agency_type="police"),
        review("c2", "gp1", "domestic_abuse", agency_type="gp"),
        review("c3", "csc"),
    )
    got = content_of(reviews, "domestic_abuse", patterns=["a1", "b2", "a0"])
    assert got == {
        "audit_id": "a1",
        "theme": "domestic_abuse",
        "category": "risk_factor",
        "cases_total": 3,
        "cases_with_theme": 2,
        "agencies": ["csc", "gp1", "police"],
        "agency_types": ["childrens_social_care", "gp", "police"],
        "prevalence": 0.6667,
        "descriptor": "most",
        "is_pattern": True,
        "small_sample": True,
        "recurring_in": ["a0", "b2"],
        "median_waited_days": None,
    }


def test_a_review_with_no_findings_counts_its_case() -> None:
    reviews = current(review("c1", "csc", "neglect"), review("c2", "csc"), review("c3", "csc"))
    got = content_of(reviews, "neglect")
    assert (got["cases_total"], got["cases_with_theme"], got["prevalence"]) == (3, 1, 0.3333)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([7], 7.0), ([1, 5], 3.0), ([10, 1, 2], 2.0), ([1, 2, 3, 40], 2.5)],
)
def test_median(values: list[int], expected: float | None) -> None:
    assert median(values) == expected


def test_median_waited_days_only_for_waiting_themes_and_findings_that_carry_it() -> None:
    reviews = current(
        review("c1", "camhs", Fact("mh_intervention_delayed", 90), agency_type="camhs"),
        review("c2", "camhs", Fact("mh_intervention_delayed", 30), agency_type="camhs"),
        review("c3", "csc", Fact("mh_intervention_delayed")),
        review("c4", "csc", Fact("neglect", 12)),
    )
    assert content_of(reviews, "mh_intervention_delayed")["median_waited_days"] == 60.0
    assert content_of(reviews, "neglect")["median_waited_days"] is None
    untimed = current(review("c1", "csc", Fact("mh_intervention_timely")))
    assert content_of(untimed, "mh_intervention_timely")["median_waited_days"] is None


def test_a_finding_dropped_in_a_later_revision_is_withdrawn() -> None:
    first = review("c1", "csc", "young_carer", "neglect", revision=1)
    second = review("c1", "csc", "neglect", revision=2)
    assert content_of(current(first, second), "young_carer")["descriptor"] == "none"
    # Arriving late, the older revision changes nothing.
    late = current(second, first)
    assert content_of(late, "young_carer")["cases_with_theme"] == 0
    assert content_of(late, "neglect")["cases_with_theme"] == 1


def test_an_equal_revision_is_ignored() -> None:
    kept = review("c1", "csc", "neglect", revision=2)
    again = review("c1", "csc", "young_carer", revision=2)
    assert current(kept, again) == [kept]


def test_winners_keep_the_highest_revision_per_key_above_what_is_stored() -> None:
    r1 = review("c1", "csc", revision=1)
    r3 = review("c1", "csc", revision=3)
    other = review("c2", "csc", revision=1)
    assert winners([r3, r1, other, r3], {}) == [r3, other]
    assert winners([r1, r3, other], {r3.key: 3, other.key: 0}) == [other]


def test_small_sample_below_ten_cases() -> None:
    nine = current(*(review(f"c{i}", "csc", "neglect") for i in range(9)))
    ten = current(*(review(f"c{i}", "csc", "neglect") for i in range(10)))
    assert content_of(nine, "neglect")["small_sample"] is True
    assert content_of(ten, "neglect")["small_sample"] is False
    assert content_of(ten, "neglect")["descriptor"] == "all"


def test_every_seen_theme_gets_content_unknown_codes_none() -> None:
    reviews = current(review("c1", "csc", "neglect"))
    got = theme_contents(
        "a1",
        reviews,
        ["neglect", "young_carer", "not_a_code"],
        taxonomy=TAXONOMY,
        thresholds=Thresholds(),
        patterns={},
    )
    assert sorted(got) == ["neglect", "young_carer"]
    assert got["young_carer"].descriptor is Descriptor.NONE


def test_versions_move_only_with_content() -> None:
    reviews = current(review("c1", "csc", "neglect"))
    content = theme_content(
        "a1", "neglect", reviews, taxonomy=TAXONOMY, thresholds=Thresholds(), pattern_audits=()
    )
    first = revise(None, content, T0)
    assert first is not None and first.version == 1
    assert revise(first, content, T0 + timedelta(hours=1)) is None
    moved = revise(first, with_recurring(content, ["b1"]), T0 + timedelta(hours=1))
    assert moved is not None and moved.version == 2
    assert moved.content.recurring_in == ("b1",)


def test_the_published_snapshot_matches_the_contract_schema() -> None:
    reviews = current(
        review("c1", "camhs", Fact("mh_intervention_delayed", 45), agency_type="camhs"),
        review("c2", "csc", "neglect"),
    )
    content = theme_content(
        "a1",
        "mh_intervention_delayed",
        reviews,
        taxonomy=TAXONOMY,
        thresholds=Thresholds(),
        pattern_audits=["b1"],
    )
    snapshot = revise(None, content, T0)
    assert snapshot is not None
    assert errors("theme-snapshot", snapshot.to_contract().to_json()) == []


def test_cohort_counts_distinct_cases_by_what_most_agencies_record() -> None:
    reviews = current(
        review("c1", "csc", legal_status="child_in_care", title="Old title", minutes=1),
        review("c1", "police", legal_status="child_in_care", agency_type="police"),
        review("c1", "gp1", legal_status="child_in_need", agency_type="gp"),
        review("c2", "csc", legal_status="child_in_need", age_band="16-17", title="New", minutes=5),
        review("c3", "csc", legal_status="child_protection_plan", age_band="16-17"),
        review("c3", "gp1", legal_status="child_in_need", age_band="16-17", agency_type="gp"),
    )
    summary = audit_summary("a1", reviews)
    assert summary.cases == 3
    assert summary.agencies == ("csc", "gp1", "police")
    # c3 is a tie between two statuses: the first in sort order counts.
    assert summary.legal_status == {"child_in_care": 1, "child_in_need": 2}
    assert summary.age_band == {"10-15": 1, "16-17": 2}
    assert summary.title == "New"
