"""Autobahn's server case groups 1-7 and 9, as a table Clarion is tested against.

Autobahn's fuzzingclient echoes every message back through the server under test. Clarion is a
Pusher server, not an echo server, so each case maps onto Pusher, on top of RFC 6455:

- a text message must be a Pusher frame, so where Autobahn expects its text echoed, the case sends
  a ``pusher:ping`` of the same size (its data padding it) and expects ``pusher:pong``: the message
  arrived whole. Text that is valid UTF-8 but not a Pusher frame gets ``pusher:error`` 4200 and the
  connection stays open (so group 6's valid sequences, sent as they are, show that they passed);
- a binary message gets ``pusher:error`` 4200 (Pusher has no binary messages), the connection
  staying open;
- group 9's sizes are scaled to Clarion's limit: a message may be ``max_message_size`` (64 KiB in
  these tests) plus 8 KiB of envelope; one byte more is closed with 1009.

Where Clarion differs from what Autobahn accepts, the case says so in its note.
"""

from __future__ import annotations

import itertools

from conformance.conftest import FRAME_LIMIT
from conformance.utf8 import SEQUENCES
from conformance.wire import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Case,
    Send,
    close_payload,
    error,
    event,
    frame,
    ping_text,
    pong,
    pusher_ping,
)
from wsframes import client_frame

PONG_EVENT = event("pusher:pong")
ECHO = "the message echoed"
FAIL = "the connection failed (1002)"


def whole(data: bytes, chop: int | None = None) -> tuple[Send, ...]:
    return (Send(data, chop=chop),)


def each(*frames: bytes, pause: float = 0.0) -> tuple[Send, ...]:
    """Each frame in its own write (Autobahn's "frame-wise")."""
    return tuple(Send(data, pause=pause) for data in frames)


def framing() -> list[Case]:
    cases = []
    sizes = [0, 125, 126, 127, 128, 65535, 65536]
    for number, size in enumerate(sizes, 1):
        message = pusher_ping(size) if size else b""
        cases.append(
            Case(
                f"1.1.{number}",
                f"text message of {size} bytes",
                ECHO,
                whole(frame(TEXT, message)),
                (PONG_EVENT,) if size else (error(),),
                note="a pusher:ping of that size" if size else "an empty text is not a Pusher frame",
            )
        )
    cases.append(
        Case(
            "1.1.8",
            "text message of 65536 bytes, written in chops of 997 bytes",
            ECHO,
            whole(frame(TEXT, pusher_ping(65536)), chop=997),
            (PONG_EVENT,),
            note="a pusher:ping of that size",
        )
    )
    for number, size in enumerate(sizes, 1):
        cases.append(
            Case(
                f"1.2.{number}",
                f"binary message of {size} bytes",
                ECHO,
                whole(frame(BINARY, b"\xfe" * size)),
                (error(),),
                note="Pusher has no binary messages",
            )
        )
    cases.append(
        Case(
            "1.2.8",
            "binary message of 65536 bytes, written in chops of 997 bytes",
            ECHO,
            whole(frame(BINARY, b"\xfe" * 65536), chop=997),
            (error(),),
            note="Pusher has no binary messages",
        )
    )
    return cases


def pings() -> list[Case]:
    hello = b"Hello, world!"
    raw = bytes((0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF))
    tens = [f"ping {number}".encode() for number in range(10)]
    return [
        Case("2.1", "ping without payload", "a pong without payload", whole(frame(PING)), (pong(),)),
        Case("2.2", "ping with a short text payload", "a pong with that payload", whole(frame(PING, hello)),
             (pong(hello),)),
        Case("2.3", "ping with a short binary payload", "a pong with that payload", whole(frame(PING, raw)),
             (pong(raw),)),
        Case("2.4", "ping with a 125-byte payload", "a pong with that payload", whole(frame(PING, b"\xfe" * 125)),
             (pong(b"\xfe" * 125),)),
        Case("2.5", "ping with a 126-byte payload", FAIL, whole(frame(PING, b"\xfe" * 126)), close=1002),
        Case("2.6", "ping with a 125-byte payload, written 1 byte at a time", "a pong with that payload",
             whole(frame(PING, b"\xfe" * 125), chop=1), (pong(b"\xfe" * 125),)),
        Case("2.7", "unsolicited pong without payload", "nothing", whole(frame(PONG))),
        Case("2.8", "unsolicited pong with payload", "nothing", whole(frame(PONG, b"unsolicited"))),
        Case("2.9", "unsolicited pong, then a ping", "a pong for the ping only",
             whole(frame(PONG, b"unsolicited") + frame(PING, b"solicited")), (pong(b"solicited"),)),
        Case("2.10", "10 pings in one write", "10 pongs, in order (or at least the last)",
             whole(b"".join(frame(PING, data) for data in tens)), tuple(pong(data) for data in tens),
             note="every ping answered"),
        Case("2.11", "10 pings, written 1 byte at a time", "10 pongs, in order (or at least the last)",
             tuple(Send(frame(PING, data), chop=1) for data in tens), tuple(pong(data) for data in tens),
             note="every ping answered"),
    ]  # fmt: skip


