"""The reference dataset: its expansion reproduces the audit's figures, deterministically."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.cli.dataset import (
    Submission,
    by_agency,
    expected_themes,
    interleaved,
    load_dataset,
    reviewed_cases,
)
from services.intake.domain import Admitted, Refused, assess
from shared.contracts import Category, RejectionReason
from shared.routing import default_routing
from shared.taxonomy import default_taxonomy

pytestmark = pytest.mark.unit

AUDIT = "paqa-2020-05-mental-health"
CSC, CAMHS, POLICE, EDUCATION = "county-csc", "county-camhs", "thames-police", "county-education"

# The audit's findings, as (cases of 6, agencies): what the pipeline must derive.
INTENDED = {
    "mh_intervention_timely": (4, {CAMHS, CSC}),
    "mh_intervention_delayed": (2, {CAMHS}),
    "domestic_abuse": (4, {POLICE, CSC}),
    "parental_mental_health": (2, {CSC, CAMHS}),
    "parental_mh_management_unclear": (2, {CSC, CAMHS}),
    "poor_school_attendance": (5, {EDUCATION, CSC, POLICE}),
    "no_school_engagement_plan": (5, {EDUCATION, CSC}),
    "large_sibling_group": (2, {CSC, EDUCATION}),
    "child_needs_overshadowed": (2, {CSC, CAMHS}),
    "health_absent_from_strategy_discussion": (2, {CSC, POLICE}),
    "not_signposted_to_support": (2, {CSC, EDUCATION}),
    "young_carer": (1, {CSC}),
    "child_of_offender": (1, {POLICE}),
    "child_voice_recorded": (5, {CAMHS, CSC}),
    "effective_interagency_communication": (4, {CSC, CAMHS, POLICE}),
    "think_family_approach": (3, {CSC, CAMHS}),
}


def submissions() -> list[Submission]:
    return interleaved(by_agency(load_dataset()))


def descriptor(cases: int, total: int) -> str:
    share = cases / total
    if share == 1:
        return "all"
    if share >= 0.8:
        return "almost_all"
    if share >= 0.5:
        return "most"
    if share >= 0.25:
        return "some"
    return "few" if cases else "none"


def test_latest_revisions_give_the_audits_figures() -> None:
    figures = expected_themes(submissions())
    assert reviewed_cases(submissions()) == 6
    assert {code: (f.cases, set(f.agencies)) for code, f in figures.items()} == INTENDED


def test_descriptors_are_the_audits_words() -> None:
    figures = expected_themes(submissions())
    words = {code: descriptor(f.cases, 6) for code, f in figures.items()}
    assert words["mh_intervention_timely"] == "most"
    assert words["domestic_abuse"] == "most"
    assert words["poor_school_attendance"] == "almost_all"
    assert words["no_school_engagement_plan"] == "almost_all"
    assert words["child_voice_recorded"] == "almost_all"
    assert words["parental_mental_health"] == "some"
    assert words["young_carer"] == "few"


def test_patterns_route_to_exactly_the_four_sub_groups() -> None:
    taxonomy, routing = default_taxonomy(), default_routing()
    patterns = {
        code
        for code, f in expected_themes(submissions()).items()
        if f.cases >= 2 and len(f.agencies) >= 2
    }
    assert "mh_intervention_delayed" not in patterns  # one agency only
    assert not {"young_carer", "child_of_offender"} & patterns  # one case each
    groups = {routing.sub_group_for(code, taxonomy.category(code)) for code in patterns} - {None}
    assert groups == {
        "safeguarding_in_education",
        "domestic_abuse_operational_group",
        "business_group",
        "neglect_strategy_group",
    }
    good = {c for c in patterns if taxonomy.category(c) == Category.GOOD_PRACTICE}
    assert good == {
        "mh_intervention_timely",
        "child_voice_recorded",
        "effective_interagency_communication",
        "think_family_approach",
    }


def test_the_amendment_matters() -> None:
    all_of_them = submissions()
    amendments = [s for s in all_of_them if s.event.revision > 1]
    assert len(amendments) == 1
    (amendment,) = amendments
    assert amendment.agency_id == EDUCATION
    without = [s for s in all_of_them if s is not amendment]
    assert expected_themes(without)["poor_school_attendance"].cases == 4
    assert expected_themes(all_of_them)["poor_school_attendance"].cases == 5


def test_event_ids_are_deterministic_and_name_the_content() -> None:
    first, second = submissions(), submissions()
    assert [s.to_json() for s in first] == [s.to_json() for s in second]
    ids = [str(s.event.event_id) for s in first]
    # Exactly one event is sent twice, byte for byte, as a retrying agency system would.
    resent = {i for i in ids if ids.count(i) > 1}
    assert len(resent) == 1
    assert len(ids) == len(set(ids)) + 1
    twice = [s.to_json() for s in first if str(s.event.event_id) in resent]
    assert twice[0] == twice[1]


def test_each_agency_sends_in_its_own_order() -> None:
    per_agency = by_agency(load_dataset())
    assert set(per_agency) == {CSC, CAMHS, POLICE, EDUCATION}
    mixed = interleaved(per_agency)
    for agency, own in per_agency.items():
        assert [s for s in mixed if s.agency_id == agency] == own
    # Interleaved: no agency's events all come before another's.
    assert mixed[0].agency_id != mixed[1].agency_id


def test_intake_accepts_everything_except_the_bad_event() -> None:
    now = datetime(2020, 5, 11, 10, tzinfo=UTC)
    verdicts = [
        (s, assess(s.to_json(), taxonomy=default_taxonomy(), key=b"k" * 32, now=now))
        for s in submissions()
    ]
    refused = [(s, v) for s, v in verdicts if isinstance(v, Refused)]
    assert [v.reason for _, v in refused] == [RejectionReason.PERSONAL_DATA_IN_IDENTIFIER]
    assert refused[0][0].refused_for == RejectionReason.PERSONAL_DATA_IN_IDENTIFIER
    assert all(isinstance(v, Admitted) for s, v in verdicts if s.refused_for is None)


def test_keys_and_cohort() -> None:
    for submission in submissions():
        assert submission.key == f"{AUDIT}/{submission.event.case.ref}".encode()
        assert submission.event.audit_id == AUDIT
        assert submission.event.case.age_band == "10-15"
    statuses = {
        s.event.case.ref: s.event.case.legal_status for s in submissions() if s.refused_for is None
    }
    assert sorted(statuses) == ["C01", "C02", "C03", "C04", "C05", "C06"]
    assert sorted(statuses.values()).count("child_in_care") == 2
    assert set(statuses.values()) == {"child_in_need", "child_protection_plan", "child_in_care"}
