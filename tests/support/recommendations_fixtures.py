"""Recommendations test data: the reference audit's snapshots, built directly, and a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.contracts import Descriptor, ThemeSnapshotV1
from shared.taxonomy import default_taxonomy

AUDIT = "paqa-2020-05-mental-health"
CASES = 6

# theme: (cases with it, agencies reporting it), as the reference audit's findings read.
FIXTURE: dict[str, tuple[int, tuple[str, ...]]] = {
    "poor_school_attendance": (5, ("county-csc", "county-education", "thames-police")),
    "no_school_engagement_plan": (5, ("county-csc", "county-education")),
    "domestic_abuse": (4, ("county-csc", "county-camhs", "thames-police")),
    "parental_mental_health": (3, ("county-camhs", "county-csc")),
    "health_absent_from_strategy_discussion": (6, ("county-csc", "thames-police")),
    "child_needs_overshadowed": (3, ("county-csc", "county-education")),
    "large_sibling_group": (3, ("county-csc", "county-education")),
    "not_signposted_to_support": (2, ("county-camhs", "county-csc")),
    # Good practice: patterns too, but never routed.
    "mh_intervention_timely": (4, ("county-camhs", "county-csc", "county-gp")),
    "child_voice_recorded": (3, ("county-camhs", "county-csc")),
    "effective_interagency_communication": (5, ("county-camhs", "county-csc", "thames-police")),
    "think_family_approach": (3, ("county-csc", "county-education")),
    # One agency, one case: not a pattern.
    "young_carer": (1, ("county-csc",)),
}

EXPECTED_THEMES = {
    "safeguarding_in_education": ["no_school_engagement_plan", "poor_school_attendance"],
    "domestic_abuse_operational_group": ["domestic_abuse"],
    "business_group": ["health_absent_from_strategy_discussion", "parental_mental_health"],
    "neglect_strategy_group": [
        "child_needs_overshadowed",
        "large_sibling_group",
        "not_signposted_to_support",
    ],
}

_TYPES = {
    "county-csc": "childrens_social_care",
    "county-camhs": "camhs",
    "county-education": "education",
    "county-gp": "gp",
    "thames-police": "police",
}


def descriptor(cases: int, total: int) -> Descriptor:
    """Prevalence in the audit's words, as the contracts README defines them."""
    share = cases / total if total else 0.0
    if cases == 0:
        return Descriptor.NONE
    if share == 1:
        return Descriptor.ALL
    if share >= 0.8:
        return Descriptor.ALMOST_ALL
    if share >= 0.5:
        return Descriptor.MOST
    if share >= 0.25:
        return Descriptor.SOME
    return Descriptor.FEW


def snapshot(
    theme: str,
    cases: int,
    agencies: tuple[str, ...],
    *,
    total: int = CASES,
    version: int = 1,
    audit_id: str = AUDIT,
    is_pattern: bool | None = None,
) -> ThemeSnapshotV1:
    """A snapshot as themes would publish it; a pattern from two cases and two agencies."""
    return ThemeSnapshotV1(
        audit_id=audit_id,
        theme=theme,
        category=default_taxonomy().category(theme),
        cases_total=total,
        cases_with_theme=cases,
        agencies=sorted(agencies),
        agency_types=sorted({_TYPES.get(a, "other") for a in agencies}),
        prevalence=round(cases / total, 4) if total else 0.0,
        descriptor=descriptor(cases, total),
        is_pattern=(cases >= 2 and len(agencies) >= 2) if is_pattern is None else is_pattern,
        small_sample=total < 10,
        recurring_in=[],
        version=version,
        computed_at=datetime(2020, 5, 11, 10, 2, 11, tzinfo=UTC),
    )


def fixture_snapshots(audit_id: str = AUDIT, version: int = 1) -> list[ThemeSnapshotV1]:
    """Every theme of the fixture audit at one version."""
    return [
        snapshot(theme, cases, agencies, audit_id=audit_id, version=version)
        for theme, (cases, agencies) in FIXTURE.items()
    ]


def record(snap: ThemeSnapshotV1) -> tuple[bytes, bytes]:
    """(key, value) as the themes topic carries a snapshot."""
    return f"{snap.audit_id}/{snap.theme}".encode(), snap.to_json()


class FakeClock:
    """A clock tests move by hand; every instance of a test shares one. `reads` counts the
    times it was read, so a test can wait for the service to have looked at it again."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now

    def advance(self, **delta: float) -> None:
        """Moves the clock on by a `timedelta`'s worth."""
        self.now += timedelta(**delta)
