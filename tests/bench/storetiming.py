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
    """Totals per command name (and per command and collection) and the wall time with a
    command outstanding."""

    def __init__(self) -> None:
        self.commands: dict[str, list[float]] = {}
        self.by_collection: dict[str, list[float]] = {}
        self._collections: dict[int, str] = {}
        self.in_flight = 0
        self.busy_s = 0.0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """A command went out."""
        # CRUD commands name their collection as the value of the command's own key.
        target = event.command.get(event.command_name)
        with self._lock:
            if self.in_flight == 0:
                self._busy_since = time.monotonic()
            self.in_flight += 1
            if isinstance(target, str):
                self._collections[event.request_id] = target

    def _ended(self, name: str, request_id: int, micros: int) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.busy_s += time.monotonic() - self._busy_since
            collection = self._collections.pop(request_id, None)
            keys = [(self.commands, name)]
            if collection is not None:
                keys.append((self.by_collection, f"{name} {collection}"))
            for table, key in keys:
                totals = table.setdefault(key, [0, 0.0])
                totals[0] += 1
                totals[1] += micros / 1e6

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """A command's reply came back."""
        self._ended(event.command_name, event.request_id, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A command failed."""
        self._ended(event.command_name, event.request_id, event.duration_micros)

    def snapshot(self) -> dict[str, object]:
        """The totals so far."""
        with self._lock:
            busy = self.busy_s
            if self.in_flight:
                busy += time.monotonic() - self._busy_since
            return {
                "busy_s": round(busy, 4),
                "commands": _totals(self.commands),
                "by_collection": _totals(self.by_collection),
            }


def _totals(table: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"count": int(count), "seconds": round(seconds, 4)}
        for name, (count, seconds) in sorted(table.items())
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
