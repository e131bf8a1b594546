"""A private pair of native servers (Kafka and the MongoDB-wire store) that tests may kill."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support.infra import REPO, Servers

Server = Literal["kafka", "ferretdb"]
# In the order they are stopped: the store first, so no service writes to it after Kafka went.
SERVERS: tuple[Server, ...] = ("ferretdb", "kafka")
SCRIPTS: dict[Server, Path] = {
    "kafka": REPO / "deploy" / "kafka" / "kafka.sh",
    "ferretdb": REPO / "deploy" / "ferretdb" / "ferretdb.sh",
}
# What the settings would name instead of native servers; the scripts start nothing while set.
EXTERNAL = ("CASEREVIEW_KAFKA_BOOTSTRAP", "CASEREVIEW_MONGO_URL")


class NativeUnavailableError(RuntimeError):
    """The native scripts could not start a server; the message carries their output."""


def port_free(port: int) -> bool:
    """True when nothing on 127.0.0.1 accepts connections on the port and it can be bound."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def stable_port(taken: set[int] | frozenset[int] = frozenset(), preferred: int = 0) -> int:
    """A free port below the kernel's ephemeral range, the preferred one when it is free.

    A server killed and started again must get its port back; in the ephemeral range any
    outgoing connection made meanwhile may have taken it as its own local port.
    """
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    start = random.randrange(20000, low)
    candidates: list[int] = [preferred, *range(start, low), *range(20000, start)]
    for port in candidates:
        if port and port not in taken and port_free(port):
            return port
    raise NativeUnavailableError(f"no free port between 20000 and {low}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _threads_left(pid: int) -> bool:
    """Whether threads of the process other than its (zombie) leader still exist."""
    try:
        return any(tid != str(pid) for tid in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False


def _accepting(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class NativePair:
    """Kafka and FerretDB run by the project's scripts under their own `CASEREVIEW_LOCAL` and
    ports, so killing them never touches the servers anyone else uses."""

    local: Path
    kafka_port: int
    controller_port: int
    mongo_port: int

    @property
    def servers(self) -> Servers:
        """Where this pair answers."""
        return Servers(f"127.0.0.1:{self.kafka_port}", f"mongodb://127.0.0.1:{self.mongo_port}")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
        env.update(
            CASEREVIEW_LOCAL=str(self.local),
            CASEREVIEW_INFRA="native",
            CASEREVIEW_KAFKA_PORT=str(self.kafka_port),
            CASEREVIEW_KAFKA_CONTROLLER_PORT=str(self.controller_port),
            CASEREVIEW_MONGO_PORT=str(self.mongo_port),
        )
        return env

    def _script(self, server: Server, action: str, timeout_s: float) -> None:
        result = subprocess.run(
            ["bash", str(SCRIPTS[server]), action],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise NativeUnavailableError(
                f"{SCRIPTS[server].name} {action} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def seed_kafka_jars(self) -> None:
        """Links the jars the main checkout already fetched, so no second download is needed."""
        for cached in sorted((REPO / ".local" / "kafka").glob("libs-*")):
            target = self.local / "kafka" / cached.name
            if (cached / ".complete").exists() and not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copytree(cached, target, copy_function=os.link)
                except OSError:
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(cached, target)

    def up(self, server: Server) -> None:
        """Starts one server with its script (which waits until it answers)."""
        self._script(server, "up", timeout_s=900)

    def down(self, server: Server) -> None:
        """Stops one server with its script."""
        self._script(server, "down", timeout_s=120)

    def forget(self) -> None:
        """Stops the store and deletes its PostgreSQL cluster where the script had to keep it
        outside `local` (under /tmp, run as root from a folder the cluster's user cannot
        reach: deploy/ferretdb/ferretdb.sh), which nothing else ever deletes."""
        self._script("ferretdb", "forget", timeout_s=120)

    def pid(self, server: Server) -> int | None:
        """The live pid in the server's pid file, if any."""
        try:
            pid = int((self.local / "run" / f"{server}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self, server: Server, timeout_s: float = 20.0) -> int:
        """SIGKILL, as a power cut would; returns once the process is gone."""
        pid = self.pid(server)
        if pid is None:
            raise NativeUnavailableError(f"{server} is not running under {self.local}")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        # A killed JVM's main thread is a zombie while its other threads are still being torn
        # down, and its sockets stay open until the last one is gone: wait for the port too,
        # or a restart at once finds it taken.
        port = self.kafka_port if server == "kafka" else self.mongo_port
        while _alive(pid) or _threads_left(pid) or _accepting(port):
            if time.monotonic() > deadline:
                raise NativeUnavailableError(f"{server} (pid {pid}) survived SIGKILL")
            time.sleep(0.05)
        return pid

    @classmethod
    def clear(cls, local: Path) -> None:
        """Stops whatever a crashed earlier session left running under `local` (found by its
        pid files; stopping needs no ports) and drops its data."""
        stale = cls(local, 0, 0, 0)
        for server in SERVERS:
            if stale.pid(server) is not None:
                stale.down(server)
        for data in (local / "kafka" / "data", local / "ferretdb" / "data", local / "ferretdb-pg"):
            shutil.rmtree(data, ignore_errors=True)
