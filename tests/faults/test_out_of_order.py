"""Out of order: later revisions and withdrawals first; the highest revision is what counts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.checks import compare_themes, open_actions
from tests.faults.conftest import Figures
from tests.support.findings import finding
from tests.support.pipeline import Pipeline, record
from tests.support.workload import expected

pytestmark = pytest.mark.faults

AUDIT = "ooo-2026-01"
AGENCIES = {
    "county-csc": "childrens_social_care",
    "thames-police": "police",
    "county-education": "education",
}


def review(agency: str, ref: str, revision: int, *codes: str) -> dict[str, Any]:
    """One agency's review of one case at one revision."""
    return finding(
        audit_id=AUDIT,
        agency_id=agency,
        agency_type=AGENCIES[agency],
        ref=ref,
        revision=revision,
        findings=[{"code": code} for code in codes],
    )


async def test_the_highest_revision_wins_whatever_the_order(
    pipeline: Pipeline, figures: Figures
) -> None:
    started = time.monotonic()
    sent = [
        # Revision 2 before revision 1.
        review("county-csc", "C01", 2, "neglect"),
        review("county-csc", "C01", 1, "neglect", "domestic_abuse"),
        # A withdrawal (revision 2 drops domestic abuse) before the finding it withdraws.
        review("thames-police", "C02", 2, "young_carer"),
        review("thames-police", "C02", 1, "domestic_abuse", "young_carer"),
        review("county-education", "C03", 1, "neglect"),
        # Three revisions in reverse.
        review("thames-police", "C04", 3, "young_carer"),
        review("thames-police", "C04", 2, "domestic_abuse", "neglect"),
        review("thames-police", "C04", 1, "domestic_abuse"),
    ]
    reference = expected(sent)
    late = sum(
        any(
            (o["agency"]["id"], o["case"]["ref"]) == (e["agency"]["id"], e["case"]["ref"])
            and o["revision"] > e["revision"]
            for o in sent[:i]
        )
        for i, e in enumerate(sent)
    )
    # Had any earlier revision counted, domestic abuse would be a pattern (three cases, two
    # agencies) routed to the Domestic Abuse Operational Group.
    assert reference.themes[(AUDIT, "domestic_abuse")]["cases_with_theme"] == 0
    assert reference.actions == {(AUDIT, "neglect_strategy_group"): ["neglect"]}

    await pipeline.start()
    await pipeline.submit(record(e) for e in sent)
    await pipeline.quiet()

    served = await pipeline.themes()
    outcome = compare_themes(served, reference)
    assert outcome.differences == []
    assert served[(AUDIT, "domestic_abuse")]["descriptor"] == "none"
    assert served[(AUDIT, "neglect")]["is_pattern"]
    assert not served[(AUDIT, "young_carer")]["is_pattern"]
    assert open_actions(await pipeline.actions()) == reference.actions

    figures.record(
        "out_of_order",
        events=len(sent),
        superseded_revisions_sent_late=late,
        lost=outcome.lost,
        double_counted=outcome.double_counted,
        duration_s=round(time.monotonic() - started, 1),
    )
