"""Intake's rules: what a submission is, whether it may come in, and what goes on from it.

Pure: no I/O. `assess` answers every input with `Admitted` or `Refused`; the revision-conflict
and duplicate checks need the store and are decided in `decide` over what the store holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from services.intake.privacy import identifier_problem, redact
from shared.contracts import (
    SLUG_PATTERN,
    AcceptedFinding,
    AgencyFindingV1,
    RejectionReason,
    ReviewAcceptedV1,
)
from shared.taxonomy import Taxonomy

MAX_MESSAGE_BYTES = 64 * 1024
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Refused:
    """A submission intake will not accept, with what could safely be read of it."""

    reason: RejectionReason
    detail: str
    event_id: str | None = None
    agency_id: str | None = None
    audit_id: str | None = None


@dataclass(frozen=True)
class Admitted:
    """A submission that passed every check that needs no store."""

    review: ReviewAcceptedV1
    fingerprint: str
    redactions: tuple[str, ...]

    @property
    def revision_key(self) -> str:
        """Identifies (audit, agency, case, revision): one content may hold it."""
        r = self.review
        return f"{r.audit_id}|{r.agency_id}|{r.case_token}|{r.revision}"


def pseudonymise(key: bytes, audit_id: str, ref: str) -> str:
    """The case token: HMAC-SHA-256 over (audit_id, ref) with the partnership's secret key."""
    return hmac.new(key, f"{audit_id}\x1f{ref}".encode(), hashlib.sha256).hexdigest()


def payload_sha256(raw: bytes) -> str:
    """What a sender can find its refused message by."""
    return hashlib.sha256(raw).hexdigest()


def _safe(value: Any, pattern: str) -> str | None:
    # Echo a field back only when its form rules out free text that could be personal data.
    if isinstance(value, str) and re.fullmatch(pattern, value):
        return value
    return None


def _identity(doc: Any) -> dict[str, str | None]:
    if not isinstance(doc, dict):
        return {"event_id": None, "agency_id": None, "audit_id": None}
    agency = doc.get("agency")
    return {
        "event_id": _safe(doc.get("event_id"), _UUID.pattern),
        "agency_id": _safe(agency.get("id"), SLUG_PATTERN) if isinstance(agency, dict) else None,
        "audit_id": _safe(doc.get("audit_id"), SLUG_PATTERN),
    }


def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every field name the model and the models inside it declare."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for inner in (field.annotation, *get_args(field.annotation)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                names |= _field_names(inner)
    return frozenset(names)


_CONTRACT_FIELDS = _field_names(AgencyFindingV1)


def _path(loc: tuple[int | str, ...]) -> str:
    # A key the contract does not know is the sender's text, and may be a name: say only
    # that one was there.
    parts = [
        str(p) if isinstance(p, int) or p in _CONTRACT_FIELDS else "(unknown key)" for p in loc
    ]
    return ".".join(parts) or "(message)"


def _schema_detail(error: ValidationError) -> str:
    # Field paths and messages only: pydantic's default text echoes the input, which may be
    # exactly the personal data we refuse to repeat.
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = _path(item["loc"])
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def assess(
    raw: bytes,
    *,
    taxonomy: Taxonomy,
    key: bytes,
    now: datetime,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Admitted | Refused:
    """Every check that needs only the message itself, in the order a sender would fix them."""
    if len(raw) > max_bytes:
        return Refused(
            RejectionReason.OVERSIZE, f"message is {len(raw)} bytes; the limit is {max_bytes}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Refused(
            RejectionReason.UNDECODABLE, f"not UTF-8 text: byte {error.start} is invalid"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        return Refused(
            RejectionReason.INVALID_JSON,
            f"not JSON: {error.msg} at line {error.lineno} column {error.colno}",
        )
    except RecursionError:
        return Refused(RejectionReason.INVALID_JSON, "not JSON that can be read: nested too deeply")
    ids = _identity(doc)
    if not isinstance(doc, dict):
        return Refused(
            RejectionReason.SCHEMA_VIOLATION,
            f"(message): expected a JSON object, got {type(doc).__name__}",
        )
    version = doc.get("schema_version")
    if version != 1 or isinstance(version, bool):
        return Refused(
            RejectionReason.UNSUPPORTED_SCHEMA_VERSION,
            "schema_version must be 1 (agency-finding v1)"
            + ("; it is missing" if version is None else ""),
            **ids,
        )
    case = doc.get("case")
    if isinstance(case, dict) and isinstance(case.get("ref"), str):
        problem = identifier_problem(case["ref"])
        if problem:
            return Refused(RejectionReason.PERSONAL_DATA_IN_IDENTIFIER, problem, **ids)
    try:
        finding = AgencyFindingV1.model_validate_json(raw)
    except ValidationError as error:
        return Refused(RejectionReason.SCHEMA_VIOLATION, _schema_detail(error), **ids)
    for index, item in enumerate(finding.findings):
        if item.code not in taxonomy:
            closest = taxonomy.closest(item.code)
            hint = f"; closest known: {', '.join(closest)}" if closest else ""
            return Refused(
                RejectionReason.UNKNOWN_FINDING_CODE,
                f"findings.{index}.code: unknown finding code '{item.code}'{hint}",
                **ids,
            )
    return admit(finding, key=key, now=now)


def admit(finding: AgencyFindingV1, *, key: bytes, now: datetime) -> Admitted:
    """The accepted review: case ref replaced by its token, notes redacted."""
    kinds: list[str] = []
    accepted: list[AcceptedFinding] = []
    for item in finding.findings:
        note = None
        if item.note is not None:
            note, found = redact(item.note)
            kinds.extend(found)
        accepted.append(AcceptedFinding(code=item.code, note=note, waited_days=item.waited_days))
    review = ReviewAcceptedV1(
        event_id=str(finding.event_id),
        accepted_at=now,
        submitted_at=finding.submitted_at,
        audit_id=finding.audit_id,
        audit_title=finding.audit_title,
        agency_id=finding.agency.id,
        agency_type=finding.agency.type,
        case_token=pseudonymise(key, finding.audit_id, finding.case.ref),
        age_band=finding.case.age_band,
        legal_status=finding.case.legal_status,
        revision=finding.revision,
        findings=accepted,
    )
    content = review.model_dump(
        mode="json", exclude={"event_id", "accepted_at", "submitted_at", "schema_version"}
    )
    fingerprint = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return Admitted(review=review, fingerprint=fingerprint, redactions=tuple(dict.fromkeys(kinds)))


@dataclass(frozen=True)
class Claim:
    """What the store holds for a revision key: who took it, with what content, and whether
    its forward to themes was acknowledged."""

    event_id: str
    fingerprint: str
    forwarded: bool


class Outcome:
    """What to do with an admitted submission once the store has been asked."""

    FORWARD = "forward"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def decide(admitted: Admitted, claim: Claim | None, claimed_now: bool) -> str:
    """Forward, skip as a duplicate, or refuse as a revision conflict.

    `claimed_now` is true when this submission's own insert created the claim.
    """
    if claimed_now or claim is None:
        return Outcome.FORWARD
    if claim.fingerprint != admitted.fingerprint:
        return Outcome.CONFLICT
    if claim.event_id == admitted.review.event_id and not claim.forwarded:
        # Claimed by this very submission before a crash: forwarding again is the recovery.
        return Outcome.FORWARD
    return Outcome.DUPLICATE
