"""The messages that cross service boundaries, as frozen pydantic models.

The four public contracts mirror the reference JSON Schemas that outside systems are built
against (`agency-finding`, `finding-rejected`, `theme-snapshot`, `action`); `ReviewAccepted` is
the internal message intake sends to themes. A breaking change is a new class and a new topic
(`...V2`, `.v2`); an additive change gets an upcast step where the message is read.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
CASE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
CODE_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"

Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]


class Contract(BaseModel):
    """Base of every message: immutable, strict, and closed to unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # Contracts whose schema types optional fields as absent rather than null leave them out.
    omit_none: ClassVar[bool] = False

    def to_json(self) -> bytes:
        """The message as it goes on the wire."""
        return self.model_dump_json(exclude_none=self.omit_none).encode()


class AgencyType(StrEnum):
    """The kinds of agency that review their own records of a case."""

    CHILDRENS_SOCIAL_CARE = "childrens_social_care"
    CAMHS = "camhs"
    COMMUNITY_HEALTH = "community_health"
    GP = "gp"
    ACUTE_HEALTH = "acute_health"
    POLICE = "police"
    EDUCATION = "education"
    ADULT_MENTAL_HEALTH = "adult_mental_health"
    PROBATION = "probation"
    YOUTH_JUSTICE = "youth_justice"
    EARLY_HELP = "early_help"
    HOUSING = "housing"
    OTHER = "other"


AgeBand = Literal["0-4", "5-9", "10-15", "16-17", "18-25"]
LegalStatus = Literal[
    "early_help", "child_in_need", "child_protection_plan", "child_in_care", "none"
]


class Category(StrEnum):
    """What kind of learning a finding code is."""

    RISK_FACTOR = "risk_factor"
    PRACTICE_CONCERN = "practice_concern"
    GOOD_PRACTICE = "good_practice"


class Descriptor(StrEnum):
    """Prevalence in the audit's own words."""

    ALL = "all"
    ALMOST_ALL = "almost_all"
    MOST = "most"
    SOME = "some"
    FEW = "few"
    NONE = "none"


class RejectionReason(StrEnum):
    """Machine-readable reasons intake gives for refusing a submission."""

    UNDECODABLE = "undecodable"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    UNKNOWN_FINDING_CODE = "unknown_finding_code"
    PERSONAL_DATA_IN_IDENTIFIER = "personal_data_in_identifier"
    REVISION_CONFLICT = "revision_conflict"
    OVERSIZE = "oversize"


class ActionEvent(StrEnum):
    """What happened to an action."""

    ROUTED = "routed"
    UPDATED = "updated"
    STATUS_CHANGED = "status_changed"
    ESCALATED = "escalated"
    WITHDRAWN = "withdrawn"


class ActionStatus(StrEnum):
    """Where a sub-group lead has taken an action."""

    ROUTED = "routed"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


# --- agency-finding v1 (casereview.findings.submitted.v1) ---------------------------------


class Agency(Contract):
    """The agency whose records were reviewed."""

    id: Slug = Field(description="The agency's id, agreed for the partnership.")
    type: AgencyType = Field(description="The kind of agency.")


class Case(Contract):
    """The case reviewed, by the audit's shared reference; never a name, DOB or NHS number."""

    ref: str = Field(
        pattern=CASE_REF_PATTERN,
        description="The audit's shared case reference; never a name, date of birth or NHS number.",
    )
    age_band: AgeBand = Field(description="The child's age band.")
    legal_status: LegalStatus = Field(description="The child's legal status during the audit.")


class Finding(Contract):
    """One finding code the agency records on the case, with optional detail."""

    code: str = Field(pattern=CODE_PATTERN, description="A code of the taxonomy.")
    note: str | None = Field(
        default=None,
        max_length=2000,
        description="Free text; intake redacts anything that looks like personal data.",
    )
    waited_days: int | None = Field(
        default=None, ge=0, le=3650, description="Days the child waited for help, where known."
    )


class AgencyFindingV1(Contract):
    """One agency's full current review of one case in one multi-agency audit."""

    omit_none: ClassVar[bool] = True

    schema_version: Literal[1] = Field(description="Contract version.")
    event_id: UUID = Field(description="Unique per submission; a re-send keeps the same id.")
    # RFC 3339, as the schema's `date-time` says: with its offset from UTC, which a time
    # without one leaves unknown.
    submitted_at: AwareDatetime = Field(description="When the agency system sent the review.")
    audit_id: Slug = Field(description="The audit the review belongs to.")
    audit_title: str | None = Field(
        default=None, max_length=200, description="The audit's title, for people."
    )
    agency: Agency = Field(description="The reviewing agency.")
    case: Case = Field(description="The case reviewed.")
    revision: int = Field(ge=1, description="Higher replaces lower for the same agency and case.")
    findings: list[Finding] = Field(
        max_length=50, description="Everything the agency currently finds on the case."
    )


# --- finding-rejected v1 (casereview.findings.rejected.v1) --------------------------------


class SourcePosition(Contract):
    """Where on the submitted topic the refused message was read."""

    topic: str = Field(description="Topic the message was read from.")
    partition: int = Field(ge=0, description="Its partition.")
    offset: int = Field(ge=0, description="Its offset.")


