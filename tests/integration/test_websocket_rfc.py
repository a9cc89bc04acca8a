"""RFC 6455 over real sockets: every byte written by hand, against a real ``clarion serve``.

The front door (front_door.py) reads the handshake itself and the connection protocol
(connection.py) parses frames itself, so these tests check the parts no library client would
send: fragments, control frames between them, broken frames, odd TCP segmentation, bad heads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import pytest

from clarion.protocol import signatures
from clarion.server.front_door import accept_key
from pusherclient import PusherSocket, api_call, fresh, payload, signed_query, wait_for
from wsframes import client_frame, handshake

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
# The app's max_message_size (10 KiB) plus the envelope allowance: the largest message accepted.
MAX_MESSAGE = 10 * 1024 + 8 * 1024


def frame(opcode: int, data: bytes = b"", *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame, masked (unless told otherwise) with a random key."""
    return client_frame(opcode, data, fin=fin, masked=masked, rsv=rsv)


def text(message: Any, *, fin: bool = True) -> bytes:
    return frame(TEXT, (message if isinstance(message, str) else json.dumps(message)).encode(), fin=fin)


class RawSocket:
    """A TCP connection driven byte by byte: a WebSocket client, or a plain HTTP one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.socket_id = ""

    @classmethod
    async def connect(cls, server: Any) -> RawSocket:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        return cls(reader, writer)

    @classmethod
    async def open(cls, server: Any) -> RawSocket:
        """Connected, upgraded and past ``connection_established``."""
        sock = await cls.connect(server)
        await sock.upgrade(handshake(server))
        await sock.established()
        return sock

    async def __aenter__(self) -> RawSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    async def upgrade(self, request: bytes) -> None:
        """Send the handshake; the answer must be 101 with the right accept key."""
        await self.send(request)
        status, headers = await self.response_head()
        assert status == 101, (status, headers)
        key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
        assert headers["sec-websocket-accept"] == accept_key(key)
        assert headers["upgrade"].lower() == "websocket"

    async def established(self) -> None:
        hello = await self.expect("pusher:connection_established")
        self.socket_id = payload(hello)["socket_id"]

    async def response_head(self, timeout: float = 3.0) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        line, *rest = raw.decode("latin-1").split("\r\n")
        headers = {}
        for header in rest:
            if header:
                name, _, value = header.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(line.split(" ")[1]), headers

    async def response(self, timeout: float = 3.0) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.response_head(timeout)
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), timeout)
        return status, headers, body

    async def recv_frame(self, timeout: float = 3.0) -> tuple[int, bool, bytes]:
        async def read() -> tuple[int, bool, bytes]:
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "server frames are unmasked"
            assert not first & 0x70, "no reserved bits"
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, bool(first & 0x80), await self.reader.readexactly(size)

        return await asyncio.wait_for(read(), timeout)

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        opcode, fin, data = await self.recv_frame(timeout)
        assert (opcode, fin) == (TEXT, True), (opcode, fin, data)
        message: dict[str, Any] = json.loads(data)
        return message

    async def expect(self, event: str, channel: str | None = None) -> dict[str, Any]:
        message = await self.recv()
        assert message["event"] == event, message
        if channel is not None:
            assert message.get("channel") == channel, message
        return message

    async def closed_with(self, timeout: float = 3.0) -> int:
        """The server's close frame (skipping any text frames before it), then the TCP close."""
        while True:
            opcode, _, data = await self.recv_frame(timeout)
            if opcode == CLOSE:
                break
            assert opcode == TEXT, (opcode, data)
        code: int
        (code,) = struct.unpack("!H", data[:2])
        assert data[2:].decode() is not None  # the reason is UTF-8
        await self.eof(timeout)
        return code

    async def eof(self, timeout: float = 3.0) -> None:
        assert await asyncio.wait_for(self.reader.read(), timeout) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def publish(server: Any, channel: str, event: str, data: str = "{}") -> None:
    status, _ = await server.trigger(channel, event, data)
    assert status == 200


async def still_serving(server: Any) -> None:
    """A fresh client still connects, subscribes and gets a published event."""
    channel = fresh("alive-")
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe(channel)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        await publish(server, channel, "alive")
        await sock.expect("alive", channel)


async def gets_events(server: Any, sock: RawSocket) -> None:
    """``sock`` subscribes and receives a published event."""
    channel = fresh("raw-")
    await sock.send(text({"event": "pusher:subscribe", "data": {"channel": channel}}))
    await sock.expect("pusher_internal:subscription_succeeded", channel)
    await publish(server, channel, "hello", '{"n":1}')
    event = await sock.expect("hello", channel)
    assert event["data"] == '{"n":1}'


