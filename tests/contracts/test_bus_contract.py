"""The Bus part of the contract, run against both twins: every node gets each envelope and control
message once, in publish order per publisher; kept events get positions in publish order and a
history (reads after a serial or of the newest, size and age limits, epochs); a publish with an
idempotency key happens once per key within its ttl."""

from __future__ import annotations

import asyncio

import orjson

from clarion.protocol.messages import channel_event, with_position
from clarion.scaling.contracts import Control, Envelope, Keep, Once

from .conftest import Cluster, MemoryTwin, delivered

APP = "app-1"
OTHER_APP = "app-2"
CHANNEL = "private-feed"
KEEP = Keep(size=100, ttl=300.0)


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


# --- history -----------------------------------------------------------------------------------


def event(n: int, channel: str = CHANNEL) -> Envelope:
    return Envelope(APP, channel, channel_event("update", channel, orjson.dumps({"n": n}).decode()))


async def publish_kept(node, count: int, channel: str = CHANNEL, keep: Keep = KEEP, start: int = 0) -> None:
    for n in range(start, start + count):
        await node.publish(event(n, channel), keep)


async def test_kept_events_reach_every_node_with_consecutive_serials_in_one_epoch(cluster: Cluster) -> None:
    nodes = [await cluster.node() for _ in range(2)]
    await publish_kept(nodes[0], 30)
    await publish_kept(nodes[1], 30, start=30)
    end = Envelope(APP, "end", "end")
    await nodes[1].publish(end)
    await delivered(cluster, nodes, end)
    for node in nodes:
        got = [e for e in cluster.received[node.node_id].events if e.channel == CHANNEL]
        assert [e.serial for e in got] == list(range(1, 61))
        assert len({e.epoch for e in got}) == 1 and got[0].epoch
        for n, envelope in enumerate(got):
            frame = orjson.loads(envelope.frame)
            assert frame["serial"] == n + 1 and frame["epoch"] == envelope.epoch
            assert orjson.loads(frame["data"]) == {"n": n}
            # The position is spliced into the publisher's frame, byte for byte the same otherwise.
            assert envelope.frame == with_position(event(n).frame, envelope.epoch, n + 1)


async def test_events_published_without_keep_get_no_position_and_are_not_kept(cluster: Cluster) -> None:
    node = await cluster.node()
    await node.publish(event(0, "private-plain"))
    await publish_kept(node, 1, "private-other")
    end = Envelope(APP, "end", "end")
    await node.publish(end)
    await delivered(cluster, [node], end)
    plain = next(e for e in cluster.received[node.node_id].events if e.channel == "private-plain")
    assert plain.serial == 0 and plain.epoch == "" and "serial" not in orjson.loads(plain.frame)
    read = await node.history(APP, "private-plain", after=0, limit=10, max_age=300)
    assert read.epoch is None and read.serial == 0 and read.entries == [] and read.available


async def test_history_after_a_serial_gives_the_oldest_entries_after_it_in_order(cluster: Cluster) -> None:
    nodes = [await cluster.node() for _ in range(2)]
    await publish_kept(nodes[0], 50)
    read = await nodes[1].history(APP, CHANNEL, after=20, limit=100, max_age=300)
    assert read.serial == 50 and read.epoch
    assert [serial for serial, _ in read.entries] == list(range(21, 51))
    for serial, frame in read.entries:
        parsed = orjson.loads(frame)
        assert parsed["serial"] == serial and parsed["epoch"] == read.epoch
        assert orjson.loads(parsed["data"]) == {"n": serial - 1}
    limited = await nodes[1].history(APP, CHANNEL, after=20, limit=5, max_age=300)
    assert [serial for serial, _ in limited.entries] == [21, 22, 23, 24, 25]
    assert (await nodes[1].history(APP, CHANNEL, after=50, limit=5, max_age=300)).entries == []


async def test_history_without_a_serial_gives_the_newest_entries_oldest_first(cluster: Cluster) -> None:
    node = await cluster.node()
    await publish_kept(node, 12)
    read = await node.history(APP, CHANNEL, after=None, limit=5, max_age=300)
    assert [serial for serial, _ in read.entries] == [8, 9, 10, 11, 12]


async def test_history_keeps_at_least_size_entries_and_drops_older_ones_beyond_it(cluster: Cluster) -> None:
    node = await cluster.node()
    keep = Keep(size=10, ttl=300)
    await publish_kept(node, 1000, keep=keep)
    read = await node.history(APP, CHANNEL, after=0, limit=2000, max_age=300)
    serials = [serial for serial, _ in read.entries]
    # The Redis twin trims with MAXLEN ~ (whole stream nodes), so it may hold a few more.
    assert serials[-10:] == list(range(991, 1001))
    assert len(serials) < 1000 and serials == list(range(serials[0], 1001))