class FindingRejectedV1(Contract):
    """Intake's answer to anything it could not accept; no raw payload, no personal data."""

    schema_version: Literal[1] = Field(default=1, description="Contract version.")
    rejected_at: datetime = Field(description="When intake refused the message.")
    reason: RejectionReason = Field(description="Why, for machines.")
    detail: str = Field(max_length=2000, description="Why, for people.")
    event_id: str | None = Field(default=None, description="The event id, if it could be read.")
    agency_id: str | None = Field(default=None, description="The agency id, if it could be read.")
    audit_id: str | None = Field(default=None, description="The audit id, if it could be read.")
    payload_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the raw bytes, to find the message."
    )
    source: SourcePosition = Field(description="Where the message was read.")


# --- reviews.accepted v1 (internal: intake -> themes) -------------------------------------


class AcceptedFinding(Contract):
    """A finding as intake forwards it: a known code, the note redacted."""

    code: str = Field(pattern=CODE_PATTERN, description="A code of the taxonomy.")
    note: str | None = Field(default=None, description="The note with personal data redacted.")
    waited_days: int | None = Field(default=None, ge=0, le=3650, description="Days waited.")


class ReviewAcceptedV1(Contract):
    """A validated, pseudonymised agency review, forwarded by intake keyed by audit.

    Carries no case reference as sent: `case_token` is a keyed hash of (audit_id, ref).
    """

    schema_version: Literal[1] = Field(default=1, description="Internal message version.")
    event_id: str = Field(description="The submission's event id; also its correlation id.")
    accepted_at: datetime = Field(description="When intake accepted the submission.")
    submitted_at: datetime = Field(description="When the agency system sent it.")
    audit_id: Slug = Field(description="The audit.")
    audit_title: str | None = Field(default=None, description="The audit's title, if sent.")
    agency_id: Slug = Field(description="The reviewing agency.")
    agency_type: AgencyType = Field(description="The kind of agency.")
    case_token: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA-256 of (audit_id, case ref)."
    )
    age_band: AgeBand = Field(description="The child's age band.")
    legal_status: LegalStatus = Field(description="The child's legal status.")
    revision: int = Field(ge=1, description="The review's revision.")
    findings: list[AcceptedFinding] = Field(description="The review's findings, codes known.")


# --- theme-snapshot v1 (casereview.themes.v1) --------------------------------------------


class ThemeSnapshotV1(Contract):
    """The current cross-agency picture of one theme in one audit."""

    schema_version: Literal[1] = Field(default=1, description="Contract version.")
    audit_id: str = Field(description="The audit.")
    theme: str = Field(description="The finding code this snapshot counts.")
    category: Category = Field(description="The code's category.")
    cases_total: int = Field(ge=0, description="Distinct cases reviewed in the audit.")
    cases_with_theme: int = Field(ge=0, description="Distinct cases carrying the theme.")
    agencies: list[str] = Field(description="Distinct agency ids reporting the theme, sorted.")
    agency_types: list[str] = Field(description="Distinct agency types reporting it, sorted.")
    prevalence: float = Field(ge=0, le=1, description="cases_with_theme / cases_total.")
    descriptor: Descriptor = Field(description="Prevalence in the audit's own words.")
    is_pattern: bool = Field(description="Enough cases and agencies to call it a pattern.")
    small_sample: bool = Field(description="Fewer than ten cases reviewed in the audit.")
    recurring_in: list[str] = Field(description="Other audits where it is a pattern, sorted.")
    median_waited_days: float | None = Field(
        default=None, description="Median days waited, for the mental-health timeliness themes."
    )
    version: int = Field(ge=1, description="Rises by one whenever the content changes.")
    computed_at: datetime = Field(description="When this version was computed.")


# --- action v1 (casereview.actions.v1) ---------------------------------------------------


class Evidence(Contract):
    """The figures behind one theme routed to an action."""

    theme: str = Field(description="The pattern theme.")
    cases_with_theme: int = Field(ge=0, description="Cases carrying it.")
    cases_total: int = Field(ge=0, description="Cases reviewed in the audit.")
    agency_count: int = Field(ge=0, description="Agencies reporting it.")
    descriptor: str = Field(description="Prevalence in the audit's own words.")


class ActionV1(Contract):
    """A recommendation routed to a sub-group for one audit, and every later change to it."""

    schema_version: Literal[1] = Field(default=1, description="Contract version.")
    event: ActionEvent = Field(description="What happened in this version.")
    action_id: str = Field(description="Deterministic for (audit_id, sub_group).")
    audit_id: str = Field(description="The audit.")
    sub_group: str = Field(description="The sub-group that must act.")
    themes: list[str] = Field(description="Pattern themes routed here, sorted.")
    recommendation: str = Field(min_length=1, description="What the sub-group is asked to do.")
    evidence: list[Evidence] = Field(description="The figures behind each theme.")
    status: ActionStatus = Field(description="Where the lead has taken it.")
    owner: str | None = Field(default=None, description="Who owns it, once someone does.")
    due_by: date = Field(description="When it is due.")
    escalated_to: str | None = Field(default=None, description="Where it was escalated, if so.")
    version: int = Field(ge=1, description="Rises by one with every change.")
    occurred_at: datetime = Field(description="When this change happened.")
