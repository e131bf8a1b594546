"""Security: tokens and scopes on every authenticated endpoint, then a sweep for personal data."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from shared.mongo import make_client
from tests.faults.checks import compare_themes, open_actions
from tests.faults.conftest import Figures
from tests.support.findings import encode, finding
from tests.support.pipeline import OVERSIGHT, Pipeline, record
from tests.support.privacy import leaks, stored_documents
from tests.support.workload import expected

pytestmark = pytest.mark.faults

AUDIT = "sec-2026-02"
AGENCIES = {
    "county-csc": "childrens_social_care",
    "thames-police": "police",
    "county-education": "education",
}
# Plain refs are searched for as JSON strings ('"C01"'); these are unambiguous bare too.
PLAIN_REFS = ["C01", "C02", "C03", "C04"]
DISTINCT_REFS = ["QX7-REF-0042", "ZK9-CASE-7781"]
# Personal data agencies should not, but do, write into notes; intake must redact all of it.
PLANTED = [
    "943 476 5919",
    "4010232137",
    "jane.roe@example.org",
    "07700 900461",
    "+44 1865 555012",
    "OX4 1AB",
    "SW1A 1AA",
    "14/02/2011",
    "2011-02-14",
    "14 February 2011",
]
# Identifiers that are personal data: refused, and never repeated anywhere.
PERSONAL_REFS = ["9434765919", "jo.bloggs@example.com", "2009-04-13"]
THEMES = ["neglect", "domestic_abuse", "poor_school_attendance"]


def submissions() -> list[dict[str, Any]]:
    """Every agency reviews every case; each finding's note carries planted personal data."""
    out = []
    for n, ref in enumerate(PLAIN_REFS + DISTINCT_REFS):
        for a, (agency, kind) in enumerate(AGENCIES.items()):
            codes = THEMES[: 1 + (n + a) % len(THEMES)]
            notes = [PLANTED[(n * 3 + a + i) % len(PLANTED)] for i in range(len(codes))]
            out.append(
                finding(
                    audit_id=AUDIT,
                    agency_id=agency,
                    agency_type=kind,
                    ref=ref,
                    findings=[
                        {"code": code, "note": f"Seen by the worker; contact {note} (family)."}
                        for code, note in zip(codes, notes, strict=True)
                    ],
                )
            )
    return out


async def refused_without_valid_token(
    client: httpx.AsyncClient, method: str, url: str, content: bytes = b"{}"
) -> list[int]:
    """The status codes for no token, a wrong token and a token in the wrong scheme."""
    codes = []
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic Zm9vOmJhcg=="}):
        response = await client.request(method, url, headers=headers, content=content)
        codes.append(response.status_code)
    return codes


