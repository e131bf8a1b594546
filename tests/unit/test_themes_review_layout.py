"""How themes keeps a review in the store: its audit as a field, the rest as text; how it
holds an audit's reviews in memory; and the time of a review sent without an offset."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.themes.domain import CurrentReview, audit_summary
from services.themes.store import ReviewFile, review_document, stored_review
from tests.unit.test_themes_property import event

pytestmark = pytest.mark.unit


def test_a_review_comes_back_from_its_document_as_it_went_in() -> None:
    review = CurrentReview.of(
        event("aud-x", "csc", "C1", 2, [("domestic_abuse", None), ("mh_intervention_delayed", 40)])
    )
    doc = review_document(review)
    assert set(doc) == {"_id", "audit_id", "review"}
    assert doc["_id"] == f"{review.key}#2"
    assert doc["audit_id"] == "aud-x"
    assert stored_review(doc) == review
    # The round trip goes through the text as the store keeps it.
    assert stored_review(json.loads(json.dumps(doc))) == review


def test_a_review_stored_as_fields_is_read_as_the_same_review() -> None:
    review = CurrentReview.of(event("aud-x", "police", "C2", 1, [("neglect", 3)]))
    # The previous layout: every field of the review a field of the document, as PyMongo
    # gives them back (the time aware, in UTC).
    doc = {
        "_id": f"{review.key}#1",
        "key": review.key,
        "audit_id": review.audit_id,
        "audit_title": review.audit_title,
        "agency_id": review.agency_id,
        "agency_type": review.agency_type,
        "case_token": review.case_token,
        "age_band": review.age_band,
        "legal_status": review.legal_status,
        "revision": review.revision,
        "submitted_at": review.submitted_at,
        "event_id": review.event_id,
        "findings": [{"code": f.code, "waited_days": f.waited_days} for f in review.findings],
    }
    assert stored_review(doc) == review


def test_a_time_sent_without_an_offset_is_taken_as_utc_and_compares_with_stored_ones() -> None:
    sent = event("aud-x", "csc", "C1", 1, []).model_copy(
        update={"submitted_at": datetime(2025, 3, 1, 12, 0), "audit_title": "Later title"}
    )
    naive = CurrentReview.of(sent)
    assert naive.submitted_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    held = stored_review(review_document(CurrentReview.of(event("aud-x", "police", "C2", 1, []))))
    assert stored_review(review_document(naive)) == naive
    # Before, a review without an offset next to one read from the store stopped the batch:
    # the two times could not be compared.
    assert audit_summary("aud-x", [naive, held]).title == "Later title"


def test_a_file_names_only_the_documents_whose_id_is_not_their_revisions() -> None:
    first = CurrentReview.of(event("aud-x", "csc", "C1", 1, [("neglect", None)]))
    second = CurrentReview.of(event("aud-x", "csc", "C1", 2, [("neglect", None)]))
    other = CurrentReview.of(event("aud-x", "police", "C2", 1, [("domestic_abuse", 5)]))
    # A document under an id of its own, as an earlier release may have written one.
    legacy = {**review_document(other), "_id": "legacy-7"}
    file = ReviewFile.of([review_document(first), review_document(second), legacy])
    assert file.current == {first.key: second, other.key: other}
    assert file.ids == {other.key: "legacy-7"}
    assert file.stale == (f"{first.key}#1",)
    assert file.id_of(first.key) == f"{first.key}#2"
    assert file.id_of(other.key) == "legacy-7"

    later = CurrentReview.of(event("aud-x", "police", "C2", 3, [("domestic_abuse", 5)]))
    assert file.superseded_by([later]) == [f"{first.key}#1", "legacy-7"]
    stored = file.with_stored([later])
    assert stored.current[other.key] == later
    assert stored.ids == {}
    assert stored.id_of(other.key) == f"{other.key}#3"
    assert stored.superseded_by([]) == []


def test_reviews_share_one_object_for_each_finding() -> None:
    one = CurrentReview.of(
        event("aud-x", "csc", "C1", 1, [("neglect", 3), ("domestic_abuse", None)])
    )
    two = CurrentReview.of(event("aud-y", "police", "C9", 2, [("domestic_abuse", None)]))
    assert one.findings[1] is two.findings[0]
    assert one.findings[0] is not two.findings[0]
    assert stored_review(review_document(one)).findings[0] is one.findings[0]
