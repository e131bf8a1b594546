"""The fault suite's own servers, a pipeline per test, and the figures each test measured."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.mongo import make_client
from tests.support.infra import REPO, Servers
from tests.support.native import (
    EXTERNAL,
    SERVERS,
    NativePair,
    NativeUnavailableError,
    stable_port,
)
from tests.support.pipeline import Pipeline

FAULTS_DIR = REPO / ".local" / "faults"
FIGURES = FAULTS_DIR / "figures.json"


@dataclass(frozen=True)
class FaultServers:
    """Where the fault tests run: the suite's own native pair when it could start one."""

    servers: Servers
    native: NativePair | None
    external: tuple[str, ...]

    def killable(self) -> NativePair:
        """The native pair, or a skip saying why servers may not be killed here."""
        if self.external:
            pytest.skip(
                f"{' and '.join(self.external)} name external servers: this test kills and "
                "restarts the broker and the store, which it may do only to servers it started"
            )
        if self.native is None:
            pytest.skip("no native servers of the fault suite's own to kill")
        return self.native


def _native_pair() -> NativePair:
    taken: set[int] = set()
    ports = []
    for preferred in (29092, 29093, 29017):
        port = stable_port(frozenset(taken), preferred)
        taken.add(port)
        ports.append(port)
    return NativePair(FAULTS_DIR / "servers", *ports)


@pytest.fixture(scope="package")
def fault_servers() -> Iterator[FaultServers]:
    """A second Kafka and store, started by the project's scripts under `.local/faults/` on
    ports of their own, so killing them never touches the servers others use; stopped when
    the fault suite is done. Where they cannot be started, external servers named by
    settings are used instead (and the tests that kill servers skip); with neither, the
    suite fails."""
    external = tuple(name for name in EXTERNAL if os.environ.get(name))
    pair: NativePair | None = None
    try:
        NativePair.clear(FAULTS_DIR / "servers")
        pair = _native_pair()
        pair.seed_kafka_jars()
        pair.up("kafka")
        pair.up("ferretdb")
    except (NativeUnavailableError, OSError) as error:
        if pair is not None:
            for server in SERVERS:
                with contextlib.suppress(NativeUnavailableError):
                    pair.down(server)
        if not external:
            pytest.fail(f"the fault suite could not start its own servers: {error}", False)
        named = Servers(
            os.environ.get("CASEREVIEW_KAFKA_BOOTSTRAP", ""),
            os.environ.get("CASEREVIEW_MONGO_URL", ""),
        )
        yield FaultServers(named, None, external)
        return
    try:
        yield FaultServers(pair.servers, pair, external)
    finally:
        pair.down("kafka")
        # The suite's store is disposable: its cluster goes too, wherever it was kept.
        pair.forget()


@dataclass
class Figures:
    """What each test measured, merged into `.local/faults/figures.json` at the end."""

    tests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, test: str, **values: Any) -> None:
        """Keeps one test's figures (call it after the test's assertions passed)."""
        self.tests[test] = {**values, "measured_at": datetime.now(UTC).isoformat()}


@pytest.fixture(scope="package")
def figures() -> Iterator[Figures]:
    """The fault suite's figures; earlier runs' figures of tests not run now are kept."""
    found = Figures()
    started = time.monotonic()
    yield found
    if not found.tests:
        return
    FAULTS_DIR.mkdir(parents=True, exist_ok=True)
    held: dict[str, Any] = {}
    if FIGURES.exists():
        held = json.loads(FIGURES.read_text())
    tests = {**held.get("tests", {}), **found.tests}
    totals = {
        key: sum(t.get(key, 0) for t in tests.values())
        for key in (
            "events",
            "kills",
            "restarts",
            "duplicates_injected",
            "poison_injected",
            "lost",
            "double_counted",
            "leaks",
        )
    }
    FIGURES.write_text(
        json.dumps(
            {
                "tests": dict(sorted(tests.items())),
                "totals": totals,
                "last_run_s": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
        + "\n"
    )


@pytest.fixture
async def pipeline(
    fault_servers: FaultServers, namespace: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """The three services for one test (not started yet), on its own topics, groups and
    database on the fault servers; stopped and the database dropped afterwards."""
    made = Pipeline(fault_servers.servers, namespace, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()
        client = make_client(fault_servers.servers.mongo_url)
        # A store a failed test left down: the session's teardown drops it all anyway.
        with contextlib.suppress(Exception):
            await client.drop_database(made.database)
        await client.close()
