"""The Backend contract, run against both twins: what every node sees on the bus, and how
presence, online users, counts, cache and liveness behave across the nodes of one cluster."""

from __future__ import annotations

import asyncio

from clarion.scaling.contracts import FIRST, FULL, HELD, Control, Envelope
from pusherclient import wait_for

from .conftest import Cluster

APP = "app-1"
OTHER_APP = "app-2"
ROOM = "presence-room"


async def delivered(cluster: Cluster, nodes: list, last: Envelope | Control) -> None:
    """Wait until every node has received ``last`` (sent after everything the test checks)."""

    def arrived() -> bool:
        for node in nodes:
            got = cluster.received[node.node_id]
            if last not in (got.events if isinstance(last, Envelope) else got.controls):
                return False
        return True

    await wait_for(arrived, timeout=10)


# --- bus ---------------------------------------------------------------------------------------


async def test_every_node_gets_each_published_envelope_once_in_publish_order_publisher_included(
    cluster: Cluster,
) -> None:
    nodes = [await cluster.node() for _ in range(3)]
    sent = [Envelope(APP, f"chan-{i % 7}", f'{{"n":{i}}}', "123.4" if i % 3 == 0 else None) for i in range(200)]
    end = Envelope(APP, "chan-end", "end")
    for envelope in [*sent, end]:
        await nodes[0].publish(envelope)
    await delivered(cluster, nodes, end)
    for node in nodes:
        assert cluster.received[node.node_id].events == [*sent, end], node.node_id


async def test_each_publishers_envelopes_keep_their_order_when_two_nodes_publish_at_once(cluster: Cluster) -> None:
    nodes = [await cluster.node() for _ in range(3)]
    by = {
        publisher.node_id: [Envelope(APP, "busy", f"{publisher.node_id}:{i}") for i in range(100)]
        for publisher in nodes[:2]
    }

    async def publish_all(node) -> None:
        for envelope in by[node.node_id]:
            await node.publish(envelope)

    await asyncio.gather(*(publish_all(node) for node in nodes[:2]))
    ends = [Envelope(APP, "end", node.node_id) for node in nodes[:2]]
    for node, end in zip(nodes[:2], ends, strict=True):
        await node.publish(end)
        await delivered(cluster, nodes, end)
    for node in nodes:
        events = [e for e in cluster.received[node.node_id].events if e.channel == "busy"]
        assert len(events) == 200
        for publisher, sent in by.items():
            assert [e for e in events if e.frame.startswith(publisher + ":")] == sent


async def test_every_node_gets_each_control_message_once_in_order_publisher_included(cluster: Cluster) -> None:
    nodes = [await cluster.node() for _ in range(3)]
    kinds = ("online", "offline", "terminate")
    sent = [Control(kinds[i % 3], APP, {"user_id": f"user-{i}", "n": i}) for i in range(200)]
    end = Control("offline", APP, {"user_id": "end"})
    for message in [*sent, end]:
        await nodes[1].control(message)
    await delivered(cluster, nodes, end)
    for node in nodes:
        got = cluster.received[node.node_id]
        assert got.controls == [*sent, end], node.node_id
        assert got.events == []  # control messages are not events


# --- presence ----------------------------------------------------------------------------------


