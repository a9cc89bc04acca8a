"""Joins and leaves on an in-process node: a join withdrawn when its socket leaves half way, the
presence newcomer announced before it is answered, a full presence channel, cache channels."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from clarion.protocol import messages
from clarion.server.hub import LISTED_WINDOW, Listed, Overheard
from inprocess import APP, Room, running


def members(frame: dict[str, object]) -> dict[str, object]:
    assert frame["event"] == "pusher_internal:subscription_succeeded", frame
    assert isinstance(frame["data"], str)
    presence: dict[str, object] = json.loads(frame["data"])["presence"]
    return presence


async def test_a_join_whose_socket_leaves_half_way_is_withdrawn_without_a_trace() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    room.gates.hold("add_subscriptions")
    with running(asyncio.create_task(room.subscribe(node, sock, "presence-room", {"user_id": "ann"}))) as joining:
        await room.gates.waiting_at("add_subscriptions")
        await room.gone(node, sock)
        room.gates.release("add_subscriptions")
        await joining
    assert await node.backend.subscription_count(APP.id, "presence-room") == 0
    assert await node.backend.members(APP.id, "presence-room") == {}
    assert "presence-room" not in room.hub(node).channels
    assert sock.events() == ["pusher:connection_established"]
    assert not any(entry.startswith("publish") for entry in room.gates.log)


async def test_an_unsubscribe_during_the_join_withdraws_it_too() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    room.gates.hold("add_subscriptions")
    with running(asyncio.create_task(room.subscribe(node, sock, "news"))) as joining:
        await room.gates.waiting_at("add_subscriptions")
        sock.session.receive(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": "news"}}), room.clock())
        room.gates.release("add_subscriptions")
        await joining
    assert await node.backend.subscription_count(APP.id, "news") == 0
    assert "news" not in room.hub(node).channels


async def test_the_members_hear_of_a_newcomer_before_the_newcomer_is_answered() -> None:
    room = Room()
    here, there = await room.node(), await room.node()
    ann, bob = room.connect(here), room.connect(there)
    await room.subscribe(here, ann, "presence-room", {"user_id": "ann"})
    room.gates.hold("publish")
    with running(asyncio.create_task(room.subscribe(there, bob, "presence-room", {"user_id": "bob"}))) as joining:
        await room.gates.waiting_at("publish")
        assert "pusher_internal:subscription_succeeded" not in bob.events()
        room.gates.release("publish")
        await joining
    await room.settle()
    assert members(bob.received()[-1])["ids"] == ["ann", "bob"]
    added = ann.received()[-1]
    assert added["event"] == "pusher_internal:member_added" and json.loads(added["data"])["user_id"] == "bob"


async def test_a_newcomer_gone_once_announced_is_announced_gone() -> None:
    room = Room()
    node = await room.node()
    ann, bob = room.connect(node), room.connect(node)
    await room.subscribe(node, ann, "presence-room", {"user_id": "ann"})
    ann.new()
    room.gates.hold("publish")
    with running(asyncio.create_task(room.subscribe(node, bob, "presence-room", {"user_id": "bob"}))) as joining:
        await room.gates.waiting_at("publish")
        await room.gone(node, bob)
        room.gates.release("publish")
        await joining
    await room.settle()
    assert [(frame["event"], json.loads(frame["data"])["user_id"]) for frame in ann.new()] == [
        ("pusher_internal:member_added", "bob"),
        ("pusher_internal:member_removed", "bob"),
    ]
    assert await node.backend.members(APP.id, "presence-room") == {"ann": None}


async def test_a_full_presence_channel_refuses_the_next_user_who_is_then_not_on_it() -> None:
    room = Room(dataclasses.replace(APP, max_presence_members=1))
    node = await room.node()
    ann, bob = room.connect(node), room.connect(node)
    await room.subscribe(node, ann, "presence-room", {"user_id": "ann"})
    await room.subscribe(node, bob, "presence-room", {"user_id": "bob"})
    refused = bob.received()[-1]
    assert refused["event"] == "pusher:subscription_error"
    assert refused["data"]["type"] == "LimitReached"
    assert "presence-room" not in bob.session.channels
    # Not on it, so subscribing again is a first subscribe, refused again while the channel is full.
    await room.subscribe(node, bob, "presence-room", {"user_id": "bob"})
    assert bob.events()[-1] == "pusher:subscription_error"


async def test_a_cache_channel_answers_with_its_last_event_then_goes_live() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    await room.trigger(node, "cache-prices", "price", '{"p":1}')
    await room.subscribe(node, sock, "cache-prices")
    await room.trigger(node, "cache-prices", "price", '{"p":2}')
    await room.settle()
    assert [(frame["event"], frame.get("data")) for frame in sock.received()[1:]] == [
        ("pusher_internal:subscription_succeeded", "{}"),
        ("price", '{"p":1}'),
        ("price", '{"p":2}'),
    ]


async def test_a_cache_channel_with_history_sends_its_last_event_once_with_or_without_position() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    await room.trigger(node, "private-cache-prices", "price", '{"p":1}')  # still on its way live
    await room.subscribe(node, sock, "private-cache-prices")
    await room.settle()
    await room.trigger(node, "private-cache-prices", "price", '{"p":2}')
    await room.settle()
    received = sock.received()[1:]
    assert [(frame["event"], frame.get("data")) for frame in received] == [
        ("pusher_internal:subscription_succeeded", "{}"),
        ("price", '{"p":1}'),
        ("price", '{"p":2}'),
    ]
    assert received[2]["serial"] == 2  # the live event, with its position
    assert room.hub(node).channels["private-cache-prices"].catching == {}


async def test_two_users_joining_at_once_on_two_nodes_each_end_with_both() -> None:
    """Ann's member list is read before Bob joins, and Bob's ``member_added`` reaches Ann's node
    before Ann is registered there: she must still hear of him."""
    room = Room()
    here, there = await room.node(), await room.node()
    ann, bob = room.connect(here), room.connect(there)
    room.gates.hold("publish@node-0")
    with running(asyncio.create_task(room.subscribe(here, ann, "presence-room", {"user_id": "ann"}))) as joining:
        await room.gates.waiting_at("publish@node-0")
        await room.subscribe(there, bob, "presence-room", {"user_id": "bob"})
        await room.settle()
        room.gates.release("publish@node-0")
        await joining
    await room.settle()
    for sock in (ann, bob):
        frames = sock.received()[1:]
        ids = members(frames[0])["ids"]
        assert isinstance(ids, list)
        known = set(ids)
        for frame in frames[1:]:
            user = json.loads(frame["data"])["user_id"]
            if frame["event"] == "pusher_internal:member_added":
                known.add(user)
            elif frame["event"] == "pusher_internal:member_removed":
                known.discard(user)
        assert known == {"ann", "bob"}, (sock.socket_id, frames)


def test_member_events_heard_during_a_join_are_told_only_when_they_change_its_list() -> None:
    overheard = Overheard()
    frames = [
        messages.encode("pusher_internal:member_added", {"user_id": "bob", "user_info": None}, "presence-room"),
        messages.encode("pusher_internal:member_removed", {"user_id": "cat"}, "presence-room"),
        messages.encode("pusher_internal:member_added", {"user_id": "dan", "user_info": None}, "presence-room"),
        messages.encode("pusher_internal:member_removed", {"user_id": "ann"}, "presence-room"),
        messages.encode("news", {"text": "pusher_internal:member_added"}, "presence-room"),
    ]
    for frame in frames:
        overheard.hear(frame)
    # The list already had Bob and not Cat: only Dan's arrival and Ann's departure are news.
    assert overheard.news({"ann", "bob"}) == [frames[2], frames[3]]
    assert not overheard.overflowed


def told(sock: object, event: str) -> list[str]:
    """The users named in ``event`` frames ``sock`` received."""
    frames = sock.received()  # type: ignore[attr-defined]
    return [json.loads(f["data"])["user_id"] for f in frames if f["event"] == event]


async def test_a_member_already_in_a_joiners_list_is_not_announced_to_it_again() -> None:
    """Bob's join is written before Cat's member list is read, but his ``member_added`` reaches
    Cat's node only after she is answered. She lists him already: pusher-js would fire
    ``member_added`` for someone it lists. Ann, who joined before him, must hear of him."""
    room = Room()
    here, there = await room.node(), await room.node()
    ann, bob, cat = room.connect(here), room.connect(there), room.connect(here)
    await room.subscribe(here, ann, "presence-room", {"user_id": "ann"})
    await room.settle()
    room.gates.hold("publish@node-1")
    with running(asyncio.create_task(room.subscribe(there, bob, "presence-room", {"user_id": "bob"}))) as joining:
        await room.gates.waiting_at("publish@node-1")
        await room.subscribe(here, cat, "presence-room", {"user_id": "cat"})
        await room.settle()
        room.gates.release("publish@node-1")
        await joining
    await room.settle()
    assert members(cat.received()[1])["ids"] == ["ann", "bob", "cat"]
    assert told(cat, "pusher_internal:member_added") == []
    assert told(ann, "pusher_internal:member_added") == ["cat", "bob"]
    # Bob's list was read before Cat came; her arrival reached his node while his join was made.
    assert members(bob.received()[1])["ids"] == ["ann", "bob"]
    assert told(bob, "pusher_internal:member_added") == ["cat"]


def added(user_id: str) -> str:
    return messages.encode("pusher_internal:member_added", {"user_id": user_id, "user_info": None}, "presence-room")


def removed(user_id: str) -> str:
    return messages.encode("pusher_internal:member_removed", {"user_id": user_id}, "presence-room")


def test_a_member_event_reaches_the_sockets_that_do_not_list_the_member() -> None:
    listed = Listed()
    listed.listed("s1", ["ann", "bob"], now=0.0)
    listed.listed("s2", ["bob"], now=1.0)
    assert listed.member_event(added("bob")) == {"s1", "s2"}  # both list him: neither is told
    assert listed.member_event(added("bob")) is None  # told here already: no socket is told again
    assert listed.member_event(added("cat")) == set()  # listed to nobody: everyone is told
    # A departure is told to all; a return after it is news again, to everyone.
    assert listed.member_event(removed("bob")) == set()
    assert listed.member_event(added("bob")) == set()
    # Other events on the channel pass untouched, whatever their text holds.
    news = messages.encode("news", {"text": "pusher_internal:member_added"}, "presence-room")
    assert listed.member_event(news) == set()


def test_a_listed_member_whose_arrival_never_comes_counts_as_told_after_the_window() -> None:
    listed = Listed()
    listed.listed("s1", ["ann"], now=0.0)
    listed.expire(LISTED_WINDOW - 1)
    assert "ann" in listed.pending
    listed.expire(LISTED_WINDOW)
    assert listed.pending == {} and listed.heard == {"ann"}
    # A later member_added of hers, with no departure since, is one every socket here knows.
    assert listed.member_event(added("ann")) is None
    assert listed.member_event(removed("ann")) == set()
    assert listed.member_event(added("ann")) == set()