# --- fragments and control frames -------------------------------------------------------------


async def test_fragmented_subscribe_with_a_ping_between_fragments_is_reassembled(server) -> None:
    async with await RawSocket.open(server) as sock:
        channel = fresh("frag-")
        message = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
        await sock.send(frame(TEXT, message[:5], fin=False))
        await sock.send(frame(PING, b"between"))
        # The ping is answered at once, while the message is still unfinished.
        assert await sock.recv_frame() == (PONG, True, b"between")
        await sock.send(frame(CONTINUATION, message[5:20], fin=False), frame(CONTINUATION, b"", fin=False))
        await sock.send(frame(CONTINUATION, message[20:], fin=True))
        await sock.expect("pusher_internal:subscription_succeeded", channel)
        await publish(server, channel, "after-fragments")
        await sock.expect("after-fragments", channel)


async def test_fragments_and_interleaved_pings_in_one_write_are_handled_in_order(server) -> None:
    async with await RawSocket.open(server) as sock:
        message = b'{"event":"pusher:ping","data":{}}'
        await sock.send(
            frame(TEXT, message[:1], fin=False)
            + frame(PING, b"one")
            + frame(CONTINUATION, message[1:10], fin=False)
            + frame(PONG, b"unsolicited")  # ignored, as RFC 6455 allows
            + frame(PING, b"two")
            + frame(CONTINUATION, message[10:], fin=True)
        )
        assert await sock.recv_frame() == (PONG, True, b"one")
        assert await sock.recv_frame() == (PONG, True, b"two")
        await sock.expect("pusher:pong")


async def test_a_utf8_character_split_across_fragments_is_valid(server) -> None:
    async with await RawSocket.open(server) as sock:
        channel = fresh("utf8-")
        subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}, "x": "é€😀"}
        message = json.dumps(subscribe, ensure_ascii=False).encode()
        cut = message.index("€".encode()) + 1  # inside the 3-byte character
        await sock.send(frame(TEXT, message[:cut], fin=False), frame(CONTINUATION, message[cut:]))
        await sock.expect("pusher_internal:subscription_succeeded", channel)


async def test_fragmented_message_of_exactly_the_limit_is_accepted(server) -> None:
    async with await RawSocket.open(server) as sock:
        shell = '{"event":"pusher:ping","data":"%s"}'
        message = (shell % ("x" * (MAX_MESSAGE - len(shell) + 2))).encode()
        assert len(message) == MAX_MESSAGE
        # Whole, it is accepted; so it must be in fragments too.
        await sock.send(frame(TEXT, message))
        await sock.expect("pusher:pong")
        half = len(message) // 2
        await sock.send(frame(TEXT, message[:half], fin=False), frame(CONTINUATION, message[half:]))
        await sock.expect("pusher:pong")


async def test_many_empty_fragments_are_handled_in_linear_time(server) -> None:
    # 40,000 empty continuation frames (240 KB): re-summing every fragment on each one would
    # stall the event loop for seconds, for every client of the server.
    sock = await RawSocket.open(server)
    bystander = await RawSocket.open(server)
    try:
        message = b'{"event":"pusher:ping","data":{}}'
        empty = frame(CONTINUATION, b"", fin=False)
        await sock.send(frame(TEXT, message[:5], fin=False) + empty * 40_000 + frame(CONTINUATION, message[5:]))
        await sock.expect("pusher:pong")
        await bystander.send(frame(PING, b"prompt"))
        assert await bystander.recv_frame(timeout=1) == (PONG, True, b"prompt")
    finally:
        await sock.close()
        await bystander.close()


async def test_ping_with_payload_gets_pong_with_the_same_payload(server) -> None:
    async with await RawSocket.open(server) as sock:
        for data in (b"", b"x", bytes(range(125))):
            await sock.send(frame(PING, data))
            assert await sock.recv_frame() == (PONG, True, data)
        await gets_events(server, sock)


async def test_client_close_1000_is_echoed_then_tcp_closes(server) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
        assert await sock.recv_frame() == (CLOSE, True, struct.pack("!H", 1000))
        await sock.eof()
    await still_serving(server)


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 1014, 3000, 4000, 4999])
async def test_client_close_with_a_registered_code_is_echoed(server, code: int) -> None:
    # 1012 (service restart), 1013 (try again later) and 1014 (bad gateway) are in IANA's
    # registry of codes a peer may send, as 1011 is.
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(CLOSE, struct.pack("!H", code)))
        assert await sock.closed_with() == code