def reserved_bits() -> list[Case]:
    ok = pusher_ping(40)

    def three(rsv: int) -> tuple[bytes, bytes, bytes]:
        return frame(TEXT, ok), frame(TEXT, ok, rsv=rsv), frame(PING)

    return [
        Case("3.1", "text with RSV = 1", FAIL, whole(frame(TEXT, ok, rsv=1)), close=1002),
        Case("3.2", "text, text with RSV = 2, ping; one write", "the first echoed, then failed (1002)",
             whole(b"".join(three(2))), (PONG_EVENT,), close=1002, note="the ping is never answered"),
        Case("3.3", "text, text with RSV = 3, ping; one write each", "the first echoed, then failed (1002)",
             each(*three(3)), (PONG_EVENT,), close=1002, note="the ping is never answered"),
        Case("3.4", "text, text with RSV = 4, ping; 1 byte at a time", "the first echoed, then failed (1002)",
             whole(b"".join(three(4)), chop=1), (PONG_EVENT,), close=1002, note="the ping is never answered"),
        Case("3.5", "binary with RSV = 5", FAIL, whole(frame(BINARY, b"\xfe" * 8, rsv=5)), close=1002),
        Case("3.6", "ping with RSV = 6", FAIL, whole(frame(PING, b"p", rsv=6)), close=1002),
        Case("3.7", "close with RSV = 7", FAIL, whole(frame(CLOSE, close_payload(1000), rsv=7)), close=1002),
    ]  # fmt: skip


def opcodes() -> list[Case]:
    ok = pusher_ping(40)
    cases = []
    for group, codes in (("4.1", (3, 4, 5, 6, 7)), ("4.2", (11, 12, 13, 14, 15))):
        kind = "non-control" if group == "4.1" else "control"
        for number, opcode in enumerate(codes, 1):
            payload = b"reserved" if number in (2, 4) else b""
            with_payload = " with payload" if payload else ""
            if number <= 2:
                cases.append(
                    Case(f"{group}.{number}", f"reserved {kind} opcode {opcode}{with_payload}", FAIL,
                         whole(frame(opcode, payload)), close=1002)
                )  # fmt: skip
            else:
                cases.append(
                    Case(f"{group}.{number}", f"text, reserved {kind} opcode {opcode}{with_payload}, ping",
                         "the text echoed, then failed (1002)",
                         each(frame(TEXT, ok), frame(opcode, payload), frame(PING)), (PONG_EVENT,), close=1002,
                         note="the ping is never answered")
                )  # fmt: skip
    return cases


