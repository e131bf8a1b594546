"""Reading agency-finding events from JSON lines, with the line number of anything wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from shared.contracts import AgencyFindingV1


class LineError(ValueError):
    """A line of the input is not an agency-finding v1 event; the message says which and why."""


@dataclass(frozen=True)
class Line:
    """One event read from the input, sent on exactly as written."""

    number: int
    key: bytes
    value: bytes
    agency_id: str
    event_id: str


def _detail(error: ValidationError) -> str:
    # Field paths and messages only: the input itself may hold personal data.
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "(event)"
    more = error.error_count() - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more)" if more > 0 else "")


def parse_line(number: int, text: str) -> Line:
    """One line as an event, or a `LineError` naming the line."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise LineError(f"line {number}: not JSON ({error.msg} at column {error.colno})") from None
    try:
        event = AgencyFindingV1.model_validate_json(text)
    except ValidationError as error:
        raise LineError(
            f"line {number}: not an agency-finding v1 event: {_detail(error)}"
        ) from None
    return Line(
        number=number,
        key=f"{event.audit_id}/{event.case.ref}".encode(),
        value=text.encode(),
        agency_id=event.agency.id,
        event_id=str(event.event_id),
    )


def parse_lines(text: str) -> list[Line]:
    """Every non-blank line as an event; the first bad line stops it, before anything is sent."""
    return [
        parse_line(number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
