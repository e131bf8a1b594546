"""Starting a service process: logging, the ASGI server, and clean shutdown on SIGTERM."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import uvicorn
from starlette.applications import Starlette

from shared.log import configure_logging, get_logger
from shared.settings import CommonSettings


def package_version() -> str:
    """The installed casereview version."""
    try:
        return version("casereview")
    except PackageNotFoundError:
        return "0+unknown"


def log_started(service: str, settings: CommonSettings) -> None:
    """The one line every service writes when it is up."""
    get_logger().info(
        "service started",
        service=service,
        release=package_version(),
        kafka_bootstrap=settings.kafka_bootstrap,
        mongo_host=settings.mongo_host(),
        mode=settings.mode,
    )


def log_stopped(service: str) -> None:
    """The line every service writes once its consumers stopped and its clients closed."""
    get_logger().info("service stopped", service=service)


def serve(
    service: str, factory: Callable[[], Starlette], settings: CommonSettings, port: int
) -> None:
    """Runs the app until SIGTERM or SIGINT; uvicorn then runs the lifespan's shutdown."""
    configure_logging(
        service, settings.log_level, settings.log_format, throttle_s=settings.stats_interval_s
    )
    uvicorn.run(
        factory(),
        host=settings.http_host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
