"""Runs a service with its store commands timed: python -m tests.bench.storetiming OUT MODULE.

PyMongo's command monitoring counts every command the process sends and how long each took,
and how much wall time the process had at least one command in flight (time spent waiting
on the store, however many commands overlap). The totals are written to OUT as JSON every
second and at exit, so the benchmark can take differences between phases.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import threading
import time
from pathlib import Path

from pymongo import monitoring


class StoreTiming(monitoring.CommandListener):
    """Totals per command name and the wall time with a command outstanding."""

    def __init__(self) -> None:
        self.commands: dict[str, list[float]] = {}
        self.in_flight = 0
        self.busy_s = 0.0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """A command went out."""
        with self._lock:
            if self.in_flight == 0:
                self._busy_since = time.monotonic()
            self.in_flight += 1

    def _ended(self, name: str, micros: int) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.busy_s += time.monotonic() - self._busy_since
            totals = self.commands.setdefault(name, [0, 0.0])
            totals[0] += 1
            totals[1] += micros / 1e6

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """A command's reply came back."""
        self._ended(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A command failed."""
        self._ended(event.command_name, event.duration_micros)

    def snapshot(self) -> dict[str, object]:
        """The totals so far."""
        with self._lock:
            busy = self.busy_s
            if self.in_flight:
                busy += time.monotonic() - self._busy_since
            return {
                "busy_s": round(busy, 4),
                "commands": {
                    name: {"count": int(count), "seconds": round(seconds, 4)}
                    for name, (count, seconds) in sorted(self.commands.items())
                },
            }


def main() -> None:
    """Registers the listener, then runs the module as `python -m MODULE` would."""
    out, module = Path(sys.argv[1]), sys.argv[2]
    timing = StoreTiming()
    monitoring.register(timing)

    def write() -> None:
        out.write_text(json.dumps(timing.snapshot()))

    def keep_writing() -> None:
        while True:
            time.sleep(1.0)
            write()

    threading.Thread(target=keep_writing, daemon=True).start()
    atexit.register(write)
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
