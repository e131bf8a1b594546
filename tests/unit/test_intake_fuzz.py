"""Whatever arrives, intake's validator answers: admitted, or refused with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.domain import Admitted, Refused, assess
from shared.contracts import RejectionReason
from shared.taxonomy import default_taxonomy
from tests.support.findings import encode, finding

pytestmark = pytest.mark.unit

NOW = datetime(2020, 5, 11, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def answered(raw: bytes) -> None:
    verdict = assess(raw, taxonomy=default_taxonomy(), key=b"k", now=NOW)
    assert isinstance(verdict, Admitted | Refused)
    if isinstance(verdict, Refused):
        assert isinstance(verdict.reason, RejectionReason)
        assert verdict.detail


@given(st.binary(max_size=2000))
def test_any_bytes(raw: bytes) -> None:
    answered(raw)


@given(json_values)
def test_any_json(value: Any) -> None:
    answered(json.dumps(value).encode())


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    base = finding()
    keys = [*base.keys(), "case", "agency"]
    return st.builds(
        lambda key, value: {**base, key: value},
        st.sampled_from(keys),
        json_values,
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_valid_documents_with_one_field_changed(doc: dict[str, Any]) -> None:
    answered(encode(doc))


@given(st.text(max_size=40))
def test_any_case_ref(ref: str) -> None:
    answered(encode(finding(ref=ref)))
