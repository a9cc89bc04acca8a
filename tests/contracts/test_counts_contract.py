"""The Counts part of the contract, run against both twins: subscription counts across nodes,
cache channels, and liveness (a node that stops beating is reaped once, for exactly its share)."""

from __future__ import annotations

from clarion.scaling.contracts import Envelope, Once

from .conftest import Cluster, MemoryTwin

APP = "app-1"
OTHER_APP = "app-2"
ROOM = "presence-room"


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
    if isinstance(cluster, MemoryTwin):
        cluster.clock.advance(ttl / 2)
        half = await b.cached(APP, "cache-news")
        assert half is not None and half[2] == ttl / 2

    async def expired() -> bool:
        return await a.cached(APP, "cache-news") is None and await b.cached(APP, "cache-news") is None

    await cluster.after(ttl, expired)


async def test_a_cache_write_of_a_publish_whose_key_was_used_is_skipped(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    once = Once.for_event("order-7", 0, "cache-news", 60.0)
    await a.remember(APP, "cache-news", '{"v":1}', "frame-1", 60.0, once)
    assert await a.publish(Envelope(APP, "cache-news", "frame-1"), None, once)
    await a.remember(APP, "cache-news", '{"v":2}', "frame-2", 60.0)
    await b.remember(APP, "cache-news", '{"v":1}', "frame-1", 60.0, once)  # retried, on another node
    cached = await a.cached(APP, "cache-news")
    assert cached is not None and cached[:2] == ('{"v":2}', "frame-2")
    # Another app's key of the same name is its own.
    await a.remember(OTHER_APP, "cache-news", '{"v":3}', "frame-3", 60.0, once)
    other = await b.cached(OTHER_APP, "cache-news")
    assert other is not None and other[:2] == ('{"v":3}', "frame-3")


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