async def test_a_close_inside_a_fragmented_message_fails_with_1002_and_the_message_is_dropped(server) -> None:
    async with await RawSocket.open(server) as sock:
        ping = b'{"event":"pusher:ping","data":{}}'
        await sock.send(
            frame(TEXT, ping[:10], fin=False) + frame(CLOSE, struct.pack("!H", 1000)) + frame(CONTINUATION, ping[10:])
        )
        # No pong: the unfinished message is never handled, and the close is a protocol error.
        assert await sock.closed_with() == 1002
    await still_serving(server)


async def test_a_valid_ping_before_a_malformed_frame_in_one_write_is_answered_then_1002(server) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(
            frame(PING, b"first")
            + text({"event": "pusher:ping", "data": {}})
            + frame(TEXT, b'{"event":"pusher:ping","data":{}}', masked=False)
            + frame(PING, b"never")
        )
        assert await sock.recv_frame() == (PONG, True, b"first")
        await sock.expect("pusher:pong")
        assert await sock.closed_with() == 1002


async def test_client_close_without_a_code_is_answered_with_1000(server) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(CLOSE))
        assert await sock.closed_with() == 1000


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", 1002),  # a one-byte code
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 1005), 1002),  # reserved: never sent on the wire
        (struct.pack("!H", 1006), 1002),
        (struct.pack("!H", 5000), 1002),
        (struct.pack("!H", 1000) + b"\xff\xfe", 1007),  # reason not UTF-8
    ],
    ids=["one-byte", "999", "1005", "1006", "5000", "bad-reason"],
)
async def test_a_broken_client_close_is_answered_with_its_error_code(server, payload: bytes, code: int) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(CLOSE, payload))
        assert await sock.closed_with() == code
    await still_serving(server)


async def test_frames_after_the_client_close_are_ignored(server) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(CLOSE, struct.pack("!H", 1000)) + text({"event": "pusher:ping", "data": {}}))
        # The close answer and nothing else: no pong for the text frame behind the close.
        assert await sock.recv_frame() == (CLOSE, True, struct.pack("!H", 1000))
        await sock.eof()


# --- protocol violations ----------------------------------------------------------------------


async def check_failure(server: Any, data: bytes, code: int) -> None:
    """``data`` on an open socket gets close ``code`` and a TCP close; a bystander socket and a
    fresh client still get events."""
    async with await RawSocket.open(server) as bystander, await RawSocket.open(server) as sock:
        await sock.send(data)
        assert await sock.closed_with() == code
        await gets_events(server, bystander)
        await still_serving(server)


async def test_invalid_utf8_text_closes_with_1007(server) -> None:
    await check_failure(server, frame(TEXT, b'{"event":"pusher:ping","data":"\xff\xfe"}'), 1007)


async def test_invalid_utf8_across_fragments_closes_with_1007(server) -> None:
    await check_failure(server, frame(TEXT, b'{"a":"\xe2\x82', fin=False) + frame(CONTINUATION, b'("}'), 1007)


async def test_unmasked_frame_closes_with_1002(server) -> None:
    await check_failure(server, frame(TEXT, b'{"event":"pusher:ping","data":{}}', masked=False), 1002)


async def test_reserved_bit_closes_with_1002(server) -> None:
    await check_failure(server, frame(TEXT, b'{"event":"pusher:ping","data":{}}', rsv=4), 1002)


async def test_unknown_opcode_closes_with_1002(server) -> None:
    await check_failure(server, frame(0x3, b"?"), 1002)


async def test_oversized_ping_closes_with_1002(server) -> None:
    await check_failure(server, frame(PING, b"p" * 126), 1002)


async def test_continuation_without_a_start_closes_with_1002(server) -> None:
    await check_failure(server, frame(CONTINUATION, b'{"event":"pusher:ping"}'), 1002)


async def test_new_text_frame_inside_a_fragmented_message_closes_with_1002(server) -> None:
    await check_failure(server, frame(TEXT, b'{"event":', fin=False) + frame(TEXT, b'"x"}'), 1002)


async def test_fragmented_message_over_the_limit_closes_with_1009(server) -> None:
    half = MAX_MESSAGE // 2
    data = (
        frame(TEXT, b"a" * half, fin=False)
        + frame(CONTINUATION, b"b" * half, fin=False)
        + frame(CONTINUATION, b"c", fin=False)  # one byte over, and not even the last fragment
    )
    await check_failure(server, data, 1009)


