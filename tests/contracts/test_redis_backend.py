"""What only the Redis twin does: write this node's share back after Redis lost it, come back
after being taken for dead, keep clusters apart by prefix, and keep serving without Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest
from redis import asyncio as aioredis

from clarion import tasks
from clarion.scaling.contracts import FIRST, HELD, Control, Envelope
from clarion.scaling.redis import SEP, RedisBackend
from clarion.tasks import cancel_and_wait
from pusherclient import wait_for
from redisproc import free_port, private_redis

from .conftest import Received, RedisTwin, delete_prefix

APP = "app-1"
ROOM = "presence-room"
BOB_INFO = orjson.dumps({"name": "Bob"}).decode()


async def snapshot(twin: RedisTwin) -> dict[str, Any]:
    """Every shared-state key of the cluster and its content; liveness keys (the heartbeat zset,
    reaping claims) are left out, as they are not part of anybody's share."""
    client = aioredis.Redis.from_url(twin.url, decode_responses=True)
    try:
        state: dict[str, Any] = {}
        async for key in client.scan_iter(match=f"{twin.prefix}:*", count=1000):
            kind = await client.type(key)
            if kind == "hash":
                state[key] = await client.hgetall(key)
            elif kind == "set":
                state[key] = await client.smembers(key)
            elif kind == "string" and ":cache:" in key:
                state[key] = await client.get(key)
        return state
    finally:
        await client.aclose()


async def give_shares(a: RedisBackend, b: RedisBackend) -> None:
    """a and b each hold presence members, online users and subscriptions, some in common."""
    await a.join(APP, ROOM, "ann", {"name": "Ann"}, 100)
    await a.join(APP, ROOM, "both", {"name": "Both"}, 100)
    await b.join(APP, ROOM, "both", {"name": "Both"}, 100)
    await b.join(APP, ROOM, "bob", {"name": "Bob"}, 100)
    await a.user_online(APP, "ann")
    await a.user_online(APP, "both")
    await b.user_online(APP, "both")
    await a.add_subscriptions(APP, "news", 2)
    await b.add_subscriptions(APP, "news", 1)
    await a.add_subscriptions(APP, ROOM, 2)
    await b.add_subscriptions(APP, ROOM, 2)
    await b.add_subscriptions(APP, "only-b", 1)


def whole_cluster_view() -> dict[str, Any]:
    return {
        "members": {"ann": {"name": "Ann"}, "both": {"name": "Both"}, "bob": {"name": "Bob"}},
        "online": {"ann", "both"},
        "channels": {"news": 3, ROOM: 4, "only-b": 1},
    }


async def view(node: RedisBackend) -> dict[str, Any]:
    return {
        "members": await node.members(APP, ROOM),
        "online": await node.online(APP, ("ann", "both", "bob")),
        "channels": await node.channels(APP),
    }


async def test_restore_rebuilds_exactly_this_nodes_share_after_redis_lost_every_key(
    redis_cluster: RedisTwin,
) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await give_shares(a, b)
    before = await snapshot(redis_cluster)
    a_keys = {key: value for key, value in before.items() if f":node:{a.node_id}:" in key}
    assert len(a_keys) == 3

    assert await delete_prefix(redis_cluster.url, redis_cluster.prefix) > 0  # Redis restarted empty
    await a._restore()
    assert await view(b) == {
        "members": {"ann": {"name": "Ann"}, "both": {"name": "Both"}},
        "online": {"ann", "both"},
        "channels": {"news": 2, ROOM: 2},
    }
    after_a = await snapshot(redis_cluster)
    assert {key: value for key, value in after_a.items() if ":node:" in key} == a_keys

    await b._restore()
    assert await snapshot(redis_cluster) == before
    assert await view(a) == whole_cluster_view()


