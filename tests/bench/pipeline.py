"""The three services as separate processes in a namespace of their own, and what they cost."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.mongo import make_client
from shared.settings import CommonSettings
from tests.bench.kafkautil import create_topics, delete_topics
from tests.bench.procstat import Sample, sample
from tests.support.infra import REPO
from tests.support.services import ServiceProcess, free_port

SERVICES = ("intake", "themes", "recommendations")
TOPICS = ("submitted", "rejected", "accepted", "themes", "actions")


def settings_values(
    namespace: str,
    *,
    bootstrap: str,
    mongo_url: str,
    local_dir: Path,
    overrides: dict[str, str],
) -> dict[str, Any]:
    """Settings that keep a run's topics, groups and database to itself."""
    base = CommonSettings()
    ports = {name: free_port() for name in SERVICES}
    values: dict[str, Any] = {
        "mode": "test",
        "kafka_bootstrap": bootstrap,
        "mongo_url": mongo_url,
        "mongo_database": namespace,
        "local_dir": str(local_dir),
        "log_format": "json",
        "stats_interval_s": 10,
        **{f"topic_{t}": f"{namespace}.{getattr(base, f'topic_{t}')}" for t in TOPICS},
        **{f"{name}_group": f"{namespace}-{name}" for name in SERVICES},
        **{f"{name}_port": port for name, port in ports.items()},
        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()},
    }
    values.update(overrides)
    return values


@dataclass
class Pipeline:
    """Intake, themes and recommendations on one namespace's topics and database."""

    values: dict[str, Any]
    workdir: Path
    partitions: int
    store_timing: bool = False
    replicas: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The broker."""
        return str(self.values["kafka_bootstrap"])

    def topic(self, name: str) -> str:
        """One of the namespace's topics by its short name (`submitted`, `themes`, ...)."""
        return str(self.values[f"topic_{name}"])

    def group(self, service: str) -> str:
        """A service's consumer group."""
        return str(self.values[f"{service}_group"])

    def timing_file(self, process: str) -> Path:
        """Where a process's store-command totals are written when they are timed."""
        return self.workdir / f"{process}.store.json"

    def names(self) -> list[str]:
        """Every service process, in starting order: a service's first replica by the
        service's name, further ones as `themes-2`, `themes-3`, ... (`replicas`)."""
        return [
            name if replica == 1 else f"{name}-{replica}"
            for name in SERVICES
            for replica in range(1, self.replicas.get(name, 1) + 1)
        ]

    async def start(self) -> None:
        """Creates the topics, then starts each service process and waits for it to be
        ready. Replicas of a service share its consumer group, each on a port of its own."""
        await create_topics(self.bootstrap, [self.topic(t) for t in TOPICS], self.partitions)
        for process_name in self.names():
            name = process_name.split("-")[0]
            values = self.values
            if process_name != name:
                values = {**values, f"{name}_port": free_port()}
            launcher = (
                ("tests.bench.storetiming", str(self.timing_file(process_name)))
                if self.store_timing
                else ()
            )
            process = ServiceProcess(name, values, self.workdir / f"{process_name}.log", launcher)
            self.processes[process_name] = process
            await asyncio.to_thread(process.start)

    def pids(self) -> dict[str, int]:
        """Each running service's process id."""
        return {name: p.process.pid for name, p in self.processes.items() if p.process is not None}

    def samples(self) -> dict[str, Sample | None]:
        """Each service's CPU time and memory now."""
        return {name: sample(pid) for name, pid in self.pids().items()}

    def store_totals(self) -> dict[str, dict[str, Any]]:
        """Each service's store-command totals so far (when timed)."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.names():
            path = self.timing_file(name)
            if self.store_timing and path.exists():
                try:
                    out[name] = json.loads(path.read_text())
                except json.JSONDecodeError:
                    # Caught mid-write; the next one, a second later, is whole.
                    continue
        return out

    async def stop(self) -> dict[str, bool]:
        """Stops the services, last first; whether each stopped cleanly."""
        stopped: dict[str, bool] = {}
        for name in reversed(self.names()):
            process = self.processes.get(name)
            if process is not None:
                stopped[name] = await asyncio.to_thread(process.stop)
        return stopped

    async def clean_up(self) -> None:
        """Deletes the run's topics and drops its database."""
        await delete_topics(self.bootstrap, [self.topic(t) for t in TOPICS])
        client = make_client(str(self.values["mongo_url"]))
        try:
            await client.drop_database(str(self.values["mongo_database"]))
        finally:
            await client.close()


class Profiler:
    """py-spy sampling the given processes' Python stacks until stopped."""

    def __init__(self, pids: dict[str, int], out_dir: Path) -> None:
        self._pids = pids
        self._out_dir = out_dir
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Attaches py-spy to every process."""
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            raise RuntimeError("py-spy is not installed: pip install -e '.[dev]'")
        for name, pid in self._pids.items():
            out = self._out_dir / f"profile-{name}.txt"
            self._running[name] = subprocess.Popen(
                [
                    *(str(py_spy), "record", "--pid", str(pid), "--format", "raw"),
                    *("--rate", "200", "--output", str(out), "--nonblocking"),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Path]:
        """Stops sampling; py-spy writes its collapsed stacks on SIGINT."""
        for process in self._running.values():
            process.send_signal(signal.SIGINT)
        for process in self._running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        return {name: self._out_dir / f"profile-{name}.txt" for name in self._running}


# Frames every sample of a service passes through (start-up, the event loop, the server):
# ranking them says nothing.
_FRAMEWORK = ("runpy", "asyncio/", "selectors.py", "uvicorn/", "runtime.py", "bench/", "__main__")


def top_frames(collapsed: Path, limit: int = 15) -> dict[str, Any]:
    """What py-spy's collapsed stacks say: samples taken (on CPU only: idle threads are left
    out), the functions most often running themselves ("self"), and the functions most
    often on the stack below the event loop ("inclusive", each counted once per sample)."""
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        samples = int(number)
        total += samples
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            if not any(part in frame for part in _FRAMEWORK):
                under[frame] = under.get(frame, 0) + samples

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return [(frame, round(100 * n / total, 1)) for frame, n in best]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(under)} if total else {}


def _function(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (to/module.py)": line numbers would
    # split one function into many.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"
