"""Exit 0 if the Kafka broker at HOST:PORT answers a Metadata request listing a broker, else 1."""

from __future__ import annotations

import socket
import struct
import sys
import time

TIMEOUT_S = 2.0
METADATA_API_KEY = 3
METADATA_VERSION = 1  # v1: plain (non-flexible) encoding, no throttle time in the response
CORRELATION_ID = 0x63617365
CLIENT_ID = b"casereview-ready"
MAX_RESPONSE_BYTES = 1 << 20


def metadata_request() -> bytes:
    """A size-prefixed Metadata v1 request for no topics (brokers and controller only)."""
    header = struct.pack(
        ">hhih", METADATA_API_KEY, METADATA_VERSION, CORRELATION_ID, len(CLIENT_ID)
    )
    payload = header + CLIENT_ID + struct.pack(">i", 0)
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


class Reader:
    """Reads big-endian Kafka primitives; struct.error when the data runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return int(value)

    def string(self) -> str | None:
        (size,) = struct.unpack_from(">h", self.data, self.pos)
        self.pos += 2
        if size < 0:
            return None
        raw = self.data[self.pos : self.pos + size]
        if len(raw) != size:
            raise ValueError("truncated string")
        self.pos += size
        return raw.decode("utf-8")


def broker_count(response: bytes) -> int:
    """Checks a Metadata v1 response to an empty topic list; returns how many brokers it lists."""
    reader = Reader(response)
    if reader.int32() != CORRELATION_ID:
        raise ValueError("unexpected correlation id")
    brokers = reader.int32()
    for _ in range(brokers):
        reader.int32()  # node id
        if not reader.string():  # host
            raise ValueError("broker without a host")
        reader.int32()  # port
        reader.string()  # rack
    reader.int32()  # controller id
    if reader.int32() != 0 or reader.pos != len(response):  # topics: none were asked for
        raise ValueError("malformed response")
    return brokers


def main(argv: list[str]) -> int:
    host, _, port = (argv[1] if len(argv) > 1 else "127.0.0.1:9092").rpartition(":")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(metadata_request())
            (size,) = struct.unpack(">i", recv_exact(sock, 4, deadline))
            if not 0 < size <= MAX_RESPONSE_BYTES:
                return 1
            return 0 if broker_count(recv_exact(sock, size, deadline)) >= 1 else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
