"""Groups 6.5-6.23: byte sequences a UTF-8 validator must accept or refuse.

The groups follow Autobahn's (which follow Markus Kuhn's UTF-8 decoder stress test); the bytes are
built here from the encoding's rules, and whether each is valid is stated by the rule that built
it, not asked of a decoder.
"""

from __future__ import annotations

Vector = tuple[bool, bytes]  # (valid UTF-8?, bytes)

_LEADS = {2: 0xC0, 3: 0xE0, 4: 0xF0, 5: 0xF8, 6: 0xFC}


def pattern(code: int, length: int) -> bytes:
    """``code`` in UTF-8's bit pattern of ``length`` bytes, whether or not UTF-8 allows it
    (overlong forms, surrogates, values past U+10FFFF, the old 5- and 6-byte forms)."""
    if length == 1:
        return bytes((code,))
    tail = []
    for _ in range(length - 1):
        tail.append(0x80 | (code & 0x3F))
        code >>= 6
    return bytes((_LEADS[length] | code, *reversed(tail)))


def _kosme_prefixes() -> list[Vector]:
    text = "κόσμε"
    encoded = text.encode()
    boundaries = {len(text[:index].encode()) for index in range(len(text) + 1)}
    return [(cut in boundaries, encoded[:cut]) for cut in range(1, len(encoded) + 1)]


_MISSING_LAST = [pattern(0, n)[:-1] for n in range(2, 7)] + [
    pattern((1 << (5 * n + 1)) - 1, n)[:-1] for n in range(2, 7)
]
_START_RANGES = ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))


def _spaced(first: int, last: int) -> bytes:
    return b"".join(bytes((lead, 0x20)) for lead in range(first, last + 1))


_HIGH = (0xD800, 0xDB7F, 0xDB80, 0xDBFF)
_LOW = (0xDC00, 0xDFFF)

SEQUENCES: list[tuple[str, list[Vector]]] = [
    (
        "valid text with 1- to 4-byte characters",
        [(True, b"hello" + chr(code).encode() + b"world") for code in (0x24, 0xA2, 0x20AC, 0x24B62)]
        + [(True, "κόσμε".encode())],
    ),
    ("prefix of a valid multi-byte text", _kosme_prefixes()),
    (
        "first code point of each length",
        [(True, pattern(code, n)) for n, code in ((1, 0), (2, 0x80), (3, 0x800), (4, 0x10000))],
    ),
    ("first 5- and 6-byte forms (past Unicode)", [(False, pattern(0x200000, 5)), (False, pattern(0x4000000, 6))]),
    (
        "last code point of each length",
        [(True, pattern(code, n)) for n, code in ((1, 0x7F), (2, 0x7FF), (3, 0xFFFF), (4, 0x10FFFF))],
    ),
    (
        "last 4-, 5- and 6-byte forms (past Unicode)",
        [(False, pattern(0x1FFFFF, 4)), (False, pattern(0x3FFFFFF, 5)), (False, pattern(0x7FFFFFFF, 6))],
    ),
    (
        "other boundaries",
        [(True, pattern(code, n)) for n, code in ((3, 0xD7FF), (3, 0xE000), (3, 0xFFFD), (4, 0x10FFFF))]
        + [(False, pattern(0x110000, 4))],
    ),
    (
        "continuation bytes without a start",
        [(False, b"\x80"), (False, b"\xbf")]
        + [(False, (b"\x80\xbf" * 3)[:n]) for n in range(2, 7)]
        + [(False, bytes(range(0x80, 0xC0)))],
    ),
    (
        "start bytes each followed by a space",
        [
            (False, b"".join(bytes((lead, 0x20)) for lead in range(first, last + 1)))
            for first, last in ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))
        ],
    ),
    ("sequence missing its last byte", [(False, data) for data in _MISSING_LAST]),
    ("all of the previous group, concatenated", [(False, b"".join(_MISSING_LAST))]),
    ("bytes that never appear in UTF-8", [(False, b"\xfe"), (False, b"\xff"), (False, b"\xfe\xfe\xff\xff")]),
    ("overlong forms of '/'", [(False, pattern(0x2F, n)) for n in range(2, 7)]),
    (
        "longest overlong form of each length",
        [(False, pattern(code, n)) for n, code in ((2, 0x7F), (3, 0x7FF), (4, 0xFFFF), (5, 0x1FFFFF), (6, 0x3FFFFFF))],
    ),
    ("overlong forms of NUL", [(False, pattern(0, n)) for n in range(2, 7)]),
    (
        "UTF-16 surrogate on its own",
        [(False, pattern(code, 3)) for code in (*_HIGH, 0xDC00, 0xDF80, 0xDFFF)],
    ),
    (
        "UTF-16 surrogate pair",
        [(False, pattern(high, 3) + pattern(low, 3)) for high in _HIGH for low in _LOW],
    ),
    (
        "noncharacter (valid UTF-8)",
        [(True, chr(plane << 16 | last).encode()) for plane in range(17) for last in (0xFFFE, 0xFFFF)],
    ),
    ("Unicode special (valid UTF-8)", [(True, chr(code).encode()) for code in range(0xFFF9, 0x10000)]),
]