def fragmentation() -> list[Case]:
    message = pusher_ping(60)
    one, two = message[:20], message[20:]
    first, rest = frame(TEXT, one, fin=False), frame(CONTINUATION, two)
    between = frame(PING, b"between")
    fragments = [message[index : index + 12] for index in range(0, len(message), 12)]
    assert len(fragments) == 5
    five = [frame(TEXT, fragments[0], fin=False)]
    five += [frame(CONTINUATION, part, fin=False) for part in fragments[1:4]]
    five.append(frame(CONTINUATION, fragments[4]))
    lonely = pusher_ping(40)
    cases = [
        Case("5.1", "ping in 2 fragments", FAIL,
             whole(frame(PING, b"frag", fin=False) + frame(CONTINUATION, b"ment")), close=1002),
        Case("5.2", "pong in 2 fragments", FAIL,
             whole(frame(PONG, b"frag", fin=False) + frame(CONTINUATION, b"ment")), close=1002),
        Case("5.3", "text in 2 fragments; one write", ECHO, whole(first + rest), (PONG_EVENT,)),
        Case("5.4", "text in 2 fragments; one write each", ECHO, each(first, rest), (PONG_EVENT,)),
        Case("5.5", "text in 2 fragments; 1 byte at a time", ECHO, whole(first + rest, chop=1), (PONG_EVENT,)),
        Case("5.6", "text in 2 fragments, a ping between them; one write", "the pong, then the message echoed",
             whole(first + between + rest), (pong(b"between"), PONG_EVENT)),
        Case("5.7", "text in 2 fragments, a ping between them; one write each", "the pong, then the message echoed",
             each(first, between, rest), (pong(b"between"), PONG_EVENT)),
        Case("5.8", "text in 2 fragments, a ping between them; 1 byte at a time",
             "the pong, then the message echoed", whole(first + between + rest, chop=1),
             (pong(b"between"), PONG_EVENT)),
    ]  # fmt: skip
    # A continuation with nothing to continue (FIN set for 5.9-5.11, clear for 5.12-5.14), then text.
    for number, (fin, how) in enumerate(
        [(True, "one write"), (True, "one write each"), (True, "1 byte at a time"),
         (False, "one write"), (False, "one write each"), (False, "1 byte at a time")], 9
    ):  # fmt: skip
        data = (frame(CONTINUATION, b"nothing to continue", fin=fin), frame(TEXT, lonely))
        sends = whole(b"".join(data)) if how == "one write" else each(*data)
        if how == "1 byte at a time":
            sends = whole(b"".join(data), chop=1)
        cases.append(
            Case(f"5.{number}", f"continuation (FIN {int(fin)}) with nothing to continue, then text; {how}",
                 FAIL, sends, close=1002, note="the text is never handled")
        )  # fmt: skip
    cases += [
        Case("5.15", "text in 2 fragments, then a continuation (FIN 0) with nothing to continue, then text",
             "the first echoed (or not), then failed (1002)",
             whole(first + rest + frame(CONTINUATION, b"x", fin=False) + frame(TEXT, lonely)),
             (PONG_EVENT,), close=1002),
        Case("5.16", "twice: continuation (FIN 0) with nothing to continue, then text in 2 fragments", FAIL,
             whole((frame(CONTINUATION, b"a", fin=False) + first + rest) * 2), close=1002),
        Case("5.17", "twice: continuation (FIN 1) with nothing to continue, then text in 2 fragments", FAIL,
             whole((frame(CONTINUATION, b"a") + first + rest) * 2), close=1002),
        Case("5.18", "text in 2 fragments, both with the text opcode", FAIL,
             whole(first + frame(TEXT, two)), close=1002),
        Case("5.19", "text in 5 fragments with pauses, a ping after fragments 1 and 4",
             "the pongs when the pings arrive, then the message echoed",
             each(five[0], frame(PING, b"one"), five[1], five[2], five[3], frame(PING, b"two"), five[4], pause=0.05),
             (pong(b"one"), pong(b"two"), PONG_EVENT)),
        Case("5.20", "as 5.19, each fragment and ping 1 byte at a time",
             "the pongs when the pings arrive, then the message echoed",
             tuple(Send(data, chop=1, pause=0.05)
                   for data in (five[0], frame(PING, b"one"), *five[1:4], frame(PING, b"two"), five[4])),
             (pong(b"one"), pong(b"two"), PONG_EVENT)),
    ]  # fmt: skip
    return cases


