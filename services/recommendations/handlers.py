"""Recommendations' subscriber, leads' HTTP endpoints and upkeep loop: thin adapters onto the
`Recommendations` use case."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.recommendations.domain import TRANSITIONS, Refused
from services.recommendations.process import Forbidden, Incoming, NotFound, Recommendations
from services.recommendations.settings import RecommendationsSettings
from services.recommendations.store import HistoryEntry, StoredAction
from shared.consuming import ConsumerMonitor, subscribe_batches
from shared.contracts import ActionStatus
from shared.http import error
from shared.log import CAUSED_BY_HEADER, causes_of, describe, get_logger

log = get_logger()


def _incoming(record: Any) -> Incoming:
    headers = dict(record.headers or ())
    correlation_id = headers.get("correlation_id")
    return Incoming(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value or b"",
        bytes(correlation_id).decode("utf-8", "replace") if correlation_id else None,
        causes_of(headers.get(CAUSED_BY_HEADER)),
    )


def subscribe(
    broker: KafkaBroker,
    use_case: Recommendations,
    settings: RecommendationsSettings,
    monitor: ConsumerMonitor,
) -> None:
    """Consumes the themes topic in batches; offsets move only after `process` returned."""
    subscribe_batches(
        broker,
        settings.topic_themes,
        group=settings.recommendations_group,
        max_records=settings.recommendations_batch_max,
        monitor=monitor,
        decode=_incoming,
        process=use_case.process,
        fetch_wait_ms=settings.kafka_fetch_wait_ms,
        batch_interval_s=settings.recommendations_batch_interval_s,
    )


async def run_upkeep(
    use_case: Recommendations, interval_s: float, monitor: ConsumerMonitor
) -> None:
    """Escalates overdue actions and publishes leftovers every interval until cancelled.

    A failure is warned about through the monitor, so an outage stays one warning per
    stats interval whichever of the service's tasks meets it.
    """
    while True:
        try:
            escalated, published = await use_case.upkeep()
            if escalated or published:
                log.info("upkeep done", escalated=escalated, published=published)
        except Exception as failure:
            monitor.warn(
                "upkeep failed; it will run again", error=describe(failure), retry_in_s=interval_s
            )
        await asyncio.sleep(interval_s)


class StatusChange(BaseModel):
    """A lead's request to move an action on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: ActionStatus = Field(description="The status the action is to have.")
    owner: str | None = Field(
        default=None, min_length=1, max_length=200, description="Who owns it from now on."
    )
    note: str | None = Field(
        default=None, max_length=2000, description="Why; required when declining."
    )


def _history(entry: HistoryEntry) -> dict[str, Any]:
    message = entry.message
    return {
        "version": message.version,
        "event": message.event.value,
        "occurred_at": message.occurred_at.isoformat(),
        "status": message.status.value,
        "themes": message.themes,
        "owner": message.owner,
        "due_by": message.due_by.isoformat(),
        "escalated_to": message.escalated_to,
        "cause": entry.cause,
        "by": entry.by,
        "note": entry.note,
        "correlation_id": entry.correlation_id,
    }


class ActionsApi:
    """The leads' API. A bearer token names a sub-group; its lead sees and changes that
    sub-group's actions. The oversight sub-group (the Business Group) reads every action
    and changes only its own."""

    def __init__(self, use_case: Recommendations, token_hashes: dict[str, str]) -> None:
        self._use_case = use_case
        self._by_hash = {digest: group for group, digest in token_hashes.items()}

    def _principal(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, group in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return group
        return None

    def _view(self, stored: StoredAction, *, history: bool) -> dict[str, Any]:
        action = stored.action
        groups = self._use_case.routing.sub_groups
        body: dict[str, Any] = {
            **action.model_dump(mode="json", exclude={"schema_version"}),
            "sub_group_name": groups[action.sub_group].name
            if action.sub_group in groups
            else action.sub_group,
            "allowed_transitions": [s.value for s in TRANSITIONS[action.status]],
        }
        if history:
            body["history"] = [_history(entry) for entry in stored.history]
        return body

    async def list_actions(self, request: Request) -> Response:
        """`GET /v1/actions?status=&audit_id=`."""
        principal = self._principal(request)
        if principal is None:
            return _unauthorized()
        raw_status = request.query_params.get("status")
        try:
            status = ActionStatus(raw_status) if raw_status else None
        except ValueError:
            return error(
                422,
                "invalid_filter",
                f"status must be one of {', '.join(s.value for s in ActionStatus)}",
            )
        found = await self._use_case.listing(
            principal, status=status, audit_id=request.query_params.get("audit_id") or None
        )
        return JSONResponse({"actions": [self._view(s, history=False) for s in found]})

    async def get_action(self, request: Request) -> Response:
        """`GET /v1/actions/{action_id}`, with its history."""
        principal = self._principal(request)
        if principal is None:
            return _unauthorized()
        found = await self._use_case.action(principal, request.path_params["action_id"])
        if isinstance(found, NotFound):
            return _not_found()
        return JSONResponse(self._view(found, history=True))

    async def change_status(self, request: Request) -> Response:
        """`POST /v1/actions/{action_id}/status` with `{status, owner?, note?}`."""
        principal = self._principal(request)
        if principal is None:
            return _unauthorized()
        try:
            change = StatusChange.model_validate_json(await request.body())
        except ValidationError as invalid:
            # Field paths and messages only: the input may be a note with personal data in it.
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}"
                for e in invalid.errors(include_url=False, include_input=False)[:5]
            ]
            return error(422, "invalid_request", "; ".join(problems))
        correlation_id = request.headers.get("x-correlation-id") or uuid.uuid4().hex
        outcome = await self._use_case.change_status(
            principal,
            request.path_params["action_id"],
            change.status,
            owner=change.owner,
            note=change.note,
            correlation_id=correlation_id,
        )
        if isinstance(outcome, NotFound):
            return _not_found()
        if isinstance(outcome, Forbidden):
            return error(403, "forbidden", outcome.detail)
        if isinstance(outcome, Refused):
            allowed = [s.value for s in outcome.allowed]
            if outcome.reason == "reason_required":
                return error(422, outcome.reason, outcome.detail, allowed=allowed)
            return error(409, outcome.reason, outcome.detail, allowed=allowed)
        return JSONResponse(self._view(outcome, history=True))


def _unauthorized() -> Response:
    return error(401, "unauthorized", "a valid sub-group lead's bearer token is required")


def _not_found() -> Response:
    return error(404, "not_found", "no such action for this sub-group")
