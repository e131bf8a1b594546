"""Temporary probe."""

from __future__ import annotations
import json, pathlib
import pytest
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from tests.conftest import namespaced
from tests.support.infra import Servers
from tests.support.kafka import publish, read_all, group_lag, wait_for

pytestmark = pytest.mark.integration
EX = pathlib.Path(__file__).resolve().parents[3] / "shared" / "contracts" / "examples"


async def test_probe(servers: Servers, namespace: str, mongo) -> None:
    settings = IntakeSettings(**namespaced(servers, namespace, intake_group=f"{namespace}-intake"))
    from shared.log import configure_logging

    configure_logging("t", "DEBUG", "console")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        valid = (EX / "agency-finding.valid.json").read_bytes()
        nhs = (EX / "agency-finding.invalid-nhs-number.json").read_bytes()
        await publish(
            servers.kafka_bootstrap,
            settings.topic_submitted,
            [(b"k", valid), (b"k", nhs), (b"k", b"\xff\xfe"), (b"k", valid)],
        )

        async def done():
            return (
                await group_lag(
                    servers.kafka_bootstrap, settings.intake_group, settings.topic_submitted
                )
                == 0
            )

        await wait_for(done, 30)
    acc = await read_all(servers.kafka_bootstrap, settings.topic_accepted)
    rej = await read_all(servers.kafka_bootstrap, settings.topic_rejected)
    print(acc)
    print(rej)
    assert len(acc) == 1 and len(rej) == 2
