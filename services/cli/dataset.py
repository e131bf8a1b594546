"""The reference audit as data, expanded into the agency-finding events agency systems send."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import (
    AgeBand,
    Agency,
    AgencyFindingV1,
    AgencyType,
    Case,
    Finding,
    LegalStatus,
    RejectionReason,
)

# Event ids are uuid5 names under this namespace, so the same content always gets the same id
# and re-running the demo re-sends, rather than adds, submissions.
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://casereview.invalid/reference-dataset")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FindingSpec(_Spec):
    """A finding with detail; a bare code in the file stands for one without."""

    code: str = Field(description="A code of the taxonomy.")
    note: str | None = Field(default=None, description="Free text, never personal data.")
    waited_days: int | None = Field(default=None, description="Days the child waited for help.")


Findings = list[str | FindingSpec]


class AuditSpec(_Spec):
    """The audit every submission belongs to."""

    id: str = Field(description="The audit id.")
    title: str = Field(description="The audit's title.")
    submitted_from: datetime = Field(description="When the first submission is stamped.")


class CaseSpec(_Spec):
    """What every agency says about the child, whoever reviews the case."""

    age_band: AgeBand = Field(description="The child's age band.")
    legal_status: LegalStatus = Field(description="The child's legal status.")


class RevisionSpec(_Spec):
    """A later revision of one agency's review of one case: its full current state."""

    agency: str = Field(description="The reviewing agency.")
    case: str = Field(description="The case ref.")
    revision: int = Field(ge=2, description="The revision; revision 1 is under `reviews`.")
    findings: Findings = Field(description="Everything the agency now finds on the case.")


class ResendSpec(_Spec):
    """A review delivered a second time, unchanged."""

    agency: str = Field(description="The reviewing agency.")
    case: str = Field(description="The case ref.")
    revision: int = Field(ge=1, description="Which revision is re-sent.")


class RefusedSpec(_Spec):
    """A submission intake must refuse, and the reason it must give."""

    agency: str = Field(description="The sending agency.")
    case: Case = Field(description="The case as (wrongly) sent.")
    findings: Findings = Field(description="The findings sent.")
    reason: RejectionReason = Field(description="The reason intake must give.")


class DatasetSpec(_Spec):
    """The whole file."""

    audit: AuditSpec
    agencies: dict[str, AgencyType]
    cases: dict[str, CaseSpec]
    reviews: dict[str, dict[str, Findings]]
    revisions: list[RevisionSpec] = Field(default_factory=list)
    resend: list[ResendSpec] = Field(default_factory=list)
    refused: list[RefusedSpec] = Field(default_factory=list)


class DatasetError(ValueError):
    """The dataset file is inconsistent; the message says where."""


@dataclass(frozen=True)
class Submission:
    """One event as an agency system sends it, and what intake is expected to make of it."""

    event: AgencyFindingV1
    refused_for: RejectionReason | None = None

    @property
    def agency_id(self) -> str:
        """The sending agency."""
        return self.event.agency.id

    @property
    def key(self) -> bytes:
        """The partition key of the submitted topic: `{audit_id}/{case.ref}`."""
        return f"{self.event.audit_id}/{self.event.case.ref}".encode()

    def to_json(self) -> bytes:
        """The event as it goes on the wire."""
        return self.event.to_json()


@dataclass(frozen=True)
class ThemeFigure:
    """What the pipeline should derive for one theme of the audit."""

    cases: int
    agencies: tuple[str, ...]


def load_dataset(path: Path | None = None) -> DatasetSpec:
    """Reads the dataset file; the shipped reference audit by default."""
    text = (
        path.read_text(encoding="utf-8")
        if path is not None
        else resources.files("services.cli.data")
        .joinpath("reference_audit.yaml")
        .read_text(encoding="utf-8")
    )
    spec = DatasetSpec.model_validate(yaml.safe_load(text))
    _check(spec)
    return spec


def _check(spec: DatasetSpec) -> None:
    pairs = [(r.agency, r.case) for r in spec.revisions] + [(r.agency, r.case) for r in spec.resend]
    for agency, cases in spec.reviews.items():
        pairs.extend((agency, case) for case in cases)
    for agency, case in pairs:
        if agency not in spec.agencies:
            raise DatasetError(f"agency '{agency}' is not under `agencies`")
        if case not in spec.cases:
            raise DatasetError(f"case '{case}' of agency '{agency}' is not under `cases`")
    for item in spec.refused:
        if item.agency not in spec.agencies:
            raise DatasetError(f"agency '{item.agency}' is not under `agencies`")


def _finding(item: str | FindingSpec) -> Finding:
    if isinstance(item, str):
        return Finding(code=item)
    return Finding(code=item.code, note=item.note, waited_days=item.waited_days)


