"""How a service process sets up Python's cyclic garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.runtime import YOUNG_COLLECTION_AT, settle_collector


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
def test_settling_freezes_what_exists_and_collects_the_young_less_often() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    built = [{"part": n} for n in range(100)]

    settle_collector()

    assert gc.get_threshold() == (YOUNG_COLLECTION_AT, older, oldest)
    assert gc.get_freeze_count() >= len(built)
    # Frozen: no collection looks at them any more.
    assert all(obj is not built[0] for obj in gc.get_objects())


@pytest.mark.usefixtures("collector")
def test_cycles_made_after_settling_are_still_reclaimed() -> None:
    settle_collector()

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second

    assert gc.collect() > 0
