"""Client WebSocket frames built byte by byte, for the tests of the server's frame parser."""

from __future__ import annotations

import base64
import os
import struct
from typing import Any


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """A client frame as a browser sends it: masked, minimal length form. ``length`` overrides
    the length field (for headers that announce more than follows)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4) if mask is None else mask
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake(server: Any, *, target: str | None = None, drop: tuple[str, ...] = (), **changes: str) -> bytes:
    """A browser's upgrade request to ``server``; ``drop`` removes headers, ``changes`` sets them
    (``Sec_WebSocket_Version="8"``), ``target`` replaces the path and query."""
    headers = {
        "Host": f"{server.host}:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers = {name: value for name, value in headers.items() if name not in drop}
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    lines = [f"GET {target or f'/app/{server.key}?protocol=7&client=raw'} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
