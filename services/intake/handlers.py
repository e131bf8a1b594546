"""Intake's subscriber and HTTP endpoint: thin adapters onto the `Intake` use case."""

from __future__ import annotations

import hashlib
import hmac
import json

from faststream.kafka import KafkaBroker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.intake.domain import Refused
from services.intake.process import Incoming, Intake
from services.intake.settings import IntakeSettings
from shared.consuming import ConsumerMonitor, subscribe_batches
from shared.http import error
from shared.log import get_logger

log = get_logger()


def subscribe(
    broker: KafkaBroker, intake: Intake, settings: IntakeSettings, monitor: ConsumerMonitor
) -> None:
    """Consumes the submitted topic in batches; offsets move only after `Intake.process`."""
    subscribe_batches(
        broker,
        settings.topic_submitted,
        group=settings.intake_group,
        max_records=settings.intake_batch_max,
        monitor=monitor,
        decode=lambda r: Incoming(r.topic, r.partition, r.offset, r.value or b""),
        process=intake.process,
        fetch_wait_ms=settings.kafka_fetch_wait_ms,
    )


class SubmitEndpoint:
    """`POST /v1/findings` for agency systems that cannot speak Kafka.

    The same checks as the consumer answer at once; what passes goes onto the submitted
    topic, so there is one path into the system.
    """

    def __init__(
        self,
        *,
        intake: Intake,
        broker: KafkaBroker,
        topic: str,
        token_hashes: dict[str, str],
    ) -> None:
        self._intake = intake
        self._broker = broker
        self._topic = topic
        self._agency_by_hash = {h: agency for agency, h in token_hashes.items()}

    def _agency(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, agency in self._agency_by_hash.items():
            if hmac.compare_digest(known, digest):
                return agency
        return None

    async def handle(self, request: Request) -> Response:
        """Answers one submission."""
        agency = self._agency(request)
        if agency is None:
            return error(401, "unauthorized", "a valid bearer token is required")
        raw = await request.body()
        verdict = self._intake.assess(raw)
        if isinstance(verdict, Refused):
            return error(422, verdict.reason.value, verdict.detail, event_id=verdict.event_id)
        if verdict.review.agency_id != agency:
            return error(403, "forbidden", "the token's agency does not match agency.id")
        case_ref = json.loads(raw)["case"]["ref"]
        await self._broker.publish(
            raw,
            topic=self._topic,
            key=f"{verdict.review.audit_id}/{case_ref}".encode(),
            correlation_id=verdict.review.event_id,
        )
        log.info(
            "submission received over HTTP",
            correlation_id=verdict.review.event_id,
            event_id=verdict.review.event_id,
            agency_id=agency,
            audit_id=verdict.review.audit_id,
        )
        return JSONResponse({"event_id": verdict.review.event_id, "status": "submitted"}, 202)
