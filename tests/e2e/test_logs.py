"""Operations through logs: the three services run the reference audit as processes; then every
line they wrote is held to docs/log-schema.json, searched for personal data, and read back by
`casereview ops` for the summary and one submission's journey."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from services.cli import ops
from shared.mongo import Document
from tests.conftest import fresh_namespace
from tests.e2e.test_demo import casereview
from tests.support.infra import Servers
from tests.support.kafka import read_all
from tests.support.logs import leaks, lines, problems
from tests.support.services import ServiceProcess, free_port, process_values

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "themes", "recommendations")
INTERVAL_S = 1


@dataclass(frozen=True)
class Run:
    """One run of the reference audit: its settings, the services' logs, what they answered."""

    values: dict[str, Any]
    logs: dict[str, Path]
    health: dict[str, tuple[int, dict[str, Any]]]
    ready: dict[str, tuple[int, dict[str, Any]]]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(url, timeout=10)
    return response.status_code, response.json()


@pytest.fixture(scope="module")
def run(
    servers: Servers, namespaces: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """The services as processes, logging under <local_dir>/logs/ where `casereview ops` looks;
    the demo submits the reference audit and waits until the pipeline is quiet; then the
    services are stopped, so their logs are complete."""
    local = tmp_path_factory.mktemp("ops")
    namespace = fresh_namespace(namespaces)
    ports = {name: free_port() for name in SERVICES}
    values = process_values(servers, namespace, local, ports, stats_interval_s=INTERVAL_S)
    (local / "logs").mkdir()
    logs = {name: local / "logs" / f"{name}.log" for name in SERVICES}
    processes = [ServiceProcess(name, values, logs[name]) for name in SERVICES]
    made = casereview(values, "init-secrets")
    assert made.returncode == 0, made.stderr
    try:
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_ready()
        demo = casereview(values, "demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        # Two more intervals: every consumer's latest stats line comes after the work.
        time.sleep(2 * INTERVAL_S + 0.5)
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        health = {name: _get(f"{url}/healthz") for name, url in base.items()}
        ready = {name: _get(f"{url}/readyz") for name, url in base.items()}
    finally:
        stopped = {p.name: p.stop() for p in reversed(processes)}
    assert all(stopped.values()), stopped
    try:
        yield Run(values, logs, health, ready)
    finally:
        with MongoClient[Document](servers.mongo_url) as client:
            client.drop_database(namespace)


def test_every_line_of_every_service_is_documented_json_without_personal_data(run: Run) -> None:
    for name, path in run.logs.items():
        assert problems(path) == [], name
        written = lines(path)
        assert {line["service"] for line in written} == {name}
        events = {line["event"] for line in written}
        assert {"service started", "consumer stats", "batch processed", "service stopped"} <= events
        # Library lines (uvicorn's at least) are there, in the same shape.
        assert any(line.get("logger", "").startswith("uvicorn") for line in written)
    assert leaks(run.logs.values()) == []


def test_all_three_services_answer_health_and_readiness_alike(run: Run) -> None:
    for name in SERVICES:
        assert run.health[name] == (200, {"service": name, "status": "alive"})
        status, body = run.ready[name]
        assert status == 200
        assert body == {
            "service": name,
            "ready": True,
            "checks": {"kafka": True, "mongodb": True, "consumer_assigned": True},
        }


def _trail_of_a_contributor(parsed: ops.Parsed) -> tuple[str, list[ops.Line]]:
    """A submission that led to an action without being its correlation id, if there is one:
    the journey must then have come through `caused_by`, header to header."""
    routed = [line for line in parsed.lines if line.fields.get("action_event") == "routed"]
    assert routed, "no action was routed"
    causes = [
        (cause, line.fields["correlation_id"])
        for line in routed
        for cause in line.fields["caused_by"]
    ]
    chosen = next((c for c, first in causes if c != first), causes[0][0])
    return chosen, ops.trace(parsed.lines, chosen)


def test_one_submission_is_traced_through_all_three_services_in_order(run: Run) -> None:
    parsed = ops.parse(t for path in run.logs.values() for t in path.read_text().splitlines())
    assert parsed.unreadable == 0
    event_id, trail = _trail_of_a_contributor(parsed)

    steps = ops.journey(trail)
    wanted = ["submission accepted", "review stored", "themes recomputed", "snapshot published"]
    assert [s for s in steps if s in wanted] == wanted, steps
    assert steps.index("snapshot published") < steps.index("action routed"), steps
    services = [line.service for line in trail]
    assert services == sorted(services, key=SERVICES.index)
    assert set(services) == set(SERVICES)
    for name in SERVICES:
        times = [line.ts for line in trail if line.service == name]
        assert times == sorted(times)
    [accepted] = [line for line in trail if line.event == "submission accepted"]
    assert accepted.fields["correlation_id"] == accepted.fields["event_id"] == event_id

    shown = casereview(run.values, "ops", "trace", event_id)
    assert shown.returncode == 0, shown.stderr
    assert f"Journey of {event_id}" in shown.stdout
    assert "journey: submission accepted \u2192 review stored \u2192 themes recomputed" in (
        shown.stdout
    )
    as_json = json.loads(casereview(run.values, "ops", "trace", event_id, "--json").stdout)
    assert [line["event"] for line in as_json] == [line.event for line in trail]

    unknown = casereview(run.values, "ops", "trace", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("casereview: no log line mentions ")


def test_the_messages_carry_the_ids_the_lines_name(run: Run) -> None:
    bootstrap = run.values["kafka_bootstrap"]
    accepted = asyncio.run(read_all(bootstrap, run.values["topic_accepted"], 500))
    assert accepted
    for _, value, headers in accepted:
        assert headers["correlation_id"].decode() == json.loads(value)["event_id"]
    snapshots = asyncio.run(read_all(bootstrap, run.values["topic_themes"], 500))
    assert snapshots
    for _, _, headers in snapshots:
        causes = headers["caused_by"].decode().split(",")
        assert 1 <= len(causes) <= 20
        assert headers["correlation_id"].decode() == causes[0]


def test_ops_summarises_each_service_from_its_log(run: Run) -> None:
    result = casereview(run.values, "ops", "--json")
    assert result.returncode == 0, result.stderr
    summaries = {s["service"]: s for s in json.loads(result.stdout)}
    assert list(summaries) == list(SERVICES)
    intake, themes, recommendations = (summaries[name] for name in SERVICES)
    # 27 submissions: one re-sent (a duplicate), one with an NHS number as its case ref.
    assert intake["events_in"] == 27
    assert intake["events_out"] == 26
    assert intake["rejections"] == {"personal_data_in_identifier": 1}
    assert themes["events_in"] == 25
    assert themes["events_out"] > 0
    # Every snapshot themes published is a record recommendations read.
    assert recommendations["events_in"] == themes["events_out"]
    assert recommendations["events_out"] >= 4
    for summary in summaries.values():
        assert summary["up_since"] is not None
        assert summary["stopped_at"] is not None
        assert summary["lag"]["total"] == 0
    assert themes["rejections"] == recommendations["rejections"] == {}

    table = casereview(run.values, "ops")
    assert table.returncode == 0, table.stderr
    assert "Services, from their logs (warnings and errors: last 15 min)" in table.stdout
    assert "1 personal_data_in_identifier" in table.stdout
