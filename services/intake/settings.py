"""Intake's settings (environment prefix `CASEREVIEW_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shared.settings import CommonSettings


class IntakeSettings(CommonSettings):
    """What intake needs beyond the common settings."""

    intake_group: str = Field(default="casereview-intake", title="Intake consumer group")
    pseudonym_key: SecretStr | None = Field(
        default=None,
        title="Secret key for case-reference pseudonyms (HMAC-SHA-256)",
        description="Required in production; demo and test modes generate one under local_dir.",
    )
    agency_tokens_file: Path | None = Field(
        default=None,
        title="YAML file mapping agency id to the SHA-256 of its bearer token",
    )
    max_message_bytes: int = Field(default=64 * 1024, gt=0, title="Largest accepted message")
    # Claims, forwards and refusals are written a batch at a time (see docs/performance.md).
    intake_batch_max: int = Field(default=2000, gt=0, title="Most records handled per batch")
    taxonomy_file: Path | None = Field(
        default=None, title="Taxonomy file; the one shipped with the project when unset"
    )
