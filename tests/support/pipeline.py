"""The three services as processes on one test's topics, groups and database, for fault tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from services.intake.domain import pseudonymise
from shared.routing import default_routing
from tests.support.infra import Servers
from tests.support.kafka import publish, read_all
from tests.support.native import stable_port
from tests.support.services import ServiceProcess, process_values

Name = Literal["intake", "themes", "recommendations"]
NAMES: tuple[Name, ...] = ("intake", "themes", "recommendations")
# What each service consumes.
INPUT: dict[Name, str] = {
    "intake": "submitted",
    "themes": "accepted",
    "recommendations": "themes",
}
# Topics the services write; the pipeline is quiet when none of them grows.
OUTPUTS = ("accepted", "rejected", "themes", "actions")
# The sub-group that reads every action (and to which overdue ones are escalated).
OVERSIGHT = default_routing().escalate_to
Record = tuple[bytes | None, bytes]


def record(event: dict[str, Any]) -> Record:
    """An agency-finding event as an agency system puts it on the submitted topic."""
    return f"{event['audit_id']}/{event['case']['ref']}".encode(), json.dumps(event).encode()


def canonical(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys: equal exactly when the values are equal."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Positioned:
    """A record's value and where it sits on its topic."""

    partition: int
    offset: int
    value: bytes


