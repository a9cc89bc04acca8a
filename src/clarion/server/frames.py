"""WebSocket (RFC 6455) for the server side, without I/O: bytes in, events out.

Server frames are unmasked (section 5.1) and we never negotiate compression, so one event's frame
is the same bytes for every subscriber: encode once, write N times.

Client bytes go through ``WebSocket.receive``, which parses frames, joins fragments, checks UTF-8
and follows the close handshake, and hands back what the connection must act on. Every rule that
protects the server is checked here: frames must be masked, reserved bits clear, control frames
short and whole, and no message may grow past the size limit. It knows no socket, no event loop
and no clock, so it is tested byte by byte (tests/unit/test_frames.py); ``Connection`` only
carries its bytes and events.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any, NamedTuple

TEXT = 0x1
BINARY = 0x2
CONTINUATION = 0x0
CLOSE = 0x8
PING = 0x9
PONG = 0xA

_FIN_TEXT = 0x81

# Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
PROTOCOL_ERROR = 1002
NO_STATUS = 1005  # "no code in the close frame": never on the wire
INVALID_DATA = 1007
TOO_BIG = 1009

# Codes a peer may send (RFC 6455 section 7.4 and IANA's registry): 1004-1006 and 1015 are
# reserved, 1016-2999 unassigned; 3000-3999 are registered and 4000-4999 private.
_PEER_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def valid_close_code(code: int) -> bool:
    """Whether a peer may put ``code`` in a close frame."""
    return code in _PEER_CODES or 3000 <= code <= 4999


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


def unmask(mask: bytes | bytearray, payload: bytes | bytearray) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (C speed, no Python loop)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


Frame = tuple[int, bool, bytes]  # opcode, FIN, unmasked payload


def parse(buffer: bytes | bytearray, max_payload: int) -> tuple[list[Frame], int, FrameError | None]:
    """The whole frames at the start of ``buffer``, the bytes they used, and the error that
    stopped the parse, if any: the frames before a bad one are still returned, so that what
    came first is acted on before the connection fails."""
    frames: list[Frame] = []
    offset = 0
    end = len(buffer)
    while end - offset >= 2:
        first, second = buffer[offset], buffer[offset + 1]
        if first & 0x70:
            return frames, offset, FrameError(PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            return frames, offset, FrameError(PROTOCOL_ERROR, "client frames must be masked")
        opcode = first & 0x0F
        fin = first >= 0x80
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
                error = FrameError(PROTOCOL_ERROR, "control frames must be whole and at most 125 bytes")
                return frames, offset, error
            if opcode > PONG:
                return frames, offset, FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif opcode > BINARY:
            return frames, offset, FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif size > max_payload:
            return frames, offset, FrameError(TOO_BIG, "message too big")
        start = offset + head + 4
        if end - start < size:
            break
        frames.append((opcode, fin, unmask(buffer[start - 4 : start], buffer[start : start + size])))
        offset = start + size
    return frames, offset, None


# --- events -----------------------------------------------------------------------------------
# A whole text message is handed back as the ``str`` itself (the common case costs no object);
# everything else as one of these.


class Binary(NamedTuple):
    """A whole binary message."""

    data: bytes


class Ping(NamedTuple):
    """Answer with ``pong`` (the PONG frame carrying the same payload)."""

    payload: bytes

    @property
    def pong(self) -> bytes:
        return control_frame(PONG, self.payload)


class Pong(NamedTuple):
    payload: bytes


class Closed(NamedTuple):
    """The peer closed: write ``reply`` (our close frame, unless we sent ours first), then close
    the TCP connection."""

    code: int  # 1005 for a close frame without a code
    reason: str
    reply: bytes | None


class Failed(NamedTuple):
    """The peer broke the protocol: write ``reply`` (unless we had already sent a close frame),
    close the TCP connection, and read nothing more."""

    code: int
    reason: str
    reply: bytes | None


Event = str | Binary | Ping | Pong | Closed | Failed

OPEN, CLOSING, CLOSED = 0, 1, 2  # CLOSING: our close frame is out, theirs not yet in


class _Message:
    """A fragmented message in progress: allocated at its first fragment, dropped at its last."""

    __slots__ = ("decoder", "parts", "size")

    def __init__(self, binary: bool) -> None:
        # Text is decoded fragment by fragment, so invalid UTF-8 fails at the fragment that has it.
        self.decoder = None if binary else codecs.getincrementaldecoder("utf-8")()
        self.parts: list[Any] = []  # str parts for text, bytes for binary
        self.size = 0


class WebSocket:
    """The RFC 6455 state of one server-side connection: fragments, close handshake, limits.

    ``receive`` takes bytes as they arrive and returns the events they complete, in order;
    ``close`` starts a close handshake. About 60 bytes while idle: the partial-frame buffer and the
    fragmented-message state exist only while they hold something.
    """

    __slots__ = ("_buffer", "_message", "max_message", "state")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.state = OPEN
        self._buffer: bytearray | None = None  # bytes of an unfinished frame
        self._message: _Message | None = None  # an unfinished fragmented message

    def close(self, code: int, reason: str = "") -> bytes | None:
        """Our close frame to send, or None if the connection is already closing."""
        if self.state != OPEN:
            return None
        self.state = CLOSING
        self._message = None
        return close_frame(code, reason)

    def receive(self, data: bytes) -> list[Event]:
        if self.state == CLOSED:
            return []
        buffer = self._buffer
        if buffer is not None:
            buffer += data
            parsed, used, error = parse(buffer, self.max_message)
            if used == len(buffer):
                self._buffer = None
            elif used:
                del buffer[:used]
        else:
            parsed, used, error = parse(data, self.max_message)
            if used < len(data):
                self._buffer = bytearray(data[used:])
        events: list[Event] = []
        for opcode, fin, payload in parsed:
            if opcode == TEXT and fin and self._message is None and self.state == OPEN:
                # The hot path: one whole text frame.
                try:
                    events.append(payload.decode())
                except UnicodeDecodeError:
                    events.append(self._fail(INVALID_DATA, "text frame is not UTF-8"))
                    return events
                continue
            event = self._frame(opcode, fin, payload)
            if event is not None:
                events.append(event)
                if self.state == CLOSED:
                    return events
        if error is not None:
            events.append(self._fail(error.code, error.reason))
        return events

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> Event | None:
        if opcode == CLOSE:
            return self._peer_close(payload)
        if self.state != OPEN:
            return None  # our close is out: only their close matters now
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        message = self._message
        if opcode == CONTINUATION:
            if message is None:
                return self._fail(PROTOCOL_ERROR, "continuation without a message")
        elif message is not None:
            return self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
        elif fin:
            if opcode == BINARY:
                return Binary(payload)
            try:
                return payload.decode()
            except UnicodeDecodeError:
                return self._fail(INVALID_DATA, "text frame is not UTF-8")
        else:
            message = self._message = _Message(binary=opcode == BINARY)
        message.size += len(payload)  # a running total: no re-summing per fragment
        if message.size > self.max_message:
            return self._fail(TOO_BIG, "message too big")
        decoder = message.decoder
        if decoder is None:
            message.parts.append(payload)
        else:
            try:
                part = decoder.decode(payload, fin)
            except UnicodeDecodeError:
                return self._fail(INVALID_DATA, "text message is not UTF-8")
            if part:
                message.parts.append(part)
        if not fin:
            return None
        self._message = None
        if decoder is None:
            return Binary(b"".join(message.parts))
        return "".join(message.parts)

    def _peer_close(self, payload: bytes) -> Event:
        if self._message is not None:
            return self._fail(PROTOCOL_ERROR, "a close frame inside a fragmented message")
        if len(payload) == 1:
            return self._fail(PROTOCOL_ERROR, "a close frame's code takes two bytes")
        code = int.from_bytes(payload[:2], "big") if payload else NO_STATUS
        if payload and not valid_close_code(code):
            return self._fail(PROTOCOL_ERROR, f"close code {code} may not be sent")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            return self._fail(INVALID_DATA, "close reason is not UTF-8")
        # Answer with the same code, as RFC 6455 asks, unless our close went first.
        reply = close_frame(NORMAL if code == NO_STATUS else code) if self.state == OPEN else None
        self.state = CLOSED
        self._buffer = None
        return Closed(code, reason, reply)

    def _fail(self, code: int, reason: str) -> Failed:
        reply = close_frame(code, reason) if self.state == OPEN else None
        self.state = CLOSED
        self._buffer = self._message = None
        return Failed(code, reason, reply)
