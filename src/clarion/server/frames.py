"""Server-to-client WebSocket frames, built once per event and written to every socket as is.

Server frames are unmasked (RFC 6455 section 5.1) and we never negotiate compression, so one
event's frame is the same bytes for every subscriber: encode once, write N times.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: str) -> bytes:
    data = payload.encode()
    size = len(data)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + data
    if size < 65536:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + data
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + data
