"""Themes' memory of the reviews its own last recompute of an audit was computed from.

An audit's reviews are the largest thing themes reads (every review of the audit, for every
batch that touches it), and on FerretDB every document read is decoded in Go. Since an
audit's reviews all arrive on one partition, the replica that recomputed it last usually
gets its next reviews too, and can start from what it computed from instead of reading
them all again.

Safe because of what the memory is keyed on: the audit's `rev` that recompute's commit
left. If the audit still has that `rev`, no recompute has committed since, so the reviews
remembered are exactly the inputs of the latest commit. A review another writer stored
since is that writer's to recompute: it reads the audit after storing it, so its commit
either comes after this replica's (and reads this one's result) or conflicts with it (and
the loser reads everything again). Any other `rev` means the memory is dropped and the
reviews are read.
"""

from __future__ import annotations

from collections import OrderedDict

from services.themes.store import ReviewFile

REVIEWS_REMEMBERED = 5_000
"""The default bound: a few audits of a few hundred reviews each."""


class ReviewMemo:
    """The review files of recently recomputed audits, each with the audit `rev` it is valid
    for.

    Beyond `max_reviews` reviews the least recently used audits are forgotten, but never one
    the current batch (`new_batch`) recalled or kept: a batch holds every file it touches at
    once anyway, so keeping them until the next batch adds nothing to the peak, and a batch
    touching more than the bound no longer makes plain LRU forget each audit just before the
    next batch asks for it (every audit of a busy partition read whole, every batch)."""

    def __init__(self, max_reviews: int) -> None:
        self._max_reviews = max_reviews
        self._files: OrderedDict[str, tuple[int, ReviewFile, int]] = OrderedDict()
        self._held = 0
        self._batch = 0

    def __len__(self) -> int:
        """The reviews remembered."""
        return self._held

    def new_batch(self) -> None:
        """Starts a batch: what earlier batches used may be forgotten from now on."""
        self._batch += 1

    def recall(self, audit_id: str, rev: int) -> ReviewFile | None:
        """The audit's reviews if they are still those of its latest commit (`rev`)."""
        entry = self._files.get(audit_id)
        if entry is None:
            return None
        if entry[0] != rev:
            self.forget(audit_id)
            return None
        self._files[audit_id] = (entry[0], entry[1], self._batch)
        self._files.move_to_end(audit_id)
        return entry[1]

    def keep(self, audit_id: str, rev: int, file: ReviewFile) -> None:
        """Remembers the reviews a commit that left the audit at `rev` was computed from.

        An audit with more reviews than the bound is kept too, as the current batch's, until
        a later batch needs the room: the batch holds it whole anyway, and forgetting it
        meant reading every review of the audit again for each batch that touched it."""
        self.forget(audit_id)
        if self._max_reviews == 0:
            return
        self._files[audit_id] = (rev, file, self._batch)
        self._held += len(file.current)
        while self._held > self._max_reviews:
            oldest = next(iter(self._files.values()))
            if oldest[2] == self._batch:
                # Everything left is the current batch's (most recently used last).
                break
            _, (_, file_held, _) = self._files.popitem(last=False)
            self._held -= len(file_held.current)

    def forget(self, audit_id: str) -> None:
        """Drops what is remembered of the audit."""
        entry = self._files.pop(audit_id, None)
        if entry is not None:
            self._held -= len(entry[1].current)
