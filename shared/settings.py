"""Settings every service shares; each service extends them with its own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["production", "demo", "test"]


class CommonSettings(BaseSettings):
    """Where the servers are, the topic names, and how to log. Environment prefix `CASEREVIEW_`."""

    model_config = SettingsConfigDict(env_prefix="CASEREVIEW_", extra="ignore", frozen=True)

    mode: Mode = Field(
        default="production",
        title="Run mode",
        description="demo and test allow generated secrets; production requires them.",
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", title="Kafka bootstrap servers")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        title="How the services connect to Kafka",
        description="SASL_* authenticate with the SASL settings below; SASL_SSL also encrypts "
        "and verifies the broker against the system's certificate authorities.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", title="SASL mechanism"
    )
    kafka_sasl_username: str | None = Field(
        default=None, title="SASL user name: the service's own Kafka principal"
    )
    kafka_sasl_password: SecretStr | None = Field(default=None, title="SASL password")
    kafka_fetch_wait_ms: int = Field(
        default=50,
        gt=0,
        title="Longest a consumer's fetch waits for records, in milliseconds",
        description="The broker holds a fetch until a record comes or this runs out. aiokafka "
        "has one fetch at a time in flight to a broker, for the partitions it holds nothing "
        "unread of, so records arriving on a partition just handed over wait for that fetch "
        "to come back: with Kafka's default of 500 ms, up to half a second "
        "(docs/performance.md).",
    )
    mongo_url: str = Field(default="mongodb://127.0.0.1:27017", title="MongoDB connection URL")
    mongo_database: str = Field(default="casereview", title="MongoDB database name")
    local_dir: Path = Field(
        default=Path(".local"), title="Folder for generated secrets and local state"
    )

    topic_submitted: str = Field(
        default="casereview.findings.submitted.v1", title="Submitted findings topic"
    )
    topic_rejected: str = Field(
        default="casereview.findings.rejected.v1", title="Rejected submissions topic"
    )
    topic_accepted: str = Field(
        default="casereview.reviews.accepted.v1", title="Accepted reviews topic (internal)"
    )
    topic_themes: str = Field(default="casereview.themes.v1", title="Theme snapshots topic")
    topic_actions: str = Field(default="casereview.actions.v1", title="Actions topic")

    http_host: str = Field(default="127.0.0.1", title="Address the HTTP APIs listen on")
    intake_port: int = Field(default=8001, title="Intake HTTP port")
    themes_port: int = Field(default=8002, title="Themes HTTP port")
    recommendations_port: int = Field(default=8003, title="Recommendations HTTP port")
    topic_partitions: int = Field(
        default=4, ge=1, title="Partitions for topics the services create"
    )
    intake_url: str = Field(default="http://127.0.0.1:8001", title="Intake HTTP API")
    themes_url: str = Field(default="http://127.0.0.1:8002", title="Themes HTTP API")
    recommendations_url: str = Field(
        default="http://127.0.0.1:8003", title="Recommendations HTTP API"
    )

    log_level: str = Field(default="INFO", title="Log level")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", title="Log format: console on a terminal, JSON otherwise, when auto"
    )
    stats_interval_s: float = Field(
        default=30.0, gt=0, title="Seconds between consumer lag and throughput lines"
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> Self:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs "
                "CASEREVIEW_KAFKA_SASL_USERNAME and CASEREVIEW_KAFKA_SASL_PASSWORD"
            )
        return self

    def mongo_host(self) -> str:
        """The store's address without credentials, fit for a log line."""
        rest = self.mongo_url.split("://", 1)[-1]
        return rest.rsplit("@", 1)[-1].split("/", 1)[0]
