"""Intake's rules: every rejection reason, redaction, NHS numbers, pseudonyms, duplicates."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.intake.domain import (
    Admitted,
    Claim,
    Outcome,
    Refused,
    assess,
    decide,
    pseudonymise,
)
from services.intake.privacy import identifier_problem, nhs_number_valid, redact
from shared.contracts import RejectionReason
from shared.taxonomy import default_taxonomy
from tests.support.findings import encode, finding

pytestmark = pytest.mark.unit

KEY = b"k" * 32
NOW = datetime(2020, 5, 11, 10, 0, tzinfo=UTC)


def judge(raw: bytes) -> Admitted | Refused:
    return assess(raw, taxonomy=default_taxonomy(), key=KEY, now=NOW)


def reason(raw: bytes) -> RejectionReason:
    verdict = judge(raw)
    assert isinstance(verdict, Refused), verdict
    return verdict.reason


def test_a_valid_submission_is_admitted_pseudonymised() -> None:
    verdict = judge(encode(finding(ref="C07")))
    assert isinstance(verdict, Admitted)
    assert verdict.review.case_token == pseudonymise(KEY, "paqa-2020-05-mental-health", "C07")
    assert "C07" not in verdict.review.model_dump_json()


def test_pseudonyms_depend_on_audit_and_key() -> None:
    token = pseudonymise(KEY, "a1", "C07")
    assert token != pseudonymise(KEY, "a2", "C07")
    assert token != pseudonymise(b"other", "a1", "C07")
    assert len(token) == 64


def test_oversize() -> None:
    doc = finding(findings=[{"code": "domestic_abuse", "note": "x" * 2000}] * 40)
    assert reason(encode(doc)) == RejectionReason.OVERSIZE


def test_undecodable() -> None:
    assert reason(b"\xff\xfe{not text") == RejectionReason.UNDECODABLE


@pytest.mark.parametrize("raw", [b"{", b"", b"hello", b'{"a": }'])
def test_invalid_json(raw: bytes) -> None:
    assert reason(raw) == RejectionReason.INVALID_JSON


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_unsupported_schema_version(version: object) -> None:
    doc = finding(schema_version=version)
    if version is None:
        del doc["schema_version"]
    assert reason(encode(doc)) == RejectionReason.UNSUPPORTED_SCHEMA_VERSION


def test_schema_violation_names_the_field() -> None:
    doc = finding()
    doc["case"]["age_band"] = "11-12"
    verdict = judge(encode(doc))
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.SCHEMA_VIOLATION
    assert "case.age_band" in verdict.detail
    assert verdict.event_id == doc["event_id"]
    assert verdict.agency_id == "county-csc"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("findings"),
        lambda d: d.update(revision=0),
        lambda d: d.update(event_id="not-a-uuid"),
        lambda d: d.update(extra_field=1),
        lambda d: d["agency"].update(type="bakery"),
        lambda d: d.update(findings=[{"code": "domestic_abuse", "waited_days": -1}]),
        lambda d: d.update(audit_id="Has Spaces"),
        lambda d: d.update(submitted_at="2020-05-11T09:30:00"),
    ],
)
def test_schema_violations(change: object) -> None:
    doc = finding()
    change(doc)  # type: ignore[operator]
    assert reason(encode(doc)) == RejectionReason.SCHEMA_VIOLATION


def test_an_unknown_key_is_not_echoed() -> None:
    # A sender's own key may be a child's name: the detail says where, never what.
    doc = finding()
    doc["Jane Doe"] = 1
    doc["agency"]["born 2011-03-04"] = True
    doc["findings"][0]["Bob Smith"] = "x"
    verdict = judge(encode(doc))
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.SCHEMA_VIOLATION
    for text in ("Jane", "Doe", "2011", "Bob", "Smith"):
        assert text not in verdict.detail
    assert "agency.(unknown key)" in verdict.detail
    assert "findings.0.(unknown key)" in verdict.detail


def test_a_json_array_is_a_schema_violation() -> None:
    assert reason(b"[1, 2]") == RejectionReason.SCHEMA_VIOLATION


def test_unknown_code_suggests_the_closest() -> None:
    verdict = judge(encode(finding(findings=[{"code": "domestic_abus"}])))
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.UNKNOWN_FINDING_CODE
    assert "domestic_abuse" in verdict.detail


@pytest.mark.parametrize(
    "ref",
    [
        "9434765919",
        "943 476 5919",
        "jo@example.com",
        "2009-04-13",
        "13/04/2009",
        "13.04.2009",
        "13042009",
    ],
)
def test_personal_data_in_identifier(ref: str) -> None:
    verdict = judge(encode(finding(ref=ref)))
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.PERSONAL_DATA_IN_IDENTIFIER
    assert ref not in verdict.detail


@pytest.mark.parametrize("ref", ["C07", "9434765918", "CASE-2009", "1304", "A1"])
def test_ordinary_refs_pass(ref: str) -> None:
    assert identifier_problem(ref) is None


def test_nhs_check_digit() -> None:
    assert nhs_number_valid("9434765919")
    assert nhs_number_valid("401 023 2137")
    assert not nhs_number_valid("9434765918")
    assert not nhs_number_valid("943476591")
    # Check digit 10 means the number can never be valid.
    assert not nhs_number_valid("1000000010")


@pytest.mark.parametrize(
    ("note", "kind", "secret"),
    [
        ("NHS number 943 476 5919 on file", "nhs_number", "943 476 5919"),
        ("mum is jo.bloggs@example.com", "email", "jo.bloggs@example.com"),
        ("call 07700 900123 after school", "phone", "07700 900123"),
        ("ring +44 1865 123456", "phone", "1865 123456"),
        ("lives at OX1 2JD now", "postcode", "OX1 2JD"),
        ("born 13/04/2009", "date", "13/04/2009"),
        ("seen on 2019-03-01", "date", "2019-03-01"),
        ("born 13 April 2009", "date", "13 April 2009"),
    ],
)
def test_redaction(note: str, kind: str, secret: str) -> None:
    text, kinds = redact(note)
    assert secret not in text
    assert f"[redacted:{kind}]" in text
    assert kinds == (kind,)


def test_plain_notes_are_untouched() -> None:
    note = "Young person wants to be like everyone else; 12 visits over 2 years."
    assert redact(note) == (note, ())


def test_admitted_notes_are_redacted() -> None:
    doc = finding(findings=[{"code": "domestic_abuse", "note": "DOB 13/04/2009, 07700 900123"}])
    verdict = judge(encode(doc))
    assert isinstance(verdict, Admitted)
    body = verdict.review.model_dump_json()
    assert "13/04/2009" not in body
    assert "07700" not in body
    assert set(verdict.redactions) == {"date", "phone"}


def test_fingerprint_ignores_event_id_and_time_but_not_content() -> None:
    doc = finding()
    a = judge(encode(doc))
    b = judge(encode({**doc, "event_id": "3f1c2a9e-5b7d-4c1e-9a2f-0d4e6b8a1c35"}))
    c = judge(encode({**doc, "findings": [{"code": "neglect"}]}))
    assert isinstance(a, Admitted) and isinstance(b, Admitted) and isinstance(c, Admitted)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.revision_key == c.revision_key


def test_decide() -> None:
    verdict = judge(encode(finding()))
    assert isinstance(verdict, Admitted)
    own = verdict.review.event_id
    fp = verdict.fingerprint
    assert decide(verdict, Claim(own, fp, False), claimed_now=True) == Outcome.FORWARD
    assert decide(verdict, Claim(own, fp, False), claimed_now=False) == Outcome.FORWARD
    assert decide(verdict, Claim(own, fp, True), claimed_now=False) == Outcome.DUPLICATE
    assert decide(verdict, Claim("other", fp, True), claimed_now=False) == Outcome.DUPLICATE
    assert decide(verdict, Claim("other", "x" * 64, True), claimed_now=False) == Outcome.CONFLICT


def test_refusals_never_echo_free_text() -> None:
    doc = finding(audit_id="Jane Smith 13/04/2009")
    doc["agency"]["id"] = "Jane Smith"
    verdict = judge(encode(doc))
    assert isinstance(verdict, Refused)
    assert verdict.audit_id is None and verdict.agency_id is None
    assert "Jane" not in json.dumps(verdict.__dict__, default=str)
