"""The command line's settings (prefix `CASEREVIEW_`), named as the services name them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class CliSettings(CommonSettings):
    """Where the services are, which consumer groups to watch, and how long to wait."""

    # The same names and defaults as the services' own settings, so one environment drives both.
    intake_group: str = Field(default="casereview-intake", title="Intake consumer group")
    themes_group: str = Field(default="casereview-themes", title="Themes consumer group")
    recommendations_group: str = Field(
        default="casereview-recommendations", title="Recommendations consumer group"
    )
    http_timeout_s: float = Field(default=10.0, gt=0, title="Seconds to wait for an HTTP answer")
    quiet_s: float = Field(
        default=1.0, gt=0, title="Seconds without change after which the pipeline counts as quiet"
    )
    settle_timeout_s: float = Field(
        default=45.0, gt=0, title="Seconds the demo waits for the pipeline to become quiet"
    )

    @property
    def secrets_dir(self) -> Path:
        """Where generated demo tokens live."""
        return Path(self.local_dir) / "secrets"

    @property
    def out_dir(self) -> Path:
        """Where the demo writes its briefing."""
        return Path(self.local_dir) / "out"
