"""Themes' subscriber and read API: thin adapters onto the `Themes` use case and the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from faststream.kafka import KafkaBroker
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.themes.process import Incoming, Themes
from services.themes.settings import ThemesSettings
from services.themes.store import AuditRecord, ThemesStore
from shared.consuming import ConsumerMonitor, subscribe_batches
from shared.http import error


def subscribe(
    broker: KafkaBroker, themes: Themes, settings: ThemesSettings, monitor: ConsumerMonitor
) -> None:
    """Consumes accepted reviews in batches; offsets move only after `Themes.process`."""
    subscribe_batches(
        broker,
        settings.topic_accepted,
        group=settings.themes_group,
        max_records=settings.themes_batch_max,
        monitor=monitor,
        decode=lambda r: Incoming(r.topic, r.partition, r.offset, r.value or b""),
        process=themes.process,
        fetch_wait_ms=settings.kafka_fetch_wait_ms,
        # A backlog is cheapest in batches as big as `themes_batch_max` (every audit they
        # touch is recomputed, and every pattern flip carried, once per batch); at 1 MiB a
        # fetch brings about a thousand reviews of a partition.
        fetch_bytes=settings.themes_fetch_bytes,
        backlog_records=settings.themes_backlog_records,
        backlog_pause_s=settings.themes_backlog_pause_s,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _audit_view(record: AuditRecord, patterns: int) -> dict[str, Any]:
    summary = record.summary
    return {
        "audit_id": record.audit_id,
        "title": summary.title if summary else None,
        "cases": summary.cases if summary else 0,
        "agencies": list(summary.agencies) if summary else [],
        "patterns": patterns,
        "legal_status": summary.legal_status if summary else {},
        "age_band": summary.age_band if summary else {},
        "updated_at": _iso(record.updated_at),
    }


class ReadApi:
    """`GET /v1/audits` and `GET /v1/audits/{audit_id}/themes`, straight from the store."""

    def __init__(self, store: ThemesStore) -> None:
        self._store = store

    async def audits(self, _: Request) -> JSONResponse:
        """Every audit with its size, agencies, pattern count and last change."""
        records = await self._store.audits()
        patterns = await self._store.pattern_counts()
        return JSONResponse(
            {"audits": [_audit_view(r, patterns.get(r.audit_id, 0)) for r in records]}
        )

    async def themes(self, request: Request) -> JSONResponse:
        """Every theme snapshot of one audit, patterns first, then the most widespread."""
        audit_id = request.path_params["audit_id"]
        record = await self._store.audit(audit_id)
        if record is None:
            return error(404, "unknown_audit", "no review of an audit with this id has arrived")
        held = await self._store.snapshots(audit_id)
        ordered = sorted(
            (s.snapshot for s in held.values()),
            key=lambda s: (not s.content.is_pattern, -s.content.cases_with_theme, s.content.theme),
        )
        # Each item is exactly the contract's snapshot, so clients parse it with the same model.
        themes = [s.to_contract().model_dump(mode="json") for s in ordered]
        view = _audit_view(record, sum(1 for s in ordered if s.content.is_pattern))
        return JSONResponse({"audit": view, "themes": themes})
