"""The services as separate processes, started exactly as a user starts them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import namespaced
from tests.support.infra import REPO, Servers


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_values(
    servers: Servers,
    namespace: str,
    local_dir: Path,
    ports: Mapping[str, int],
    **overrides: Any,
) -> dict[str, Any]:
    """Settings values for the three services run as processes, and for the CLI beside them:
    the test's topics and database, consumer groups of its own, bearer-token files under
    `local_dir/secrets/` (where `casereview init-secrets` writes them), and each service's
    port and the URL the CLI calls it on. `overrides` win."""
    secrets = local_dir / "secrets"
    return namespaced(
        servers,
        namespace,
        local_dir=str(local_dir),
        intake_group=f"{namespace}-intake",
        themes_group=f"{namespace}-themes",
        recommendations_group=f"{namespace}-recommendations",
        agency_tokens_file=str(secrets / "agency-tokens.yaml"),
        recommendations_tokens_file=str(secrets / "lead-tokens.yaml"),
        **{f"{name}_port": port for name, port in ports.items()},
        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()},
        **overrides,
    )


def environment(values: dict[str, Any]) -> dict[str, str]:
    """Settings values as the `CASEREVIEW_` environment variables a process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEREVIEW_")}
    env.update({f"CASEREVIEW_{k.upper()}": str(v) for k, v in values.items()})
    return env


class ServiceProcess:
    """One service (`python -m services.<name>`) with its log in a file.

    `launcher` puts a module in front, which runs the service itself after setting
    something up (`python -m <launcher...> services.<name>`); the benchmark times store
    commands this way.
    """

    def __init__(
        self, name: str, values: dict[str, Any], log_path: Path, launcher: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.values = values
        self.log_path = log_path
        self.launcher = tuple(launcher)
        self.port = int(values[f"{name}_port"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ServiceProcess:
        """Starts the process; by default waits until its /readyz answers."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.launcher, f"services.{self.name}"],
            cwd=REPO,
            env=environment(self.values),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def ready(self) -> bool:
        """True when /readyz answers 200."""
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Waits for readiness; fails with the log's tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{self.name} did not become ready:\n{tail}")
            time.sleep(0.2)

    def signal(self, sig: signal.Signals) -> None:
        """Sends a signal to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout_s: float = 40.0) -> bool:
        """SIGTERM, then waits; SIGKILL if it does not stop in time.

        True when it stopped cleanly: its last line says so. (uvicorn re-raises the signal
        after a graceful shutdown, so the exit code is -15 either way.)
        """
        if self.process is None or self.process.poll() is not None:
            return False
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return False
        return any('"service stopped"' in line for line in self.log_lines()[-5:])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_lines(self) -> list[str]:
        """Every line the process wrote."""
        return self.log_path.read_text(errors="replace").splitlines()
