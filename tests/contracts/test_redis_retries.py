"""Every Redis script of the Redis twin run twice with the same keys and arguments, as redis-py runs
a command again when its connection broke after the first attempt was applied: the change is
applied once, and the repeat answers as the first attempt did."""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis import asyncio as aioredis

from clarion.scaling.contracts import FIRST, SEP, Envelope, Keep
from clarion.scaling.redis import RedisBackend

from .conftest import RedisTwin, delivered

APP = "app-1"
ROOM = "presence-room"
KEEP = Keep(size=100, ttl=300.0)


async def read_hash(twin: RedisTwin, key: str) -> dict[str, str]:
    client = aioredis.Redis.from_url(twin.url, decode_responses=True)
    try:
        # decode_responses: keys and values come back as str, which redis-py's types do not follow.
        return cast(dict[str, str], await client.hgetall(f"{twin.prefix}:{key}"))
    finally:
        await client.aclose()


async def twice(script: Any, keys: list[str], args: list[Any]) -> tuple[Any, Any]:
    return await script(keys=keys, args=args), await script(keys=keys, args=args)


async def test_a_repeated_publish_reaches_every_node_once(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    envelope = Envelope(APP, "news", '{"event":"e","channel":"news","data":"{}"}')
    publish_id = a._new_id()
    claim = a._k("pub", publish_id)
    assert await a._send(envelope, None, publish_id, claim, int(a.claim_ttl * 1000)) is True
    assert await a._send(envelope, None, publish_id, claim, int(a.claim_ttl * 1000)) is False
    end = Envelope(APP, "end", "end")
    await a.publish(end)
    await delivered(redis_cluster, [a, b], end)
    for node in (a, b):
        assert redis_cluster.received[node.node_id].events == [envelope, end]


async def test_a_repeated_kept_publish_is_delivered_and_stored_once_with_one_serial(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    envelope = Envelope(APP, "private-feed", '{"event":"e","channel":"private-feed","data":"{}"}')
    publish_id = a._new_id()
    claim = a._k("pub", publish_id)
    assert await a._send(envelope, KEEP, publish_id, claim, int(a.claim_ttl * 1000)) is True
    assert await a._send(envelope, KEEP, publish_id, claim, int(a.claim_ttl * 1000)) is False
    end = Envelope(APP, "end", "end")
    await a.publish(end)
    await delivered(redis_cluster, [a, b], end)
    for node in (a, b):
        kept = [e for e in redis_cluster.received[node.node_id].events if e.channel == "private-feed"]
        assert [e.serial for e in kept] == [1]
    read = await b.history(APP, "private-feed", after=0, limit=10, max_age=300)
    assert read.serial == 1 and [serial for serial, _ in read.entries] == [1]


async def test_a_repeated_count_sets_this_nodes_share_once(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await b.add_subscriptions(APP, "news", 2)
    keys = [a._k(APP, "counts"), a._node_keys(a.node_id)[2]]
    assert await twice(a._count, keys, ["news", SEP.join((APP, "news")), 3]) == (5, 5)
    assert await read_hash(redis_cluster, f"{APP}:counts") == {"news": "5"}
    assert await read_hash(redis_cluster, f"node:{a.node_id}:counts") == {SEP.join((APP, "news")): "3"}
    # Taking the share away is as idempotent: a repeat does not take b's subscribers.
    assert await twice(a._count, keys, ["news", SEP.join((APP, "news")), 0]) == (2, 2)
    assert await b.subscription_count(APP, "news") == 2


async def test_a_repeated_join_counts_the_node_once_and_answers_first_again(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    entry = SEP.join((APP, ROOM, "ann"))
    info = orjson.dumps({"name": "Ann"}).decode()
    assert await twice(a._join, a._presence_keys(APP, ROOM), ["ann", info, 100, entry, 0]) == (FIRST, FIRST)
    assert await read_hash(redis_cluster, f"{APP}:members:{ROOM}") == {"ann": "1"}
    assert await b.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == 2


async def test_a_repeated_leave_lets_go_once_and_answers_gone_again(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await a.join(APP, ROOM, "ann", {}, 100)
    await a.join(APP, ROOM, "bob", {}, 100)
    await b.join(APP, ROOM, "bob", {}, 100)
    keys = a._presence_keys(APP, ROOM)
    assert await twice(a._leave, keys, ["ann", SEP.join((APP, ROOM, "ann")), 1]) == (1, 1)
    assert await twice(a._leave, keys, ["bob", SEP.join((APP, ROOM, "bob")), 1]) == (0, 0)
    assert await read_hash(redis_cluster, f"{APP}:members:{ROOM}") == {"bob": "1"}  # b's hold is intact
    assert await b.leave(APP, ROOM, "bob") is True


async def test_a_repeated_online_or_offline_counts_once_and_answers_alike(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    keys = [a._k(APP, "online"), a._node_keys(a.node_id)[1]]
    entry = SEP.join((APP, "ann"))
    assert await twice(a._online, keys, ["ann", entry, 1, 0]) == (1, 1)
    assert await b.user_online(APP, "ann") is False
    assert await read_hash(redis_cluster, f"{APP}:online") == {"ann": "2"}
    assert await twice(a._online, keys, ["ann", entry, -1, 1]) == (1, 1)
    assert await b.user_offline(APP, "ann") is True
    assert await twice(a._online, keys, ["ann", entry, -1, 1]) == (0, 0)  # gone everywhere, as b saw


async def test_a_repeated_write_back_applies_the_share_once_and_reports_the_same_arrivals(
    redis_cluster: RedisTwin,
) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    await b.join(APP, ROOM, "shared", {}, 100)
    held = {
        "members": [[APP, ROOM, "ann", '{"name":"Ann"}'], [APP, ROOM, "shared", "{}"]],
        "users": [[APP, "ann"]],
        "counts": [[APP, "news", 3]],
    }
    first, again = await twice(a._restore_script, list(a._node_keys(a.node_id)), [a.prefix, orjson.dumps(held)])
    for raw in (first, again):
        diff = orjson.loads(raw)
        assert diff["added"] == [[APP, ROOM, "ann", '{"name":"Ann"}']]  # shared is b's too: nothing new
        assert diff["online"] == [[APP, "ann"]]
    assert await read_hash(redis_cluster, f"{APP}:members:{ROOM}") == {"ann": "1", "shared": "2"}
    assert await read_hash(redis_cluster, f"{APP}:counts") == {"news": "3"}
    assert await read_hash(redis_cluster, f"{APP}:online") == {"ann": "1"}


async def test_a_repeated_beat_that_found_the_node_missing_says_so_again(redis_cluster: RedisTwin) -> None:
    node: RedisBackend = await redis_cluster.node()
    keys = [node._k("nodes"), node._k("node", node.node_id, "beat")]
    await node._take_over(node.node_id)  # taken for dead: missing from the cluster
    args = [node.node_id, 60_000, "beat-1"]
    first, again = await twice(node._beat, keys, args)
    assert first[0] == 1 and again[0] == 1
    assert (await node._beat(keys=keys, args=[node.node_id, 60_000, "beat-2"]))[0] == 0  # a new beat is not


async def test_a_repeated_reaping_claim_is_still_its_claimers(redis_cluster: RedisTwin) -> None:
    a, b = await redis_cluster.node(), await redis_cluster.node()
    assert await a._claim_reaping("dead-node") is True
    assert await a._claim_reaping("dead-node") is True
    assert await b._claim_reaping("dead-node") is False
