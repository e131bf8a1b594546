"""A broker outage under the three services, on a Kafka of the test's own (the shared one is
never stopped): each service warns at most once per interval, and the flow resumes by itself."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from services.cli.dataset import Submission, by_agency, load_dataset
from shared.mongo import Document
from tests.conftest import namespaced
from tests.support.infra import Servers
from tests.support.kafka import publish
from tests.support.logs import leaks, lines, problems
from tests.support.native import NativePair
from tests.support.ports import restartable_port
from tests.support.services import ServiceProcess, free_port

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "themes", "recommendations")
INTERVAL_S = 2.0
OUTAGE_S = 3 * INTERVAL_S


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[NativePair]:
    """A broker of this test's own, on ports it gets back after a restart."""
    port = restartable_port()
    pair = NativePair(
        local=tmp_path / "servers",
        kafka_port=port,
        controller_port=restartable_port({port}),
        # Only Kafka is started here: the services keep the session's document store.
        mongo_port=0,
    )
    pair.seed_kafka_jars()
    pair.up("kafka")
    try:
        yield pair
    finally:
        pair.down("kafka")


def _logged(path: Path, wanted: Callable[[dict[str, Any]], bool]) -> bool:
    return path.exists() and any(wanted(line) for line in lines(path))


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _ids(submissions: list[Submission]) -> set[str]:
    """The submissions themes must store: each case's latest revision from each agency (an
    earlier one that arrives in the same batch is superseded, not stored)."""
    latest: dict[tuple[str, str], Submission] = {}
    for s in submissions:
        key = (s.agency_id, s.event.case.ref)
        if s.refused_for is None and (
            key not in latest or s.event.revision > latest[key].event.revision
        ):
            latest[key] = s
    return {str(s.event.event_id) for s in latest.values()}


def _stored(path: Path, ids: set[str]) -> Callable[[], bool]:
    def done() -> bool:
        stored = {line.get("event_id") for line in lines(path) if line["event"] == "review stored"}
        return ids <= stored

    return done


def _between(line: dict[str, Any], start: datetime, end: datetime) -> bool:
    return start <= datetime.fromisoformat(line["ts"]) <= end


def test_a_broker_outage_is_one_warning_per_interval_and_heals_itself(
    kafka: NativePair, servers: Servers, tmp_path: Path
) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    ports = {name: free_port() for name in SERVICES}
    values = namespaced(
        Servers(kafka.servers.kafka_bootstrap, servers.mongo_url),
        namespace,
        local_dir=str(tmp_path),
        intake_group=f"{namespace}-intake",
        themes_group=f"{namespace}-themes",
        recommendations_group=f"{namespace}-recommendations",
        stats_interval_s=INTERVAL_S,
        **{f"{name}_port": port for name, port in ports.items()},
    )
    logs = {name: tmp_path / f"{name}.log" for name in SERVICES}
    processes = [ServiceProcess(name, values, logs[name]) for name in SERVICES]
    per_agency = by_agency(load_dataset())
    first = per_agency.pop("county-csc")
    later = [s for subs in per_agency.values() for s in subs]

    def send(submissions: list[Submission]) -> None:
        records = [(s.key, s.to_json()) for s in submissions]
        asyncio.run(publish(values["kafka_bootstrap"], values["topic_submitted"], records))

    try:
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_ready()
        send(first)
        _wait_for("the first agency's reviews", _stored(logs["themes"], _ids(first)))

        went = datetime.now(UTC)
        kafka.down("kafka")
        time.sleep(OUTAGE_S)
        kafka.up("kafka")
        back = datetime.now(UTC)

        send(later)
        new = _ids(later)
        _wait_for("the later reviews", _stored(logs["themes"], new))
        _wait_for(
            "an action caused by a later submission",
            lambda: _logged(
                logs["recommendations"],
                lambda line: "action_event" in line and bool(new & set(line["caused_by"])),
            ),
        )
        flowing = datetime.now(UTC)
    finally:
        for process in reversed(processes):
            process.stop()
        with MongoClient[Document](servers.mongo_url) as client:
            client.drop_database(namespace)

    window = (flowing - went).total_seconds()
    bound = math.ceil(window / INTERVAL_S) + 1
    for name, path in logs.items():
        assert problems(path) == [], name
        written = [line for line in lines(path) if _between(line, went, flowing)]
        own = [line for line in written if "logger" not in line]
        warned = [line for line in own if line["level"] in ("warning", "error", "critical")]
        assert 1 <= len(warned) <= bound, (name, bound, [w["event"] for w in warned])
        assert any(
            line["event"] == "dependency unreachable" and line["unreachable"] == ["kafka"]
            for line in warned
        ), name
        assert any(line["event"] == "dependency reachable again" for line in own), name
        # The stats lines kept coming while the broker was away, without a lag to show.
        assert any(
            line["event"] == "consumer stats" and line["lag"] is None and _between(line, went, back)
            for line in own
        ), name
        # Libraries are held to one line per interval each, however often they retry.
        families: dict[str, int] = {}
        for line in written:
            if "logger" in line and line["level"] != "info":
                family = line["logger"].split(".")[0]
                families[family] = families.get(family, 0) + 1
        assert all(n <= bound for n in families.values()), (name, bound, families)
    assert leaks(logs.values()) == []
