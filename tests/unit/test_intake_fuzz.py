"""Whatever arrives, intake's validator answers: admitted, or refused with a reason."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
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


@given(st.data())
def test_valid_documents_with_bytes_flipped_cut_or_inserted(data: st.DataObject) -> None:
    raw = bytearray(encode(finding(findings=[{"code": "neglect", "note": "seen at home"}])))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        edit = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if edit == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif edit == "cut":
            del raw[at : at + data.draw(st.integers(1, 8))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        if not raw:
            break
    answered(bytes(raw))


@given(st.integers(1, 5000))
def test_anything_over_the_limit_is_oversize_and_never_parsed(extra: int) -> None:
    raw = encode(finding()) + b" " * extra
    verdict = assess(raw, taxonomy=default_taxonomy(), key=b"k", now=NOW, max_bytes=len(raw) - 1)
    assert isinstance(verdict, Refused)
    assert verdict.reason == RejectionReason.OVERSIZE
    assert verdict.event_id is None


@given(st.integers(50, 50_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_refused_not_crashed(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    verdict = assess(raw, taxonomy=default_taxonomy(), key=b"k", now=NOW, max_bytes=len(raw))
    assert isinstance(verdict, Refused)
    if depth > sys.getrecursionlimit():
        # Deeper than the parser may recurse: refused as unreadable, not a crashed consumer.
        assert verdict.reason == RejectionReason.INVALID_JSON


_PERSONAL = st.one_of(
    st.from_regex(r"[a-z]{2,8}\.[a-z]{2,8}@[a-z]{3,8}\.(org|com|nhs\.uk)", fullmatch=True),
    st.dates(date(1900, 1, 1), date(2100, 12, 31)).map(lambda d: d.strftime("%d/%m/%Y")),
    st.sampled_from(["943 476 5919", "401 023 2137", "9434765919"]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_PERSONAL, st.text(max_size=60))
def test_personal_data_is_never_repeated(personal: str, words: str) -> None:
    """Refused as an identifier, the detail does not echo it; accepted in a note, the forward
    carries it redacted; either way the case reference as sent is never forwarded."""
    as_ref = assess(encode(finding(ref=personal)), taxonomy=default_taxonomy(), key=b"k", now=NOW)
    assert isinstance(as_ref, Refused)
    assert personal not in as_ref.detail
    note = f"{words} {personal} {words}"[:2000]
    in_note = assess(
        encode(finding(ref="C07", findings=[{"code": "neglect", "note": note}])),
        taxonomy=default_taxonomy(),
        key=b"k",
        now=NOW,
    )
    assert isinstance(in_note, Admitted)
    forwarded = in_note.review.to_json().decode()
    assert personal not in forwarded
    assert '"C07"' not in forwarded