def event_id(
    audit_id: str, agency_id: str, case: Case, revision: int, findings: Sequence[Finding]
) -> uuid.UUID:
    """The id of a submission, named by its content, so equal content gets an equal id."""
    identity = {
        "audit_id": audit_id,
        "agency_id": agency_id,
        "case": case.model_dump(mode="json"),
        "revision": revision,
        "findings": [f.model_dump(mode="json", exclude_none=True) for f in findings],
    }
    return uuid.uuid5(EVENT_NAMESPACE, json.dumps(identity, sort_keys=True))


class _Builder:
    def __init__(self, spec: DatasetSpec) -> None:
        self._spec = spec
        self._sent: dict[str, int] = {}

    def event(self, agency_id: str, case: Case, revision: int, items: Findings) -> AgencyFindingV1:
        findings = [_finding(item) for item in items]
        # Each agency's submissions are stamped a minute apart, in the order it sends them.
        position = self._sent.get(agency_id, 0)
        self._sent[agency_id] = position + 1
        audit = self._spec.audit
        return AgencyFindingV1(
            schema_version=1,
            event_id=event_id(audit.id, agency_id, case, revision, findings),
            submitted_at=audit.submitted_from + timedelta(minutes=position),
            audit_id=audit.id,
            audit_title=audit.title,
            agency=Agency(id=agency_id, type=self._spec.agencies[agency_id]),
            case=case,
            revision=revision,
            findings=findings,
        )

    def case(self, ref: str) -> Case:
        facts = self._spec.cases[ref]
        return Case(ref=ref, age_band=facts.age_band, legal_status=facts.legal_status)


def by_agency(spec: DatasetSpec) -> dict[str, list[Submission]]:
    """Each agency's submissions in the order its system sends them.

    First revision 1 of every case it reviewed, then later revisions, then re-sends, then
    what intake must refuse.
    """
    build = _Builder(spec)
    out: dict[str, list[Submission]] = {agency: [] for agency in spec.agencies}
    sent: dict[tuple[str, str, int], Submission] = {}
    for agency, cases in spec.reviews.items():
        for ref, items in cases.items():
            submission = Submission(build.event(agency, build.case(ref), 1, items))
            sent[(agency, ref, 1)] = submission
            out[agency].append(submission)
    for later in spec.revisions:
        event = build.event(later.agency, build.case(later.case), later.revision, later.findings)
        submission = Submission(event)
        sent[(later.agency, later.case, later.revision)] = submission
        out[later.agency].append(submission)
    for again in spec.resend:
        try:
            out[again.agency].append(sent[(again.agency, again.case, again.revision)])
        except KeyError:
            raise DatasetError(
                f"resend of agency '{again.agency}' case '{again.case}' revision "
                f"{again.revision}: no such submission"
            ) from None
    for bad in spec.refused:
        event = build.event(bad.agency, bad.case, 1, bad.findings)
        out[bad.agency].append(Submission(event, refused_for=bad.reason))
    return {agency: subs for agency, subs in out.items() if subs}


def interleaved(per_agency: dict[str, list[Submission]]) -> list[Submission]:
    """One list taking each agency's next submission in turn, as concurrent senders would."""
    queues = [list(subs) for subs in per_agency.values()]
    out: list[Submission] = []
    while any(queues):
        out.extend(queue.pop(0) for queue in queues if queue)
    return out


def expected_themes(submissions: Iterable[Submission]) -> dict[str, ThemeFigure]:
    """Per theme, the cases and agencies the pipeline should count once everything is in.

    Follows the contract's semantics: the highest revision of each (agency, case) is its whole
    review, re-sends change nothing, refused submissions count for nothing.
    """
    latest: dict[tuple[str, str], AgencyFindingV1] = {}
    for submission in submissions:
        if submission.refused_for is not None:
            continue
        event = submission.event
        key = (event.agency.id, event.case.ref)
        if key not in latest or latest[key].revision < event.revision:
            latest[key] = event
    cases: dict[str, set[str]] = {}
    agencies: dict[str, set[str]] = {}
    for (agency, ref), event in latest.items():
        for finding in event.findings:
            cases.setdefault(finding.code, set()).add(ref)
            agencies.setdefault(finding.code, set()).add(agency)
    return {
        code: ThemeFigure(cases=len(cases[code]), agencies=tuple(sorted(agencies[code])))
        for code in sorted(cases)
    }


def reviewed_cases(submissions: Iterable[Submission]) -> int:
    """Distinct cases any agency's accepted review covers: the audit's sample size."""
    return len({s.event.case.ref for s in submissions if s.refused_for is None})