async def test_single_frame_over_the_limit_closes_with_1009_before_its_payload(server) -> None:
    # Only the header (length 2**40) and the mask: the server must not wait for the payload.
    head = struct.pack("!BBQ", 0x81, 0x80 | 127, 2**40) + os.urandom(4)
    await check_failure(server, head, 1009)


async def test_binary_message_gets_pusher_error_4200_and_socket_survives(server) -> None:
    async with await RawSocket.open(server) as sock:
        await sock.send(frame(BINARY, b"\x00\x01", fin=False), frame(CONTINUATION, b"\x02"))
        error = await sock.expect("pusher:error")
        assert payload(error)["code"] == 4200
        await gets_events(server, sock)


# --- segmentation -----------------------------------------------------------------------------


async def test_handshake_and_first_frames_in_one_tcp_write_work(server) -> None:
    async with await RawSocket.connect(server) as sock:
        channel = fresh("same-packet-")
        request = handshake(server)
        subscribe = text({"event": "pusher:subscribe", "data": {"channel": channel}})
        await sock.send(request + subscribe + frame(PING, b"p"))
        status, headers = await sock.response_head()
        assert status == 101
        key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
        assert headers["sec-websocket-accept"] == accept_key(key)
        await sock.established()
        # The ping is answered at once; the subscribe once it is done: either may come first.
        answers = [await sock.recv_frame(), await sock.recv_frame()]
        assert (PONG, True, b"p") in answers
        answers.remove((PONG, True, b"p"))
        (opcode, _, data) = answers[0]
        assert opcode == TEXT
        assert json.loads(data) == {
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": "{}",
        }
        await publish(server, channel, "first")
        await sock.expect("first", channel)


async def test_handshake_and_a_partial_frame_in_one_write_completes_later(server) -> None:
    async with await RawSocket.connect(server) as sock:
        ping = text({"event": "pusher:ping", "data": {}})
        await sock.send(handshake(server) + ping[:3])
        assert (await sock.response_head())[0] == 101
        await sock.established()
        await sock.send(ping[3:])
        await sock.expect("pusher:pong")


async def test_handshake_split_byte_by_byte_works(server) -> None:
    async with await RawSocket.connect(server) as sock:
        request = handshake(server)
        for index in range(len(request)):
            await sock.send(request[index : index + 1])
            await asyncio.sleep(0.001)
        status, headers = await sock.response_head()
        assert status == 101
        key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
        assert headers["sec-websocket-accept"] == accept_key(key)
        await sock.established()
        # Frames split byte by byte too.
        ping = text({"event": "pusher:ping", "data": {}})
        for index in range(len(ping)):
            await sock.send(ping[index : index + 1])
            await asyncio.sleep(0.001)
        await sock.expect("pusher:pong")


# --- bad handshakes ---------------------------------------------------------------------------


async def http_answer(server: Any, request: bytes) -> tuple[int, bytes]:
    """The status and body the server answers ``request`` with; the connection must then close."""
    async with await RawSocket.connect(server) as sock:
        await sock.send(request)
        status, headers, body = await sock.response()
        assert headers["connection"].lower() == "close"
        await sock.eof()
        return status, body


async def test_upgrade_without_sec_websocket_key_is_a_400(server) -> None:
    status, body = await http_answer(server, handshake(server, drop=("Sec-WebSocket-Key",)))
    assert status == 400
    assert b"Sec-WebSocket-Key" in body
    await still_serving(server)


async def refused_count(server: Any, code: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'clarion_connections_refused_total{{code="{code}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_refused_handshake_is_counted_in_the_metrics(server) -> None:
    before = await refused_count(server, "400")
    status, _ = await http_answer(server, handshake(server, drop=("Sec-WebSocket-Key",)))
    assert status == 400
    assert await refused_count(server, "400") == before + 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Sec-WebSocket-Key", None),  # the same key twice
        ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("Sec-WebSocket-Version", "13"),
        ("Host", "elsewhere.example"),
        ("Origin", "https://elsewhere.example"),
    ],
)
async def test_a_handshake_header_sent_twice_is_a_400(server, name: str, value: str | None) -> None:
    # Every header once, Origin included, then the second copy.
    request = handshake(server, Origin="https://app.example")
    if value is None:
        value = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
    before = await refused_count(server, "400")
    status, body = await http_answer(server, request[:-2] + f"{name}: {value}\r\n\r\n".encode())
    assert status == 400
    assert f"{name} must be sent once".encode() in body
    assert await refused_count(server, "400") == before + 1
    await server.logged("handshake refused")
    await still_serving(server)


