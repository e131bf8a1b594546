"""The CLI's reading of the services' HTTP answers, and its one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.cli.client import CliError, Services
from services.cli.settings import CliSettings
from shared.contracts import ActionStatus
from tests.support.services import free_port

pytestmark = pytest.mark.unit

AUDIT = "paqa-2020-05-mental-health"
THEME = {
    "schema_version": 1,
    "audit_id": AUDIT,
    "theme": "poor_school_attendance",
    "category": "risk_factor",
    "cases_total": 6,
    "cases_with_theme": 5,
    "agencies": ["county-csc", "county-education", "thames-police"],
    "agency_types": ["childrens_social_care", "education", "police"],
    "prevalence": 0.8333,
    "descriptor": "almost_all",
    "is_pattern": True,
    "small_sample": True,
    "recurring_in": [],
    "median_waited_days": None,
    "version": 7,
    "computed_at": "2020-05-11T10:02:11+00:00",
}
AUDIT_VIEW = {
    "audit_id": AUDIT,
    "title": "Children aged 10-15 with mental ill health (CIN, CP, in care)",
    "cases": 6,
    "agencies": ["county-camhs", "county-csc"],
    "patterns": 13,
    "legal_status": {"child_in_care": 2},
    "age_band": {"10-15": 6},
    "updated_at": "2020-05-11T10:02:11+00:00",
}
# As the leads' API shows an action: no schema_version, two fields for people.
ACTION = {
    "event": "routed",
    "action_id": f"act-{AUDIT}-business_group",
    "audit_id": AUDIT,
    "sub_group": "business_group",
    "themes": ["parental_mental_health"],
    "recommendation": "For awareness.",
    "evidence": [],
    "status": "routed",
    "owner": None,
    "due_by": "2020-07-06",
    "escalated_to": None,
    "version": 1,
    "occurred_at": "2020-05-11T10:02:12+00:00",
    "sub_group_name": "OSCB Business Group",
    "allowed_transitions": ["acknowledged", "declined"],
}


def services(answers: dict[str, tuple[int, Any]], seen: list[httpx.Request]) -> Services:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers[request.url.path]
        return httpx.Response(status, json=body)

    return Services(CliSettings(), transport=httpx.MockTransport(handle))


async def test_audits_and_themes_are_read_as_the_themes_service_sends_them() -> None:
    seen: list[httpx.Request] = []
    answers = {
        "/v1/audits": (200, {"audits": [AUDIT_VIEW]}),
        f"/v1/audits/{AUDIT}/themes": (200, {"audit": AUDIT_VIEW, "themes": [THEME]}),
    }
    async with services(answers, seen) as client:
        (audit,) = await client.audits()
        found = await client.themes(AUDIT)
    assert audit.cases == 6 and audit.legal_status == {"child_in_care": 2}
    assert found.audit == audit
    assert found.themes[0].cases_with_theme == 5 and found.themes[0].descriptor == "almost_all"


async def test_an_unknown_audit_is_named() -> None:
    answers = {"/v1/audits/nope/themes": (404, {"reason": "unknown_audit", "detail": "no"})}
    async with services(answers, []) as client:
        with pytest.raises(CliError, match=r"^unknown audit nope$"):
            await client.themes("nope")


async def test_actions_are_read_with_the_bearer_token_and_filters() -> None:
    seen: list[httpx.Request] = []
    async with services({"/v1/actions": (200, {"actions": [ACTION]})}, seen) as client:
        (action,) = await client.actions("t0ken", status="routed", audit_id=AUDIT)
    assert action.status == ActionStatus.ROUTED and action.sub_group_name == "OSCB Business Group"
    assert seen[0].headers["authorization"] == "Bearer t0ken"
    assert dict(seen[0].url.params) == {"status": "routed", "audit_id": AUDIT}


async def test_a_refused_token_and_an_unreadable_answer_are_one_sentence() -> None:
    detail = "a valid sub-group lead's bearer token is required"
    answers: dict[str, tuple[int, Any]] = {
        "/v1/actions": (401, {"reason": "unauthorized", "detail": detail})
    }
    async with services(answers, []) as client:
        with pytest.raises(
            CliError, match=rf"^recommendations service refused the request \(401\): {detail}$"
        ):
            await client.actions("wrong")
    answers = {"/v1/audits": (200, {"audits": [{"title": "no id"}]})}
    async with services(answers, []) as client:
        with pytest.raises(
            CliError, match=r"^themes service sent audits the CLI cannot read \(0\.audit_id"
        ):
            await client.audits()


def test_a_service_that_is_down_is_named_with_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["themes", AUDIT], env={"CASEREVIEW_THEMES_URL": url})
    assert result.exit_code == 1
    assert result.stderr == f"casereview: themes service not reachable at {url}\n"


def test_reading_actions_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["actions"], env={"CASEREVIEW_LOCAL_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"casereview: no token for business_group in {tmp_path / 'secrets' / 'lead-tokens.txt'}"
    )


def test_a_bad_since_is_one_line() -> None:
    result = CliRunner().invoke(app, ["rejected", "--since", "last tuesday"])
    assert result.exit_code == 1
    assert result.stderr == "casereview: --since 'last tuesday' is not an ISO 8601 date or time\n"
