"""One structlog set-up for every service: JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# The field names every service's lines use; docs/operations.md documents them.
LOG_FIELDS = (
    "ts",
    "level",
    "service",
    "event",
    "correlation_id",
    "event_id",
    "audit_id",
    "agency_id",
    "sub_group",
    "action_id",
    "topic",
    "partition",
    "offset",
    "duration_ms",
    "reason",
    "error",
)


def _add_service(service: str) -> Processor:
    def processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def _foreign_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Library lines (aiokafka, uvicorn) can carry formatted args; keep only the message.
    event_dict.pop("positional_args", None)
    return event_dict


def configure_logging(
    service: str,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
) -> None:
    """Route structlog and the standard library's logging to one renderer on stderr."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _add_service(service),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _foreign_event],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter below WARNING says nothing an operator acts on.
    for noisy in ("aiokafka", "kafka", "pymongo", "uvicorn.access", "faststream"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger with the given fields bound to every line.

    Lazy: module-level loggers made before `configure_logging` still render as configured.
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(**bound)
    return logger
