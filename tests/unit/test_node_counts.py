"""Subscription counts on an in-process node, with the fake clock: coalesced per loop turn, and
on a busy channel (over 100 subscribers) at most one every 5 s, as Pusher sends them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from clarion.server.counts import COUNT_BUSY, COUNT_INTERVAL
from inprocess import APP, FakeSocket, Room

COUNTED = dataclasses.replace(APP, subscription_count_events=True)


def counts(sock: FakeSocket) -> list[int]:
    return [
        json.loads(frame["data"])["subscription_count"]
        for frame in sock.new()
        if frame["event"] == "pusher_internal:subscription_count"
    ]


async def joined(room: Room, node: Any, channel: str, sockets: int) -> list[FakeSocket]:
    socks = []
    for _ in range(sockets):
        sock = room.connect(node)
        await room.subscribe(node, sock, channel)
        socks.append(sock)
    return socks


async def test_joins_in_one_loop_turn_make_one_count() -> None:
    room = Room(COUNTED)
    node = await room.node()
    first, *_ = await joined(room, node, "news", 3)
    await room.settle()
    assert counts(first) == [3]


async def test_a_busy_channel_gets_at_most_one_count_per_interval() -> None:
    room = Room(COUNTED)
    node = await room.node()
    first, *_ = await joined(room, node, "news", COUNT_BUSY + 1)
    await room.settle()
    assert counts(first) == [COUNT_BUSY + 1]  # it was not busy until this count went out
    await joined(room, node, "news", 2)
    await room.settle()
    await node.tick()
    await room.settle()
    assert counts(first) == []  # busy: held back
    room.clock.advance(COUNT_INTERVAL - 0.1)
    await node.tick()
    await room.settle()
    assert counts(first) == []
    room.clock.advance(0.2)
    await node.tick()
    await room.settle()
    assert counts(first) == [COUNT_BUSY + 3]  # one count for both joins, read when sent


async def test_a_quiet_channel_gets_a_count_at_once_after_each_change() -> None:
    room = Room(COUNTED)
    node = await room.node()
    first, second = await joined(room, node, "news", 2)
    await room.settle()
    assert counts(first) == [2]
    await room.gone(node, second)
    await room.settle()
    assert counts(first) == [1]


async def test_presence_and_user_channels_get_no_counts() -> None:
    room = Room(COUNTED)
    node = await room.node()
    sock = room.connect(node)
    await room.subscribe(node, sock, "presence-room", {"user_id": "ann"})
    await room.sign_in(node, sock, "ann")
    await room.subscribe(node, sock, "#server-to-user-ann")
    await room.settle()
    await node.tick()
    await room.settle()
    assert counts(sock) == []


async def test_without_count_events_or_webhook_nothing_is_counted() -> None:
    room = Room()
    node = await room.node()
    first, *_ = await joined(room, node, "news", 2)
    await room.settle()
    assert counts(first) == []
    assert room.hub(node).counts_due == {}
