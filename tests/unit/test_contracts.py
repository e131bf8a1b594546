"""The models produce and accept exactly the public contracts' shapes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from services.intake.domain import Refused, assess
from shared.contracts import (
    ActionEvent,
    ActionStatus,
    ActionV1,
    AgencyFindingV1,
    Evidence,
    FindingRejectedV1,
    RejectionReason,
    SourcePosition,
    ThemeSnapshotV1,
)
from shared.schemas import PUBLISHED, render
from shared.taxonomy import default_taxonomy

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "contracts"
NOW = datetime(2020, 5, 11, 10, 2, 11, tzinfo=UTC)


def reference(name: str) -> Draft202012Validator:
    if not REFERENCE.is_dir():
        pytest.skip(f"the reference contracts folder {REFERENCE} is not beside this clone")
    schema = json.loads((REFERENCE / f"{name}.v1.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def example(name: str) -> Any:
    if not REFERENCE.is_dir():
        pytest.skip(f"the reference contracts folder {REFERENCE} is not beside this clone")
    return json.loads((REFERENCE / "examples" / name).read_text())


def valid(name: str, payload: bytes) -> None:
    errors = [e.message for e in reference(name).iter_errors(json.loads(payload))]
    assert errors == []


def test_agency_finding_round_trips_the_example() -> None:
    doc = example("agency-finding.valid.json")
    model = AgencyFindingV1.model_validate_json(json.dumps(doc))
    valid("agency-finding", model.to_json())
    assert json.loads(model.to_json()) == doc


def test_the_nhs_number_example_is_schema_valid_but_refused() -> None:
    validator = reference("agency-finding")
    doc = example("agency-finding.invalid-nhs-number.json")
    assert list(validator.iter_errors(doc)) == []
    verdict = assess(json.dumps(doc).encode(), taxonomy=default_taxonomy(), key=b"k", now=NOW)
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.PERSONAL_DATA_IN_IDENTIFIER


def test_rejection_matches_the_contract() -> None:
    for event_id in (None, "3f1c2a9e-5b7d-4c1e-9a2f-0d4e6b8a1c35"):
        message = FindingRejectedV1(
            rejected_at=NOW,
            reason=RejectionReason.INVALID_JSON,
            detail="not JSON",
            event_id=event_id,
            payload_sha256="0" * 64,
            source=SourcePosition(topic="t", partition=0, offset=3),
        )
        valid("finding-rejected", message.to_json())


def test_snapshot_matches_the_contract_and_example() -> None:
    doc = example("theme-snapshot.valid.json")
    model = ThemeSnapshotV1.model_validate_json(json.dumps(doc))
    valid("theme-snapshot", model.to_json())
    assert json.loads(model.to_json()) == doc


def test_action_matches_the_contract_and_example() -> None:
    doc = example("action.valid.json")
    model = ActionV1.model_validate_json(json.dumps(doc))
    valid("action", model.to_json())
    assert json.loads(model.to_json()) == doc
    built = ActionV1(
        event=ActionEvent.WITHDRAWN,
        action_id="act-a-b",
        audit_id="a",
        sub_group="b",
        themes=[],
        recommendation="r",
        evidence=[
            Evidence(
                theme="x", cases_with_theme=0, cases_total=6, agency_count=0, descriptor="none"
            )
        ],
        status=ActionStatus.WITHDRAWN,
        due_by=date(2020, 7, 6),
        version=3,
        occurred_at=NOW,
    )
    valid("action", built.to_json())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_schemas_are_current(name: str) -> None:
    path = REPO / "docs" / "contracts" / f"{name}.schema.json"
    assert path.read_text() == render(PUBLISHED[name]), "run: python -m shared.schemas"
