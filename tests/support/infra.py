"""The real servers tests run against: named by settings, from testcontainers, or native."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Servers:
    """Where the broker and the store answer."""

    kafka_bootstrap: str
    mongo_url: str


class ServersUnavailableError(RuntimeError):
    """No broker or store could be had; tests must fail, never skip."""


def _reachable(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _mongo_host_port(url: str) -> str:
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0].split(",", 1)[0]


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def _containers() -> Iterator[Servers]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    with (
        KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka,
        MongoDbContainer("mongo:8.0") as mongo,
    ):
        yield Servers(kafka.get_bootstrap_server(), mongo.get_connection_url())


@contextmanager
def _native() -> Iterator[Servers]:
    # The same port settings as the native scripts, so a second checkout can run beside a first.
    kafka_port = os.environ.get("CASEREVIEW_KAFKA_PORT", "9092")
    mongo_port = os.environ.get("CASEREVIEW_MONGO_PORT", "27017")
    servers = Servers(f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongo_port}")
    already = _reachable(servers.kafka_bootstrap) and _reachable(
        _mongo_host_port(servers.mongo_url)
    )
    script = REPO / "deploy" / "infra.sh"
    env = {**os.environ, "CASEREVIEW_INFRA": "native"}
    if not already:
        result = subprocess.run(
            ["bash", str(script), "up"], env=env, capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            raise ServersUnavailableError(
                "could not start the native Kafka broker and document store "
                f"(deploy/infra.sh up exited {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
    try:
        yield servers
    finally:
        # Leave servers the user started running; stop only what the tests started.
        if not already:
            subprocess.run(["bash", str(script), "down"], env=env, capture_output=True, timeout=120)


@contextmanager
def real_servers() -> Iterator[Servers]:
    """Servers named by settings; else testcontainers where Docker answers; else native."""
    bootstrap = os.environ.get("CASEREVIEW_KAFKA_BOOTSTRAP")
    mongo = os.environ.get("CASEREVIEW_MONGO_URL")
    if bootstrap and mongo:
        if not (_reachable(bootstrap.split(",")[0]) and _reachable(_mongo_host_port(mongo))):
            raise ServersUnavailableError(
                f"CASEREVIEW_KAFKA_BOOTSTRAP={bootstrap} or the store at "
                f"{_mongo_host_port(mongo)} does not answer"
            )
        yield Servers(bootstrap, mongo)
    elif os.environ.get("CASEREVIEW_INFRA", "auto") != "native" and _docker_engine():
        with _containers() as servers:
            yield servers
    else:
        with _native() as servers:
            yield servers
