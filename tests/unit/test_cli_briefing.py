"""The briefing: the audit's register, one bar per theme, and small-number suppression."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.cli.briefing import BriefingData, chart_svg, render_html, render_markdown
from services.cli.client import AuditView
from services.cli.dataset import by_agency, expected_themes, interleaved, load_dataset
from shared.contracts import (
    ActionEvent,
    ActionStatus,
    ActionV1,
    Category,
    Descriptor,
    Evidence,
    ThemeSnapshotV1,
)
from shared.routing import default_routing
from shared.taxonomy import default_taxonomy

pytestmark = pytest.mark.unit

AUDIT = "paqa-2020-05-mental-health"
NOW = datetime(2020, 5, 11, 10, 2, tzinfo=UTC)


def _descriptor(cases: int, total: int) -> Descriptor:
    share = cases / total
    for floor, word in ((1.0, Descriptor.ALL), (0.8, Descriptor.ALMOST_ALL)):
        if share >= floor:
            return word
    if share >= 0.5:
        return Descriptor.MOST
    if share >= 0.25:
        return Descriptor.SOME
    return Descriptor.FEW if cases else Descriptor.NONE


def snapshots() -> list[ThemeSnapshotV1]:
    """What the themes service would hold for the reference dataset."""
    taxonomy = default_taxonomy()
    out = []
    for code, figure in expected_themes(interleaved(by_agency(load_dataset()))).items():
        out.append(
            ThemeSnapshotV1(
                audit_id=AUDIT,
                theme=code,
                category=taxonomy.category(code),
                cases_total=6,
                cases_with_theme=figure.cases,
                agencies=list(figure.agencies),
                agency_types=[],
                prevalence=round(figure.cases / 6, 4),
                descriptor=_descriptor(figure.cases, 6),
                is_pattern=figure.cases >= 2 and len(figure.agencies) >= 2,
                small_sample=True,
                recurring_in=[],
                median_waited_days=17.5 if code == "mh_intervention_timely" else None,
                version=1,
                computed_at=NOW,
            )
        )
    return out


def action(sub_group: str, themes: list[str], cases: int) -> ActionV1:
    return ActionV1(
        event=ActionEvent.ROUTED,
        action_id=f"act-{AUDIT}-{sub_group}",
        audit_id=AUDIT,
        sub_group=sub_group,
        themes=themes,
        recommendation=(
            f"For awareness. The audit found {themes[0].replace('_', ' ')} in {cases} of 6 "
            "cases (some), reported by 2 agencies. Findings come from a small sample of 6 cases."
        ),
        evidence=[
            Evidence(
                theme=t, cases_with_theme=cases, cases_total=6, agency_count=2, descriptor="some"
            )
            for t in themes
        ],
        status=ActionStatus.ROUTED,
        due_by=date(2020, 7, 6),
        version=1,
        occurred_at=NOW,
    )


def data(**changes: Any) -> BriefingData:
    routing = default_routing()
    base = BriefingData(
        audit=AuditView(
            audit_id=AUDIT,
            title="Children aged 10-15 with mental ill health (CIN, CP, in care)",
            cases=6,
            agencies=("county-camhs", "county-csc", "county-education", "thames-police"),
            legal_status={"child_in_care": 2, "child_in_need": 1, "child_protection_plan": 3},
            age_band={"10-15": 6},
        ),
        themes=snapshots(),
        actions=[
            action("business_group", ["parental_mental_health"], 2),
            action("safeguarding_in_education", ["poor_school_attendance"], 5),
        ],
        generated_at=NOW,
        labels={code: c.label for code, c in default_taxonomy().codes.items()},
        sub_group_names={g.id: g.name for g in routing.sub_groups.values()},
    )
    return replace(base, **changes)


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_markdown_speaks_in_the_audits_register() -> None:
    text = render_markdown(data())
    key = section(text, "Key messages and findings")
    assert (
        "**Poor school attendance**: in almost all cases (5 of 6 cases, 83%); seen by "
        "county-csc, county-education, thames-police." in key
    )
    assert "**Domestic abuse in the family environment**: in most cases" in key
    assert "**Parental mental ill health**: in some cases (2 of 6 cases, 33%)" in key
    improve = section(text, "Identified areas for improvement")
    assert "No clear plan to re-engage" in improve
    assert "Domestic abuse" not in improve
    good = section(text, "Examples of good practice")
    assert "in most cases (4 of 6 cases, 67%)" in good and "median wait 17.5 days" in good
    also = section(text, "Also noted")
    assert "Child is a young carer**: in a few cases" in also
    assert "seen by county-camhs only" in also  # the delays: one agency, not a pattern
    about = section(text, "About the audit")
    assert "6 cases were audited" in about and "small sample" in about
    assert "child protection plan: 3" in about
    recs = section(text, "Recommendations")
    # In the routing file's order, which is the audit's own.
    assert recs.index("Safeguarding in Education") < recs.index("OSCB Business Group")
    assert "due by 2020-07-06; status routed" in recs


def test_public_suppresses_every_count_below_three() -> None:
    text = render_markdown(data(), public=True)
    assert not re.search(r"(?<![\d.])[0-2] of \d", text), "a count below 3 is shown"
    assert "fewer than 3 of 6 cases" in text
    assert "5 of 6 cases, 83%" in text  # counts of 3 and more stay
    # The percentage would give a suppressed count away.
    assert "33%" not in text and "17%" not in text
    assert "child in need: fewer than 3" in text and "child protection plan: 3" in text
    assert "in fewer than 3 of 6 cases (some)" in section(text, "Recommendations")


def test_public_html_suppresses_in_text_and_chart_labels() -> None:
    html = render_html(data(), public=True)
    visible = re.sub(r"<[^>]+>", " ", html)
    assert not re.search(r"(?<![\d.])[0-2] of \d", visible)
    assert "33%" not in visible
    svg = chart_svg(data(), public=True)
    suppressed = re.findall(r'<rect class="bar suppressed" data-theme="([a-z_]+)"', svg)
    assert set(suppressed) == {t.theme for t in snapshots() if t.cases_with_theme < 3}
    assert "fewer than 3 of 6 cases" in svg


def test_the_chart_has_one_bar_per_theme_coloured_by_category() -> None:
    themes = snapshots()
    svg = chart_svg(data())
    bars = re.findall(r'<rect class="bar[^"]*" data-theme="([a-z_]+)" data-category="(\w+)"', svg)
    assert sorted(code for code, _ in bars) == sorted(t.theme for t in themes)
    assert {category for _, category in bars} == {c.value for c in Category}
    # Patterns first: every pattern's bar comes before any other.
    order = [code for code, _ in bars]
    patterns = {t.theme for t in themes if t.is_pattern}
    assert set(order[: len(patterns)]) == patterns
    html = render_html(data())
    assert html.count('class="bar') == len(themes)


def test_html_is_self_contained_and_escapes_what_it_shows() -> None:
    odd = data(labels={"domestic_abuse": "<script>alert(1)</script>"})
    html = render_html(odd)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not re.search(r'(src|href)="https?://', html)
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<style>" in html


def test_without_a_cohort_the_briefing_omits_it() -> None:
    bare = data(audit=AuditView(audit_id=AUDIT))
    text = render_markdown(bare)
    assert "Legal status" not in text and "Age band" not in text
    assert text.startswith(f"# {AUDIT}")
    assert "6 cases were audited in detail by 4 agencies" in text


def test_no_theme_and_no_action_still_reads() -> None:
    text = render_markdown(data(themes=[], actions=[]))
    assert "No theme recurred across cases and agencies." in text
    assert "No recommendation has been routed." in text
    assert 'class="bar' not in render_html(data(themes=[], actions=[]))