def utf8() -> list[Case]:
    phrase = "Grüße aus Köln: µ@ßöäüàá, κόσμε 😀"
    encoded = ping_text(phrase)
    at = encoded.index("κ".encode())  # a code point boundary
    kosme = ping_text("κόσμε")
    invalid = "κόσμε".encode() + b"\xed\xa0\x80" + b"edited"  # an encoded surrogate in the middle
    beyond = b"\xf4\x90\x80\x80"  # would be U+110000: past Unicode's last code point
    start, end = ping_text("valid start ")[:-2], b' valid end"}'
    cases = [
        Case("6.1.1", "empty text message", ECHO, whole(frame(TEXT)), (error(),),
             note="valid UTF-8, not a Pusher frame"),
        Case("6.1.2", "empty text message in 3 empty fragments", ECHO,
             whole(frame(TEXT, fin=False) + frame(CONTINUATION, fin=False) + frame(CONTINUATION)), (error(),),
             note="valid UTF-8, not a Pusher frame"),
        Case("6.1.3", "text in 3 fragments: empty, a message, empty", ECHO,
             whole(frame(TEXT, fin=False) + frame(CONTINUATION, pusher_ping(40), fin=False) + frame(CONTINUATION)),
             (PONG_EVENT,)),
        Case("6.2.1", "valid UTF-8 text in one frame", ECHO, whole(frame(TEXT, encoded)), (PONG_EVENT,)),
        Case("6.2.2", "valid UTF-8 text in 2 fragments cut on a code point boundary", ECHO,
             whole(frame(TEXT, encoded[:at], fin=False) + frame(CONTINUATION, encoded[at:])), (PONG_EVENT,)),
        Case("6.2.3", "valid UTF-8 text, one fragment per byte", ECHO,
             whole(fragment_per_byte(encoded)), (PONG_EVENT,), note="characters cut across fragments"),
        Case("6.2.4", "valid UTF-8 text (Greek), one fragment per byte", ECHO,
             whole(fragment_per_byte(kosme)), (PONG_EVENT,)),
        Case("6.3.1", "invalid UTF-8 text in one frame", "the connection failed (1007)",
             whole(frame(TEXT, invalid)), close=1007),
        Case("6.3.2", "invalid UTF-8 text, one fragment per byte", "the connection failed (1007)",
             whole(fragment_per_byte(invalid)), close=1007),
        Case("6.4.1", "3 fragments with pauses: valid, one past U+10FFFF, valid",
             "failed (1007) at the second fragment: fail fast",
             each(frame(TEXT, start, fin=False), frame(CONTINUATION, beyond, fin=False), pause=0.05),
             close=1007, note="failed at the second fragment: the third is never sent"),
        Case("6.4.2", "3 fragments with pauses: valid ending in the first byte of a code point past U+10FFFF, "
             "its other bytes, valid", "failed (1007) at the second fragment: fail fast",
             each(frame(TEXT, start + beyond[:1], fin=False), frame(CONTINUATION, beyond[1:], fin=False),
                  pause=0.05),
             close=1007, note="failed at the second fragment: the third is never sent"),
        Case("6.4.3", "one text frame with an invalid sequence in the middle, written in 3 chops with pauses",
             "failed (1007): fail fast at the chop (or, non-strict, at the frame's end)",
             each(*chops(frame(TEXT, start + beyond + end), [len(start) + 6, len(start) + 10]), pause=0.05),
             close=1007, note="at the frame's end: Autobahn's non-strict"),
        Case("6.4.4", "as 6.4.3, the invalid sequence cut between chops",
             "failed (1007): fail fast at the chop (or, non-strict, at the frame's end)",
             each(*chops(frame(TEXT, start + beyond + end), [len(start) + 7, len(start) + 8]), pause=0.05),
             close=1007, note="at the frame's end: Autobahn's non-strict"),
    ]  # fmt: skip
    for number, (title, vectors) in enumerate(SEQUENCES, 5):
        for index, (valid, data) in enumerate(vectors, 1):
            cases.append(
                Case(
                    f"6.{number}.{index}",
                    f"{title}: 0x{data.hex() or '(empty)'}",
                    ECHO if valid else "the connection failed (1007)",
                    whole(frame(TEXT, data)),
                    (error(),) if valid else (),
                    close=None if valid else 1007,
                    note="valid UTF-8, not a Pusher frame" if valid else "",
                )
            )
    return cases


