"""The leads' HTTP API on the real store: tokens, sub-group scope, transitions, publication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from services.recommendations.domain import action_id
from shared.mongo import Document
from tests.support.contracts import validator
from tests.support.infra import Servers
from tests.support.kafka import publish
from tests.support.recommendations_fixtures import AUDIT, fixture_snapshots, record
from tests.support.recommendations_harness import (
    client,
    drained,
    published,
    running,
    settings_for,
)

pytestmark = pytest.mark.integration

EDUCATION = action_id(AUDIT, "safeguarding_in_education")
ABUSE = action_id(AUDIT, "domestic_abuse_operational_group")
BUSINESS = action_id(AUDIT, "business_group")
NEGLECT = action_id(AUDIT, "neglect_strategy_group")


@pytest.fixture
async def app(
    servers: Servers, namespace: str, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> AsyncIterator[Starlette]:
    """The service with the fixture audit's four actions routed."""
    settings = settings_for(servers, namespace, tmp_path)
    async with running(settings) as service:
        await publish(
            servers.kafka_bootstrap,
            settings.topic_themes,
            [record(s) for s in fixture_snapshots()],
        )
        await drained(servers, settings)
        service.state.settings = settings
        yield service


async def test_health_and_readiness(app: Starlette) -> None:
    async with client(app) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"kafka": True, "mongodb": True, "consumer_assigned": True}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer nope"},
        {"authorization": "Basic x"},
        {"authorization": "Bearer"},
    ],
)
async def test_no_or_bad_token_is_401(app: Starlette, headers: dict[str, str]) -> None:
    async with client(app) as http:
        for response in (
            await http.get("/v1/actions", headers=headers),
            await http.get(f"/v1/actions/{EDUCATION}", headers=headers),
            await http.post(
                f"/v1/actions/{EDUCATION}/status", json={"status": "acknowledged"}, headers=headers
            ),
        ):
            assert response.status_code == 401
            assert response.json()["reason"] == "unauthorized"


async def test_a_lead_sees_only_their_sub_groups_actions(app: Starlette) -> None:
    async with client(app, "safeguarding_in_education") as http:
        own = (await http.get("/v1/actions")).json()["actions"]
        assert [a["action_id"] for a in own] == [EDUCATION]
        assert own[0]["sub_group_name"] == "Safeguarding in Education"
        assert own[0]["allowed_transitions"] == ["acknowledged", "declined"]
        assert "history" not in own[0]
        routed = (await http.get("/v1/actions", params={"status": "routed"})).json()["actions"]
        assert [a["action_id"] for a in routed] == [EDUCATION]
        assert (await http.get("/v1/actions", params={"status": "completed"})).json() == {
            "actions": []
        }
        assert (await http.get("/v1/actions", params={"audit_id": "other"})).json() == {
            "actions": []
        }
        by_audit = (await http.get("/v1/actions", params={"audit_id": AUDIT})).json()["actions"]
        assert [a["action_id"] for a in by_audit] == [EDUCATION]
        assert (await http.get("/v1/actions", params={"status": "done"})).status_code == 422

        detail = await http.get(f"/v1/actions/{EDUCATION}")
        assert detail.status_code == 200
        assert [h["event"] for h in detail.json()["history"]] == ["routed"]

        for other in (ABUSE, BUSINESS, NEGLECT, "act-nope-business_group"):
            assert (await http.get(f"/v1/actions/{other}")).status_code == 404
            response = await http.post(
                f"/v1/actions/{other}/status", json={"status": "acknowledged"}
            )
            assert response.status_code == 404
            assert response.json()["reason"] == "not_found"