async def test_tokens_scopes_and_a_privacy_sweep(pipeline: Pipeline, figures: Figures) -> None:
    started = time.monotonic()
    events = submissions()
    reference = expected(events)
    await pipeline.start()
    checks = 0

    # Intake: half the agencies' submissions over HTTP, half over Kafka.
    over_http, over_kafka = events[::2], events[1::2]
    async with pipeline.client("intake") as intake:
        assert await refused_without_valid_token(intake, "POST", "/v1/findings") == [401] * 3
        lead_token = {"authorization": f"Bearer {pipeline.lead_tokens[OVERSIGHT]}"}
        assert (await intake.post("/v1/findings", headers=lead_token)).status_code == 401
        checks += 4
        for event in over_http:
            token = pipeline.agency_tokens[event["agency"]["id"]]
            other = next(t for a, t in pipeline.agency_tokens.items() if a != event["agency"]["id"])
            as_other = await intake.post(
                "/v1/findings", content=encode(event), headers={"authorization": f"Bearer {other}"}
            )
            assert as_other.status_code == 403, as_other.text
            sent = await intake.post(
                "/v1/findings", content=encode(event), headers={"authorization": f"Bearer {token}"}
            )
            assert sent.status_code == 202, sent.text
            checks += 2
        for ref in PERSONAL_REFS:
            bad = finding(audit_id=AUDIT, ref=ref)
            token = pipeline.agency_tokens["county-csc"]
            answer = await intake.post(
                "/v1/findings", content=encode(bad), headers={"authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 422
            assert answer.json()["reason"] == "personal_data_in_identifier"
            assert ref not in answer.text
            checks += 1
    personal = [record(finding(audit_id=AUDIT, ref=ref)) for ref in PERSONAL_REFS]
    await pipeline.submit([*(record(e) for e in over_kafka), *personal])
    await pipeline.quiet()
    assert compare_themes(await pipeline.themes(), reference).differences == []
    actions = await pipeline.actions()
    assert open_actions(actions) == reference.actions
    groups = {a["sub_group"] for a in actions}
    assert len(groups) >= 3, groups

    # Recommendations: each lead sees and changes only their own sub-group's actions; the
    # oversight group reads all and changes only its own.
    async with pipeline.client("recommendations") as api:
        for url, method in (
            ("/v1/actions", "GET"),
            (f"/v1/actions/{actions[0]['action_id']}", "GET"),
            (f"/v1/actions/{actions[0]['action_id']}/status", "POST"),
        ):
            assert await refused_without_valid_token(api, method, url) == [401] * 3, url
            agency = {"authorization": f"Bearer {pipeline.agency_tokens['county-csc']}"}
            assert (await api.request(method, url, headers=agency)).status_code == 401
            checks += 4
        for group, token in pipeline.lead_tokens.items():
            auth = {"authorization": f"Bearer {token}"}
            listed = (await api.get("/v1/actions", headers=auth)).json()["actions"]
            own = [a for a in actions if a["sub_group"] == group]
            expected_ids = [a["action_id"] for a in (actions if group == OVERSIGHT else own)]
            assert sorted(a["action_id"] for a in listed) == sorted(expected_ids), group
            checks += 1
            for action in actions:
                if action["sub_group"] == group:
                    continue
                url = f"/v1/actions/{action['action_id']}"
                change = json.dumps({"status": "acknowledged"}).encode()
                read = await api.get(url, headers=auth)
                changed = await api.post(f"{url}/status", headers=auth, content=change)
                if group == OVERSIGHT:
                    assert (read.status_code, changed.status_code) == (200, 403), url
                else:
                    assert (read.status_code, changed.status_code) == (404, 404), url
                checks += 2
        mine = next(a for a in actions if a["sub_group"] != OVERSIGHT)
        auth = {"authorization": f"Bearer {pipeline.lead_tokens[mine['sub_group']]}"}
        moved = await api.post(
            f"/v1/actions/{mine['action_id']}/status",
            headers=auth,
            content=json.dumps({"status": "acknowledged", "owner": "Lead"}).encode(),
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == "acknowledged"
    await pipeline.quiet()

    # The privacy sweep: everything written after intake.
    client = make_client(pipeline.servers.mongo_url)
    try:
        stored = await stored_documents(client, pipeline.database)
    finally:
        await client.close()
    texts: dict[str, str] = {
        f"log:{name}": "\n".join(pipeline.log_lines(name)) for name in pipeline.processes
    }
    texts["stored"] = "\n".join(stored)
    for topic in ("accepted", "rejected", "themes", "actions"):
        texts[f"topic:{topic}"] = "\n".join(
            value.decode() for _, value in await pipeline.read(topic, idle_ms=500)
        )
    assert all(texts.values()), [where for where, text in texts.items() if not text]
    accepted = texts["topic:accepted"]
    assert accepted.count("[redacted:") >= len(PLANTED), "notes did not reach themes redacted"
    searched = [
        *PLANTED,
        *PERSONAL_REFS,
        *DISTINCT_REFS,
        *(json.dumps(ref) for ref in [*PLAIN_REFS, *DISTINCT_REFS]),
    ]
    found = leaks(texts, searched)
    assert found == []
    # The search finds every one of them where they may be: on the way into intake.
    submitted = "\n".join(value.decode() for _, value in await pipeline.read("submitted"))
    assert len(leaks({"submitted": submitted}, searched)) == len(searched)
    rejected = [json.loads(line) for line in texts["topic:rejected"].splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["personal_data_in_identifier"] * len(
        PERSONAL_REFS
    )

    figures.record(
        "security",
        events=len(events) + len(personal),
        access_checks=checks,
        places_swept=len(texts),
        lines_and_documents_swept=sum(text.count("\n") + 1 for text in texts.values()),
        strings_searched=len(searched),
        leaks=len(found),
        duration_s=round(time.monotonic() - started, 1),
    )
