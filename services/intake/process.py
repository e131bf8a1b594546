"""Intake's use case: answer a batch of submissions, durably, exactly once in effect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.intake.domain import Admitted, Outcome, Refused, assess, decide, payload_sha256
from services.intake.store import IntakeStore, Source
from shared.consuming import batch_position
from shared.contracts import FindingRejectedV1, RejectionReason, SourcePosition
from shared.log import get_logger
from shared.taxonomy import Taxonomy

log = get_logger()

Publish = Callable[[str, bytes, bytes, str | None], Awaitable[None]]
"""Sends (topic, key, value, correlation id) and returns once the broker acknowledged it."""


@dataclass(frozen=True)
class Incoming:
    """One record read from the submitted topic."""

    topic: str
    partition: int
    offset: int
    value: bytes

    @property
    def position(self) -> str:
        """Where it was read, as one string."""
        return f"{self.topic}:{self.partition}:{self.offset}"


def _source(record: Incoming) -> Source:
    return Source(f"{record.topic}:{record.partition}", record.offset)


@dataclass(frozen=True)
class Tally:
    """What a batch came to."""

    accepted: int
    duplicates: int
    rejected: int


class Intake:
    """Validates, de-duplicates, forwards and answers; the handler gives it batches."""

    def __init__(
        self,
        *,
        store: IntakeStore,
        publish: Publish,
        taxonomy: Taxonomy,
        key: bytes,
        accepted_topic: str,
        rejected_topic: str,
        max_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._publish = publish
        self._taxonomy = taxonomy
        self._key = key
        self._accepted_topic = accepted_topic
        self._rejected_topic = rejected_topic
        self._max_bytes = max_bytes
        self._clock = clock

    def assess(self, raw: bytes) -> Admitted | Refused:
        """The checks that need no store; the HTTP endpoint answers with these."""
        return assess(
            raw,
            taxonomy=self._taxonomy,
            key=self._key,
            now=self._clock(),
            max_bytes=self._max_bytes,
        )

    async def process(self, batch: Sequence[Incoming]) -> Tally:
        """Answers every record; returns once every effect is durable and acknowledged."""
        started = time.monotonic()
        now = self._clock()
        verdicts = [(record, self.assess(record.value)) for record in batch]
        refusals: list[tuple[Incoming, Refused]] = []
        admitted: list[tuple[Incoming, Admitted]] = []
        # Within one batch, the first submission of a revision key or event id is the one the
        # store is asked about; later ones are judged against it here.
        first_by_key: dict[str, Admitted] = {}
        first_events: set[str] = set()
        duplicates = 0
        for record, verdict in verdicts:
            if isinstance(verdict, Refused):
                refusals.append((record, verdict))
                continue
            earlier = first_by_key.get(verdict.revision_key)
            if verdict.review.event_id in first_events or (
                earlier is not None and earlier.fingerprint == verdict.fingerprint
            ):
                duplicates += 1
                self._log_duplicate(record, verdict)
            elif earlier is not None:
                refusals.append((record, _conflict(verdict)))
            else:
                first_by_key[verdict.revision_key] = verdict
                first_events.add(verdict.review.event_id)
                admitted.append((record, verdict))

        claims = await self._store.claim(
            [a for _, a in admitted], [_source(r) for r, _ in admitted], now
        )
        forwards: list[tuple[Incoming, Admitted]] = []
        for (record, verdict), (claim, claimed_now) in zip(admitted, claims, strict=True):
            outcome = decide(verdict, claim, claimed_now)
            if outcome == Outcome.FORWARD:
                forwards.append((record, verdict))
            elif outcome == Outcome.CONFLICT:
                refusals.append((record, _conflict(verdict)))
            else:
                duplicates += 1
                self._log_duplicate(record, verdict)

        answered = await self._store.answered([r.position for r, _ in refusals])
        to_answer = [(r, v) for r, v in refusals if r.position not in answered]
        await asyncio.gather(
            *(self._forward(record, verdict) for record, verdict in forwards),
            *(self._answer(record, refusal, now) for record, refusal in to_answer),
        )
        if forwards:
            # Every forward of the batch is acknowledged: its claims, and any an earlier run
            # left unforwarded among these offsets, count as forwarded from here.
            below: dict[str, int] = {}
            for record in batch:
                source = _source(record)
                below[source.partition] = max(below.get(source.partition, 0), source.offset + 1)
            await self._store.mark_forwarded(below)
        await self._store.mark_answered([(r.position, v) for r, v in to_answer], now)
        tally = Tally(accepted=len(forwards), duplicates=duplicates, rejected=len(refusals))
        if batch:
            log.info(
                "batch processed",
                records=len(batch),
                accepted=tally.accepted,
                duplicates=tally.duplicates,
                rejected=tally.rejected,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                **batch_position(batch),
            )
        return tally

    async def _forward(self, record: Incoming, verdict: Admitted) -> None:
        review = verdict.review
        await self._publish(
            self._accepted_topic, review.audit_id.encode(), review.to_json(), review.event_id
        )
        log.info(
            "submission accepted",
            correlation_id=review.event_id,
            event_id=review.event_id,
            agency_id=review.agency_id,
            audit_id=review.audit_id,
            revision=review.revision,
            findings=len(review.findings),
            redactions=list(verdict.redactions),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    async def _answer(self, record: Incoming, refusal: Refused, now: datetime) -> None:
        message = FindingRejectedV1(
            rejected_at=now,
            reason=refusal.reason,
            detail=refusal.detail[:2000],
            event_id=refusal.event_id,
            agency_id=refusal.agency_id,
            audit_id=refusal.audit_id,
            payload_sha256=payload_sha256(record.value),
            source=SourcePosition(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
        )
        await self._publish(
            self._rejected_topic,
            (refusal.agency_id or "unknown").encode(),
            message.to_json(),
            refusal.event_id,
        )
        log.info(
            "submission rejected",
            correlation_id=refusal.event_id,
            event_id=refusal.event_id,
            agency_id=refusal.agency_id,
            audit_id=refusal.audit_id,
            reason=refusal.reason.value,
            detail=message.detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    @staticmethod
    def _log_duplicate(record: Incoming, verdict: Admitted) -> None:
        log.debug(
            "duplicate submission ignored",
            correlation_id=verdict.review.event_id,
            event_id=verdict.review.event_id,
            agency_id=verdict.review.agency_id,
            audit_id=verdict.review.audit_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )


def _conflict(verdict: Admitted) -> Refused:
    review = verdict.review
    return Refused(
        RejectionReason.REVISION_CONFLICT,
        f"revision {review.revision} of this case from agency {review.agency_id} was already "
        "accepted with different content; send a higher revision to change it",
        event_id=review.event_id,
        agency_id=review.agency_id,
        audit_id=review.audit_id,
    )
