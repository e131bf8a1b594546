"""How every service consumes: commit only after the batch's effects are durable, retry the
batch after a pause when a dependency fails, and say so at most once per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.kafka.message import KafkaMessage

from shared.log import get_logger

log = get_logger()


def records_of(message: KafkaMessage) -> Sequence[Any]:
    """The aiokafka records behind a batch (or single) message."""
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


class Throttle:
    """Lets a repeated warning through at most once per interval."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """True when this key's warning may be written now."""
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) >= self._interval_s:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False


async def settle(
    message: KafkaMessage,
    work: Callable[[], Awaitable[None]],
    *,
    throttle: Throttle,
    retry_pause_s: float = 1.0,
) -> None:
    """Runs the batch's work, then commits; on failure rewinds to the batch's first record.

    The subscriber uses the MANUAL acknowledgement policy, so this is the only place offsets
    move: after `work` returned, never before, and never when it raised or was cancelled.
    """
    try:
        await work()
    except asyncio.CancelledError:
        # Shutdown interrupted the batch: leave the offsets where they were.
        raise
    except Exception as error:
        if throttle.allow(type(error).__name__):
            log.warning(
                "batch failed; it will be retried",
                error=f"{type(error).__name__}: {error}"[:300],
                records=len(records_of(message)),
                retry_in_s=retry_pause_s,
            )
        await asyncio.sleep(retry_pause_s)
        await message.nack()
        return
    await message.ack()