async def test_a_connection_header_split_over_two_lines_is_one_list(server) -> None:
    request = handshake(server, Connection="keep-alive")
    async with await RawSocket.connect(server) as sock:
        await sock.upgrade(request[:-2] + b"Connection: Upgrade\r\n\r\n")
        await sock.established()
        await gets_events(server, sock)


async def test_upgrade_with_version_12_is_a_400(server) -> None:
    status, body = await http_answer(server, handshake(server, Sec_WebSocket_Version="12"))
    assert status == 400
    assert b"Version 13" in body
    await still_serving(server)


async def test_upgrade_whose_connection_header_lacks_upgrade_is_a_400(server) -> None:
    status, body = await http_answer(server, handshake(server, Connection="keep-alive"))
    assert status == 400
    assert b"Connection" in body
    await still_serving(server)


async def test_upgrade_with_connection_keep_alive_and_upgrade_is_accepted(server) -> None:
    async with await RawSocket.connect(server) as sock:
        await sock.upgrade(handshake(server, Connection="keep-alive, Upgrade"))
        await sock.established()
        await gets_events(server, sock)


async def test_request_head_over_16_kib_is_a_431(server) -> None:
    async with await RawSocket.connect(server) as sock:
        request = handshake(server)[:-2]  # no blank line yet: the head goes on
        await sock.send(request + b"X-Padding: " + b"p" * (17 * 1024))
        status, _, _ = await sock.response()
        assert status == 431
        await sock.eof()
    await still_serving(server)


async def test_complete_request_head_over_16_kib_is_a_431(server) -> None:
    # The same head with its blank line, in one write: the limit must not depend on segmentation.
    request = handshake(server)[:-2] + b"X-Padding: " + b"p" * (17 * 1024) + b"\r\n\r\n"
    status, _ = await http_answer(server, request)
    assert status == 431
    await still_serving(server)


def head_of(server: Any, size: int) -> bytes:
    """An upgrade request whose head (request line and headers, without the blank line) is
    ``size`` bytes."""
    base = handshake(server)[:-4] + b"\r\nX-Padding: "
    return base + b"p" * (size - len(base)) + b"\r\n\r\n"


async def test_head_of_exactly_16_kib_is_accepted_however_it_is_split(server) -> None:
    request = head_of(server, 16 * 1024)
    assert request.index(b"\r\n\r\n") == 16 * 1024
    for pieces in ([request], [request[:-1], request[-1:]], [request[:-4], request[-4:]]):
        sock = await RawSocket.connect(server)
        try:
            for piece in pieces:
                await sock.send(piece)
                await asyncio.sleep(0.02)
            status, _ = await sock.response_head()
            assert status == 101, [len(piece) for piece in pieces]
            await sock.established()
        finally:
            await sock.close()


async def test_head_one_byte_over_16_kib_is_a_431_however_it_is_split(server) -> None:
    request = head_of(server, 16 * 1024 + 1)
    for pieces in ([request], [request[:-1], request[-1:]], [request[:-4], request[-4:]]):
        sock = await RawSocket.connect(server)
        try:
            for piece in pieces:
                sock.writer.write(piece)
                await asyncio.sleep(0.02)
            status, _, _ = await sock.response()
            assert status == 431, [len(piece) for piece in pieces]
            await sock.eof()
        finally:
            await sock.close()


# --- HTTP on the same port --------------------------------------------------------------------


def http_get(server: Any, path: str, signed: bool = False) -> bytes:
    query = ""
    if signed:
        params = signed_query(server.key, server.secret, "GET", path)
        query = "?" + "&".join(f"{name}={value}" for name, value in params.items())
    return f"GET {path}{query} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode()


async def test_http_api_keeps_the_connection_alive_for_a_second_request(server) -> None:
    async with await RawSocket.connect(server) as sock:
        await sock.send(http_get(server, "/health"))
        status, headers, body = await sock.response()
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert headers.get("connection", "keep-alive").lower() != "close"
        # The same TCP connection, now aiohttp's: a signed API call.
        await sock.send(http_get(server, f"/apps/{server.app_id}/channels", signed=True))
        status, _, body = await sock.response()
        assert status == 200
        assert "channels" in json.loads(body)
        # And a third, a plain GET on the WebSocket path, which aiohttp refuses.
        await sock.send(http_get(server, f"/app/{server.key}"))
        status, _, _ = await sock.response()
        assert status == 400


