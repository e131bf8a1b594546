"""Themes' memory of an audit's reviews: valid only for the audit `rev` it was kept for, and
bounded by the number of reviews held beyond those the current batch uses."""

from __future__ import annotations

from services.themes.domain import CurrentReview
from services.themes.memo import ReviewMemo
from services.themes.store import ReviewFile
from tests.unit.test_themes_property import event


def file_of(audit_id: str, cases: int) -> ReviewFile:
    reviews = [CurrentReview.of(event(audit_id, "csc", f"C{n}", 1, [])) for n in range(cases)]
    return ReviewFile({r.key: r for r in reviews}, {r.key: f"{r.key}#1" for r in reviews}, ())


def test_a_file_is_recalled_only_at_the_rev_it_was_kept_for() -> None:
    memo = ReviewMemo(max_reviews=100)
    kept = file_of("aud-x", 3)
    memo.keep("aud-x", 4, kept)
    assert memo.recall("aud-x", 4) is kept
    assert memo.recall("aud-y", 4) is None
    # Another writer committed the audit: the memory is dropped for good.
    assert memo.recall("aud-x", 5) is None
    assert memo.recall("aud-x", 4) is None
    assert len(memo) == 0


def test_the_least_recently_used_audits_are_forgotten_beyond_the_bound() -> None:
    memo = ReviewMemo(max_reviews=10)
    memo.new_batch()
    memo.keep("aud-a", 1, file_of("aud-a", 4))
    memo.keep("aud-b", 1, file_of("aud-b", 4))
    memo.new_batch()
    assert memo.recall("aud-a", 1) is not None  # now b is the least recently used
    memo.keep("aud-c", 1, file_of("aud-c", 4))
    assert memo.recall("aud-b", 1) is None
    assert memo.recall("aud-a", 1) is not None
    assert memo.recall("aud-c", 1) is not None
    assert len(memo) == 8


def test_keeping_again_replaces_and_a_file_over_the_bound_lasts_until_the_room_is_needed() -> None:
    memo = ReviewMemo(max_reviews=5)
    memo.keep("aud-a", 1, file_of("aud-a", 2))
    memo.keep("aud-a", 2, file_of("aud-a", 3))
    assert memo.recall("aud-a", 1) is None
    memo.keep("aud-a", 3, file_of("aud-a", 3))
    assert len(memo) == 3
    # An audit bigger than the bound: its batch held it whole, and the next batch touching
    # it need not read it all again.
    memo.keep("aud-a", 4, file_of("aud-a", 6))
    memo.new_batch()
    assert memo.recall("aud-a", 4) is not None
    assert len(memo) == 6
    # A later batch that keeps another audit takes the room back.
    memo.new_batch()
    memo.keep("aud-b", 1, file_of("aud-b", 2))
    assert memo.recall("aud-a", 4) is None
    assert len(memo) == 2


def test_a_bound_of_zero_keeps_nothing() -> None:
    memo = ReviewMemo(max_reviews=0)
    memo.new_batch()
    memo.keep("aud-a", 1, file_of("aud-a", 2))
    assert memo.recall("aud-a", 1) is None
    assert len(memo) == 0


def test_a_batch_touching_more_than_the_bound_keeps_every_file_it_used() -> None:
    # Each batch touches the same three audits, more than the bound between them: it recalls
    # them all, then keeps each as it commits (as `Themes.process` does). Plain LRU forgot
    # each one just before the next batch asked for it, so every recall missed.
    memo = ReviewMemo(max_reviews=10)
    audits = ["aud-a", "aud-b", "aud-c"]
    for rev in range(1, 4):
        memo.new_batch()
        if rev > 1:
            assert all(memo.recall(a, rev - 1) is not None for a in audits)
        for audit_id in audits:
            memo.keep(audit_id, rev, file_of(audit_id, 4))
    assert len(memo) == 12
    # A later batch that uses only one of them lets the others go, oldest first.
    memo.new_batch()
    memo.keep("aud-d", 1, file_of("aud-d", 4))
    assert memo.recall("aud-a", 3) is None
    assert memo.recall("aud-b", 3) is None
    assert memo.recall("aud-c", 3) is not None
    assert len(memo) == 8