def fragment_per_byte(data: bytes) -> bytes:
    parts = [frame(TEXT if index == 0 else CONTINUATION, data[index : index + 1], fin=index == len(data) - 1)
             for index in range(len(data))]  # fmt: skip
    return b"".join(parts)


def chops(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` (a whole frame) cut at payload offsets ``cuts`` (its 6-byte head comes first)."""
    points = [0, *(cut + 6 for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def closing() -> list[Case]:
    ok = pusher_ping(40)
    normal = frame(CLOSE, close_payload(1000))
    big = pusher_ping(FRAME_LIMIT)
    cases = [
        Case("7.1.1", "text, then a close 1000", "the text echoed, then a clean close 1000",
             whole(frame(TEXT, ok) + normal), (PONG_EVENT,), close=1000),
        Case("7.1.2", "two closes 1000", "a clean close 1000 (the second close ignored)",
             whole(normal + normal), close=1000),
        Case("7.1.3", "a close 1000, then a ping", "a clean close 1000, no pong", whole(normal + frame(PING)),
             close=1000),
        Case("7.1.4", "a close 1000, then text", "a clean close 1000, no echo", whole(normal + frame(TEXT, ok)),
             close=1000),
        Case("7.1.5", "a text fragment, a close 1000, the last fragment", "a clean close 1000",
             whole(frame(TEXT, ok[:10], fin=False) + normal + frame(CONTINUATION, ok[10:])), close=1002,
             note="differs, by choice: a close inside a fragmented message fails the connection"),
        Case("7.1.6", f"a text message of the limit ({FRAME_LIMIT} bytes, not 256 KiB), a close 1000, a ping",
             "a clean close 1000 (the message echoed or not), no pong",
             whole(frame(TEXT, big) + normal + frame(PING)), (PONG_EVENT,), close=1000),
        Case("7.3.1", "a close without payload", "a clean close", whole(frame(CLOSE)), close=1000),
        Case("7.3.2", "a close with a 1-byte payload", FAIL, whole(frame(CLOSE, b"\x03")), close=1002),
        Case("7.3.3", "a close 1000 without reason", "a clean close 1000", whole(normal), close=1000),
        Case("7.3.4", "a close 1000 with a reason", "a clean close 1000",
             whole(frame(CLOSE, close_payload(1000, b"bye now"))), close=1000),
        Case("7.3.5", "a close 1000 with a 123-byte reason", "a clean close 1000",
             whole(frame(CLOSE, close_payload(1000, b"r" * 123))), close=1000),
        Case("7.3.6", "a close 1000 with a 124-byte reason (a 126-byte control frame)", FAIL,
             whole(frame(CLOSE, close_payload(1000, b"r" * 124))), close=1002),
        Case("7.5.1", "a close 1000 whose reason is not UTF-8", "failed (1007, or 1002), or dropped",
             whole(frame(CLOSE, close_payload(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))),
             close=1007),
    ]  # fmt: skip
    valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
    for number, code in enumerate(valid, 1):
        cases.append(Case(f"7.7.{number}", f"a close {code}", "a clean close, 1000 or the code echoed",
                          whole(frame(CLOSE, close_payload(code))), close=code, note="echoed"))  # fmt: skip
    for code in (1012, 1013, 1014):
        cases.append(Case(f"x7.7.{code}", f"a close {code} (IANA's registry; not in Autobahn's lists)",
                          "-", whole(frame(CLOSE, close_payload(code))), close=code, note="echoed"))  # fmt: skip
    invalid = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999]
    for number, code in enumerate(invalid, 1):
        cases.append(Case(f"7.9.{number}", f"a close {code}", "failed (1002), or dropped",
                          whole(frame(CLOSE, close_payload(code))), close=1002))  # fmt: skip
    cases.append(Case("x7.9.1015", "a close 1015 (reserved: TLS failure, never sent)", "-",
                      whole(frame(CLOSE, close_payload(1015))), close=1002))  # fmt: skip
    for number, code in enumerate((5000, 65535), 1):
        cases.append(Case(f"7.13.{number}", f"a close {code}", "failed (1002), or dropped",
                          whole(frame(CLOSE, close_payload(code))), close=1002))  # fmt: skip
    return cases


def limits() -> list[Case]:
    """Group 9, scaled to Clarion's limit: Autobahn's 64 KiB-16 MiB become 16 KiB up to the
    limit and one byte past it; its fragment and chop sizes shrink with the message."""
    cases = []
    sizes = [16 * 1024, 32 * 1024, 64 * 1024, FRAME_LIMIT, FRAME_LIMIT + 1, 16 * 1024 * 1024]
    for number, size in enumerate(sizes, 1):
        over = size > FRAME_LIMIT
        message = b"" if over else pusher_ping(size)
        data = frame(TEXT, message) if not over else _head(TEXT, size)
        cases.append(
            Case(f"9.1.{number}", f"text message of {size} bytes", ECHO if size <= 64 * 1024 else "echoed (if the "
                 "server allows it)", whole(data), () if over else (PONG_EVENT,), close=1009 if over else None,
                 note="over the limit: refused from its header, before its payload" if over else "")
        )  # fmt: skip
    for number, size in enumerate(sizes, 1):
        over = size > FRAME_LIMIT
        data = frame(BINARY, b"\xfe" * size) if not over else _head(BINARY, size)
        cases.append(
            Case(f"9.2.{number}", f"binary message of {size} bytes", ECHO if size <= 64 * 1024 else "echoed (if "
                 "the server allows it)", whole(data), () if over else (error(),), close=1009 if over else None,
                 note="over the limit: refused from its header" if over else "Pusher has no binary messages")
        )  # fmt: skip
    message = pusher_ping(64 * 1024)
    binary = b"\xfe" * (64 * 1024)
    for group, opcode, data in (("9.3", TEXT, message), ("9.4", BINARY, binary)):
        for number, size in enumerate([1, 4, 16, 64, 256, 1024, 4096, 16384, 65536], 1):
            parts = [data[index : index + size] for index in range(0, len(data), size)]
            framed = b"".join(
                frame(opcode if index == 0 else CONTINUATION, part, fin=index == len(parts) - 1)
                for index, part in enumerate(parts)
            )
            cases.append(
                Case(f"{group}.{number}", f"{'text' if opcode == TEXT else 'binary'} message of 64 KiB in fragments "
                     f"of {size} bytes", ECHO, whole(framed), (PONG_EVENT if opcode == TEXT else error(),),
                     note="Autobahn's 4 MiB and 64 B-4 MiB fragments, divided by 64")
            )  # fmt: skip
    for group, opcode, data in (("9.5", TEXT, message), ("9.6", BINARY, binary)):
        for number, chop in enumerate([4, 8, 16, 32, 64, 128], 1):
            cases.append(
                Case(f"{group}.{number}", f"{'text' if opcode == TEXT else 'binary'} message of 64 KiB written in "
                     f"chops of {chop} bytes", ECHO, whole(frame(opcode, data), chop=chop),
                     (PONG_EVENT if opcode == TEXT else error(),),
                     note="Autobahn's 1 MiB and 64-2048 B chops, divided by 16")
            )  # fmt: skip
    for group, opcode in (("9.7", TEXT), ("9.8", BINARY)):
        for number, size in enumerate([0, 16, 64, 256, 1024, 4096], 1):
            if opcode == TEXT:
                one = pusher_ping(size) if size >= 64 else b"x" * size
                answer = PONG_EVENT if size >= 64 else error()
            else:
                one, answer = b"\xfe" * size, error()
            cases.append(
                Case(f"{group}.{number}", f"1000 {'text' if opcode == TEXT else 'binary'} messages of {size} bytes",
                     "1000 echoes", whole(frame(opcode, one) * 1000), (answer,) * 1000,
                     note=("pipelined, not one at a time" + ("; too small for a Pusher frame"
                           if opcode == TEXT and size < 64 else "")))
            )  # fmt: skip
    return cases


def _head(opcode: int, size: int) -> bytes:
    """Only the header (and mask) of a frame announcing ``size`` bytes."""
    return client_frame(opcode, length=size)


GROUPS = {
    "framing": framing(),
    "pings": pings(),
    "reserved_bits": reserved_bits(),
    "opcodes": opcodes(),
    "fragmentation": fragmentation(),
    "utf8": utf8(),
    "closing": closing(),
    "limits": limits(),
}
