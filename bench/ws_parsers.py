"""Clarion's RFC 6455 state machine against the kept sans-I/O ones: memory per connection and CPU
per client frame.

    .venv/bin/python bench/ws_parsers.py                 # all three, 5 rounds
    .venv/bin/python bench/ws_parsers.py --rounds 9 --connections 20000

Each parser is taken in the state an open connection holds it in (after the handshake, which
Clarion's front door does itself either way):

- ``clarion``: ``clarion.server.frames.WebSocket``;
- ``websockets``: websockets' ``Protocol`` (``websockets.protocol``), server side, open. It joins
  no fragments and checks no UTF-8 (its asyncio layer does), so the text is decoded here, as
  Clarion would still have to;
- ``wsproto``: wsproto's ``Connection`` (``wsproto.connection``), server side, open.

Memory: tracemalloc's count of bytes allocated by making N of them, divided by N (what each
connection would carry instead of, or on top of, Clarion's). CPU: the time to hand each one whole
masked text frame of a typical client event, one frame per read, and the same for a read of ten
frames; each a median of a few thousand, repeated ``--rounds`` times and given as a range, as the
machine may be shared. Not part of the installed package; needs the dev dependencies.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from websockets.frames import Opcode
from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection as WsprotoConnection
from wsproto.connection import ConnectionType
from wsproto.events import TextMessage

from clarion.server.frames import WebSocket

MAX_MESSAGE = 10 * 1024 + 8 * 1024  # Clarion's default frame limit

MESSAGE = json.dumps(
    {"event": "client-typing", "channel": "private-chat.42", "data": {"user": "ada", "typing": True, "at": 1712}}
).encode()


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    assert size < 126
    return bytes((0x81, 0x80 | size)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def make_clarion() -> Any:
    return WebSocket(MAX_MESSAGE)


def make_websockets() -> Any:
    return Protocol(Side.SERVER, state=OPEN, max_size=MAX_MESSAGE)


def make_wsproto() -> Any:
    return WsprotoConnection(ConnectionType.SERVER)


def feed_clarion(ws: Any, data: bytes) -> int:
    return sum(1 for event in ws.receive(data) if type(event) is str)


def feed_websockets(protocol: Any, data: bytes) -> int:
    protocol.receive_data(data)
    texts = 0
    for frame in protocol.events_received():
        if frame.opcode is Opcode.TEXT and frame.fin:
            frame.data.decode()  # websockets' Protocol leaves UTF-8 to its I/O layer
            texts += 1
    return texts


def feed_wsproto(conn: Any, data: bytes) -> int:
    conn.receive_data(data)
    return sum(1 for event in conn.events() if isinstance(event, TextMessage))


PARSERS: dict[str, tuple[Callable[[], Any], Callable[[Any, bytes], int]]] = {
    "clarion": (make_clarion, feed_clarion),
    "websockets": (make_websockets, feed_websockets),
    "wsproto": (make_wsproto, feed_wsproto),
}


def memory_per_connection(make: Callable[[], Any], count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = [make() for _ in range(count)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    grown -= len(held) * 8 + 56  # the list holding them
    del held
    return grown / count


def cpu_per_frame(make: Callable[[], Any], feed: Callable[[Any, bytes], int], frames_per_read: int) -> float:
    """Nanoseconds per frame: the median over reads of a stream of distinct masked frames."""
    parser = make()
    reads = [b"".join(masked_text(MESSAGE) for _ in range(frames_per_read)) for _ in range(200)]
    samples = []
    clock = time.perf_counter_ns
    for _ in range(20):
        start = clock()
        got = 0
        for data in reads:
            got += feed(parser, data)
        samples.append((clock() - start) / (len(reads) * frames_per_read))
        assert got == len(reads) * frames_per_read
    return statistics.median(samples)


def span(values: list[float], unit: str) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f} {unit} (median {statistics.median(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--only", choices=sorted(PARSERS), action="append")
    args = parser.parse_args()
    names = args.only or list(PARSERS)
    results: dict[str, dict[str, list[float]]] = {name: {"mem": [], "one": [], "ten": []} for name in names}
    for _ in range(args.rounds):
        for name in names:  # interleaved, so a busy moment of a shared machine hits them all
            make, feed = PARSERS[name]
            results[name]["mem"].append(memory_per_connection(make, args.connections))
            results[name]["one"].append(cpu_per_frame(make, feed, 1))
            results[name]["ten"].append(cpu_per_frame(make, feed, 10))
    print(f"message: {len(MESSAGE)} bytes of text in one masked frame; {args.rounds} rounds")
    for name in names:
        result = results[name]
        print(f"{name:>10}  memory per connection {span(result['mem'], 'B')}")
        print(f"{'':>10}  CPU per frame, 1 a read  {span(result['one'], 'ns')}")
        print(f"{'':>10}  CPU per frame, 10 a read {span(result['ten'], 'ns')}")


if __name__ == "__main__":
    main()
