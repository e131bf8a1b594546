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
    publish_lease_s: float = Field(
        default=15.0,
        gt=0,
        title="Seconds one replica may hold an action's publication before another takes over",
    )
    taxonomy_file: Path | None = Field(
        default=None, title="Taxonomy file; the one shipped with the project when unset"
    )
