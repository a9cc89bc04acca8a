"""Catch-up on an in-process node: live frames held while history is read, released after the
replay, each event once and in serial order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from clarion.server.hub import MAX_HELD
from inprocess import Room, running

CHANNEL = "private-orders"  # kept: the default history rules keep private- channels


def serials(frames: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    """(serial, replayed) of each event in ``frames``."""
    return [(frame["serial"], bool(frame.get("replayed"))) for frame in frames if frame["event"] == "order"]


async def subscribed(room: Room) -> tuple[Any, Any]:
    node = await room.node()
    sock = room.connect(node)
    await room.subscribe(node, sock, CHANNEL)
    return node, sock


async def test_live_frames_during_a_rewind_are_held_and_follow_the_replay_once() -> None:
    room = Room()
    node = await room.node()
    for n in (1, 2):  # before the socket came
        await room.trigger(node, CHANNEL, "order", json.dumps({"n": n}))
    await room.settle()
    sock = room.connect(node)
    await room.subscribe(node, sock, CHANNEL)
    sock.new()
    room.gates.hold("history")  # the read's answer (events 1 and 2) is on its way back
    rewind = room.send(node, sock, "clarion:rewind", {"channel": CHANNEL, "count": 10})
    with running(asyncio.create_task(rewind)) as rewinding:
        await room.gates.waiting_at("history")
        await room.trigger(node, CHANNEL, "order", '{"n":3}')
        await room.settle()
        assert sock.new() == []  # held
        room.gates.release("history")
        await rewinding
    frames = sock.new()
    assert [frame["event"] for frame in frames] == ["order", "order", "clarion:rewound", "order"]
    assert serials(frames) == [(1, True), (2, True), (3, False)]
    assert room.hub(node).channels[CHANNEL].catching == {}


async def test_a_resume_skips_what_reached_the_socket_live_since_its_subscribe() -> None:
    room = Room()
    node, sock = await subscribed(room)
    for n in (1, 2, 3):
        await room.trigger(node, CHANNEL, "order", json.dumps({"n": n}))
    await room.settle()
    epoch = sock.received()[-1]["epoch"]
    sock.new()
    await room.send(node, sock, "clarion:resume", {"channel": CHANNEL, "epoch": epoch, "serial": 0})
    frames = sock.new()
    # Events 1 to 3 went out live after the subscribe: a resume from before it sends none again.
    assert serials(frames) == []
    assert frames[-1]["event"] == "clarion:resumed"
    assert json.loads(frames[-1]["data"])["serial"] == 3


async def test_a_second_catch_up_while_one_reads_is_refused_busy() -> None:
    room = Room()
    node, sock = await subscribed(room)
    room.gates.hold("history")
    first = room.send(node, sock, "clarion:rewind", {"channel": CHANNEL, "count": 1})
    with running(asyncio.create_task(first)) as rewinding:
        await room.gates.waiting_at("history")
        await room.send(node, sock, "clarion:rewind", {"channel": CHANNEL, "count": 1})
        refused = sock.received()[-1]
        assert refused["event"] == "clarion:rewound" and json.loads(refused["data"])["reason"] == "busy"
        room.gates.release("history")
        await rewinding


async def test_too_much_held_during_a_resume_makes_it_unrecoverable_and_the_held_frames_follow() -> None:
    room = Room()
    node, sock = await subscribed(room)
    await room.trigger(node, CHANNEL, "order", '{"n":0}')
    await room.settle()
    epoch = sock.received()[-1]["epoch"]
    sock.new()
    room.gates.hold("history")
    resume = room.send(node, sock, "clarion:resume", {"channel": CHANNEL, "epoch": epoch, "serial": 1})
    with running(asyncio.create_task(resume)) as resuming:
        await room.gates.waiting_at("history")
        for n in range(MAX_HELD + 1):
            await room.trigger(node, CHANNEL, "order", json.dumps({"n": n}))
        await room.settle()
        room.gates.release("history")
        await resuming
    frames = sock.new()
    assert frames[0]["event"] == "clarion:resumed"
    assert json.loads(frames[0]["data"])["recovered"] is False
    assert json.loads(frames[0]["data"])["reason"] == "overflow"
    assert len(frames) == 1 + MAX_HELD  # what could be held follows; the client refetches the rest
