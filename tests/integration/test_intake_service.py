"""Intake on the real broker and store: every kind of input answered, once, with no leaks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.mongo import Document
from tests.conftest import namespaced
from tests.support.contracts import errors as contract_errors
from tests.support.findings import encode, finding
from tests.support.infra import Servers
from tests.support.kafka import group_lag, publish, read_all, wait_for
from tests.support.privacy import leaks, stored_documents
from tests.support.services import ServiceProcess, free_port

pytestmark = pytest.mark.integration

SECRET_NOTE = "Mum Jo Bloggs, jo.bloggs@example.com, 07700 900123, OX1 2JD, born 13/04/2009"
PLANTED = ["jo.bloggs@example.com", "07700 900123", "OX1 2JD", "13/04/2009"]


def mixed_batch() -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """One of every kind of input, and what intake must make of them."""
    good = finding(ref="C01", findings=[{"code": "domestic_abuse", "note": SECRET_NOTE}])
    other = finding(ref="C02", agency_id="county-camhs", agency_type="camhs")
    duplicate = good
    conflict = finding(ref="C01", findings=[{"code": "neglect"}])
    unknown = finding(ref="C03", findings=[{"code": "domestic_abus"}])
    nhs = finding(ref="9434765919")
    schema_bad = finding(ref="C04")
    schema_bad["case"]["age_band"] = "11-12"
    oversize = finding(ref="C05", findings=[{"code": "neglect", "note": "x" * 2000}] * 40)
    records = [
        (b"a/C01", encode(good)),
        (b"a/C02", encode(other)),
        (b"a/C01", encode(duplicate)),
        (b"a/C01", encode(conflict)),
        (b"a/x", b"\xff\xfe\x00garbage"),
        (b"a/x", b"{not json"),
        (b"a/C03", encode(unknown)),
        (b"a/nhs", encode(nhs)),
        (b"a/C04", encode(schema_bad)),
        (b"a/C05", encode(oversize)),
    ]
    expected = {
        "accepted": {good["event_id"], other["event_id"]},
        "reasons": sorted(
            [
                "revision_conflict",
                "undecodable",
                "invalid_json",
                "unknown_finding_code",
                "personal_data_in_identifier",
                "schema_violation",
                "oversize",
            ]
        ),
    }
    return records, expected


@pytest.fixture
def values(servers: Servers, namespace: str, tmp_path: Path) -> dict[str, Any]:
    tokens = tmp_path / "agency-tokens.yaml"
    tokens.write_text(
        "county-csc: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
    )  # sha256("test")
    return namespaced(
        servers,
        namespace,
        intake_group=f"{namespace}-intake",
        intake_port=free_port(),
        local_dir=str(tmp_path),
        agency_tokens_file=str(tokens),
        stats_interval_s=1,
    )


async def test_mixed_batch_then_replay(
    values: dict[str, Any], servers: Servers, tmp_path: Path, mongo: AsyncMongoClient[Document]
) -> None:
    settings = IntakeSettings(**values)
    records, expected = mixed_batch()
    log = tmp_path / "intake.log"
    intake = ServiceProcess("intake", values, log).start()
    try:
        await publish(servers.kafka_bootstrap, settings.topic_submitted, records)

        async def drained() -> bool:
            lag = await group_lag(
                servers.kafka_bootstrap, settings.intake_group, settings.topic_submitted
            )
            return lag == 0

        await wait_for(drained, 60)
    finally:
        assert intake.stop()

    accepted = await read_all(servers.kafka_bootstrap, settings.topic_accepted)
    rejected = await read_all(servers.kafka_bootstrap, settings.topic_rejected)
    assert {json.loads(v)["event_id"] for _, v, _ in accepted} == expected["accepted"]
    assert len(accepted) == 2
    assert sorted(json.loads(v)["reason"] for _, v, _ in rejected) == expected["reasons"]
    for _, value, _ in rejected:
        assert contract_errors("finding-rejected", value) == []
    for key, value, headers in accepted:
        review = json.loads(value)
        assert key == review["audit_id"].encode()
        assert headers.get("correlation_id") == review["event_id"].encode()

    # A new consumer group reads the whole topic again: nothing new is accepted or rejected.
    replay = {**values, "intake_group": f"{values['intake_group']}-replay"}
    again = ServiceProcess("intake", replay, log).start()
    try:

        async def replayed() -> bool:
            lag = await group_lag(
                servers.kafka_bootstrap, replay["intake_group"], settings.topic_submitted
            )
            return lag == 0

        await wait_for(replayed, 60)
    finally:
        assert again.stop()
    assert len(await read_all(servers.kafka_bootstrap, settings.topic_accepted)) == 2
    assert len(await read_all(servers.kafka_bootstrap, settings.topic_rejected)) == 7

    # Privacy: no raw ref, no planted personal data, in logs, stored documents or forwards.
    texts = {
        "log": log.read_text(),
        "stored": "\n".join(await stored_documents(mongo, settings.mongo_database)),
        "forwarded": "\n".join(v.decode() for _, v, _ in accepted),
        "rejected": "\n".join(v.decode() for _, v, _ in rejected),
    }
    assert all(texts.values()), "nothing to scan"
    assert leaks(texts, [*PLANTED, "9434765919", '"C01"', '"C02"']) == []
    for line in log.read_text().splitlines():
        json.loads(line)  # every log line is JSON


@pytest.fixture
async def http_intake(values: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(IntakeSettings(**values))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            yield client


async def test_http_submission(
    http_intake: httpx.AsyncClient, values: dict[str, Any], servers: Servers
) -> None:
    auth = {"authorization": "Bearer test"}
    doc = finding(ref="C09")
    assert (await http_intake.post("/v1/findings", content=encode(doc))).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert (
        await http_intake.post("/v1/findings", content=encode(doc), headers=wrong)
    ).status_code == 401
    other_agency = finding(agency_id="county-police", agency_type="police")
    response = await http_intake.post("/v1/findings", content=encode(other_agency), headers=auth)
    assert response.status_code == 403
    bad = await http_intake.post(
        "/v1/findings", content=encode(finding(ref="9434765919")), headers=auth
    )
    assert bad.status_code == 422
    assert bad.json()["reason"] == "personal_data_in_identifier"
    ok = await http_intake.post("/v1/findings", content=encode(doc), headers=auth)
    assert ok.status_code == 202
    assert ok.json()["event_id"] == doc["event_id"]

    async def forwarded() -> bool:
        accepted = await read_all(servers.kafka_bootstrap, values["topic_accepted"], idle_ms=500)
        return any(json.loads(v)["event_id"] == doc["event_id"] for _, v, _ in accepted)

    await wait_for(forwarded, 30)
    health = await http_intake.get("/readyz")
    assert health.status_code == 200
    assert health.json()["checks"] == {"kafka": True, "mongodb": True, "consumer_assigned": True}
    assert uuid.UUID(doc["event_id"])