async def test_an_upgrade_after_http_requests_on_the_same_connection_opens_a_websocket(server) -> None:
    # A proxy that pools its connections to Clarion (nginx with upstream keepalive, Go's and
    # Envoy's proxies) sends an upgrade on a connection that already carried HTTP requests.
    async with await RawSocket.connect(server) as sock:
        await sock.send(http_get(server, "/health"))
        status, _, _ = await sock.response()
        assert status == 200
        await sock.send(http_get(server, f"/apps/{server.app_id}/channels", signed=True))
        status, _, _ = await sock.response()
        assert status == 200
        await sock.upgrade(handshake(server))
        await sock.established()
        await gets_events(server, sock)
        await sock.send(frame(PING, b"still here"))
        assert await sock.recv_frame() == (PONG, True, b"still here")
        await sock.send(frame(CLOSE, struct.pack("!H", 1000)))
        assert await sock.closed_with() == 1000
    await still_serving(server)


async def test_an_upgrade_pipelined_behind_an_http_request_opens_a_websocket(server) -> None:
    async with await RawSocket.connect(server) as sock:
        await sock.send(http_get(server, "/health") + handshake(server))
        status, _, body = await sock.response()
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, headers = await sock.response_head()
        assert status == 101, headers
        await sock.established()
        await gets_events(server, sock)


async def test_a_late_upgrade_is_checked_like_a_first_one(server) -> None:
    async with await RawSocket.connect(server) as sock:
        await sock.send(http_get(server, "/health"))
        assert (await sock.response())[0] == 200
        # A broken handshake: 400 with the reason, and the connection still serves HTTP.
        await sock.send(handshake(server, Sec_WebSocket_Version="8"))
        status, _, body = await sock.response()
        assert (status, json.loads(body)) == (400, {"error": "Sec-WebSocket-Version 13 expected"})
        await sock.send(http_get(server, "/health"))
        assert (await sock.response())[0] == 200
        # An unknown app key: upgraded, then refused with 4001 and closed, as through the front door.
        await sock.upgrade(handshake(server, target="/app/no-such-key?protocol=7"))
        error = await sock.expect("pusher:error")
        assert payload(error)["code"] == 4001
        assert await sock.closed_with() == 4001
    await still_serving(server)


async def test_two_pipelined_http_requests_in_one_write_are_both_answered(server) -> None:
    async with await RawSocket.connect(server) as sock:
        await sock.send(http_get(server, "/health") + http_get(server, f"/apps/{server.app_id}/channels", signed=True))
        first, _, body = await sock.response()
        assert (first, json.loads(body)) == (200, {"status": "ok"})
        second, _, body = await sock.response()
        assert second == 200
        assert "channels" in json.loads(body)


