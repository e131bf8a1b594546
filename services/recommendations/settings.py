"""Recommendations' settings (environment prefix `CASEREVIEW_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class RecommendationsSettings(CommonSettings):
    """What recommendations needs beyond the common settings."""

    recommendations_group: str = Field(
        default="casereview-recommendations", title="Recommendations consumer group"
    )
    routing_file: Path | None = Field(
        default=None, title="Routing rules file; the one shipped with the project when unset"
    )
    recommendations_tokens_file: Path | None = Field(
        default=None,
        title="YAML file mapping sub-group id to the SHA-256 of its lead's bearer token",
    )
    escalation_interval_s: float = Field(
        default=60.0, gt=0, title="Seconds between checks for overdue actions"
    )
    # Versions of one theme in a batch are applied as one, and each audit reconciled once.
    recommendations_batch_max: int = Field(
        default=2000, gt=0, title="Most snapshots handled per batch"
    )
    recommendations_batch_interval_s: float = Field(
        default=1.0,
        ge=0,
        title="Least seconds between the starts of two batches of snapshots",
        description="Every new case changes the evidence of every action of its audit, so "
        "each batch that touches an audit writes and publishes a version of each of its "
        "actions: spacing the batches makes one version of the picture a second instead of "
        "one per themes batch, for a fraction of the store's work, and delays an action "
        "by at most this long (docs/performance.md). 0: take each batch as soon as it comes.",
    )
    publish_lease_s: float = Field(
        default=15.0,
        gt=0,
        title="Seconds one replica may hold an action's publication before another takes over",
    )
    taxonomy_file: Path | None = Field(
        default=None, title="Taxonomy file; the one shipped with the project when unset"
    )
