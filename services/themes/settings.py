"""Themes' settings (environment prefix `CASEREVIEW_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.themes.memo import REVIEWS_REMEMBERED
from shared.settings import CommonSettings


class ThemesSettings(CommonSettings):
    """What themes needs beyond the common settings."""

    themes_group: str = Field(default="casereview-themes", title="Themes consumer group")
    themes_min_cases: int = Field(
        default=2, ge=1, title="Distinct cases a theme needs in an audit to be a pattern"
    )
    themes_min_agencies: int = Field(
        default=2, ge=1, title="Distinct agencies a theme needs in an audit to be a pattern"
    )
    # Each batch recomputes every audit it touches once, whatever number of its reviews
    # came in: under a backlog, bigger batches mean fewer recomputes per review (measured in
    # docs/performance.md); a quiet stream still comes in small batches.
    themes_batch_max: int = Field(default=10_000, gt=0, title="Most records handled per batch")
    themes_reviews_remembered: int = Field(
        default=REVIEWS_REMEMBERED,
        ge=0,
        title="Most reviews kept in memory across batches",
        description="The reviews of the audits this replica recomputed last, so that the "
        "next batch touching one need not read them again (services/themes/memo.py); those "
        "of the latest batch's audits are kept even beyond it (the batch held them all at "
        "once anyway); 0 reads them every time.",
    )
    themes_fetch_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        title="Most bytes one fetch reads of a partition",
        description="Big enough that a backlog fills a batch of themes_batch_max; the "
        "consumer holds about this much per partition it reads.",
    )
    themes_backlog_records: int = Field(
        default=2_000,
        gt=0,
        title="Records in a batch that mean a backlog",
        description="After a batch this big, the next one waits themes_backlog_pause_s.",
    )
    themes_backlog_pause_s: float = Field(
        default=1.0,
        ge=0,
        title="Seconds to wait after a backlog's batch before taking the next",
        description="Every audit a batch touches is recomputed, rewritten and published "
        "once per batch, so under a backlog a pause that lets the next batch gather more "
        "saves that work for each audit, and the cores it shares with intake and the store "
        "(docs/performance.md); a review arriving meanwhile waits at most this long. 0: "
        "never wait.",
    )
    themes_publish_lease_s: float = Field(
        default=30.0,
        gt=0,
        title="Seconds one replica may hold the right to publish a snapshot",
        description="Publishing a snapshot is serialised per key across replicas by a lease "
        "in the store; a replica that dies holding one delays that key by at most this long.",
    )
    taxonomy_file: Path | None = Field(
        default=None, title="Taxonomy file; the one shipped with the project when unset"
    )