async def test_the_business_group_reads_every_action_and_changes_only_its_own(
    app: Starlette,
) -> None:
    async with client(app, "business_group") as http:
        every = (await http.get("/v1/actions")).json()["actions"]
        assert sorted(a["action_id"] for a in every) == sorted(
            [EDUCATION, ABUSE, BUSINESS, NEGLECT]
        )
        assert (await http.get(f"/v1/actions/{NEGLECT}")).status_code == 200
        refused = await http.post(f"/v1/actions/{NEGLECT}/status", json={"status": "acknowledged"})
        assert refused.status_code == 403
        assert refused.json()["reason"] == "forbidden"
        own = await http.post(f"/v1/actions/{BUSINESS}/status", json={"status": "acknowledged"})
        assert own.status_code == 200
        assert own.json()["status"] == "acknowledged"


async def test_transitions_conflicts_and_reasons(app: Starlette, servers: Servers) -> None:
    async with client(app, "safeguarding_in_education") as http:
        wrong = await http.post(f"/v1/actions/{EDUCATION}/status", json={"status": "completed"})
        assert wrong.status_code == 409
        assert wrong.json()["reason"] == "transition_not_allowed"
        assert wrong.json()["allowed"] == ["acknowledged", "declined"]

        # The fixture's snapshots may reach the service in one batch or several (a fetch can
        # end between them), so the action may have been routed and then updated.
        routed = (await http.get(f"/v1/actions/{EDUCATION}")).json()["version"]
        steps = [
            ({"status": "acknowledged", "owner": "Head of Inclusion"}, "acknowledged"),
            ({"status": "in_progress"}, "in_progress"),
            ({"status": "completed", "note": "briefing sent to every school"}, "completed"),
        ]
        for version, (body, status) in enumerate(steps, start=routed + 1):
            response = await http.post(f"/v1/actions/{EDUCATION}/status", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == status
            assert response.json()["version"] == version
            assert response.json()["owner"] == "Head of Inclusion"

        closed = await http.post(f"/v1/actions/{EDUCATION}/status", json={"status": "declined"})
        assert closed.status_code == 409
        assert closed.json()["allowed"] == []

        history = (await http.get(f"/v1/actions/{EDUCATION}")).json()["history"]
        events = ["routed"] + ["updated"] * (routed - 1) + ["status_changed"] * 3
        assert [h["event"] for h in history] == events
        assert [h["status"] for h in history] == [
            *["routed"] * routed,
            "acknowledged",
            "in_progress",
            "completed",
        ]
        assert {h["by"] for h in history[routed:]} == {"safeguarding_in_education"}
        assert history[-1]["note"] == "briefing sent to every school"

        for bad in (b"{not json", b'{"status": "finished"}', b'{"status": "declined", "x": 1}'):
            response = await http.post(f"/v1/actions/{EDUCATION}/status", content=bad)
            assert response.status_code == 422, bad

    async with client(app, "domestic_abuse_operational_group") as http:
        unexplained = await http.post(f"/v1/actions/{ABUSE}/status", json={"status": "declined"})
        assert unexplained.status_code == 422
        assert unexplained.json()["reason"] == "reason_required"
        declined = await http.post(
            f"/v1/actions/{ABUSE}/status",
            json={"status": "declined", "note": "covered by the DA strategy refresh"},
        )
        assert declined.status_code == 200
        assert declined.json()["status"] == "declined"

    settings = app.state.settings
    messages = await published(servers, settings)
    check = validator("action")
    for message in messages:
        check.validate(message)
    education = [m for m in messages if m["action_id"] == EDUCATION]
    assert [(m["event"], m["status"], m["version"]) for m in education] == [
        ("routed", "routed", 1),
        *(("updated", "routed", v) for v in range(2, routed + 1)),
        ("status_changed", "acknowledged", routed + 1),
        ("status_changed", "in_progress", routed + 2),
        ("status_changed", "completed", routed + 3),
    ]
    abuse = [m for m in messages if m["action_id"] == ABUSE]
    assert [(m["event"], m["status"]) for m in abuse] == [
        ("routed", "routed"),
        ("status_changed", "declined"),
    ]