async def test_restoring_twice_does_not_double_count(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await give_shares(a, b)
    before = await snapshot(redis_cluster)
    await a._restore()
    await a._restore()
    await b._restore()
    assert await snapshot(redis_cluster) == before
    await delete_prefix(redis_cluster.url, redis_cluster.prefix)
    for _ in range(2):
        await a._restore()
        await b._restore()
    assert await snapshot(redis_cluster) == before
    # Leaving still ends exactly when the last holder lets go.
    assert await a.leave(APP, ROOM, "both") is False
    assert await b.leave(APP, ROOM, "both") is True
    assert await a.add_subscriptions(APP, "news", -2) == 1
    assert await b.add_subscriptions(APP, "news", -1) == 0
    assert await a.user_offline(APP, "both") is False
    assert await b.user_offline(APP, "both") is True


async def test_restore_takes_away_what_redis_holds_for_this_node_beyond_its_share(
    redis_cluster: RedisTwin,
) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await give_shares(a, b)
    before = await snapshot(redis_cluster)
    # Redis kept writes this node no longer stands by (it changed its mind while cut off).
    _, node_users, node_counts = a._node_keys(a.node_id)
    await a._join(keys=a._presence_keys(APP, ROOM), args=["ghost", "{}", 0, SEP.join((APP, ROOM, "ghost"))])
    await a._join(keys=a._presence_keys(APP, ROOM), args=["bob", BOB_INFO, 0, SEP.join((APP, ROOM, "bob"))])
    await a._online(keys=[a._k(APP, "online"), node_users], args=["bob", SEP.join((APP, "bob")), 1])
    await a._count(keys=[a._k(APP, "counts"), node_counts], args=["ghosted", SEP.join((APP, "ghosted")), 5])
    await a._count(keys=[a._k(APP, "counts"), node_counts], args=["news", SEP.join((APP, "news")), 4])
    assert set(await b.members(APP, ROOM)) == {"ann", "both", "bob", "ghost"}

    await a._restore()
    assert await snapshot(redis_cluster) == before
    assert await b.leave(APP, ROOM, "bob") is True  # b's hold of bob was never touched


async def test_a_node_taken_for_dead_while_paused_restores_its_share_on_its_next_heartbeat(
    redis_cluster: RedisTwin,
) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await give_shares(a, b)
    before = await snapshot(redis_cluster)
    await a.heartbeat()

    reaped, _ = await redis_cluster.reap([b])  # a is paused: it does not beat
    assert reaped.members_removed == [(APP, ROOM, "ann")]
    assert await b.members(APP, ROOM) == {"both": {"name": "Both"}, "bob": {"name": "Bob"}}

    assert not await a.heartbeat()  # a wakes up: it reaps nobody, and finds itself missing
    assert await snapshot(redis_cluster) == before
    assert await view(b) == whole_cluster_view()
    # What the reaper announced as gone is announced back: ann is a member again, and online.
    (restored,) = redis_cluster.received[a.node_id].restored
    assert restored.members_added == [(APP, ROOM, "ann", {"name": "Ann"})]
    assert restored.users_online == [(APP, "ann")]
    assert restored.members_removed == [] and restored.users_offline == []


async def test_a_node_that_came_back_after_being_taken_for_dead_is_reaped_again_when_it_dies(
    redis_cluster: RedisTwin,
) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await give_shares(a, b)
    await a.heartbeat()
    reaped, _ = await redis_cluster.reap([b])
    assert reaped.members_removed == [(APP, ROOM, "ann")]
    await a.heartbeat()  # back, with its share restored
    assert "ann" in await b.members(APP, ROOM)

    # Now a dies for real: it must be reaped within node_ttl again, not only when some claim expires.
    reaped, elapsed = await redis_cluster.reap([b])
    assert reaped.members_removed == [(APP, ROOM, "ann")]
    assert elapsed <= redis_cluster.node_ttl * 1.5 + 0.3
    assert set(await b.members(APP, ROOM)) == {"both", "bob"}


async def test_prefixes_keep_clusters_on_one_redis_apart(redis_cluster: RedisTwin) -> None:
    other = RedisTwin()
    try:
        x1, x2 = await redis_cluster.node(), await redis_cluster.node()
        y1 = await other.node()
        await x1.join(APP, ROOM, "ann", {}, 1)
        await x1.user_online(APP, "ann")
        await x1.add_subscriptions(APP, "news", 2)
        await x1.remember(APP, "cache-news", "data", "frame", 60)
        await x2.heartbeat()

        await x1.publish(Envelope(APP, "news", "for x"))
        await x1.control(Control("online", APP, {"user_id": "ann"}))
        end = Envelope(APP, "news", "y's own")
        await y1.publish(end)
        await wait_for(lambda: end in other.received[y1.node_id].events)
        assert other.received[y1.node_id] == Received(events=[end], controls=[])
        await wait_for(lambda: Envelope(APP, "news", "for x") in redis_cluster.received[x2.node_id].events)

        assert await y1.members(APP, ROOM) == {}
        assert await y1.join(APP, ROOM, "bob", {}, 1) == FIRST  # x's full room is not y's
        assert await y1.online(APP, ("ann",)) == set()
        assert await y1.channels(APP) == {}
        assert await y1.subscription_count(APP, "news") == 0
        assert await y1.cached(APP, "cache-news") is None
        assert await x1.members(APP, ROOM) == {"ann": {}}
        # y1 beats for longer than node_ttl while x2 stays silent: y never reaps x's nodes.
        reaped, _ = await other.reap([y1], limit=redis_cluster.node_ttl * 1.5)
        assert not reaped
        assert await x1.channels(APP) == {"news": 2}
    finally:
        await other.close()


async def test_without_redis_start_returns_in_time_and_the_node_serves_from_its_local_mirror() -> None:
    port = free_port()  # nothing listens there
    node = RedisBackend(f"redis://127.0.0.1:{port}/0", "unreachable", "lonely", node_ttl=1.0)
    got = Received()
    started = time.monotonic()
    await node.start(got.events.append, got.controls.append, wait=0.5)
    assert time.monotonic() - started < 1.5
    try:
        assert node.healthy is False
        calls_started = time.monotonic()
        envelope = Envelope(APP, "news", "frame", None)
        await node.publish(envelope)
        assert got.events == [envelope]
        await node.control(Control("terminate", APP, {"user_id": "ann"}))
        assert got.controls == [Control("terminate", APP, {"user_id": "ann"})]

        assert await node.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == FIRST
        assert await node.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == HELD
        assert await node.join(APP, ROOM, "bob", None, 100) == FIRST
        assert await node.members(APP, ROOM) == {"ann": {"name": "Ann"}, "bob": None}
        assert await node.leave(APP, ROOM, "ann") is True
        assert await node.leave(APP, ROOM, "ann") is False
        assert await node.members(APP, ROOM) == {"bob": None}

        assert await node.add_subscriptions(APP, "news", 2) == 2
        assert await node.add_subscriptions(APP, "news", -1) == 1
        assert await node.add_subscriptions(APP, "gone", -1) == 0
        assert await node.subscription_count(APP, "news") == 1
        assert await node.channels(APP) == {"news": 1}
        assert await node.channels(APP, "presence-") == {}

        assert await node.user_online(APP, "ann") is True
        assert await node.user_online(APP, "ann") is False
        assert await node.online(APP, ("ann", "bob")) == {"ann"}
        assert await node.user_offline(APP, "ann") is True

        await node.remember(APP, "cache-news", "data", "frame", 60)
        assert await node.cached(APP, "cache-news") is None
        assert not await node.heartbeat()
        assert node.healthy is False
        assert time.monotonic() - calls_started < 10
    finally:
        closing = time.monotonic()
        await node.close()
        assert time.monotonic() - closing < 5


async def test_changes_made_while_redis_was_down_are_written_back_when_it_returns() -> None:
    with private_redis() as server:
        twin = RedisTwin(server.url)
        try:
            a, b = await twin.node(), await twin.node()
            await give_shares(a, b)
            server.kill()
            await wait_for(lambda: not a.healthy and not b.healthy, timeout=15)
            # Cut off, a changes its share: the local mirror keeps it.
            assert await a.join(APP, ROOM, "carl", {"name": "Carl"}, 100) == FIRST
            assert await a.leave(APP, ROOM, "ann") is True
            assert await a.add_subscriptions(APP, "news", 1) == 3
            assert await a.user_offline(APP, "ann") is True

            server.start()
            await wait_for(lambda: a.healthy and b.healthy, timeout=20)
            assert await view(b) == {
                "members": {"both": {"name": "Both"}, "bob": {"name": "Bob"}, "carl": {"name": "Carl"}},
                "online": {"both"},
                "channels": {"news": 4, ROOM: 4, "only-b": 1},
            }
            # The bus is back too: a's envelope reaches b.
            envelope = Envelope(APP, "news", "after")
            await a.publish(envelope)
            await wait_for(lambda: envelope in twin.received[b.node_id].events)
        finally:
            await twin.close()


async def test_a_dropped_command_connection_is_replaced_and_the_command_goes_through() -> None:
    """Redis dropping the command connections (a restart, a proxy, CLIENT KILL) costs nothing: the
    next command reconnects and is retried, the node stays healthy, and the bus carries on."""
    with private_redis() as server:
        twin = RedisTwin(server.url)
        admin = aioredis.Redis.from_url(server.url)
        try:
            a, b = await twin.node(), await twin.node()
            await give_shares(a, b)
            # Drop every command connection (the bus's pub/sub connections survive).
            await admin.client_kill_filter(_type="normal", skipme=True)
            assert await a.join(APP, ROOM, "carl", {"name": "Carl"}, 100) == FIRST
            assert a.healthy is True
            assert await b.members(APP, ROOM) == {
                "ann": {"name": "Ann"},
                "both": {"name": "Both"},
                "bob": {"name": "Bob"},
                "carl": {"name": "Carl"},
            }
            envelope = Envelope(APP, "news", "still there")
            await a.publish(envelope)
            await wait_for(lambda: envelope in twin.received[b.node_id].events)
        finally:
            await admin.aclose()
            await twin.close()


async def test_after_an_outage_only_the_changes_made_meanwhile_are_announced() -> None:
    """Members and users that came and went on a node while it was cut off are handed to
    on_restored, so the node can tell the cluster; what the cluster already knew is not repeated,
    even when Redis restarted empty and everything had to be written back."""
    with private_redis() as server:
        twin = RedisTwin(server.url)
        try:
            a, b = await twin.node(), await twin.node()
            await give_shares(a, b)
            server.kill()
            await wait_for(lambda: not a.healthy and not b.healthy, timeout=15)
            await a.join(APP, ROOM, "carl", {"name": "Carl"}, 100)
            await a.leave(APP, ROOM, "ann")
            await a.user_offline(APP, "ann")
            await a.user_online(APP, "carl")

            server.start()  # empty: every share is written back, but only a's news is announced
            await wait_for(lambda: a.healthy and b.healthy, timeout=20)
            await wait_for(lambda: twin.received[a.node_id].restored)
            (restored,) = twin.received[a.node_id].restored
            assert restored.members_added == [(APP, ROOM, "carl", {"name": "Carl"})]
            assert restored.users_online == [(APP, "carl")]
            # Redis came back empty, so ann (who left while cut off) is not written back; her
            # departure is still news, since no node holds her now.
            assert restored.members_removed == [(APP, ROOM, "ann")]
            assert restored.users_offline == [(APP, "ann")]
            assert twin.received[b.node_id].restored == []
        finally:
            await twin.close()


async def test_a_heartbeat_loop_cancelled_at_any_point_of_its_redis_commands_stops(
    redis_cluster: RedisTwin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 a cancel landing as one of redis-py's writes completes is lost (see
    clarion.tasks): cancel_and_wait stops the loop wherever the cancel lands."""
    monkeypatch.setattr(tasks, "RETRY", 0.05)
    node = await redis_cluster.node()

    ended = asyncio.Event()  # on failure: a loop that outlived every cancel stops, so the test ends

    async def beat_forever() -> None:
        while not ended.is_set():
            await node.heartbeat()

    try:
        for turns in range(16):
            task = asyncio.create_task(beat_forever())
            for _ in range(turns):
                await asyncio.sleep(0)
            assert await cancel_and_wait([task], timeout=5) == set(), f"still beating, cancelled {turns} turns in"
            assert task.cancelled()
    finally:
        ended.set()


async def test_a_redis_silent_from_the_start_is_logged_never_waited_on_and_written_back_once_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis accepts connections but never answers (SIGSTOP). The node starts, logs Redis as
    unreachable, and answers every call from its local mirror without waiting: each Redis command
    would wait its 60 s timeout, far beyond the test's deadline. Once Redis answers, what the node
    did meanwhile is written back."""
    caplog.set_level(logging.INFO, logger="clarion.scaling")
    with private_redis() as server:
        twin = RedisTwin(server.url)
        node = RedisBackend(server.url, twin.prefix, "silent", node_ttl=1.0, timeout=60.0, health_interval=0.2)
        got = Received()
        try:
            with server.paused():
                await node.start(got.events.append, got.controls.append, got.restored.append, wait=0.5)
                assert node.healthy is False
                assert "redis unreachable" in caplog.text
                async with asyncio.timeout(20):
                    envelope = Envelope(APP, "news", "frame")
                    assert await node.publish(envelope) is True
                    assert got.events == [envelope]
                    await node.control(Control("terminate", APP, {"user_id": "ann"}))
                    assert got.controls == [Control("terminate", APP, {"user_id": "ann"})]
                    assert await node.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == FIRST
                    assert await node.members(APP, ROOM) == {"ann": {"name": "Ann"}}
                    assert await node.add_subscriptions(APP, ROOM, 1) == 1
                    assert await node.subscription_count(APP, ROOM) == 1
                    assert await node.channels(APP) == {ROOM: 1}
                    assert await node.user_online(APP, "ann") is True
                    assert await node.online(APP, ("ann",)) == {"ann"}
                    await node.remember(APP, "cache-news", "data", "frame", 60)
                    assert await node.cached(APP, "cache-news") is None
                    assert (await node.history(APP, "private-x", after=0, limit=5, max_age=60)).available is False
                    assert not await node.heartbeat()
                    assert node.healthy is False
            await wait_for(lambda: node.healthy, timeout=30)
            other = await twin.node()
            assert await other.members(APP, ROOM) == {"ann": {"name": "Ann"}}
            assert await other.channels(APP) == {ROOM: 1}
            assert await other.online(APP, ("ann",)) == {"ann"}
        finally:
            await node.close()
            await twin.close()


async def test_a_single_cancel_stops_a_loop_of_redis_commands_wherever_it_lands(redis_cluster: RedisTwin) -> None:
    """redis-py's own write timeout (asyncio.wait_for) lost such cancels on Python 3.11, nearly
    always one to three loop turns into a command; the backend's connections write under
    asyncio.timeout, which keeps them."""
    node = await redis_cluster.node()
    ended = asyncio.Event()  # on failure: the loop that outlived its cancel stops, so the test ends

    async def count_forever() -> None:
        while not ended.is_set():
            await node.redis.zcard("clarion-test:nothing")

    try:
        for turns in range(16):
            task = asyncio.create_task(count_forever())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert done, f"the cancel was lost {turns} turns in"
            assert task.cancelled()
    finally:
        ended.set()
