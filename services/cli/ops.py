"""Reading the services' JSON logs: a summary per service, and one submission's journey."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SERVICES = ("intake", "themes", "recommendations")

# Lines that each stand for one message a service published; action versions are the lines
# with an `action_event`.
PUBLISHED = frozenset({"submission accepted", "submission rejected", "snapshot published"})
ERROR_LEVELS = frozenset({"error", "critical"})


@dataclass(frozen=True)
class Line:
    """One log line, with the fields every line has taken out."""

    ts: datetime
    service: str
    level: str
    event: str
    fields: Mapping[str, Any]

    def mentions(self, event_id: str) -> bool:
        """True when the line is about work this submission started or contributed to."""
        causes = self.fields.get("caused_by")
        return event_id in (self.fields.get("event_id"), self.fields.get("correlation_id")) or (
            isinstance(causes, list) and event_id in causes
        )


@dataclass(frozen=True)
class Parsed:
    """The lines of one or more logs, oldest first, and how many lines were not log lines."""

    lines: list[Line]
    unreadable: int


def _line(text: str) -> Line | None:
    try:
        doc = json.loads(text)
        ts = datetime.fromisoformat(doc["ts"])
        service, level, event = doc["service"], doc["level"], doc["event"]
    except (ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(v, str) for v in (service, level, event)) or ts.tzinfo is None:
        return None
    return Line(ts=ts, service=service, level=level, event=event, fields=doc)


def parse(texts: Iterable[str]) -> Parsed:
    """Parses log lines from any mix of services; blank lines are skipped, others counted."""
    lines: list[Line] = []
    unreadable = 0
    for text in texts:
        if not text.strip():
            continue
        line = _line(text)
        if line is None:
            unreadable += 1
        else:
            lines.append(line)
    # Stable: lines written in the same microsecond keep their order within a log.
    lines.sort(key=lambda line: line.ts)
    return Parsed(lines, unreadable)


class Notice(BaseModel):
    """A warning or error line, as the summary shows it."""

    model_config = ConfigDict(frozen=True)

    ts: datetime = Field(description="When it was written.")
    level: str = Field(description="warning, error or critical.")
    event: str = Field(description="What happened.")
    error: str | None = Field(description="The error it names, if any.")
    logger: str | None = Field(description="The library that wrote it, if one did.")

    @classmethod
    def of(cls, line: Line) -> Notice:
        """The notice a line makes."""
        error, logger = line.fields.get("error"), line.fields.get("logger")
        return cls(
            ts=line.ts,
            level=line.level,
            event=line.event,
            error=error if isinstance(error, str) else None,
            logger=logger if isinstance(logger, str) else None,
        )


class Lag(BaseModel):
    """A consumer's lag, from its latest `consumer stats` line."""

    model_config = ConfigDict(frozen=True)

    ts: datetime = Field(description="When the stats line was written.")
    group: str | None = Field(description="The consumer group.")
    total: int | None = Field(description="Records not yet committed; None: broker unreachable.")
    partitions: dict[str, int] = Field(description="Lag per topic:partition.")


class ServiceSummary(BaseModel):
    """What one service's log says about it."""

    model_config = ConfigDict(frozen=True)

    service: str = Field(description="The service.")
    up_since: datetime | None = Field(description="Its latest start.")
    stopped_at: datetime | None = Field(description="When it stopped, if it did after that.")
    events_in: int = Field(description="Records its consumer handled (batch lines).")
    events_out: int = Field(description="Messages it published.")
    rejections: dict[str, int] = Field(description="Refused submissions by reason.")
    lag: Lag | None = Field(description="Its consumer's latest lag.")
    warnings: int = Field(description="Warning lines in the window.")
    errors: int = Field(description="Error and critical lines in the window.")
    latest_warning: Notice | None = Field(description="The window's latest warning.")
    latest_error: Notice | None = Field(description="The window's latest error.")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _lag(line: Line) -> Lag:
    lag = line.fields.get("lag")
    group = line.fields.get("group")
    partitions = {k: _count(v) for k, v in lag.items()} if isinstance(lag, dict) else {}
    return Lag(
        ts=line.ts,
        group=group if isinstance(group, str) else None,
        total=sum(partitions.values()) if isinstance(lag, dict) else None,
        partitions=partitions,
    )


def summarise_service(
    service: str, lines: Sequence[Line], *, now: datetime, window: timedelta
) -> ServiceSummary:
    """One service's summary from its lines, oldest first; warnings and errors count only
    within `window` before `now`."""
    started = stopped = None
    events_in = events_out = 0
    rejections: Counter[str] = Counter()
    lag: Lag | None = None
    warnings: list[Line] = []
    errors: list[Line] = []
    for line in lines:
        if line.event == "service started":
            started, stopped = line.ts, None
        elif line.event == "service stopped":
            stopped = line.ts
        elif line.event == "batch processed":
            events_in += _count(line.fields.get("records"))
        elif line.event == "consumer stats":
            lag = _lag(line)
        if line.event in PUBLISHED or "action_event" in line.fields:
            events_out += 1
        if line.event == "submission rejected":
            rejections[str(line.fields.get("reason"))] += 1
        if line.ts >= now - window:
            if line.level == "warning":
                warnings.append(line)
            elif line.level in ERROR_LEVELS:
                errors.append(line)
    return ServiceSummary(
        service=service,
        up_since=started,
        stopped_at=stopped,
        events_in=events_in,
        events_out=events_out,
        rejections=dict(sorted(rejections.items())),
        lag=lag,
        warnings=len(warnings),
        errors=len(errors),
        latest_warning=Notice.of(warnings[-1]) if warnings else None,
        latest_error=Notice.of(errors[-1]) if errors else None,
    )


def summarise(lines: Sequence[Line], *, now: datetime, window: timedelta) -> list[ServiceSummary]:
    """A summary per service: the three known ones (when they logged anything), then others."""
    by_service: dict[str, list[Line]] = {}
    for line in lines:
        by_service.setdefault(line.service, []).append(line)
    order = [s for s in SERVICES if s in by_service] + sorted(set(by_service) - set(SERVICES))
    return [summarise_service(s, by_service[s], now=now, window=window) for s in order]


def trace(lines: Sequence[Line], event_id: str) -> list[Line]:
    """Every line about the submission's work, in the order the work flowed: intake's lines,
    then themes', then recommendations', each service's in time order.

    Not one time order across services: themes may store a review before intake has heard
    the broker acknowledge it and logged that it forwarded it, and hosts' clocks differ.
    """
    stage = {service: n for n, service in enumerate(SERVICES)}
    found = [line for line in lines if line.mentions(event_id)]
    return sorted(found, key=lambda line: (stage.get(line.service, len(SERVICES)), line.ts))


def journey(trail: Sequence[Line]) -> list[str]:
    """The steps of a trail, each named once, in the order each first happened."""
    return list(dict.fromkeys(line.event for line in trail))


def detail(line: Line) -> str:
    """The few fields that say what a journey line was about."""
    fields = line.fields
    parts = [
        f"{name} {fields[name]}"
        for name in ("audit_id", "agency_id", "theme", "sub_group", "version", "reason")
        if fields.get(name) is not None
    ]
    if "topic" in fields and "offset" in fields:
        parts.append(f"at {fields['topic']}:{fields.get('partition')}:{fields['offset']}")
    return ", ".join(parts)
