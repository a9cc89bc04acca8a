"""Sign-in and watchlists on an in-process node: when ``signin_success`` may go out, what a
watcher hears while its snapshot is read, and a sign-in whose socket leaves half way."""

from __future__ import annotations

import asyncio
import json

from inprocess import Room, running


def watch_events(frame: dict[str, object]) -> dict[str, list[str]]:
    assert frame["event"] == "pusher_internal:watchlist_events", frame
    assert isinstance(frame["data"], str)
    return {event["name"]: event["user_ids"] for event in json.loads(frame["data"])["events"]}


async def test_signin_success_waits_until_the_user_is_marked_online_in_the_cluster() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    room.gates.hold("user_online")
    with running(asyncio.create_task(room.sign_in(node, sock, "ann"))) as signing:
        await room.gates.waiting_at("user_online")
        assert "pusher:signin_success" not in sock.events()
        room.gates.release("user_online")
        await signing
    assert sock.events()[-1] == "pusher:signin_success"
    assert await node.backend.online(room.app.id, ("ann",)) == {"ann"}


async def test_watchers_are_told_the_user_came_online_before_the_user_is_answered() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    room.gates.hold("control")
    with running(asyncio.create_task(room.sign_in(node, sock, "ann"))) as signing:
        await room.gates.waiting_at("control")
        assert "pusher:signin_success" not in sock.events()
        room.gates.release("control")
        await signing
    assert room.gates.log == ["user_online", "control online"]
    assert sock.events()[-1] == "pusher:signin_success"


async def test_a_second_tab_is_answered_only_after_its_own_write() -> None:
    # The first tab's write is still in flight: the second tab must not be answered before the
    # cluster has the user, even though this node already knows them.
    room = Room()
    node = await room.node()
    first, second = room.connect(node), room.connect(node)
    room.gates.hold("user_online")
    with (
        running(asyncio.create_task(room.sign_in(node, first, "ann"))) as one,
        running(asyncio.create_task(room.sign_in(node, second, "ann"))) as two,
    ):
        await room.gates.waiting_at("user_online", calls=2)
        assert "pusher:signin_success" not in first.events() + second.events()
        room.gates.release("user_online")
        await asyncio.gather(one, two)
    assert first.events()[-1] == second.events()[-1] == "pusher:signin_success"


async def test_a_watcher_on_another_node_signing_in_after_the_answer_sees_the_user_online() -> None:
    room = Room()
    here, there = await room.node(), await room.node()
    user, watcher = room.connect(here), room.connect(there)
    await room.sign_in(here, user, "ann")
    assert user.events()[-1] == "pusher:signin_success"
    await room.sign_in(there, watcher, "bob", watchlist=["ann", "cy"])
    assert watcher.events()[-2] == "pusher:signin_success"
    assert watch_events(watcher.received()[-1]) == {"online": ["ann"], "offline": ["cy"]}


async def test_a_change_heard_while_the_snapshot_is_read_follows_the_snapshot() -> None:
    room = Room()
    here, there = await room.node(), await room.node()
    watcher, ann = room.connect(here), room.connect(there)
    room.gates.hold("online")  # the snapshot's answer is on its way back
    with running(asyncio.create_task(room.sign_in(here, watcher, "bob", watchlist=["ann"]))) as signing:
        await room.gates.waiting_at("online")
        await room.sign_in(there, ann, "ann")  # ann comes online meanwhile: held for the watcher
        assert [frame["event"] for frame in watcher.received()][-1] == "pusher:signin_success"
        room.gates.release("online")
        await signing
    frames = watcher.received()
    assert [frame["event"] for frame in frames[-3:-2]] == ["pusher:signin_success"]
    assert watch_events(frames[-2]) == {"offline": ["ann"]}
    assert watch_events(frames[-1]) == {"online": ["ann"]}


async def test_a_change_the_snapshot_already_shows_is_not_repeated_after_it() -> None:
    room = Room()
    here, there = await room.node(), await room.node()
    watcher, ann = room.connect(here), room.connect(there)
    room.gates.hold("control")  # ann is online in the cluster, her "online" still on its way
    with running(asyncio.create_task(room.sign_in(there, ann, "ann"))) as ann_signing:
        await room.gates.waiting_at("control")
        room.gates.hold("online")
        with running(asyncio.create_task(room.sign_in(here, watcher, "bob", watchlist=["ann"]))) as signing:
            room.gates.release("control")
            await room.gates.waiting_at("online")
            room.gates.release("online")
            await asyncio.gather(signing, ann_signing)
    frames = watcher.received()
    assert frames[-2]["event"] == "pusher:signin_success"
    assert watch_events(frames[-1]) == {"online": ["ann"]}  # and nothing after it
    await room.sign_in(there, room.connect(there), "cy")  # a later change still reaches the watcher
    assert watcher.received() == frames


async def test_a_watcher_hears_a_user_go_offline_after_their_last_socket() -> None:
    room = Room()
    node = await room.node()
    watcher, tab1, tab2 = room.connect(node), room.connect(node), room.connect(node)
    await room.sign_in(node, watcher, "bob", watchlist=["ann"])
    watcher.new()
    await room.sign_in(node, tab1, "ann")
    await room.sign_in(node, tab2, "ann")
    assert [watch_events(frame) for frame in watcher.new()] == [{"online": ["ann"]}]
    await room.gone(node, tab1)
    assert watcher.new() == []
    await room.gone(node, tab2)
    assert [watch_events(frame) for frame in watcher.new()] == [{"offline": ["ann"]}]


async def test_a_socket_gone_while_its_user_is_marked_online_leaves_the_user_offline() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    room.gates.hold("user_online")
    with running(asyncio.create_task(room.sign_in(node, sock, "ann"))) as signing:
        await room.gates.waiting_at("user_online")
        await room.gone(node, sock)  # signed out before the write lands
        room.gates.release("user_online")
        await signing
    assert await node.backend.online(room.app.id, ("ann",)) == set()
    assert "control online" not in room.gates.log
    assert "pusher:signin_success" not in sock.events()


async def test_a_second_tab_gone_mid_sign_in_leaves_the_first_tab_online() -> None:
    room = Room()
    node = await room.node()
    first, second = room.connect(node), room.connect(node)
    await room.sign_in(node, first, "ann")
    room.gates.hold("user_online")
    with running(asyncio.create_task(room.sign_in(node, second, "ann"))) as signing:
        await room.gates.waiting_at("user_online")
        await room.gone(node, second)
        room.gates.release("user_online")
        await signing
    assert await node.backend.online(room.app.id, ("ann",)) == {"ann"}