async def test_join_is_first_then_the_number_of_holding_nodes_then_held_on_repeat(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    assert await a.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == FIRST
    assert await b.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == 2
    assert await a.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == HELD
    assert await b.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == HELD
    assert await c.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == 3
    # Same user on another channel, or another app, is a new member there.
    assert await b.join(APP, "presence-other", "ann", {}, 100) == FIRST
    assert await b.join(OTHER_APP, ROOM, "ann", {}, 100) == FIRST


async def test_join_is_refused_when_the_channel_is_full_of_other_users_but_never_for_a_user_already_in(
    cluster: Cluster,
) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    assert await a.join(APP, ROOM, "ann", {}, 2) == FIRST
    assert await b.join(APP, ROOM, "bob", {}, 2) == FIRST
    assert await c.join(APP, ROOM, "cat", {}, 2) == FULL
    assert await a.join(APP, ROOM, "cat", {}, 2) == FULL
    # Users already in the channel join from any node, full or not.
    assert await c.join(APP, ROOM, "ann", {}, 2) == 2
    assert await c.join(APP, ROOM, "bob", {}, 2) == 2
    assert await a.join(APP, ROOM, "ann", {}, 2) == HELD
    # Another channel, and the same channel of another app, have their own limit.
    assert await c.join(APP, "presence-elsewhere", "cat", {}, 2) == FIRST
    assert await c.join(OTHER_APP, ROOM, "cat", {}, 2) == FIRST
    # Once a user has gone for good, there is room again.
    assert await a.leave(APP, ROOM, "ann") is False
    assert await c.leave(APP, ROOM, "ann") is True
    assert await c.join(APP, ROOM, "cat", {}, 2) == FIRST


async def test_a_refused_join_registers_nothing(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.join(APP, ROOM, "ann", {}, 1) == FIRST
    assert await b.join(APP, ROOM, "bob", {}, 1) == FULL
    assert set(await a.members(APP, ROOM)) == {"ann"}
    assert await b.leave(APP, ROOM, "bob") is False
    assert await a.leave(APP, ROOM, "ann") is True
    assert await b.join(APP, ROOM, "bob", {}, 1) == FIRST


async def test_leave_is_true_only_when_the_last_holding_node_lets_go(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    for node in (a, b, c):
        await node.join(APP, ROOM, "ann", {"name": "Ann"}, 100)
    assert await b.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, ROOM, "ann") is False
    assert set(await b.members(APP, ROOM)) == {"ann"}
    assert await c.leave(APP, ROOM, "ann") is True
    assert await a.members(APP, ROOM) == {}
    # A user nobody holds, or a channel nobody is in, has nothing to leave.
    assert await c.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, "presence-empty", "ann") is False


async def test_leaving_twice_from_one_node_does_not_release_another_nodes_hold(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    await a.join(APP, ROOM, "ann", {}, 100)
    await b.join(APP, ROOM, "ann", {}, 100)
    assert await a.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, ROOM, "ann") is False
    assert set(await a.members(APP, ROOM)) == {"ann"}
    assert await b.leave(APP, ROOM, "ann") is True


async def test_members_merges_every_nodes_members_with_their_info(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    await a.join(APP, ROOM, "ann", {"name": "Ann", "tags": [1, 2]}, 100)
    await b.join(APP, ROOM, "bob", None, 100)
    await b.join(APP, ROOM, "ann", {"name": "Ann", "tags": [1, 2]}, 100)
    await c.join(APP, "presence-else", "cat", "just a string", 100)
    expected = {"ann": {"name": "Ann", "tags": [1, 2]}, "bob": None}
    for node in (a, b, c):
        assert await node.members(APP, ROOM) == expected
        assert await node.members(APP, "presence-else") == {"cat": "just a string"}
        assert await node.members(OTHER_APP, ROOM) == {}


# --- online users ------------------------------------------------------------------------------


async def test_a_user_comes_online_with_the_first_node_and_goes_offline_with_the_last(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.online(APP, ("ann", "bob")) == set()
    assert await a.user_online(APP, "ann") is True
    assert await b.user_online(APP, "ann") is False
    assert await a.user_online(APP, "ann") is False  # a repeat is not counted twice
    assert await b.online(APP, ("ann", "bob")) == {"ann"}
    assert await b.online(OTHER_APP, ("ann",)) == set()
    assert await a.user_offline(APP, "ann") is False
    assert await a.user_offline(APP, "ann") is False  # nor is a repeated offline
    assert await a.online(APP, ("ann",)) == {"ann"}
    assert await b.user_offline(APP, "ann") is True
    assert await a.online(APP, ("ann", "bob")) == set()
    assert await b.user_offline(APP, "bob") is False  # never online
    assert await a.online(APP, ()) == set()


# --- subscription counts -----------------------------------------------------------------------


async def test_subscription_counts_total_across_nodes(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.add_subscriptions(APP, "news", 2) == 2
    assert await b.add_subscriptions(APP, "news", 3) == 5
    assert await a.add_subscriptions(APP, "news", -1) == 4
    assert await b.subscription_count(APP, "news") == 4
    assert await a.subscription_count(OTHER_APP, "news") == 0
    assert await b.add_subscriptions(APP, "news", -3) == 1
    assert await a.add_subscriptions(APP, "news", -1) == 0
    assert await b.subscription_count(APP, "news") == 0
    assert await b.channels(APP) == {}


async def test_subscription_counts_never_go_negative_nor_take_from_other_nodes(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.add_subscriptions(APP, "news", -1) == 0
    assert await a.subscription_count(APP, "news") == 0
    assert await b.add_subscriptions(APP, "news", 3) == 3
    # a held nothing of "news": its decrement cannot eat b's subscribers.
    assert await a.add_subscriptions(APP, "news", -2) == 3
    assert await a.subscription_count(APP, "news") == 3
    assert await a.channels(APP) == {"news": 3}
    # and a's share does not start below zero: one subscriber of a's counts as one.
    assert await a.add_subscriptions(APP, "news", 1) == 4
    assert await a.add_subscriptions(APP, "news", -1) == 3
    assert await b.add_subscriptions(APP, "news", -3) == 0
    assert await a.channels(APP) == {}


async def test_channels_lists_only_occupied_channels_starting_with_the_prefix(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    await a.add_subscriptions(APP, "presence-one", 1)
    await b.add_subscriptions(APP, "presence-one", 2)
    await b.add_subscriptions(APP, "presence-two", 1)
    await a.add_subscriptions(APP, "private-three", 4)
    await a.add_subscriptions(APP, "public", 1)
    await a.add_subscriptions(APP, "gone", 1)
    await a.add_subscriptions(APP, "gone", -1)
    await b.add_subscriptions(OTHER_APP, "presence-else", 1)
    everything = {"presence-one": 3, "presence-two": 1, "private-three": 4, "public": 1}
    for node in (a, b):
        assert await node.channels(APP) == everything
        assert await node.channels(APP, "presence-") == {"presence-one": 3, "presence-two": 1}
        assert await node.channels(APP, "private-") == {"private-three": 4}
        assert await node.channels(APP, "nothing-") == {}
        assert await node.channels(OTHER_APP) == {"presence-else": 1}


# --- cache -------------------------------------------------------------------------------------


async def test_a_remembered_event_is_cached_for_every_node_until_its_ttl_runs_out(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    ttl = 60.0 if cluster.kind == "memory" else 0.5
    assert await b.cached(APP, "cache-news") is None
    await a.remember(APP, "cache-news", '{"v":1}', "frame-1", ttl)
    await a.remember(APP, "cache-news", '{"v":2}', "frame-2", ttl)  # the last event wins
    cached = await b.cached(APP, "cache-news")
    assert cached is not None
    data, frame, left = cached
    assert (data, frame) == ('{"v":2}', "frame-2")
    assert 0 < left <= ttl
    assert await b.cached(OTHER_APP, "cache-news") is None
    if cluster.kind == "memory":
        cluster.clock.advance(ttl / 2)  # type: ignore[attr-defined]
        half = await b.cached(APP, "cache-news")
        assert half is not None and half[2] == ttl / 2

    async def expired() -> bool:
        return await a.cached(APP, "cache-news") is None and await b.cached(APP, "cache-news") is None

    await cluster.after(ttl, expired)


# --- liveness ----------------------------------------------------------------------------------


async def test_a_node_is_healthy_once_started(cluster: Cluster) -> None:
    node = await cluster.node()
    assert node.healthy is True


async def test_a_node_that_stops_beating_is_reaped_once_within_node_ttl_for_exactly_what_only_it_held(
    cluster: Cluster,
) -> None:
    dead, b, c = [await cluster.node() for _ in range(3)]
    # The dead node's share: some of it only there, some held elsewhere too.
    await dead.join(APP, ROOM, "solo", {"n": 1}, 100)
    await dead.join(APP, ROOM, "shared", {"n": 2}, 100)
    await b.join(APP, ROOM, "shared", {"n": 2}, 100)
    await c.join(APP, ROOM, "cat", {"n": 3}, 100)
    await dead.join(OTHER_APP, "presence-x", "solo", {}, 100)
    await dead.user_online(APP, "solo")
    await dead.user_online(APP, "shared")
    await b.user_online(APP, "shared")
    await dead.add_subscriptions(APP, "only-dead", 2)
    await dead.add_subscriptions(APP, "shared-channel", 2)
    await b.add_subscriptions(APP, "shared-channel", 1)
    await dead.add_subscriptions(APP, ROOM, 2)
    await b.add_subscriptions(APP, ROOM, 1)
    await c.add_subscriptions(APP, ROOM, 1)
    await dead.heartbeat()  # its last beat

    reaped, elapsed = await cluster.reap([b, c])

    assert sorted(reaped.members_removed) == [(APP, ROOM, "solo"), (OTHER_APP, "presence-x", "solo")]
    assert reaped.users_offline == [(APP, "solo")]
    assert reaped.channels_vacated == [(APP, "only-dead")]
    assert cluster.node_ttl * 0.9 <= elapsed <= cluster.node_ttl * 1.5 + 0.3, elapsed
    for node in (b, c):
        assert await node.members(APP, ROOM) == {"shared": {"n": 2}, "cat": {"n": 3}}
        assert await node.members(OTHER_APP, "presence-x") == {}
        assert await node.online(APP, ("solo", "shared")) == {"shared"}
        assert await node.channels(APP) == {"shared-channel": 1, ROOM: 2}
        assert await node.subscription_count(APP, "only-dead") == 0
    # Reaped once: no survivor reports it again, and the survivors' own shares are intact.
    again, _ = await cluster.reap([b, c], limit=cluster.node_ttl * 0.75)
    assert not again
    assert await b.leave(APP, ROOM, "shared") is True
    assert await c.add_subscriptions(APP, ROOM, -1) == 1


async def test_a_node_that_keeps_beating_is_never_reaped(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    await a.join(APP, ROOM, "ann", {}, 100)
    await a.add_subscriptions(APP, ROOM, 1)
    await a.user_online(APP, "ann")
    # Both beat for twice node_ttl; neither may take the other for dead.
    started = cluster.now()
    reaped, _ = await cluster.reap([a, b], limit=2 * cluster.node_ttl)
    assert not reaped
    assert cluster.now() - started >= 2 * cluster.node_ttl * 0.9
    assert await b.members(APP, ROOM) == {"ann": {}}
    assert await b.channels(APP) == {ROOM: 1}
    assert await b.online(APP, ("ann",)) == {"ann"}