async def test_http_post_with_body_in_the_first_write_reaches_the_api(server) -> None:
    channel = fresh("posted-")
    listener = await RawSocket.open(server)
    async with await RawSocket.connect(server) as sock:
        await listener.send(text({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await listener.expect("pusher_internal:subscription_succeeded", channel)
        path = f"/apps/{server.app_id}/events"
        body = json.dumps({"name": "posted", "channel": channel, "data": "{}"}).encode()
        params = signed_query(server.key, server.secret, "POST", path, body)
        query = "&".join(f"{name}={value}" for name, value in params.items())
        await sock.send(
            f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _, _ = await sock.response()
        assert status == 200
        await listener.expect("posted", channel)
        await listener.close()


# --- back-pressure ----------------------------------------------------------------------------


async def test_flood_of_frames_behind_a_presence_subscribe_is_answered_in_order(server) -> None:
    async with await RawSocket.open(server) as sock:
        presence = fresh("presence-flood-")
        channel_data = json.dumps({"user_id": fresh("user-"), "user_info": {}})
        auth = signatures.channel_auth(server.key, server.secret, sock.socket_id, presence, channel_data)
        join = {"channel": presence, "auth": auth, "channel_data": channel_data}
        flood = [text({"event": "pusher:subscribe", "data": join})]
        expected: list[tuple[str, str | None]] = [("pusher_internal:subscription_succeeded", presence)]
        for index in range(500):
            if index % 10 == 9:  # a subscribe now and then: it needs shared state too
                channel = fresh("flood-")
                flood.append(text({"event": "pusher:subscribe", "data": {"channel": channel}}))
                expected.append(("pusher_internal:subscription_succeeded", channel))
            else:
                flood.append(text({"event": "pusher:ping", "data": {}}))
                expected.append(("pusher:pong", None))
        await sock.send(b"".join(flood))  # far more than the 64 frames that pause reading
        got = []
        for _ in expected:
            message = await sock.recv()
            got.append((message["event"], message.get("channel")))
        assert got == expected
        # Reading resumed: the socket still works.
        await sock.send(frame(PING, b"after"))
        assert await sock.recv_frame() == (PONG, True, b"after")
        await gets_events(server, sock)


# --- floods and clients that stop reading -----------------------------------------------------

PING_125 = b"p" * 125


def server_memory(server: Any) -> tuple[int, int]:
    """The server process's resident and peak resident memory, in bytes."""
    fields = {}
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


async def stalling(server: Any) -> RawSocket:
    """An upgraded socket whose client reads next to nothing: a 4 KiB receive buffer, and a
    reader that stops taking bytes once it holds a few KiB."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (server.host, server.port))
    reader, writer = await asyncio.open_connection(sock=raw, limit=4096)
    sock = RawSocket(reader, writer)
    await sock.upgrade(handshake(server))
    await sock.established()
    return sock


async def flood(sock: RawSocket, data: bytes, total: int) -> int:
    """Write ``data`` again and again, ``total`` bytes at most, never reading; the bytes
    written before the server dropped the connection."""
    batch = data * max(1, 65536 // len(data))
    sent = 0
    try:
        while sent < total:
            sock.writer.write(batch)
            await asyncio.wait_for(sock.writer.drain(), 10)
            sent += len(batch)
    except (ConnectionError, OSError):
        return sent
    return sent


async def dropped(sock: RawSocket, timeout: float = 10.0, server: Any = None) -> None:
    """The server dropped the connection: reading reaches the end (or a reset) in time."""
    received = 0

    async def drain() -> None:
        nonlocal received
        with contextlib.suppress(ConnectionError):
            while chunk := await sock.reader.read(65536):
                received += len(chunk)

    try:
        await asyncio.wait_for(drain(), timeout)
    except TimeoutError:
        log = server.log_text()[-3000:] if server is not None else ""
        raise AssertionError(f"not dropped in {timeout} s ({received} bytes read)\n{log}") from None


@pytest.mark.parametrize(
    "unit",
    [frame(PING, PING_125), text({"event": "pusher:ping", "data": {}})],
    ids=["websocket-ping", "pusher-ping"],
)
async def test_a_ping_flood_from_a_client_that_never_reads_is_dropped_with_memory_bounded(server, unit: bytes) -> None:
    # Every answer (pong frames and pusher:pong alike) goes through the slow-consumer bound
    # (CLARION_MAX_BUFFER, 1 MiB here): the socket is dropped once that much is unsent, after
    # a few MiB at most (the kernel's socket buffers hold the rest). Unbounded, 64 MiB of pings
    # would leave about as much in the server's memory.
    rss_before, peak_before = server_memory(server)
    sock = await stalling(server)
    try:
        sent = await flood(sock, unit, 64 * 1024 * 1024)
        assert sent < 64 * 1024 * 1024, "the flood was never dropped"
        await dropped(sock)
    finally:
        await sock.close()
    _, peak_after = server_memory(server)
    assert peak_after - max(peak_before, rss_before) < 32 * 1024 * 1024, (peak_before, peak_after)
    await server.logged("slow consumer closed")


async def metric(server: Any, prefix: str) -> float:
    """The sum of a metric's samples (every label set) whose line starts with ``prefix``."""
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def connection_count(server: Any) -> float:
    return await metric(server, "clarion_connections{")


async def test_pong_timeout_frees_sockets_stalled_behind_a_backlog_for_new_connections(server_factory) -> None:
    # A client that stopped reading behind 8 MiB of answers (under the 64 MiB bound, so it is not
    # a slow consumer) then goes quiet: the server pings, gets no pong and closes with 4201. The
    # close frame sits behind the backlog, so only an abort can end the connection; until then
    # the socket holds one of the three connection slots.
    # The floods run at once so they end together, and the first ping waits 3 s: with floods one
    # after another and a 1 s keep-alive, a loaded machine let a socket time out before all
    # three were stalled (once in 40 runs).
    server = server_factory(
        {
            "CLARION_MAX_CONNECTIONS": "3",
            "CLARION_MAX_BUFFER": str(64 * 1024 * 1024),
            "CLARION_ACTIVITY_TIMEOUT": "3",
            "CLARION_PONG_TIMEOUT": "1",
        }
    )
    stalled = [await stalling(server) for _ in range(3)]
    try:
        sent = await asyncio.gather(*(flood(sock, frame(PING, PING_125), 8 * 1024 * 1024) for sock in stalled))
        assert all(n >= 8 * 1024 * 1024 for n in sent), sent
        refused = await PusherSocket.open(server.ws_url(), handshake=False)
        assert payload(await refused.expect("pusher:error"))["code"] == 4004
        await refused.close()

        async def admitted() -> bool:
            async with await PusherSocket.open(server.ws_url(), handshake=False) as sock:
                first = await sock.recv(timeout=10)
                return bool(first["event"] == "pusher:connection_established")

        await wait_for(admitted, timeout=30, interval=0.5)
        await wait_for(lambda: "close timed out, socket aborted" in server.log_text(), timeout=10)
        for sock in stalled:
            await dropped(sock, server=server)
    finally:
        for sock in stalled:
            await sock.close()


async def test_pong_timeout_takes_a_stalled_socket_off_its_channels(server_factory) -> None:
    server = server_factory(
        {"CLARION_MAX_BUFFER": str(64 * 1024 * 1024), "CLARION_ACTIVITY_TIMEOUT": "1", "CLARION_PONG_TIMEOUT": "1"}
    )
    channel = fresh("stalled-")
    sock = await stalling(server)
    try:
        await sock.send(text({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await sock.expect("pusher_internal:subscription_succeeded", channel)
        await flood(sock, frame(PING, PING_125), 8 * 1024 * 1024)

        async def vacated() -> bool:
            status, info = await api_call(
                server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}/channels/{channel}"
            )
            return status == 200 and info["occupied"] is False

        await wait_for(vacated, timeout=30, interval=0.5)
        await wait_for(lambda: "code=4201" in server.log_text(), timeout=5)
        assert await connection_count(server) == 0
        assert await metric(server, "clarion_close_timeouts_total") == 1
        await dropped(sock)
    finally:
        await sock.close()


async def test_terminate_connections_evicts_a_user_whose_client_stopped_reading(server_factory) -> None:
    # The pong timeout is left at its 30 s + 30 s: only the terminate can end this socket in time.
    server = server_factory({"CLARION_MAX_BUFFER": str(64 * 1024 * 1024)})
    presence = fresh("presence-stalled-")
    user_id = fresh("stalled-user-")
    sock = await stalling(server)
    try:
        user_data = json.dumps({"id": user_id})
        signin = signatures.user_auth(server.key, server.secret, sock.socket_id, user_data)
        await sock.send(text({"event": "pusher:signin", "data": {"auth": signin, "user_data": user_data}}))
        await sock.expect("pusher:signin_success")
        channel_data = json.dumps({"user_id": user_id, "user_info": {}})
        auth = signatures.channel_auth(server.key, server.secret, sock.socket_id, presence, channel_data)
        join = {"channel": presence, "auth": auth, "channel_data": channel_data}
        await sock.send(text({"event": "pusher:subscribe", "data": join}))
        await sock.expect("pusher_internal:subscription_succeeded", presence)
        await flood(sock, frame(PING, PING_125), 8 * 1024 * 1024)

        async def users() -> list[str]:
            status, answer = await api_call(
                server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}/channels/{presence}/users"
            )
            assert status == 200, answer
            return [user["id"] for user in answer["users"]]

        assert await users() == [user_id]
        status, _ = await api_call(
            server.http_url,
            server.key,
            server.secret,
            "POST",
            f"/apps/{server.app_id}/users/{user_id}/terminate_connections",
            {},
        )
        assert status == 200

        async def evicted() -> bool:
            return await users() == []

        await wait_for(evicted, timeout=20, interval=0.5)
        await dropped(sock)
    finally:
        await sock.close()


async def test_a_client_that_half_closes_behind_a_backlog_is_let_go(server_factory) -> None:
    # The client sends its FIN but never reads: the transport's own close waits for a drain that
    # never comes, so the socket is aborted once the close has had its time.
    server = server_factory({"CLARION_MAX_BUFFER": str(64 * 1024 * 1024)})
    sock = await stalling(server)
    try:
        await flood(sock, frame(PING, PING_125), 8 * 1024 * 1024)
        sock.writer.write_eof()

        async def gone() -> bool:
            return await connection_count(server) == 0

        await wait_for(gone, timeout=20, interval=0.5)
        await dropped(sock)
    finally:
        await sock.close()
