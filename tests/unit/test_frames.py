"""The RFC 6455 codec and state machine (frames.py) and the upgrade-request parser (front_door.py),
byte by byte, without sockets."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.server import frames
from clarion.server.frames import (
    CLOSED,
    CLOSING,
    Binary,
    Closed,
    Event,
    Failed,
    FrameError,
    Ping,
    Pong,
    WebSocket,
    close_frame,
    control_frame,
    parse,
    text_frame,
    unmask,
)
from clarion.server.front_door import Upgrade, accept_key
from wsframes import client_frame

LIMIT = 1 << 20  # max_payload for tests that are not about the limit


def server_frame(data: bytes) -> tuple[int, bool, bytes, int]:
    """Decode one unmasked server frame: (opcode, fin, payload, header length)."""
    first, second = data[0], data[1]
    assert not second & 0x80, "server frames are never masked"
    assert not first & 0x70, "server frames set no reserved bits"
    size = second & 0x7F
    head = 2
    if size == 126:
        (size,) = struct.unpack_from("!H", data, 2)
        head = 4
    elif size == 127:
        (size,) = struct.unpack_from("!Q", data, 2)
        head = 10
    payload = data[head : head + size]
    assert len(payload) == size == len(data) - head, "exactly one whole frame"
    return first & 0x0F, bool(first & 0x80), payload, head


def parse_all(data: bytes, max_payload: int = LIMIT) -> list[tuple[int, bool, bytes]]:
    parsed, used, error = parse(bytearray(data), max_payload)
    assert error is None
    assert used == len(data)
    return parsed


def refusal(data: bytes, max_payload: int = LIMIT) -> FrameError:
    _, _, error = parse(bytearray(data), max_payload)
    assert error is not None
    return error


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)],
)
@pytest.mark.parametrize("opcode", [frames.TEXT, frames.BINARY, frames.CONTINUATION])
def test_masked_data_frame_round_trips_in_each_length_form(size: int, header: int, opcode: int) -> None:
    payload = os.urandom(size)
    data = client_frame(opcode, payload)
    assert len(data) == header + 4 + size
    assert parse_all(data) == [(opcode, True, payload)]


@pytest.mark.parametrize("fin", [True, False])
def test_fin_bit_is_reported(fin: bool) -> None:
    assert parse_all(client_frame(frames.TEXT, b"part", fin=fin)) == [(frames.TEXT, fin, b"part")]


@pytest.mark.parametrize("opcode", [frames.PING, frames.PONG, frames.CLOSE])
@pytest.mark.parametrize("size", [0, 1, 125])
def test_control_frames_up_to_125_bytes_round_trip(opcode: int, size: int) -> None:
    payload = os.urandom(size)
    assert parse_all(client_frame(opcode, payload)) == [(opcode, True, payload)]


def test_a_zero_mask_leaves_the_payload_as_sent() -> None:
    assert parse_all(client_frame(frames.TEXT, b"plain", mask=b"\0\0\0\0")) == [(frames.TEXT, True, b"plain")]


def test_a_payload_of_exactly_max_payload_is_accepted() -> None:
    payload = b"x" * 1000
    assert parse_all(client_frame(frames.TEXT, payload), max_payload=1000) == [(frames.TEXT, True, payload)]


@settings(max_examples=60, deadline=None)
@given(
    opcode=st.sampled_from([frames.CONTINUATION, frames.TEXT, frames.BINARY]),
    fin=st.booleans(),
    payload=st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(lambda n: b"\xa5" * n)),
    mask=st.binary(min_size=4, max_size=4),
)
def test_any_data_frame_round_trips(opcode: int, fin: bool, payload: bytes, mask: bytes) -> None:
    assert parse_all(client_frame(opcode, payload, fin=fin, mask=mask)) == [(opcode, fin, payload)]


DATA_OPCODES = st.sampled_from([frames.CONTINUATION, frames.TEXT, frames.BINARY])
FRAME = st.one_of(
    st.tuples(DATA_OPCODES, st.booleans(), st.binary(max_size=400)),
    st.tuples(st.sampled_from([frames.CLOSE, frames.PING, frames.PONG]), st.just(True), st.binary(max_size=125)),
)


@settings(max_examples=150, deadline=None)
@given(
    wanted=st.lists(FRAME, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_a_stream_cut_into_arbitrary_chunks_parses_to_the_same_frames(
    wanted: list[tuple[int, bool, bytes]], cuts: list[int]
) -> None:
    encoded = [client_frame(opcode, payload, fin=fin) for opcode, fin, payload in wanted]
    stream = b"".join(encoded)
    ends = []
    total = 0
    for piece in encoded:
        total += len(piece)
        ends.append(total)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {len(stream)})
    # Feed the chunks as Connection.data_received does: append, parse, drop what was used.
    buffer = bytearray()
    consumed = 0
    got: list[tuple[int, bool, bytes]] = []
    previous = 0
    for point in points:
        buffer += stream[previous:point]
        previous = point
        parsed, used, error = parse(buffer, LIMIT)
        assert error is None
        got += parsed
        consumed += used
        del buffer[:used]
        # Exactly the whole frames that have arrived, and the bytes they take.
        whole = sum(1 for end in ends if end <= point)
        assert len(got) == whole
        assert consumed == (ends[whole - 1] if whole else 0)
    assert got == wanted
    assert not buffer


def split_everywhere(wanted: list[tuple[int, bool, bytes]], cuts: range | list[int]) -> None:
    stream = b"".join(client_frame(opcode, payload, fin=fin) for opcode, fin, payload in wanted)
    for cut in cuts:
        first, used, error = parse(bytearray(stream[:cut]), LIMIT)
        rest, used_rest, error_rest = parse(bytearray(stream[used:]), LIMIT)
        assert error is error_rest is None
        assert first + rest == wanted, cut
        assert used + used_rest == len(stream), cut


def test_a_stream_split_at_every_byte_boundary_parses_the_same() -> None:
    wanted = [
        (frames.TEXT, False, b"x" * 130),
        (frames.PING, True, b"ping"),
        (frames.CONTINUATION, True, b""),
        (frames.BINARY, True, bytes(range(256)) * 2),
        (frames.PONG, True, b""),
        (frames.CLOSE, True, struct.pack("!H", 1000)),
    ]
    stream_size = sum(len(client_frame(opcode, payload)) for opcode, _, payload in wanted)
    split_everywhere(wanted, range(stream_size + 1))


def test_a_stream_with_a_64_bit_length_splits_anywhere_in_its_header_or_tail() -> None:
    wanted = [(frames.TEXT, True, b"a"), (frames.BINARY, True, bytes(range(256)) * 300), (frames.PING, True, b"p")]
    stream_size = 7 + 14 + 256 * 300 + 7
    split_everywhere(wanted, [*range(40), *range(stream_size - 30, stream_size + 1)])


def test_a_header_cut_short_in_any_length_form_waits_for_more() -> None:
    for size in (5, 300, 70_000):
        data = client_frame(frames.TEXT, b"a" * size)
        head = {5: 6, 300: 8, 70_000: 14}[size]
        for cut in range(head + size):
            assert parse(bytearray(data[:cut]), LIMIT) == ([], 0, None), (size, cut)


# --- unmask -----------------------------------------------------------------------------------


@given(mask=st.binary(min_size=4, max_size=4), payload=st.binary(max_size=2000))
def test_unmask_equals_per_byte_xor(mask: bytes, payload: bytes) -> None:
    assert unmask(mask, payload) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(mask=st.binary(min_size=4, max_size=4), payload=st.binary(max_size=200))
def test_unmask_is_its_own_inverse(mask: bytes, payload: bytes) -> None:
    assert unmask(mask, unmask(mask, payload)) == payload


def test_unmask_keeps_leading_and_trailing_zero_bytes() -> None:
    # Big-integer XOR must not lose the zeros at either end.
    mask = b"\x01\x02\x03\x04"
    assert unmask(mask, b"\x01\x02\x03\x04\x01") == b"\0\0\0\0\0"
    assert unmask(mask, b"\0\0\0\0\0\0") == b"\x01\x02\x03\x04\x01\x02"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [frames.TEXT, frames.CONTINUATION, frames.PING, frames.CLOSE])
def test_unmasked_client_frame_is_a_protocol_error(opcode: int) -> None:
    error = refusal(client_frame(opcode, b"hi", masked=False))
    assert error.code == 1002
    assert "masked" in error.reason


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
@pytest.mark.parametrize("opcode", [frames.TEXT, frames.PING])
def test_reserved_bits_are_a_protocol_error(rsv: int, opcode: int) -> None:
    assert refusal(client_frame(opcode, b"hi", rsv=rsv)).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_a_protocol_error(opcode: int) -> None:
    error = refusal(client_frame(opcode, b"hi"))
    assert error.code == 1002
    assert str(opcode) in error.reason


@pytest.mark.parametrize("opcode", [frames.PING, frames.PONG, frames.CLOSE])
@pytest.mark.parametrize("size", [126, 200, 70_000])
def test_control_frame_over_125_bytes_is_a_protocol_error_from_its_header(opcode: int, size: int) -> None:
    whole = client_frame(opcode, b"p" * size)
    assert refusal(whole).code == 1002
    header = 4 if size < 65536 else 10
    assert refusal(whole[:header]).code == 1002


@pytest.mark.parametrize("opcode", [frames.PING, frames.PONG, frames.CLOSE])
def test_fragmented_control_frame_is_a_protocol_error(opcode: int) -> None:
    assert refusal(client_frame(opcode, b"x", fin=False)).code == 1002


@pytest.mark.parametrize("opcode", [frames.TEXT, frames.BINARY, frames.CONTINUATION])
@pytest.mark.parametrize("size", [101, 126, 65536, 2**63 - 1, 2**64 - 1])
def test_payload_over_the_limit_is_1009_from_the_header_alone(opcode: int, size: int) -> None:
    header = client_frame(opcode, length=size)  # header and mask, not one byte of payload
    error = refusal(header, max_payload=100)
    assert error.code == 1009
    # Without the mask too: the length field is enough.
    assert refusal(header[:-4], max_payload=100).code == 1009


def test_limit_is_checked_per_frame_not_per_buffer() -> None:
    stream = client_frame(frames.TEXT, b"a" * 80) + client_frame(frames.TEXT, b"b" * 80)
    assert parse_all(stream, max_payload=100) == [(frames.TEXT, True, b"a" * 80), (frames.TEXT, True, b"b" * 80)]


def test_frames_before_a_bad_one_are_returned_with_the_error() -> None:
    good = client_frame(frames.TEXT, b"fine") + client_frame(frames.PING, b"p")
    parsed, used, error = parse(good + client_frame(frames.TEXT, b"bad", masked=False), LIMIT)
    assert parsed == [(frames.TEXT, True, b"fine"), (frames.PING, True, b"p")]
    assert used == len(good)
    assert error is not None
    assert error.code == 1002


def test_frame_error_carries_code_and_reason() -> None:
    error = FrameError(1002, "why")
    assert (error.code, error.reason, str(error)) == (1002, "why", "why")


# --- server frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (100_000, 10)],
)
def test_text_frame_uses_the_minimal_length_form(size: int, header: int) -> None:
    text = "t" * size
    data = text_frame(text)
    assert data[0] == 0x81
    assert server_frame(data) == (frames.TEXT, True, text.encode(), header)


def test_text_frame_length_counts_utf8_bytes_not_characters() -> None:
    text = "é" * 63  # 63 characters, 126 bytes: the 16-bit form
    assert server_frame(text_frame(text)) == (frames.TEXT, True, text.encode(), 4)


@given(text=st.text(max_size=300))
def test_text_frame_carries_any_text(text: str) -> None:
    opcode, fin, payload, _ = server_frame(text_frame(text))
    assert (opcode, fin, payload.decode()) == (frames.TEXT, True, text)


@pytest.mark.parametrize("opcode", [frames.PING, frames.PONG, frames.CLOSE])
def test_control_frame_is_final_unmasked_and_cut_to_125_bytes(opcode: int) -> None:
    assert server_frame(control_frame(opcode)) == (opcode, True, b"", 2)
    assert server_frame(control_frame(opcode, b"abc")) == (opcode, True, b"abc", 2)
    assert server_frame(control_frame(opcode, b"z" * 300)) == (opcode, True, b"z" * 125, 2)


def test_close_frame_carries_code_and_reason() -> None:
    assert server_frame(close_frame(1000)) == (frames.CLOSE, True, b"\x03\xe8", 2)
    assert server_frame(close_frame(4009, "Origin not allowed")) == (
        frames.CLOSE,
        True,
        struct.pack("!H", 4009) + b"Origin not allowed",
        2,
    )


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        ("a" * 200, "a" * 123),
        ("é" * 100, "é" * 61),  # 122 bytes: the 62nd character would straddle byte 123
        ("a" + "é" * 100, "a" + "é" * 61),  # exactly 123 bytes
        ("ab" + "€" * 60, "ab" + "€" * 40),  # 3-byte characters: 2 + 120
        ("abc" + "😀" * 40, "abc" + "😀" * 30),  # 4-byte characters: 3 + 120
        ("😀" * 40, "😀" * 30),  # 120 bytes, the 31st emoji would need 124
    ],
)
def test_close_reason_is_cut_to_123_bytes_on_a_character_boundary(reason: str, kept: str) -> None:
    _, _, payload, _ = server_frame(close_frame(1002, reason))
    assert struct.unpack("!H", payload[:2]) == (1002,)
    assert payload[2:].decode() == kept
    assert len(payload) <= 125


@given(code=st.integers(1000, 4999), reason=st.text(max_size=150))
def test_close_reason_is_the_longest_utf8_prefix_that_fits(code: int, reason: str) -> None:
    opcode, fin, payload, header = server_frame(close_frame(code, reason))
    assert (opcode, fin, header) == (frames.CLOSE, True, 2)
    assert struct.unpack("!H", payload[:2]) == (code,)
    kept = payload[2:].decode()  # valid UTF-8, never half a character
    assert reason.startswith(kept)
    assert len(kept.encode()) <= 123
    if kept != reason:
        assert len(reason[: len(kept) + 1].encode()) > 123


# --- the upgrade request ----------------------------------------------------------------------

SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_accept_key_matches_rfc_6455_sample() -> None:
    assert accept_key(SAMPLE_KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(raw=st.binary(min_size=16, max_size=16))
def test_accept_key_is_base64_sha1_of_key_and_guid(raw: bytes) -> None:
    key = base64.b64encode(raw).decode()
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    assert accept_key(key) == base64.b64encode(digest).decode()


BASE_HEADERS = {
    "Host": "example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": SAMPLE_KEY,
    "Sec-WebSocket-Version": "13",
}


def head(
    target: str = "/app/test-key?protocol=7",
    method: str = "GET",
    version: str = "HTTP/1.1",
    drop: tuple[str, ...] = (),
    **changes: str,
) -> bytes:
    """A request head (without the final blank line, as FrontDoor hands it to Upgrade.read)."""
    headers = {name: value for name, value in BASE_HEADERS.items() if name not in drop}
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines).encode("latin-1")


def test_valid_upgrade_is_parsed() -> None:
    upgrade = Upgrade.read(head(Origin="https://x.example"))
    assert isinstance(upgrade, Upgrade)
    assert upgrade.path == "/app/test-key"
    assert upgrade.query == {"protocol": "7"}
    assert upgrade.key == SAMPLE_KEY
    assert upgrade.headers["origin"] == "https://x.example"
    assert upgrade.headers["sec-websocket-version"] == "13"


def test_header_names_and_upgrade_token_are_case_insensitive() -> None:
    raw = head(drop=tuple(BASE_HEADERS)) + (
        b"\r\nHOST: x\r\nupgrade:   WebSocket  \r\nconnection: UPGRADE\r\n"
        b"SEC-WEBSOCKET-KEY:" + SAMPLE_KEY.encode() + b"\r\nsec-websocket-version: 13"
    )
    upgrade = Upgrade.read(raw)
    assert isinstance(upgrade, Upgrade)
    assert upgrade.key == SAMPLE_KEY


@pytest.mark.parametrize("connection", ["keep-alive, Upgrade", "Upgrade, keep-alive", "keep-alive,upgrade", "upgrade"])
def test_connection_header_may_list_upgrade_among_other_tokens(connection: str) -> None:
    assert isinstance(Upgrade.read(head(Connection=connection)), Upgrade)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("protocol=7&client=js&version=8.4.0", {"protocol": "7", "client": "js", "version": "8.4.0"}),
        ("flash=", {"flash": ""}),
        ("client=a%20b&x=%E2%82%AC", {"client": "a b", "x": "€"}),
        ("a=1&a=2", {"a": "2"}),
    ],
)
def test_query_is_parsed_into_a_dict(query: str, expected: dict[str, str]) -> None:
    upgrade = Upgrade.read(head(f"/app/test-key?{query}" if query else "/app/test-key"))
    assert isinstance(upgrade, Upgrade)
    assert upgrade.query == expected
    assert upgrade.path == "/app/test-key"


def test_path_is_percent_decoded() -> None:
    upgrade = Upgrade.read(head("/app/test%2Dkey?protocol=7"))
    assert isinstance(upgrade, Upgrade)
    assert upgrade.path == "/app/test-key"


@pytest.mark.parametrize(
    "raw",
    [
        head(method="POST"),
        head(method="HEAD"),
        head(method="get"),
        head(version="HTTP/1.0"),
        head("/health"),
        head("/apps/1/events"),
        head("/app"),
        head("/application/x"),
        head(drop=("Upgrade",)),
        head(Upgrade="h2c"),
        head() + b"\r\nthis line has no colon",
        b"GET /app/test-key\r\nUpgrade: websocket",
        b"GET  /app/test-key HTTP/1.1\r\nUpgrade: websocket",
        b"GET /app/test-key HTTP/1.1",
        b"",
    ],
    ids=[
        "post",
        "head",
        "lowercase-method",
        "http-1.0",
        "health",
        "api",
        "app-without-slash",
        "other-prefix",
        "no-upgrade-header",
        "other-upgrade",
        "malformed-header-line",
        "no-http-version",
        "double-space",
        "no-headers",
        "empty",
    ],
)
def test_anything_but_a_websocket_upgrade_to_app_is_left_to_aiohttp(raw: bytes) -> None:
    assert Upgrade.read(raw) is None


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (head(drop=("Sec-WebSocket-Key",)), "Sec-WebSocket-Key"),
        (head(Sec_WebSocket_Key=""), "Sec-WebSocket-Key"),
        (head(Sec_WebSocket_Key=base64.b64encode(b"x" * 15).decode()), "Sec-WebSocket-Key"),
        (head(Sec_WebSocket_Key=base64.b64encode(b"x" * 17).decode()), "Sec-WebSocket-Key"),
        (head(Sec_WebSocket_Key="not base64 at all!!!!!=="), "Sec-WebSocket-Key"),
        (head(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ"), "Sec-WebSocket-Key"),  # padding missing
        (head(Sec_WebSocket_Key="dGhlIHNhbXBs!ZSBub25jZQ=="), "Sec-WebSocket-Key"),  # 16 bytes without the "!"
        (head(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==\u00e9"), "Sec-WebSocket-Key"),
        (head(drop=("Sec-WebSocket-Version",)), "Version 13"),
        (head(Sec_WebSocket_Version="12"), "Version 13"),
        (head(Sec_WebSocket_Version="8"), "Version 13"),
        (head(Sec_WebSocket_Version="13, 8"), "Version 13"),
        (head(drop=("Connection",)), "Connection"),
        (head(Connection="keep-alive"), "Connection"),
        (head(Connection="upgraded"), "Connection"),
    ],
    ids=[
        "key-missing",
        "key-empty",
        "key-15-bytes",
        "key-17-bytes",
        "key-not-base64",
        "key-unpadded",
        "key-stray-character",
        "key-non-ascii",
        "version-missing",
        "version-12",
        "version-8",
        "version-list",
        "connection-missing",
        "connection-keep-alive",
        "connection-similar-token",
    ],
)
def test_broken_upgrade_gets_an_error_message(raw: bytes, needle: str) -> None:
    answer = Upgrade.read(raw)
    assert isinstance(answer, str)
    assert needle in answer


def with_header(name: str, value: str) -> bytes:
    """The valid head with one more header line (so a name may appear twice)."""
    return head() + f"\r\n{name}: {value}".encode("latin-1")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Sec-WebSocket-Key", SAMPLE_KEY),  # even the same value twice
        ("Sec-WebSocket-Key", base64.b64encode(b"k" * 16).decode()),
        ("sec-websocket-key", base64.b64encode(b"k" * 16).decode()),  # names are case-insensitive
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Version", "8"),
        ("Host", "other.example"),
        ("Origin", "https://a.example"),
    ],
)
def test_a_single_value_handshake_header_sent_twice_is_refused(name: str, value: str) -> None:
    raw = with_header(name, value)
    if name == "Origin":
        raw = head(Origin="https://b.example") + f"\r\n{name}: {value}".encode()
    answer = Upgrade.read(raw)
    assert isinstance(answer, str)
    assert "must be sent once" in answer
    assert name.lower() in answer.lower()


@pytest.mark.parametrize(
    "extra",
    [
        "Connection: Upgrade",  # "keep-alive" then "Upgrade" on two lines: one list
        "Upgrade: websocket",
    ],
)
def test_list_headers_sent_twice_form_one_list(extra: str) -> None:
    first = head(Connection="keep-alive") if extra.startswith("Connection") else head(Upgrade="h2c")
    upgrade = Upgrade.read(first + f"\r\n{extra}".encode())
    assert isinstance(upgrade, Upgrade)


# --- the state machine (WebSocket): bytes in, events out --------------------------------------

MAX = 1000  # the machine's message limit in these tests


def machine() -> WebSocket:
    return WebSocket(MAX)


def feed(ws: WebSocket, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += ws.receive(chunk)
    return events


def close_code(frame: bytes | None) -> int:
    assert frame is not None
    opcode, _, payload, _ = server_frame(frame)
    assert opcode == frames.CLOSE
    code: int
    (code,) = struct.unpack("!H", payload[:2])
    return code


def failed(events: list[Event], code: int) -> Failed:
    """The last event is the failure with ``code``, and carries our close frame with it."""
    event = events[-1]
    assert isinstance(event, Failed), events
    assert event.code == code
    assert close_code(event.reply) == code
    return event


def test_a_whole_text_frame_is_its_text() -> None:
    assert feed(machine(), client_frame(frames.TEXT, "héllo".encode())) == ["héllo"]


def test_a_whole_binary_frame_is_a_binary_event() -> None:
    assert feed(machine(), client_frame(frames.BINARY, b"\x00\xff")) == [Binary(b"\x00\xff")]


def test_ping_and_pong_are_events_and_the_ping_carries_its_pong() -> None:
    events = feed(machine(), client_frame(frames.PING, b"abc") + client_frame(frames.PONG, b"x"))
    assert events == [Ping(b"abc"), Pong(b"x")]
    ping = events[0]
    assert isinstance(ping, Ping)
    assert server_frame(ping.pong) == (frames.PONG, True, b"abc", 2)


def test_fragments_are_joined_with_control_frames_answered_between_them() -> None:
    ws = machine()
    assert feed(ws, client_frame(frames.TEXT, b"he", fin=False)) == []
    assert feed(ws, client_frame(frames.PING, b"p")) == [Ping(b"p")]
    assert feed(ws, client_frame(frames.CONTINUATION, b"", fin=False)) == []
    assert feed(ws, client_frame(frames.CONTINUATION, b"llo")) == ["hello"]
    # And the next message starts afresh.
    assert feed(ws, client_frame(frames.TEXT, b"again")) == ["again"]


def test_a_fragmented_binary_message_is_joined() -> None:
    ws = machine()
    data = client_frame(frames.BINARY, b"\x01", fin=False) + client_frame(frames.CONTINUATION, b"\x02")
    assert feed(ws, data) == [Binary(b"\x01\x02")]


def test_a_character_split_across_fragments_is_valid_utf8() -> None:
    euro = "€".encode()
    data = client_frame(frames.TEXT, b"a" + euro[:1], fin=False)
    data += client_frame(frames.CONTINUATION, euro[1:2], fin=False) + client_frame(frames.CONTINUATION, euro[2:])
    assert feed(machine(), data) == ["a€"]


def test_invalid_utf8_fails_at_the_fragment_that_holds_it() -> None:
    ws = machine()
    # The message is not over, but no continuation could make it valid: fail now (1007).
    failed(feed(ws, client_frame(frames.TEXT, b"ok\xff", fin=False)), 1007)


def test_a_message_ending_inside_a_character_is_invalid_utf8() -> None:
    data = client_frame(frames.TEXT, b"a\xe2\x82", fin=False) + client_frame(frames.CONTINUATION, b"")
    failed(feed(machine(), data), 1007)


def test_invalid_utf8_in_a_whole_text_frame_is_1007() -> None:
    failed(feed(machine(), client_frame(frames.TEXT, b"\xed\xa0\x80")), 1007)


def test_a_fragmented_message_is_held_to_the_limit_by_its_running_size() -> None:
    ws = machine()
    assert feed(ws, client_frame(frames.TEXT, b"a" * 600, fin=False)) == []
    assert feed(ws, client_frame(frames.CONTINUATION, b"b" * 400, fin=False)) == []  # exactly MAX
    failed(feed(ws, client_frame(frames.CONTINUATION, b"c", fin=False)), 1009)


def test_a_fragmented_message_of_exactly_the_limit_is_delivered() -> None:
    data = client_frame(frames.TEXT, b"a" * 600, fin=False) + client_frame(frames.CONTINUATION, b"b" * 400)
    assert feed(machine(), data) == ["a" * 600 + "b" * 400]


def test_a_continuation_without_a_message_is_1002() -> None:
    failed(feed(machine(), client_frame(frames.CONTINUATION, b"x")), 1002)


@pytest.mark.parametrize("opcode", [frames.TEXT, frames.BINARY])
def test_a_new_message_inside_a_fragmented_one_is_1002(opcode: int) -> None:
    data = client_frame(frames.TEXT, b"a", fin=False) + client_frame(opcode, b"b")
    failed(feed(machine(), data), 1002)


def test_a_close_inside_a_fragmented_message_is_1002_and_the_message_is_never_delivered() -> None:
    ws = machine()
    data = client_frame(frames.TEXT, b"half", fin=False) + client_frame(frames.CLOSE, struct.pack("!H", 1000))
    events = feed(ws, data + client_frame(frames.CONTINUATION, b" done"))
    assert len(events) == 1
    failed(events, 1002)
    assert feed(ws, client_frame(frames.CONTINUATION, b"more")) == []


def test_good_frames_before_a_bad_one_in_the_same_read_are_delivered_then_it_fails() -> None:
    data = (
        client_frame(frames.PING, b"first")
        + client_frame(frames.TEXT, b"hello")
        + client_frame(frames.TEXT, b"bad", masked=False)
        + client_frame(frames.PING, b"never")
    )
    events = feed(machine(), data)
    assert events[:2] == [Ping(b"first"), "hello"]
    assert len(events) == 3
    failed(events, 1002)


def test_good_frames_before_a_bad_utf8_message_are_delivered() -> None:
    data = client_frame(frames.PING, b"p") + client_frame(frames.TEXT, b"\xff") + client_frame(frames.PING, b"q")
    events = feed(machine(), data)
    assert events[0] == Ping(b"p")
    assert len(events) == 2
    failed(events, 1007)


def test_nothing_is_read_after_a_failure() -> None:
    ws = machine()
    failed(feed(ws, client_frame(0x3, b"?")), 1002)
    assert ws.state == CLOSED
    assert feed(ws, client_frame(frames.PING, b"p"), client_frame(frames.TEXT, b"t")) == []


def test_a_partial_frame_waits_for_its_rest() -> None:
    ws = machine()
    data = client_frame(frames.TEXT, b"x" * 300)
    assert feed(ws, data[:3]) == []
    assert feed(ws, data[3:200]) == []
    assert feed(ws, data[200:] + client_frame(frames.PING, b"")) == ["x" * 300, Ping(b"")]


@settings(max_examples=100, deadline=None)
@given(
    wanted=st.lists(
        st.one_of(
            st.text(max_size=80).map(lambda text: ("text", text)),
            st.binary(max_size=125).map(lambda data: ("ping", data)),
            st.lists(st.text(max_size=30), min_size=2, max_size=4).map(lambda parts: ("fragments", parts)),
        ),
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_events_are_the_same_however_the_bytes_are_cut(wanted: list[tuple[str, object]], cuts: list[int]) -> None:
    stream = b""
    expected: list[Event] = []
    for kind, value in wanted:
        if kind == "text":
            assert isinstance(value, str)
            stream += client_frame(frames.TEXT, value.encode())
            expected.append(value)
        elif kind == "ping":
            assert isinstance(value, bytes)
            stream += client_frame(frames.PING, value)
            expected.append(Ping(value))
        else:
            assert isinstance(value, list)
            encoded = [part.encode() for part in value]
            stream += client_frame(frames.TEXT, encoded[0], fin=False)
            for index, part in enumerate(encoded[1:], 1):
                stream += client_frame(frames.CONTINUATION, part, fin=index == len(encoded) - 1)
            expected.append("".join(value))
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    chunks = [stream[start:end] for start, end in itertools.pairwise(points)]
    assert feed(machine(), *chunks) == expected
    # And byte by byte.
    assert feed(machine(), *(stream[index : index + 1] for index in range(len(stream)))) == expected


# --- closing ----------------------------------------------------------------------------------


def all_codes_a_peer_may_send() -> set[int]:
    """RFC 6455 7.4.1 and IANA's registry: 1004-1006 and 1015 are reserved, 1016-2999 are not
    assigned to peers; 3000-4999 are for libraries and applications."""
    return {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, *range(3000, 5000)}


def test_valid_close_codes_are_exactly_the_registry() -> None:
    allowed = all_codes_a_peer_may_send()
    assert {code for code in range(65536) if frames.valid_close_code(code)} == allowed


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1012, 1013, 1014, 3000, 4999])
def test_a_peer_close_with_a_valid_code_is_echoed(code: int) -> None:
    ws = machine()
    events = feed(ws, client_frame(frames.CLOSE, struct.pack("!H", code) + "bye é".encode()))
    assert len(events) == 1
    closed = events[0]
    assert isinstance(closed, Closed)
    assert (closed.code, closed.reason) == (code, "bye é")
    assert close_code(closed.reply) == code
    assert ws.state == CLOSED


def test_a_peer_close_without_a_code_is_answered_with_1000() -> None:
    (closed,) = feed(machine(), client_frame(frames.CLOSE))
    assert isinstance(closed, Closed)
    assert closed.code == 1005
    assert close_code(closed.reply) == 1000


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_a_peer_close_with_a_code_it_may_not_send_is_1002(code: int) -> None:
    failed(feed(machine(), client_frame(frames.CLOSE, struct.pack("!H", code))), 1002)


def test_a_one_byte_close_payload_is_1002() -> None:
    failed(feed(machine(), client_frame(frames.CLOSE, b"\x03")), 1002)


def test_a_close_reason_that_is_not_utf8_is_1007() -> None:
    failed(feed(machine(), client_frame(frames.CLOSE, struct.pack("!H", 1000) + b"\xff")), 1007)


def test_frames_after_the_peer_close_are_ignored() -> None:
    ws = machine()
    events = feed(ws, client_frame(frames.CLOSE, struct.pack("!H", 1000)) + client_frame(frames.TEXT, b"late"))
    assert len(events) == 1
    assert isinstance(events[0], Closed)
    assert feed(ws, client_frame(frames.PING, b"")) == []


def test_our_close_is_sent_once_and_then_only_their_close_matters() -> None:
    ws = machine()
    assert close_code(ws.close(4009, "bye")) == 4009
    assert ws.state == CLOSING
    assert ws.close(4009, "again") is None
    # While we wait for their close, their data and pings are not acted on.
    assert feed(ws, client_frame(frames.TEXT, b"t"), client_frame(frames.PING, b"p")) == []
    (closed,) = feed(ws, client_frame(frames.CLOSE, struct.pack("!H", 4009)))
    assert isinstance(closed, Closed)
    assert closed.reply is None  # the handshake is complete: nothing to answer
    assert ws.state == CLOSED


def test_a_protocol_error_after_our_close_fails_without_a_second_close_frame() -> None:
    ws = machine()
    ws.close(4201, "Pong reply not received")
    (event,) = feed(ws, client_frame(frames.TEXT, b"x", masked=False))
    assert isinstance(event, Failed)
    assert event.reply is None


def test_our_close_drops_an_unfinished_message() -> None:
    ws = machine()
    assert feed(ws, client_frame(frames.TEXT, b"half", fin=False)) == []
    ws.close(1000)
    (closed,) = feed(ws, client_frame(frames.CONTINUATION, b"rest"), client_frame(frames.CLOSE, b"\x03\xe8"))
    assert isinstance(closed, Closed)


def test_an_idle_machine_holds_no_buffers() -> None:
    ws = machine()
    feed(ws, client_frame(frames.TEXT, b"a", fin=False))
    feed(ws, client_frame(frames.CONTINUATION, b"b") + client_frame(frames.PING, b"p")[:3])
    feed(ws, client_frame(frames.PING, b"p")[3:])
    # Fragment state and the partial-frame buffer exist only while they hold something.
    assert (ws._buffer, ws._message) == (None, None)
    assert not hasattr(ws, "__dict__")
