"""Building agency-finding submissions for tests."""

from __future__ import annotations

import json
import uuid
from typing import Any


def finding(
    *,
    audit_id: str = "paqa-2020-05-mental-health",
    agency_id: str = "county-csc",
    agency_type: str = "childrens_social_care",
    ref: str = "C07",
    revision: int = 1,
    findings: list[dict[str, Any]] | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid agency-finding v1 document; keyword arguments change or add fields."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "submitted_at": "2020-05-11T09:30:00Z",
        "audit_id": audit_id,
        "agency": {"id": agency_id, "type": agency_type},
        "case": {"ref": ref, "age_band": "10-15", "legal_status": "child_in_need"},
        "revision": revision,
        "findings": findings if findings is not None else [{"code": "domestic_abuse"}],
    }
    doc.update(extra)
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    """The document as an agency system would send it."""
    return json.dumps(doc).encode()
