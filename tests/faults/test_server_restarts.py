"""Broker and store SIGKILLed mid-stream and restarted: the services heal by themselves."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.checks import check_history, compare_themes, open_actions
from tests.faults.conftest import FaultServers, Figures
from tests.support.native import Server
from tests.support.pipeline import NAMES, Pipeline, record
from tests.support.workload import expected, generate

pytestmark = pytest.mark.faults


async def test_broker_and_store_killed_mid_stream(
    pipeline: Pipeline, figures: Figures, fault_servers: FaultServers
) -> None:
    pair = fault_servers.killable()
    started = time.monotonic()
    events = generate(audits=4, cases_per_audit=10, max_revision=5, seed=47, favoured_only=True)
    reference = expected(events)
    stream = [record(e) for e in events]
    third = len(stream) // 3
    await pipeline.start()
    pids = {name: pipeline.processes[name].process for name in NAMES}
    downtime: dict[str, float] = {}

    victims: list[Server] = ["kafka", "ferretdb"]
    for index, victim in enumerate(victims):
        stored = pipeline.events_logged("themes", "review stored")
        await pipeline.submit(stream[index * third : (index + 1) * third])
        # Mid-stream: themes has begun on this part, and intake and themes have more to do.
        await pipeline.logged("themes", "review stored", stored + 1)
        killed = time.monotonic()
        await asyncio.to_thread(pair.kill, victim)
        await asyncio.to_thread(pair.up, victim)
        downtime[victim] = round(time.monotonic() - killed, 1)
    await pipeline.submit(stream[2 * third :])
    await pipeline.quiet(timeout_s=240)

    for name in NAMES:
        assert pipeline.running(name), f"{name} died"
        assert pipeline.processes[name].process is pids[name], f"{name} was restarted"
        assert pipeline.processes[name].ready(), f"{name} is not ready again"
    served = await pipeline.themes()
    outcome = compare_themes(served, reference)
    assert outcome.differences == []
    actions = await pipeline.actions()
    assert open_actions(actions) == reference.actions
    check_history(
        await pipeline.read("themes"),
        "audit_id+theme",
        {f"{a}/{t}": s for (a, t), s in served.items()},
    )
    check_history(await pipeline.read("actions"), "action_id", {a["action_id"]: a for a in actions})

    figures.record(
        "server_restarts",
        events=len(events),
        server_kills=dict.fromkeys(victims, 1),
        kills=len(victims),
        restarts=len(victims),
        server_down_s=downtime,
        service_restarts=0,
        lost=outcome.lost,
        double_counted=outcome.double_counted,
        duration_s=round(time.monotonic() - started, 1),
    )
