"""Exit 0 when a MongoDB wire-protocol server at HOST PORT answers OP_MSG hello with ok: 1."""

from __future__ import annotations

import socket
import struct
import sys
import time

OP_MSG = 2013
TIMEOUT_S = 2.0
REQUEST_ID = 1


def _cstring(name: str) -> bytes:
    return name.encode() + b"\x00"


def hello_message() -> bytes:
    """OP_MSG carrying the BSON document {"hello": 1, "$db": "admin"} (hand-encoded)."""
    db = _cstring("admin")
    hello = b"\x10" + _cstring("hello") + struct.pack("<i", 1)  # int32 element
    dbname = b"\x02" + _cstring("$db") + struct.pack("<i", len(db)) + db  # string element
    elements = hello + dbname
    doc = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"
    body = struct.pack("<I", 0) + b"\x00" + doc  # flagBits, section kind 0 (body)
    return struct.pack("<iiii", 16 + len(body), REQUEST_ID, 0, OP_MSG) + body


# Sizes of fixed-width BSON values, by element type.
_FIXED = {
    0x01: 8,  # double
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0x7F: 0,  # max key
    0xFF: 0,  # min key
}


def top_level_ok(doc: bytes) -> bool:
    """True when the BSON document is well formed at the top level and has ok == 1."""
    if len(doc) < 5 or struct.unpack_from("<i", doc)[0] != len(doc) or doc[-1] != 0:
        return False
    pos, ok = 4, False
    while doc[pos] != 0:
        kind = doc[pos]
        end = doc.index(b"\x00", pos + 1)
        name, pos = doc[pos + 1 : end], end + 1
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):  # string, JavaScript code, symbol
            size = 4 + struct.unpack_from("<i", doc, pos)[0]
        elif kind in (0x03, 0x04, 0x0F):  # document, array, code with scope
            size = struct.unpack_from("<i", doc, pos)[0]
        elif kind == 0x05:  # binary: length, subtype, bytes
            size = 5 + struct.unpack_from("<i", doc, pos)[0]
        elif kind == 0x0B:  # regex: two C strings
            size = doc.index(b"\x00", doc.index(b"\x00", pos) + 1) + 1 - pos
        else:
            return False
        if size < 0 or pos + size > len(doc) - 1:
            return False
        if name == b"ok":
            value = doc[pos : pos + size]
            if kind == 0x01:
                ok = struct.unpack("<d", value)[0] == 1.0
            elif kind in (0x10, 0x12):
                ok = int.from_bytes(value, "little", signed=True) == 1
        pos += size
    return ok and pos == len(doc) - 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def check(host: str, port: int) -> bool:
    deadline = time.monotonic() + TIMEOUT_S
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(hello_message())
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        length, _, response_to, op_code = struct.unpack("<iiii", _recv_exact(sock, 16))
        if op_code != OP_MSG or response_to != REQUEST_ID or not 21 <= length <= 48_000_000:
            return False
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        body = _recv_exact(sock, length - 16)
    flags = struct.unpack_from("<I", body)[0]
    if flags & 1:  # checksumPresent: a CRC-32C trails the sections
        body = body[:-4]
    if body[4] != 0:  # the reply document is the kind-0 section
        return False
    doc_len = struct.unpack_from("<i", body, 5)[0]
    return top_level_ok(body[5 : 5 + doc_len])


def main(argv: list[str]) -> int:
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    port = int(argv[2]) if len(argv) > 2 else 27017
    try:
        return 0 if check(host, port) else 1
    except (OSError, ValueError, IndexError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
