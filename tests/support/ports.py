"""Ports for servers a test stops and starts again."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path


def restartable_port(taken: Iterable[int] = ()) -> int:
    """A free port below the kernel's ephemeral range.

    A server that is stopped and started again must get its port back. In the ephemeral range
    a client retrying its connection meanwhile can be handed that very port as its own (a TCP
    self-connect, 127.0.0.1:p to 127.0.0.1:p) and hold it, and the restart fails to bind.
    """
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    skip = set(taken)
    # A random start keeps concurrent sessions from trying the same ports in the same order.
    start = random.randrange(20000, low)
    candidates: list[int] = [*range(start, low), *range(20000, start)]
    for port in candidates:
        if port in skip:
            continue
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port between 20000 and {low}")