async def test_entries_older_than_max_age_are_not_read(cluster: Cluster) -> None:
    node = await cluster.node()
    await publish_kept(node, 3)
    await let_time_pass(cluster, 1.2)
    await publish_kept(node, 2, start=3)
    read = await node.history(APP, CHANNEL, after=0, limit=100, max_age=1.0)
    assert [serial for serial, _ in read.entries] == [4, 5]
    assert read.serial == 5


async def let_time_pass(cluster: Cluster, seconds: float) -> None:
    if isinstance(cluster, MemoryTwin):
        cluster.clock.advance(seconds)
    else:
        await asyncio.sleep(seconds)  # the Redis twin stamps entries with Redis's own clock


async def test_channels_and_apps_have_separate_positions(cluster: Cluster) -> None:
    node = await cluster.node()
    await publish_kept(node, 3, "private-a")
    await publish_kept(node, 5, "private-b")
    await node.publish(Envelope("app-2", "private-a", channel_event("x", "private-a", "{}")), KEEP)
    a = await node.history(APP, "private-a", after=0, limit=100, max_age=300)
    b = await node.history(APP, "private-b", after=0, limit=100, max_age=300)
    other = await node.history("app-2", "private-a", after=0, limit=100, max_age=300)
    assert (a.serial, b.serial, other.serial) == (3, 5, 1)
    assert len({a.epoch, b.epoch, other.epoch}) == 3


async def test_exclude_travels_with_a_kept_event(cluster: Cluster) -> None:
    node = await cluster.node()
    envelope = Envelope(APP, CHANNEL, channel_event("e", CHANNEL, "{}"), exclude="123.456")
    await node.publish(envelope, KEEP)
    end = Envelope(APP, "end", "end")
    await node.publish(end)
    await delivered(cluster, [node], end)
    got = next(e for e in cluster.received[node.node_id].events if e.channel == CHANNEL)
    assert got.exclude == "123.456" and got.serial == 1


# --- publishing once ---------------------------------------------------------------------------


async def test_a_publish_whose_key_was_used_is_skipped_on_every_node_until_the_key_expires(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    ttl = 60.0 if cluster.kind == "memory" else 1.0
    once = Once("retry-me", ttl)
    first = Envelope(APP, "news", "first")
    assert await a.publish(first, once=once) is True
    assert await a.publish(Envelope(APP, "news", "again from a"), once=once) is False
    assert await b.publish(Envelope(APP, "news", "again from b"), once=once) is False
    # The same key on another app, and another key, are new.
    other_app = Envelope(OTHER_APP, "news", "other app")
    other_key = Envelope(APP, "news", "other key")
    assert await b.publish(other_app, once=once) is True
    assert await b.publish(other_key, once=Once("another", ttl)) is True
    end = Envelope(APP, "end", "end")
    await a.publish(end)
    await delivered(cluster, [a, b], end)
    for node in (a, b):
        assert cluster.received[node.node_id].events == [first, other_app, other_key, end]

    async def usable_again() -> bool:
        published: bool = await b.publish(Envelope(APP, "news", "after the ttl"), once=once)
        return published

    await cluster.after(ttl, usable_again)


async def test_each_event_and_channel_of_a_request_is_its_own_key(cluster: Cluster) -> None:
    node = await cluster.node()
    keys = [Once.for_event("request-1", index, channel, 60) for index in (0, 1) for channel in ("a", "b")]
    assert len({once.key for once in keys}) == 4
    for once in keys:
        assert await node.publish(Envelope(APP, "news", once.key), once=once) is True
    # A retry of the whole request publishes nothing; one with an event more publishes only that.
    for once in keys:
        assert await node.publish(Envelope(APP, "news", once.key), once=once) is False
    assert await node.publish(Envelope(APP, "news", "third"), once=Once.for_event("request-1", 2, "a", 60)) is True


async def test_a_skipped_kept_publish_takes_no_serial_and_is_not_stored(cluster: Cluster) -> None:
    node = await cluster.node()
    once = Once("kept-once", 60)
    assert await node.publish(event(0), KEEP, once) is True
    assert await node.publish(event(0), KEEP, once) is False
    assert await node.publish(event(1), KEEP) is True
    read = await node.history(APP, CHANNEL, after=0, limit=10, max_age=300)
    assert read.serial == 2
    assert [orjson.loads(orjson.loads(frame)["data"])["n"] for _, frame in read.entries] == [0, 1]
