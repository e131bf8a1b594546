"""One structlog set-up for every service: JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

# The field names every service's lines use for the same things; docs/operations.md documents
# them and every other field, and docs/log-schema.json is the schema tests hold each line to.
LOG_FIELDS = (
    "ts",
    "level",
    "service",
    "event",
    "correlation_id",
    "caused_by",
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

CAUSED_BY_HEADER = "caused_by"
"""Kafka header carrying the event ids behind a message, comma-separated, at most `CAUSES_MAX`."""

CAUSES_MAX = 20


class LibraryThrottle(logging.Filter):
    """Lets each library's warnings and errors through at most once per interval.

    With the broker gone, aiokafka reports every reconnect attempt (thousands a second from an
    idle producer); one line per interval says the same, with how many were held back.
    """

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a library's warning or error that repeats within the interval."""
        if record.levelno < logging.WARNING or isinstance(record.msg, dict):
            # Below warning, or a structlog line of the project's own (throttled where made).
            return True
        family = record.name.split(".", 1)[0]
        now = time.monotonic()
        if now - self._last.get(family, -float("inf")) < self._interval_s:
            self._held[family] = self._held.get(family, 0) + 1
            return False
        self._last[family] = now
        record.suppressed = self._held.pop(family, 0)
        return True


def _add_service(service: str) -> Processor:
    def processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def _foreign_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # A library line says which library wrote it and how many like it the throttle held back.
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict["logger"] = record.name
        held = getattr(record, "suppressed", 0)
        if held:
            event_dict["suppressed"] = held
    return event_dict


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    # Python would print the traceback as plain text, the one non-JSON line a crash leaves.
    get_logger().critical("service crashed", exc_info=(kind, value, traceback))


def _log_unraisable(unraisable: Any) -> None:
    get_logger().error(
        "exception ignored",
        error=describe(unraisable.exc_value),
        where=repr(unraisable.object)[:200],
    )


class _StderrLogger:
    """Writes each rendered line, whole, to whatever `sys.stderr` is then (a test runner may
    have swapped it since the set-up), where the libraries' lines go too."""

    def __init__(self, *_: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        """Writes one line."""
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(
    service: str,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    throttle_s: float = 30.0,
) -> None:
    """Route structlog and the standard library's logging (the libraries' lines) to one
    renderer on stderr.

    `throttle_s` bounds how often each library may repeat a warning or error.
    """
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
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), timestamp_key="ts")
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    # The project's own lines are rendered and written by structlog itself: through the
    # standard library's logging (a LogRecord, handlers, a formatter per line) one cost about
    # 32 µs against 13, with every accepted submission, stored review and published snapshot
    # logging one. A line below the level is dropped before any processor runs.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=_StderrLogger,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LibraryThrottle(throttle_s))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _foreign_fields],
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
    # Warnings, uncaught and unraisable exceptions would otherwise be printed as plain text.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    sys.unraisablehook = _log_unraisable


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A logger with the given fields bound to every line.

    Lazy: module-level loggers made before `configure_logging` still render as configured.
    """
    logger: FilteringBoundLogger = structlog.get_logger(**bound)
    return logger


def describe(error: BaseException) -> str:
    """An exception as one bounded line: its type and message, never a traceback."""
    return f"{type(error).__name__}: {error}"[:300]


def bounded_causes(*groups: Sequence[str | None]) -> list[str]:
    """Event ids from several sources, de-duplicated in order, at most `CAUSES_MAX`."""
    seen = dict.fromkeys(cause for group in groups for cause in group if cause)
    return list(seen)[:CAUSES_MAX]


@contextmanager
def bind_causes(causes: Sequence[str]) -> Iterator[None]:
    """Binds the events behind a piece of work to every line it logs (`caused_by`, and the
    first as `correlation_id`) and, through `trace_headers`, to every message it publishes."""
    bounded = bounded_causes(causes)
    with structlog.contextvars.bound_contextvars(
        correlation_id=bounded[0] if bounded else None, caused_by=bounded
    ):
        yield


def trace_headers() -> dict[str, str]:
    """Kafka headers carrying the `caused_by` bound to the current work, if any.

    The work's log lines and the messages it publishes name the same events, so the next
    service can log them too.
    """
    causes = structlog.contextvars.get_contextvars().get("caused_by")
    if not causes:
        return {}
    return {CAUSED_BY_HEADER: ",".join(bounded_causes(causes))}


def causes_of(header: bytes | None) -> tuple[str, ...]:
    """The event ids in a `caused_by` header, as `trace_headers` wrote them."""
    if not header:
        return ()
    return tuple(bounded_causes(bytes(header).decode("utf-8", "replace").split(",")))
