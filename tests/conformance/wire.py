"""The conformance runner: one case's bytes to a real server over a raw socket, and what came back.

A case is a list of sends (each maybe cut into chops, maybe after a pause) and the answers Clarion
must give, in order, then either a close code or nothing (the connection stays open, which a
final probe ping proves). Answers are read as they come, while the sends go on, as a real client
would: a server that fails the connection half-way is seen failing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from clarion.server.front_door import accept_key
from wsframes import client_frame, handshake

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

Answer = tuple[str, Any]  # ("pong", payload) | ("event", name) | ("error", code) | ("close", code)
PROBE = b"conformance-probe"


def pong(payload: bytes = b"") -> Answer:
    return ("pong", payload)


def event(name: str = "pusher:pong") -> Answer:
    return ("event", name)


def error(code: int = 4200) -> Answer:
    return ("error", code)


@dataclass(frozen=True)
class Send:
    """Bytes to write; ``chop`` cuts them into writes of that size; ``pause`` waits before."""

    data: bytes
    chop: int | None = None
    pause: float = 0.0


@dataclass(frozen=True)
class Case:
    id: str  # Autobahn's case id; Clarion's own cases beside them start with "x"
    sent: str  # what is sent, in words
    autobahn: str  # what Autobahn's fuzzingclient expects, in words
    sends: tuple[Send, ...]
    answers: tuple[Answer, ...] = ()
    close: int | None = None  # the code Clarion closes with; None: the connection stays open
    note: str = ""  # how the case maps onto Pusher, or why Clarion differs
    group: str = field(default="", compare=False)

    def clarion(self) -> str:
        """What Clarion does, in words, from the answers and the close."""
        words = [_describe(answer) for answer in self.answers]
        words.append(f"close {self.close}" if self.close is not None else "stays open")
        text = "; ".join(_collapse(words))
        return f"{text} ({self.note})" if self.note else text


def _describe(answer: Answer) -> str:
    kind, value = answer
    if kind == "pong":
        return f"pong ({len(value)} bytes)" if value else "pong"
    if kind == "event":
        return str(value)
    if kind == "error":
        return f"pusher:error {value}"
    raise AssertionError(kind)


def _collapse(words: list[str]) -> list[str]:
    """``a; a; a`` as ``3 x a``."""
    out: list[str] = []
    count = 0
    for index, word in enumerate(words):
        count += 1
        if index + 1 == len(words) or words[index + 1] != word:
            out.append(f"{count} x {word}" if count > 1 else word)
            count = 0
    return out


def frame(opcode: int, data: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    return client_frame(opcode, data, fin=fin, rsv=rsv)


def pusher_ping(size: int) -> bytes:
    """A ``pusher:ping`` of exactly ``size`` bytes (at least 34), its data padding."""
    shell = b'{"event":"pusher:ping","data":"%s"}'
    pad = size - (len(shell) - 2)
    assert pad >= 0, size
    return shell % (b"x" * pad)


def ping_text(payload: str) -> bytes:
    """A ``pusher:ping`` whose data is ``payload``, as UTF-8 (not escaped)."""
    return json.dumps({"event": "pusher:ping", "data": payload}, ensure_ascii=False).encode()


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Wire:
    """An upgraded raw socket that records every frame the server sends, as it arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.answers: list[Answer] = []
        self.ended = asyncio.Event()  # the server closed TCP (EOF or reset)
        self.arrived = asyncio.Event()  # set at each new answer
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, server: Any) -> Wire:
        reader, writer = await asyncio.open_connection(server.host, server.port, limit=1 << 22)
        wire = cls(reader, writer)
        request = handshake(server)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 "), head
        key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
        assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
        hello = await wire._frame()
        assert hello[0] == TEXT and json.loads(hello[1])["event"] == "pusher:connection_established"
        wire._reading = asyncio.create_task(wire._read())
        return wire

    async def _frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        assert not second & 0x80, "server frames are unmasked"
        assert first & 0xF0 == 0x80, "server frames are whole and set no reserved bits"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def _read(self) -> None:
        try:
            while True:
                opcode, data = await self._frame()
                if opcode == PONG:
                    self.answers.append(("pong", data))
                elif opcode == CLOSE:
                    self.answers.append(("close", struct.unpack("!H", data[:2])[0]))
                    data[2:].decode()  # the reason is UTF-8
                else:
                    assert opcode == TEXT, (opcode, data[:100])
                    message = json.loads(data)
                    if message["event"] == "pusher:error":
                        data_field = message["data"]
                        if isinstance(data_field, str):
                            data_field = json.loads(data_field)
                        self.answers.append(("error", data_field["code"]))
                    else:
                        self.answers.append(("event", message["event"]))
                self.arrived.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended.set()
            self.arrived.set()

    def closed_by_server(self) -> bool:
        return any(kind == "close" for kind, _ in self.answers) or self.ended.is_set()

    async def send(self, step: Send) -> bool:
        """Write one step; False once the server has closed (nothing more is sent then)."""
        if step.pause:
            await asyncio.sleep(step.pause)
        size = step.chop or len(step.data) or 1
        for start in range(0, len(step.data), size):
            if self.closed_by_server():
                return False
            try:
                self.writer.write(step.data[start : start + size])
                await self.writer.drain()
            except ConnectionError:
                return False
            if step.chop is not None and len(step.data) <= 4096:
                await asyncio.sleep(0.001)  # let a short frame's chops reach the server as separate reads
        return True

    async def wait(self, predicate: Any, timeout: float) -> None:
        async def until() -> None:
            while not predicate():
                self.arrived.clear()
                if predicate():
                    return
                await self.arrived.wait()

        await asyncio.wait_for(until(), timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


async def run(server: Any, case: Case, timeout: float = 20.0) -> None:
    """Play ``case`` against ``server`` and check Clarion's answers, in order, and its end."""
    wire = await Wire.open(server)
    try:
        for step in case.sends:
            if not await wire.send(step):
                break
        if case.close is None:
            await wire.send(Send(frame(PING, PROBE)))
            await wire.wait(lambda: ("pong", PROBE) in wire.answers or wire.ended.is_set(), timeout)
            assert wire.answers == [*case.answers, ("pong", PROBE)], wire.answers[:20]
        else:
            await wire.wait(wire.ended.is_set, timeout)  # the close frame, then the end of TCP
            assert wire.answers == [*case.answers, ("close", case.close)], wire.answers[:20]
    finally:
        await wire.close()
