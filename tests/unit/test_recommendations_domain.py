"""Recommendations' rules: routing, recommendation text, the action lifecycle, escalation."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.recommendations.domain import (
    OPEN,
    TRANSITIONS,
    Refused,
    Routed,
    ThemeState,
    action_id,
    change_status,
    escalate,
    evidence_text,
    is_overdue,
    may_change,
    may_read,
    reconcile,
    route,
    touched_themes,
)
from shared.contracts import ActionEvent, ActionStatus, ActionV1, Evidence
from shared.routing import default_routing
from shared.taxonomy import default_taxonomy
from tests.support.contracts import validator as contract_validator
from tests.support.infra import REPO
from tests.support.recommendations_fixtures import (
    AUDIT,
    EXPECTED_THEMES,
    FakeClock,
    fixture_snapshots,
    snapshot,
)

pytestmark = pytest.mark.unit

ROUTING = default_routing()
LABELS = {code: entry.label for code, entry in default_taxonomy().codes.items()}
T0 = datetime(2020, 5, 11, 10, 2, 12, tzinfo=UTC)
SCHEMA = REPO.parent / "shared" / "contracts" / "action.v1.schema.json"


def states(version: int = 1) -> list[ThemeState]:
    return [ThemeState.of(s, f"c-{s.theme}") for s in fixture_snapshots(version=version)]


def routed_now(group: str, version: int = 1) -> Routed:
    return route(AUDIT, states(version), ROUTING, LABELS)[group]


def first_action(group: str = "safeguarding_in_education") -> ActionV1:
    action = reconcile(None, routed_now(group), audit_id=AUDIT, sub_group=group, now=T0)
    assert action is not None
    return action


def wire(action: ActionV1) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(action.to_json())
    return message


# --- routing ------------------------------------------------------------------------------


def test_the_fixture_audit_routes_to_the_four_sub_groups() -> None:
    routed = route(AUDIT, states(), ROUTING, LABELS)
    assert {g: list(r.themes) for g, r in routed.items()} == EXPECTED_THEMES


def test_evidence_follows_the_rules_order_as_in_the_contract_example() -> None:
    routed = routed_now("safeguarding_in_education")
    assert [e.model_dump() for e in routed.evidence] == [
        {
            "theme": "poor_school_attendance",
            "cases_with_theme": 5,
            "cases_total": 6,
            "agency_count": 3,
            "descriptor": "almost_all",
        },
        {
            "theme": "no_school_engagement_plan",
            "cases_with_theme": 5,
            "cases_total": 6,
            "agency_count": 2,
            "descriptor": "almost_all",
        },
    ]


def test_good_practice_and_non_patterns_are_never_routed() -> None:
    routed = route(AUDIT, states(), ROUTING, LABELS)
    themes = {t for r in routed.values() for t in r.themes}
    assert not themes & {
        "mh_intervention_timely",
        "child_voice_recorded",
        "effective_interagency_communication",
        "think_family_approach",
        "young_carer",
    }


def test_a_pattern_no_rule_routes_goes_to_the_business_group() -> None:
    extra = ThemeState.of(
        snapshot("mh_intervention_delayed", 2, ("county-camhs", "county-csc")), "c"
    )
    routed = route(AUDIT, [*states(), extra], ROUTING, LABELS)
    assert routed["business_group"].themes == (
        "health_absent_from_strategy_discussion",
        "mh_intervention_delayed",
        "parental_mental_health",
    )
    # Ruled themes first, in the rules' order; the catch-all's after them.
    assert [e.theme for e in routed["business_group"].evidence] == [
        "parental_mental_health",
        "health_absent_from_strategy_discussion",
        "mh_intervention_delayed",
    ]


def test_other_audits_snapshots_are_not_mixed_in() -> None:
    other = ThemeState.of(
        snapshot("neglect", 3, ("county-csc", "county-gp"), audit_id="other-audit"), "c"
    )
    routed = route(AUDIT, [*states(), other], ROUTING, LABELS)
    assert "neglect" not in routed["neglect_strategy_group"].themes


# --- recommendation text ------------------------------------------------------------------


def test_recommendation_uses_the_audits_wording_and_the_evidence() -> None:
    text = routed_now("safeguarding_in_education").recommendation
    assert text.startswith(
        "Reinforce the message that clear planning is needed to get children back into school"
    )
    assert "poor school attendance in 5 of 6 cases (almost all), reported by 3 agencies" in text
    assert (
        "no clear plan to re-engage the child in school or alternative provision in 5 of 6 cases "
        "(almost all), reported by 2 agencies" in text
    )
    assert text.endswith(
        "Findings come from a small sample of 6 cases and are presented with that caveat."
    )
    assert "  " not in text
    assert "{" not in text


def test_every_sub_group_gets_its_own_text() -> None:
    routed = route(AUDIT, states(), ROUTING, LABELS)
    assert (
        "domestic abuse is a feature" in routed["domestic_abuse_operational_group"].recommendation
    )
    assert "parental mental ill health" in routed["business_group"].recommendation
    assert "needs of each child within the family" in (
        routed["neglect_strategy_group"].recommendation
    )


def test_no_sample_caveat_from_ten_cases_and_singulars_read_right() -> None:
    big = [
        ThemeState.of(snapshot("domestic_abuse", 10, ("a-1", "b-2"), total=12), "c"),
    ]
    text = route(AUDIT, big, ROUTING, LABELS)["domestic_abuse_operational_group"].recommendation
    assert "small sample" not in text
    assert "in 10 of 12 cases (almost all), reported by 2 agencies" in text
    one = Evidence(
        theme="neglect", cases_with_theme=1, cases_total=1, agency_count=1, descriptor="all"
    )
    assert evidence_text(one, "Neglect") == "neglect in 1 of 1 case (all), reported by 1 agency"


# --- routed / updated / withdrawn --------------------------------------------------------


def test_first_routing_matches_the_contract_example() -> None:
    action = first_action()
    message = wire(action)
    if not SCHEMA.is_file():
        pytest.skip(f"the reference contracts folder {SCHEMA.parent} is not beside this clone")
    example = json.loads((SCHEMA.parent / "examples" / "action.valid.json").read_text())
    same = ("event", "action_id", "audit_id", "sub_group", "themes", "evidence", "status")
    assert {k: message[k] for k in same} == {k: example[k] for k in same}
    assert message["due_by"] == "2020-07-06"  # 56 days after 2020-05-11, as in the example
    assert message["version"] == 1
    assert message["owner"] is None
    assert message["escalated_to"] is None


def test_the_same_patterns_change_nothing() -> None:
    action = first_action()
    group = "safeguarding_in_education"
    later = T0 + timedelta(days=3)
    assert reconcile(action, routed_now(group), audit_id=AUDIT, sub_group=group, now=later) is None


def test_changed_evidence_is_an_update_that_keeps_the_due_date() -> None:
    action = first_action()
    group = "safeguarding_in_education"
    fewer = [
        ThemeState.of(snapshot("poor_school_attendance", 4, ("x-1", "y-2"), version=2), "c"),
        ThemeState.of(snapshot("no_school_engagement_plan", 5, ("x-1", "y-2")), "c"),
    ]
    later = T0 + timedelta(days=10)
    routed = route(AUDIT, fewer, ROUTING, LABELS)[group]
    after = reconcile(action, routed, audit_id=AUDIT, sub_group=group, now=later)
    assert after is not None
    assert after.event == ActionEvent.UPDATED
    assert after.version == 2
    assert after.due_by == action.due_by
    assert after.occurred_at == later
    assert after.evidence[0].cases_with_theme == 4
    assert touched_themes(action, after) == ["poor_school_attendance"]


def test_a_theme_leaving_updates_and_the_last_one_leaving_withdraws() -> None:
    group = "business_group"
    action = first_action(group)
    only_one = [s for s in states() if s.theme != "parental_mental_health"]
    after = reconcile(
        action,
        route(AUDIT, only_one, ROUTING, LABELS).get(group),
        audit_id=AUDIT,
        sub_group=group,
        now=T0,
    )
    assert after is not None
    assert after.event == ActionEvent.UPDATED
    assert after.themes == ["health_absent_from_strategy_discussion"]

    withdrawn = reconcile(after, None, audit_id=AUDIT, sub_group=group, now=T0)
    assert withdrawn is not None
    assert withdrawn.event == ActionEvent.WITHDRAWN
    assert withdrawn.status == ActionStatus.WITHDRAWN
    assert withdrawn.themes == []
    assert withdrawn.evidence == []
    assert withdrawn.recommendation == after.recommendation
    assert withdrawn.version == 3
    assert reconcile(withdrawn, None, audit_id=AUDIT, sub_group=group, now=T0) is None


def test_routed_again_after_withdrawal_starts_afresh() -> None:
    group = "domestic_abuse_operational_group"
    action = change_status(
        first_action(group), ActionStatus.ACKNOWLEDGED, owner="Sam", note=None, now=T0
    )
    assert isinstance(action, ActionV1)
    withdrawn = reconcile(action, None, audit_id=AUDIT, sub_group=group, now=T0)
    assert withdrawn is not None
    later = T0 + timedelta(days=30)
    again = reconcile(withdrawn, routed_now(group), audit_id=AUDIT, sub_group=group, now=later)
    assert again is not None
    assert again.event == ActionEvent.ROUTED
    assert again.status == ActionStatus.ROUTED
    assert again.themes == ["domestic_abuse"]
    assert again.due_by == later.date() + timedelta(days=56)
    assert again.owner is None
    assert again.version == 4


def test_no_action_and_no_pattern_is_nothing() -> None:
    assert reconcile(None, None, audit_id=AUDIT, sub_group="business_group", now=T0) is None


def test_a_completed_action_follows_its_evidence_but_keeps_its_status() -> None:
    group = "domestic_abuse_operational_group"
    action = first_action(group)
    for status in (ActionStatus.ACKNOWLEDGED, ActionStatus.IN_PROGRESS, ActionStatus.COMPLETED):
        changed = change_status(action, status, owner=None, note=None, now=T0)
        assert isinstance(changed, ActionV1)
        action = changed
    more = [ThemeState.of(snapshot("domestic_abuse", 5, ("a-1", "b-2"), version=2), "c")]
    after = reconcile(
        action, route(AUDIT, more, ROUTING, LABELS)[group], audit_id=AUDIT, sub_group=group, now=T0
    )
    assert after is not None
    assert after.event == ActionEvent.UPDATED
    assert after.status == ActionStatus.COMPLETED


# --- transitions ---------------------------------------------------------------------------


def test_the_happy_path_and_ownership() -> None:
    action = first_action()
    acknowledged = change_status(
        action, ActionStatus.ACKNOWLEDGED, owner="Head of Inclusion", note=None, now=T0
    )
    assert isinstance(acknowledged, ActionV1)
    assert acknowledged.event == ActionEvent.STATUS_CHANGED
    assert acknowledged.owner == "Head of Inclusion"
    assert acknowledged.version == 2
    started = change_status(acknowledged, ActionStatus.IN_PROGRESS, owner=None, note=None, now=T0)
    assert isinstance(started, ActionV1)
    assert started.owner == "Head of Inclusion"
    done = change_status(started, ActionStatus.COMPLETED, owner=None, note="done", now=T0)
    assert isinstance(done, ActionV1)
    assert done.status == ActionStatus.COMPLETED
    assert done.due_by == action.due_by


def test_wrong_transitions_are_refused_with_the_allowed_ones() -> None:
    refused = change_status(first_action(), ActionStatus.COMPLETED, owner=None, note=None, now=T0)
    assert refused == Refused(
        "transition_not_allowed",
        "an action that is routed cannot become completed; it may become acknowledged, declined",
        (ActionStatus.ACKNOWLEDGED, ActionStatus.DECLINED),
    )
    for status in ActionStatus:
        for target in ActionStatus:
            if target not in TRANSITIONS[status]:
                current = first_action().model_copy(update={"status": status})
                outcome = change_status(current, target, owner=None, note="x", now=T0)
                assert isinstance(outcome, Refused), (status, target)
                assert outcome.allowed == TRANSITIONS[status]


def test_any_open_status_may_be_declined_with_a_reason_only() -> None:
    for status in OPEN:
        current = first_action().model_copy(update={"status": status})
        refused = change_status(current, ActionStatus.DECLINED, owner=None, note=" ", now=T0)
        assert isinstance(refused, Refused)
        assert refused.reason == "reason_required"
        declined = change_status(
            current, ActionStatus.DECLINED, owner=None, note="covered by the 2020 plan", now=T0
        )
        assert isinstance(declined, ActionV1)
        assert declined.status == ActionStatus.DECLINED
    for closed in set(ActionStatus) - OPEN:
        assert TRANSITIONS[closed] == ()


def test_who_may_read_and_change() -> None:
    assert may_read("neglect_strategy_group", "neglect_strategy_group", "business_group")
    assert not may_read("safeguarding_in_education", "neglect_strategy_group", "business_group")
    assert may_read("business_group", "neglect_strategy_group", "business_group")
    assert not may_change("business_group", "neglect_strategy_group")
    assert may_change("business_group", "business_group")


# --- escalation ----------------------------------------------------------------------------


def test_escalation_is_due_the_day_after_the_due_date_and_only_once() -> None:
    clock = FakeClock(T0)
    action = first_action()
    clock.now = datetime.combine(action.due_by, datetime.min.time(), tzinfo=UTC)
    assert not is_overdue(action, clock().date())
    clock.advance(days=1)
    assert is_overdue(action, clock().date())
    escalated = escalate(action, "business_group", clock())
    assert escalated.event == ActionEvent.ESCALATED
    assert escalated.escalated_to == "business_group"
    assert escalated.status == ActionStatus.ROUTED
    assert escalated.version == action.version + 1
    clock.advance(days=30)
    assert not is_overdue(escalated, clock().date())


def test_only_open_actions_escalate() -> None:
    late = date(2030, 1, 1)
    for status in ActionStatus:
        action = first_action().model_copy(update={"status": status})
        assert is_overdue(action, late) == (status in OPEN)


def test_action_id_is_deterministic() -> None:
    assert action_id(AUDIT, "safeguarding_in_education") == (
        "act-paqa-2020-05-mental-health-safeguarding_in_education"
    )


def test_every_event_is_valid_against_the_reference_schema() -> None:
    validator = contract_validator("action")
    group = "business_group"
    routed = first_action(group)
    acknowledged = change_status(routed, ActionStatus.ACKNOWLEDGED, owner="Al", note=None, now=T0)
    assert isinstance(acknowledged, ActionV1)
    escalated = escalate(acknowledged, "business_group", T0)
    withdrawn = reconcile(escalated, None, audit_id=AUDIT, sub_group=group, now=T0)
    assert withdrawn is not None
    for message in (routed, acknowledged, escalated, withdrawn):
        validator.validate(wire(message))
