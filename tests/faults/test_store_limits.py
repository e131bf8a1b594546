"""A themes batch revising more reviews than FerretDB has connections completes."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.themes.domain import CurrentReview
from services.themes.store import ThemesStore
from shared.mongo import WRITE_CHUNK, make_client
from tests.faults.conftest import FaultServers, Figures
from tests.unit.test_themes_property import AGENCIES, event

pytestmark = pytest.mark.faults

# FerretDB's SQLite pool (SetMaxOpenConns(100)): one more matched update per command than it
# has connections was enough to hang it for good before the writes were chunked.
POOL = 100


async def test_a_batch_revising_more_reviews_than_the_pool_completes(
    fault_servers: FaultServers, namespace: str, figures: Figures
) -> None:
    started = time.monotonic()
    cases = [f"C{n:03d}" for n in range(-(-3 * POOL // len(AGENCIES)))]
    first = [
        CurrentReview.of(event("big", a, c, 1, [("neglect", None)]))
        for a in AGENCIES
        for c in cases
    ]
    second = [CurrentReview.of(event("big", a, c, 2, [])) for a in AGENCIES for c in cases]
    assert len(second) > 2 * POOL > WRITE_CHUNK
    client = make_client(fault_servers.servers.mongo_url)
    try:
        store = ThemesStore(client[namespace])
        await store.ensure_indexes()
        async with asyncio.timeout(60):
            assert await store.write_reviews(first, {}) == {r.event_id for r in first}
            assert set((await store.revisions(second)).values()) == {1}
            file = await store.review_file("big")
            assert await store.write_reviews(second, {"big": file}) == {r.event_id for r in second}
        assert set((await store.revisions(second)).values()) == {2}
        # The revisions superseded were deleted: one document per review is left.
        assert await client[namespace]["themes_reviews"].count_documents({}) == len(second)
    finally:
        await client.drop_database(namespace)
        await client.close()
    figures.record(
        "store_limits",
        reviews_revised_in_one_batch=len(second),
        duration_s=round(time.monotonic() - started, 1),
    )
