"""WebSocket frames (RFC 6455), both ways.

Server frames are unmasked (section 5.1) and we never negotiate compression, so one event's frame
is the same bytes for every subscriber: encode once, write N times.

Client frames are parsed incrementally from a connection's read buffer. Every rule that protects
the server is checked here: frames must be masked, reserved bits clear, control frames short and
whole, and no message may grow past the size limit.
"""

from __future__ import annotations

import struct

TEXT = 0x1
BINARY = 0x2
CONTINUATION = 0x0
CLOSE = 0x8
PING = 0x9
PONG = 0xA

_FIN_TEXT = 0x81

# Close codes (RFC 6455 section 7.4.1).
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009


def valid_close_code(code: int) -> bool:
    """Codes a peer may put in a close frame (RFC 6455 section 7.4): the defined ones that are
    not reserved for local use, and the registered (3000-3999) and private (4000-4999) ranges."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


def text_frame(payload: str) -> bytes:
    return _frame(_FIN_TEXT, payload.encode())


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    return _frame(0x80 | opcode, payload[:125])


def close_frame(code: int, reason: str = "") -> bytes:
    # A close reason is at most 123 bytes; cut on a character boundary.
    data = reason.encode()[:123].decode(errors="ignore").encode()
    return control_frame(CLOSE, struct.pack("!H", code) + data)


def _frame(first: int, data: bytes) -> bytes:
    size = len(data)
    if size < 126:
        return bytes((first, size)) + data
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + data
    return struct.pack("!BBQ", first, 127, size) + data


class FrameError(Exception):
    """The peer broke the protocol; close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(mask: bytes, payload: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (C speed, no Python loop)."""
    size = len(payload)
    if not size:
        return payload
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def parse(buffer: bytearray, max_payload: int) -> tuple[list[tuple[int, bool, bytes]], int]:
    """The whole frames at the start of ``buffer`` as (opcode, fin, payload), and the bytes they
    used. Raises ``FrameError`` for a frame the server must not accept."""
    frames = []
    offset = 0
    end = len(buffer)
    while end - offset >= 2:
        first, second = buffer[offset], buffer[offset + 1]
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        size = second & 0x7F
        head = 2
        if size == 126:
            if end - offset < 4:
                break
            size = (buffer[offset + 2] << 8) | buffer[offset + 3]
            head = 4
        elif size == 127:
            if end - offset < 10:
                break
            (size,) = struct.unpack_from("!Q", buffer, offset + 2)
            head = 10
        if opcode >= CLOSE:
            if size > 125 or not fin:
                raise FrameError(PROTOCOL_ERROR, "control frames must be whole and at most 125 bytes")
            if opcode > PONG:
                raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif opcode > BINARY:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif size > max_payload:
            raise FrameError(TOO_BIG, "message too big")
        start = offset + head + 4
        if end - start < size:
            break
        mask = bytes(buffer[start - 4 : start])
        frames.append((opcode, fin, unmask(mask, bytes(buffer[start : start + size]))))
        offset = start + size
    return frames, offset