class Pipeline:
    """intake, themes and recommendations on the given servers, each `python -m services.<x>`
    with its log in `folder`, exactly as a user starts them."""

    def __init__(self, servers: Servers, namespace: str, folder: Path) -> None:
        self.servers = servers
        self.folder = folder
        self.key = secrets.token_hex(32)
        self.agency_tokens = {
            agency: f"agency-{agency}-{secrets.token_hex(8)}"
            for agency in (
                "county-csc",
                "county-camhs",
                "thames-police",
                "county-education",
                "county-health",
            )
        }
        self.lead_tokens = {
            group: f"lead-{group}-{secrets.token_hex(8)}" for group in default_routing().sub_groups
        }
        # Where `process_values` tells the services to read them.
        self._hashes("agency-tokens.yaml", self.agency_tokens)
        self._hashes("lead-tokens.yaml", self.lead_tokens)
        ports: dict[str, int] = {}
        for name in NAMES:
            ports[name] = stable_port(frozenset(ports.values()))
        self.values = process_values(
            servers,
            namespace,
            folder,
            ports,
            pseudonym_key=self.key,
            stats_interval_s=5,
        )
        self.processes = {
            name: ServiceProcess(name, self.values, folder / f"{name}.log") for name in NAMES
        }
        self.kills: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.restarts: dict[str, int] = dict.fromkeys(NAMES, 0)

    def _hashes(self, name: str, tokens: dict[str, str]) -> None:
        path = self.folder / "secrets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(f"{k}: {hashlib.sha256(v.encode()).hexdigest()}\n" for k, v in tokens.items())
        )

    # --- settings ------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        """The test's own name of a topic (`submitted`, `accepted`, ...)."""
        topic: str = self.values[f"topic_{name}"]
        return topic

    def group(self, name: Name) -> str:
        """The service's consumer group."""
        group: str = self.values[f"{name}_group"]
        return group

    @property
    def database(self) -> str:
        """The test's database."""
        database: str = self.values["mongo_database"]
        return database

    def case_token(self, audit_id: str, ref: str) -> str:
        """The pseudonym intake gives a case reference."""
        return pseudonymise(self.key.encode(), audit_id, ref)

    def url(self, name: Name) -> str:
        """The service's HTTP base URL."""
        return f"http://127.0.0.1:{self.processes[name].port}"

    # --- processes -----------------------------------------------------------------------

    async def start(self, *names: Name) -> None:
        """Starts the services (all by default) and waits until each is ready."""
        for name in names or NAMES:
            await asyncio.to_thread(self.processes[name].start)

    async def kill(self, name: Name) -> None:
        """SIGKILL, as a crash would."""
        await asyncio.to_thread(self.processes[name].kill)
        self.kills[name] += 1

    async def restart(self, name: Name) -> None:
        """Starts a killed or stopped service again and waits until it is ready."""
        await asyncio.to_thread(self.processes[name].start)
        self.restarts[name] += 1

    async def terminate(self, name: Name, timeout_s: float = 60.0) -> float:
        """SIGTERM, then waits for the process to end; returns how long it took."""
        process = self.processes[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, timeout_s)
        return time.monotonic() - started

    def running(self, name: Name) -> bool:
        """True while the process lives."""
        process = self.processes[name].process
        return process is not None and process.poll() is None

    def launch_with(self, name: Name, *launcher: str) -> None:
        """From the next start on, runs the service behind a launcher module (`python -m
        <launcher...> services.<name>`), or plainly again when none is given."""
        current = self.processes[name]
        self.processes[name] = ServiceProcess(name, self.values, current.log_path, launcher)

    def stop_all(self) -> None:
        """SIGTERM to every service still running (SIGKILL if it does not stop in time)."""
        for name in reversed(NAMES):
            self.processes[name].stop()

    def log_lines(self, *names: Name) -> list[str]:
        """Every line the services wrote, across restarts (one file per service)."""
        lines: list[str] = []
        for name in names or NAMES:
            path = self.processes[name].log_path
            if path.exists():
                lines.extend(path.read_text(errors="replace").splitlines())
        return lines

    def events_logged(self, name: Name, event: str) -> int:
        """How many lines of the service's log carry this event name."""
        needle = f'"event": "{event}"'
        return sum(needle in line for line in self.log_lines(name))

    async def logged(
        self, name: Name, event: str, at_least: int = 1, timeout_s: float = 60
    ) -> None:
        """Waits until the service has written the event at least so many times."""
        deadline = time.monotonic() + timeout_s
        while self.events_logged(name, event) < at_least:
            assert time.monotonic() < deadline, f"{name} never logged {event!r} {at_least} times"
            await asyncio.sleep(0.05)

    # --- kafka ---------------------------------------------------------------------------

    async def submit(self, records: Iterable[Record]) -> int:
        """Puts records on the submitted topic; returns how many."""
        batch = list(records)
        await publish(self.servers.kafka_bootstrap, self.topic("submitted"), batch)
        return len(batch)

    async def read(self, name: str, idle_ms: int = 1000) -> list[tuple[bytes | None, bytes]]:
        """Every record on one of the test's topics, in partition order."""
        records = await read_all(self.servers.kafka_bootstrap, self.topic(name), idle_ms)
        return [(key, value) for key, value, _ in records]

    async def records(self, name: str, idle_ms: int = 1000) -> list[Positioned]:
        """Every record on one of the test's topics with where it sits."""
        consumer = AIOKafkaConsumer(
            self.topic(name),
            bootstrap_servers=self.servers.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[Positioned] = []
        try:
            while batch := await consumer.getmany(timeout_ms=idle_ms):
                for records in batch.values():
                    out.extend(Positioned(r.partition, r.offset, r.value) for r in records)
            return out
        finally:
            await consumer.stop()

    async def positions(self) -> tuple[dict[str, int], dict[Name, int]]:
        """In one round trip: how many records each of the test's topics ever had, and each
        service's lag (records on its input its group has not committed past)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers.kafka_bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.servers.kafka_bootstrap)
        await admin.start()
        await consumer.start()
        try:
            names = ["submitted", *OUTPUTS]
            described = await admin.describe_topics([self.topic(n) for n in names])
            partitions = {
                d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
                for d in described
                if d["error_code"] == 0
            }
            every = [tp for tps in partitions.values() for tp in tps]
            end = await consumer.end_offsets(every) if every else {}
            ends = {n: sum(end[tp] for tp in partitions.get(self.topic(n), [])) for n in names}
            lags: dict[Name, int] = {}
            for name in NAMES:
                committed = await admin.list_consumer_group_offsets(self.group(name))
                lags[name] = 0
                for tp in partitions.get(self.topic(INPUT[name]), []):
                    meta = committed.get(tp)
                    lags[name] += end[tp] - (meta.offset if meta and meta.offset >= 0 else 0)
            return ends, lags
        finally:
            await consumer.stop()
            await admin.close()

    async def ends(self) -> dict[str, int]:
        """How many records each of the test's topics ever had."""
        return (await self.positions())[0]

    async def lag(self, name: Name) -> int:
        """Records on the service's input that its group has not committed past."""
        return (await self.positions())[1][name]

    async def committed(self, name: Name) -> dict[int, int]:
        """The group's committed offset per partition of its input (absent: none yet)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers.kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group(name))
        finally:
            await admin.close()
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self.topic(INPUT[name]) and meta.offset >= 0
        }

    async def drained(self, name: Name, timeout_s: float = 120.0) -> None:
        """Waits until the service's group has committed past all of its input."""
        deadline = time.monotonic() + timeout_s
        while lag := await self.lag(name):
            assert time.monotonic() < deadline, f"{name} still {lag} behind after {timeout_s} s"
            await asyncio.sleep(0.3)

    async def reset_to_earliest(self, name: Name) -> int:
        """Commits the earliest offset of every input partition for the service's group, as
        `kafka-consumer-groups --reset-offsets --to-earliest` does; the group must be empty.
        Returns how many records the group will read again."""
        topic = self.topic(INPUT[name])
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers.kafka_bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers.kafka_bootstrap,
            group_id=self.group(name),
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            earliest = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.commit({tp: OffsetAndMetadata(earliest[tp], "") for tp in partitions})
            return sum(ends[tp] - earliest[tp] for tp in partitions)
        finally:
            await consumer.stop()

    async def quiet(self, timeout_s: float = 180.0, quiet_s: float = 3.0) -> float:
        """Waits until every group has committed past all its input and no topic has grown
        for `quiet_s`; returns the seconds it took. Fails with the lags at the bound."""
        started = time.monotonic()
        stable_since: float | None = None
        last: dict[str, int] | None = None
        lags: dict[Name, int] = {}
        while True:
            now = time.monotonic()
            assert now - started < timeout_s, f"not quiet after {timeout_s} s; lags {lags}"
            try:
                ends, lags = await self.positions()
            except Exception:
                # A broker that is restarting answers nothing yet: ask again.
                last = stable_since = None
                await asyncio.sleep(0.5)
                continue
            if any(lags.values()) or ends != last:
                stable_since = None
            else:
                stable_since = stable_since or now
                if now - stable_since >= quiet_s:
                    return now - started
            last = ends
            await asyncio.sleep(0.5)

    # --- http ----------------------------------------------------------------------------

    def client(self, name: Name, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client on a service, with a bearer token when given."""
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.url(name), headers=headers, timeout=30)

    async def themes(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every snapshot the themes API serves, keyed (audit, theme)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        async with self.client("themes") as client:
            listed = await client.get("/v1/audits")
            assert listed.status_code == 200, listed.text
            for audit in listed.json()["audits"]:
                response = await client.get(f"/v1/audits/{audit['audit_id']}/themes")
                assert response.status_code == 200, response.text
                for item in response.json()["themes"]:
                    out[(item["audit_id"], item["theme"])] = item
        return out

    async def actions(self) -> list[dict[str, Any]]:
        """Every action, as the oversight sub-group (which reads all) gets them."""
        async with self.client("recommendations", self.lead_tokens[OVERSIGHT]) as client:
            response = await client.get("/v1/actions")
        assert response.status_code == 200, response.text
        actions: list[dict[str, Any]] = response.json()["actions"]
        return actions
